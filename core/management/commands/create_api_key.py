from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from core import services
from core.exceptions import ApplicationError
from core.models import ApiKeyAccess, Workspace


class Command(BaseCommand):
    help = "Create an API key for a workspace and print only the key."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("slug", help="The workspace's slug (create_workspace prints it).")
        parser.add_argument("--name", default="Created by create_api_key")
        parser.add_argument("--read-only", action="store_true", help="A key that can only read.")

    def handle(self, *args: Any, slug: str, name: str, read_only: bool, **options: Any) -> None:
        workspace = Workspace.objects.filter(slug=slug).first()
        if workspace is None:
            raise CommandError(f"No workspace with the slug {slug!r}.")
        try:
            _api_key, raw_key = services.api_key_create(
                workspace=workspace,
                name=name,
                access=ApiKeyAccess.READ if read_only else ApiKeyAccess.FULL,
                created_by=None,
            )
        except ApplicationError as exc:
            raise CommandError(exc.message) from exc
        self.stdout.write(raw_key)
