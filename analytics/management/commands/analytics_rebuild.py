from __future__ import annotations

import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from analytics.rollups import rollups_rebuild
from core.models import Workspace


class Command(BaseCommand):
    help = (
        "Recompute every analytics rollup from the raw messages, stage moves and conversions "
        "(of one workspace with --workspace SLUG). The result equals what the live refresh "
        "keeps; run it after restoring a backup or changing the order of a funnel's stages."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--workspace", help="the slug of one workspace (default: all)")

    def handle(self, *args: Any, **options: Any) -> None:
        workspace_id = None
        if options["workspace"]:
            workspace = Workspace.objects.filter(slug=options["workspace"]).first()
            if workspace is None:
                raise CommandError(f"No workspace {options['workspace']!r}.")
            workspace_id = workspace.pk
        started = time.perf_counter()
        result = rollups_rebuild(workspace_id=workspace_id)
        self.stdout.write(
            f"{result.message_rows} message rows, {result.stays} stays, "
            f"{result.stage_rows} stage rows, {result.conversion_rows} conversion rows "
            f"in {time.perf_counter() - started:.1f} s"
        )
