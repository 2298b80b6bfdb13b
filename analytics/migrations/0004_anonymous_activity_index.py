"""An index on tracking's activity table that only analytics needs: anonymous activity (rows
without a message) by workspace and time. Recomputing a (workspace, day, source) rollup key
reads that day's anonymous rows. Partial (message_id IS NULL), so it stays empty for
workspaces tracking personally.

The activity table is the largest and takes writes all the time (tracking's writer), so on
PostgreSQL the index is built CONCURRENTLY, without blocking them: hence a migration of its
own, outside a transaction. SQLite (the embedded default) builds it plainly.
"""

from typing import Any

from django.db import migrations

INDEX = (
    "analytics_activity_anonymous ON tracking_activity (workspace_id, occurred_at) "
    "WHERE message_id IS NULL"
)


def create(apps: Any, schema_editor: Any) -> None:
    concurrently = "CONCURRENTLY " if schema_editor.connection.vendor == "postgresql" else ""
    schema_editor.execute(f"CREATE INDEX {concurrently}IF NOT EXISTS {INDEX}")


def drop(apps: Any, schema_editor: Any) -> None:
    concurrently = "CONCURRENTLY " if schema_editor.connection.vendor == "postgresql" else ""
    schema_editor.execute(f"DROP INDEX {concurrently}IF EXISTS analytics_activity_anonymous")


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("analytics", "0003_stay_durations_and_anonymous_activity"),
        ("tracking", "0001_initial"),
    ]

    operations = [migrations.RunPython(create, drop)]
