from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from core import services
from core.exceptions import ApplicationError


class Command(BaseCommand):
    help = "Create a workspace with an owner and print its slug."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name")
        parser.add_argument("--owner", required=True, help="The owner's email address.")
        parser.add_argument(
            "--password", help="Password for a new owner account (ignored if it exists)."
        )

    def handle(
        self, *args: Any, name: str, owner: str, password: str | None, **options: Any
    ) -> None:
        try:
            user = services.user_get_or_create(email=owner, password=password)
            workspace = services.workspace_create(name=name, owner=user)
        except ApplicationError as exc:
            raise CommandError(exc.message) from exc
        self.stdout.write(workspace.slug)
