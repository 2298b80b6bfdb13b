"""An index on campaigns' message table that only analytics needs: messages by the time they
were sent. The rollup refresh recomputes one (workspace, day, source) key from the messages
sent that day, and the reconcile pass reads the messages sent in the last minutes; without it
both would scan the whole table. It lives here, not in campaigns' models, because campaigns
never queries by sent_at alone; SQL written for both PostgreSQL and SQLite."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("analytics", "0001_rollups_and_campaign_costs"),
        ("campaigns", "0003_tracking_fields"),
    ]

    operations = [
        migrations.RunSQL(
            sql=(
                "CREATE INDEX IF NOT EXISTS analytics_message_sent "
                "ON campaigns_message (sent_at, workspace_id) WHERE sent_at IS NOT NULL"
            ),
            reverse_sql="DROP INDEX IF EXISTS analytics_message_sent",
        ),
    ]
