"""Two additions to the rollups (docs/analytics.md).

StageDurationDaily: the ended stays per stage, entry day and duration bucket, which make the
exact median time in stage cheap to find (analytics.queries.funnel).

The anonymous tracking mode: MessageDaily counts the opens and clicks of mails tracked
anonymously (tracking.Activity rows without a message) as events per source and day (their
index: 0004).

Run analytics_rebuild after migrating: the new rollups start empty.
"""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("analytics", "0002_message_sent_at_index"),
        ("core", "0004_workspace_tracking_mode"),
        ("funnel", "0001_initial"),
    ]

    operations = [
        migrations.CreateModel(
            name="StageDurationDaily",
            fields=[
                ("id", models.BigAutoField(primary_key=True, serialize=False)),
                ("day", models.DateField()),
                ("bucket", models.BigIntegerField()),
                ("stays", models.PositiveIntegerField(default=0)),
                ("shortest", models.BigIntegerField()),
                ("longest", models.BigIntegerField()),
                (
                    "funnel",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="+",
                        to="funnel.funnel",
                    ),
                ),
                (
                    "stage",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="+",
                        to="funnel.stage",
                    ),
                ),
                (
                    "workspace",
                    models.ForeignKey(
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="+",
                        to="core.workspace",
                    ),
                ),
            ],
            options={
                "verbose_name": "daily stay-duration rollup",
                "verbose_name_plural": "daily stay-duration rollups",
                "indexes": [
                    models.Index(fields=["funnel", "day"], name="durationdaily_funnel_day")
                ],
            },
        ),
        migrations.AddField(
            model_name="messagedaily",
            name="anonymous_opens",
            field=models.PositiveIntegerField(default=0),
        ),
        migrations.AddField(
            model_name="messagedaily",
            name="anonymous_clicks",
            field=models.PositiveIntegerField(default=0),
        ),
        migrations.AddField(
            model_name="messagedaily",
            name="anonymous_machine_opens",
            field=models.PositiveIntegerField(default=0),
        ),
        migrations.AddField(
            model_name="messagedaily",
            name="anonymous_bot_clicks",
            field=models.PositiveIntegerField(default=0),
        ),
    ]
