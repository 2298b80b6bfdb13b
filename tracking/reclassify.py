"""Apply the current classification rules (tracking.classification) to stored opens and clicks,
after the rules changed: `manage.py tracking_reclassify`.

Rows are read in chunks per message, re-classified with the same facts the writer used (the
message's send time, the other clicks of the mail), updated where the verdict changed, and the
messages' open and click milestones recomputed from the result. Reactions that fired under the
old rules are not undone; rates and reports follow the new verdicts.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from dataclasses import dataclass

from django.db import transaction

from campaigns.models import Message
from tracking import classification
from tracking.classification import TRAP_LINK, ClickSeen
from tracking.ingest import milestones_recompute
from tracking.models import Activity, ActivityKind, Origin


@dataclass(frozen=True)
class ReclassifyResult:
    examined: int
    changed: int
    messages: int


def _link(row: Activity) -> int | str:
    return row.link_index if row.link_index is not None else row.url


def _verdict(row: Activity, sent_at: object, clicks: list[Activity]) -> classification.Verdict:
    if row.kind == ActivityKind.OPEN:
        return classification.classify_open(
            user_agent=row.user_agent,
            ip=row.ip,
            method=row.method,
            at=row.occurred_at,
            sent_at=sent_at,  # type: ignore[arg-type]
        )
    trap = row.reason == TRAP_LINK
    return classification.classify_click(
        trap=trap,
        link=_link(row),
        user_agent=row.user_agent,
        method=row.method,
        at=row.occurred_at,
        sent_at=sent_at,  # type: ignore[arg-type]
        others=[
            ClickSeen(other.occurred_at, _link(other), trap=other.reason == TRAP_LINK)
            for other in clicks
            if other != row
        ],
    )


def activities_reclassify(
    *, workspace_id: uuid.UUID | None = None, everything: bool = False, chunk: int = 2000
) -> ReclassifyResult:
    """Re-classify our own opens and clicks (ESP-reported ones keep the ESP's word) whose
    rules_version is older than the current one, or all of them with `everything`."""
    rows = Activity.objects.filter(
        kind__in=(ActivityKind.OPEN, ActivityKind.CLICK), message__isnull=False
    ).exclude(origin=Origin.ESP)
    if workspace_id is not None:
        rows = rows.filter(workspace_id=workspace_id)
    if not everything:
        rows = rows.filter(rules_version__lt=classification.VERSION)
    message_ids = list(rows.values_list("message_id", flat=True).distinct().order_by())
    examined = changed = 0
    touched: set[uuid.UUID] = set()
    for start in range(0, len(message_ids), chunk):
        ids = message_ids[start : start + chunk]
        sent = dict(Message.objects.filter(pk__in=ids).values_list("pk", "sent_at"))
        by_message: dict[uuid.UUID, list[Activity]] = defaultdict(list)
        for row in Activity.objects.filter(
            message_id__in=ids, kind__in=(ActivityKind.OPEN, ActivityKind.CLICK)
        ).exclude(origin=Origin.ESP):
            assert row.message_id is not None
            by_message[row.message_id].append(row)
        updates: list[Activity] = []
        for message_id, activities in by_message.items():
            clicks = [row for row in activities if row.kind == ActivityKind.CLICK]
            for row in activities:
                examined += 1
                verdict = _verdict(row, sent.get(message_id), clicks)
                if (verdict.actor, verdict.reason) != (row.actor, row.reason):
                    changed += 1
                    touched.add(message_id)
                row.actor, row.reason = verdict.actor, verdict.reason
                row.rules_version = classification.VERSION
                updates.append(row)
        with transaction.atomic():
            Activity.objects.bulk_update(updates, ["actor", "reason", "rules_version"], 1000)
            milestones_recompute(touched & set(ids))
    return ReclassifyResult(examined=examined, changed=changed, messages=len(touched))
