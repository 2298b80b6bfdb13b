"""Deliveries tried from the database until they succeed or 24 hours have passed.

The outgoing webhooks (funnel.webhooks) and the webhook step of sequences
(campaigns.step_webhooks) keep each delivery in a row with `status`, `next_attempt_at`,
`attempts` and `created_at`, and share this loop:

- a try is claimed first: one conditional UPDATE per row pushes `next_attempt_at` out by a
  lease, so two workers never make the same try, and a worker that dies mid-try leaves the
  row due again once the lease ends;
- a new delivery is handed to a task after commit (tries_send); the beat (tries_due) picks up
  retries and first tries whose task was lost, oldest first, skipping rows other workers hold;
- after a failed try the next one waits 1, 2, 4 ... minutes, at most an hour (the policy of
  API.md's webhooks), and the last one falls exactly on the deadline, 24 hours after the
  delivery was made, so the whole window is used (next_try_at).

No Celery ETA or countdown: the wait lives in the row, so it survives restarts.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

FIRST_RETRY = timedelta(minutes=1)
MAX_RETRY_GAP = timedelta(hours=1)
RETRY_WINDOW = timedelta(hours=24)
# A claimed try is this worker's for this long (an HTTP try times out well before).
CLAIM_LEASE = timedelta(minutes=2)
DUE_BATCH = 100


@dataclass(frozen=True)
class TryOutcome:
    succeeded: int = 0
    failed: int = 0


def retry_delay(attempts: int) -> timedelta:
    """Wait after the `attempts`-th failed try: 1, 2, 4, 8 ... minutes, at most one hour."""
    exponent = min(max(attempts - 1, 0), 16)
    return min(FIRST_RETRY * (2**exponent), MAX_RETRY_GAP)


def next_try_at(*, created_at: datetime, attempts: int, now: datetime) -> datetime | None:
    """When to try again after the `attempts`-th failed try, or None when the 24 hours are
    over. The last try falls on the deadline, so the 24 hours are really used."""
    deadline = created_at + RETRY_WINDOW
    if now >= deadline:
        return None
    return min(now + retry_delay(attempts), deadline)


def _claim(unsent: QuerySet[Any], ids: Sequence[Any], now: datetime) -> list[uuid.UUID]:
    claimed = []
    rows = unsent.filter(pk__in=list(ids), next_attempt_at__lte=now).values_list(
        "pk", "next_attempt_at"
    )
    for delivery_id, due_at in rows:
        if unsent.filter(pk=delivery_id, next_attempt_at=due_at).update(
            next_attempt_at=now + CLAIM_LEASE
        ):
            claimed.append(delivery_id)
    return claimed


def _attempt_all(claimed: list[uuid.UUID], attempt: Callable[[uuid.UUID], bool]) -> TryOutcome:
    outcomes = [attempt(delivery_id) for delivery_id in claimed]
    return TryOutcome(succeeded=sum(outcomes), failed=len(outcomes) - sum(outcomes))


def tries_send(
    *, unsent: QuerySet[Any], ids: Sequence[Any], attempt: Callable[[uuid.UUID], bool]
) -> TryOutcome:
    """Try the deliveries among `ids` that are due (others are left alone). `unsent`: the
    model's rows still to be delivered; `attempt`: one try of a claimed delivery, True on
    success. Safe to run twice and concurrently: each try is claimed first."""
    with transaction.atomic():
        claimed = _claim(unsent, ids, timezone.now())
    return _attempt_all(claimed, attempt)


def tries_due(
    *, unsent: QuerySet[Any], limit: int, attempt: Callable[[uuid.UUID], bool]
) -> TryOutcome:
    """Beat: try up to `limit` deliveries whose next try is due, oldest first."""
    now = timezone.now()
    with transaction.atomic():
        due = list(
            unsent.select_for_update(skip_locked=True)
            .filter(next_attempt_at__lte=now)
            .order_by("next_attempt_at")
            .values_list("pk", flat=True)[:limit]
        )
        claimed = _claim(unsent, due, now)
    return _attempt_all(claimed, attempt)


__all__ = [
    "CLAIM_LEASE",
    "DUE_BATCH",
    "RETRY_WINDOW",
    "TryOutcome",
    "next_try_at",
    "retry_delay",
    "tries_due",
    "tries_send",
]
