"""The broadcast report (API.md: GET /broadcasts/{id}/report/): sending progress, the mail
figures of the whole broadcast and of each variant, and the A/B test with its significance.

Progress (queued, failed, cancelled) is the messages' state now, not an event, so it is read
from the broadcast's messages; every mail figure comes from the daily message rollups. The A/B
test is judged on its sample only (the messages made before the winner was due: the rest of
the audience all got the winner), counted by campaigns.broadcasts.broadcast_variant_counts,
the same function that decided the winner, and tested with a two-proportion z-test.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from django.db.models import Count, Q

from analytics.models import MessageDaily
from analytics.queries.base import MailFigures, Period, mail_sums, ratio
from analytics.rollups import rollups_refresh_pending
from analytics.statistics import SIGNIFICANCE_LEVEL, two_proportion_z_test
from campaigns.broadcasts import UNFINISHED, broadcast_variant_counts
from campaigns.models import Broadcast, Message, MessageStatus
from core.models import Workspace


@dataclass(frozen=True)
class VariantFigures:
    """One variant (0 = the broadcast's own subject and content) and its mail figures."""

    variant: int
    subject: str
    mail: MailFigures


@dataclass(frozen=True)
class AbVariant:
    """A variant in the A/B sample: delivered mails and the successes of the test's metric
    (unique human openers for open_rate, clickers for click_rate)."""

    variant: int
    subject: str
    sent: int
    delivered: int
    successes: int

    @property
    def rate(self) -> float:
        return ratio(self.successes, self.delivered)


@dataclass(frozen=True)
class AbTest:
    """The A/B test: the sample's variants, the leader (the winner once decided, else the best
    rate so far; ties: the lower variant) against the best of the others, z and p-value.

    decided_by_chance: the winner (or leader) is not better than the runner-up beyond chance
    at the 5 % level, or nothing at all told the variants apart when it was decided.
    """

    metric: str
    sample_percent: int
    wait: str
    decided: bool
    winner: int | None
    leader: int
    runner_up: int | None
    winner_by_chance: bool
    variants: list[AbVariant]
    z: float | None
    p_value: float | None

    @property
    def significant(self) -> bool:
        return self.p_value is not None and self.p_value < SIGNIFICANCE_LEVEL

    @property
    def decided_by_chance(self) -> bool:
        return self.winner_by_chance or not self.significant


@dataclass(frozen=True)
class BroadcastReport:
    broadcast_id: uuid.UUID
    name: str
    status: str
    period: Period | None
    audience: int
    queued: int
    failed: int
    cancelled: int
    mail: MailFigures
    variants: list[VariantFigures]
    winner: int | None
    ab_test: AbTest | None

    @property
    def done(self) -> bool:
        return self.queued == 0

    @property
    def percent(self) -> int:
        """How much of the sending is done: messages no longer queued, of all (0 to 100)."""
        total = self.queued + self.mail.sent + self.failed + self.cancelled
        return round(100 * (total - self.queued) / total) if total else 0


def _subject(broadcast: Broadcast, variant: int) -> str:
    if variant == 0:
        return broadcast.subject
    variants = broadcast.variants or []
    return str(variants[variant - 1].get("subject", "")) if variant <= len(variants) else ""


class BroadcastReportQuery:
    """Build the report of one of the workspace's broadcasts (Broadcast.DoesNotExist for
    another workspace's: 404). Without a period it covers every mail of the broadcast; with
    one, the mail figures cover mails sent in it (progress and the A/B test stay whole)."""

    def __init__(
        self, *, workspace: Workspace, broadcast_id: uuid.UUID | str, period: Period | None = None
    ) -> None:
        self.workspace = workspace
        self.broadcast = Broadcast.objects.get(workspace=workspace, pk=broadcast_id)
        self.period = period

    def run(self) -> BroadcastReport:
        rollups_refresh_pending(workspace_id=str(self.workspace.pk))
        broadcast = self.broadcast
        rollups = MessageDaily.objects.filter(broadcast=broadcast)
        if self.period is not None:
            rollups = rollups.filter(day__gte=self.period.start, day__lte=self.period.end)
        by_variant = mail_sums(rollups, "variant")
        count = len(broadcast.variants or []) + 1
        numbers = sorted(set(range(count)) | {variant for (variant,) in by_variant})
        variants = [
            VariantFigures(
                variant=variant,
                subject=_subject(broadcast, variant),
                mail=by_variant.get((variant,), MailFigures()),
            )
            for variant in numbers
        ]
        progress = Message.objects.filter(broadcast=broadcast).aggregate(
            queued=Count("pk", filter=Q(status__in=UNFINISHED)),
            failed=Count("pk", filter=Q(status=MessageStatus.FAILED)),
            cancelled=Count("pk", filter=Q(status=MessageStatus.CANCELLED)),
        )
        return BroadcastReport(
            broadcast_id=broadcast.pk,
            name=broadcast.name,
            status=broadcast.status,
            period=self.period,
            audience=broadcast.audience_count,
            queued=progress["queued"],
            failed=progress["failed"],
            cancelled=progress["cancelled"],
            mail=MailFigures.total(variant.mail for variant in variants),
            variants=variants,
            winner=broadcast.winner,
            ab_test=self._ab_test(),
        )

    def _ab_test(self) -> AbTest | None:
        broadcast = self.broadcast
        if not broadcast.ab_test:
            return None
        metric = str(broadcast.ab_test.get("metric", "open_rate"))
        decided = broadcast.winner is not None
        counts = broadcast_variant_counts(
            broadcast, created_before=broadcast.ab_decide_at if decided else None
        )
        variants = [
            AbVariant(
                variant=count.variant,
                subject=count.subject,
                sent=count.sent,
                delivered=count.delivered,
                successes=count.clicked if metric == "click_rate" else count.opened,
            )
            for count in counts
        ]
        if decided and broadcast.winner is not None and broadcast.winner < len(variants):
            leader = variants[broadcast.winner]
        else:
            leader = max(variants, key=lambda v: (v.rate, -v.variant))
        others = [variant for variant in variants if variant.variant != leader.variant]
        runner_up = max(others, key=lambda v: (v.rate, -v.variant)) if others else None
        test = (
            two_proportion_z_test(
                leader.successes, leader.delivered, runner_up.successes, runner_up.delivered
            )
            if runner_up is not None
            else None
        )
        return AbTest(
            metric=metric,
            sample_percent=int(broadcast.ab_test.get("sample_percent", 0)),
            wait=str(broadcast.ab_test.get("wait", "")),
            decided=decided,
            winner=broadcast.winner,
            leader=leader.variant,
            runner_up=runner_up.variant if runner_up is not None else None,
            winner_by_chance=broadcast.winner_by_chance,
            variants=variants,
            z=test.z if test is not None else None,
            p_value=test.p_value if test is not None else None,
        )
