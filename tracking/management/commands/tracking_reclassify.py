"""manage.py tracking_reclassify — apply the current machine/bot rules to stored history."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from core.models import Workspace
from tracking import classification
from tracking.reclassify import activities_reclassify


class Command(BaseCommand):
    help = "Re-classify stored opens and clicks with the current rules (tracking.classification)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--workspace", help="the slug of one workspace (default: all)")
        parser.add_argument(
            "--all",
            action="store_true",
            help="every row, not only those classified by an older rules version",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        workspace_id = None
        if options["workspace"]:
            workspace = Workspace.objects.filter(slug=options["workspace"]).first()
            if workspace is None:
                raise CommandError(f"No workspace with the slug {options['workspace']!r}.")
            workspace_id = workspace.pk
        result = activities_reclassify(workspace_id=workspace_id, everything=options["all"])
        self.stdout.write(
            f"rules version {classification.VERSION}: examined {result.examined}, "
            f"changed {result.changed}, messages with new milestones {result.messages}"
        )
