"""manage.py tracking_reclassify — apply the current machine/bot rules to stored history."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from tracking import classification
from tracking.reclassify import activities_reclassify


class Command(BaseCommand):
    help = "Re-classify stored opens and clicks with the current rules (tracking.classification)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--workspace", help="only this workspace (id)")
        parser.add_argument(
            "--all",
            action="store_true",
            help="every row, not only those classified by an older rules version",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        result = activities_reclassify(workspace_id=options["workspace"], everything=options["all"])
        self.stdout.write(
            f"rules version {classification.VERSION}: examined {result.examined}, "
            f"changed {result.changed}, messages with new milestones {result.messages}"
        )
