"""Pre-aggregated analytics (docs/analytics.md): daily rollups of messages by the day they were
sent, stage stays and their daily rollup, conversions by day, the queue of rollup keys to
recompute, and the costs entered per sequence or broadcast.

Every rollup row is derived data: rollups.py recomputes it from the raw rows (campaigns.Message,
funnel.StageTransition, funnel.Conversion) and the analytics_rebuild command recomputes all of
it. Nothing here is ever incremented.
"""

from __future__ import annotations

import uuid

from django.core.validators import MinValueValidator
from django.db import models
from django.utils.translation import gettext_lazy as _

from campaigns.models import Broadcast, Sequence
from contacts.models import Contact
from core.models import Workspace
from funnel.models import Funnel, Stage


class MessageDaily(models.Model):
    """Counts of the messages sent on one (UTC) day from one source: a sequence step or a
    broadcast, per variant and funnel stage of the mail.

    Cohort by send day: a message's later milestones (an open a week later) count on the day
    it was sent, so every rate of a row stays between 0 and 1. opened counts unique human
    openers (a click counts as an open); machine_opened and bot_clicked are kept apart.
    The anonymous_* events are the exception: they count on the day they happened.
    """

    id = models.BigAutoField(primary_key=True)
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="+")
    day = models.DateField()
    sequence = models.ForeignKey(
        Sequence, on_delete=models.CASCADE, null=True, blank=True, related_name="+"
    )
    step_key = models.CharField(max_length=100, blank=True)
    broadcast = models.ForeignKey(
        Broadcast, on_delete=models.CASCADE, null=True, blank=True, related_name="+"
    )
    variant = models.PositiveSmallIntegerField(default=0)
    # Not a foreign key: a deleted stage leaves its messages' figures in place until the key
    # is recomputed (Message.stage becomes NULL then), and a FK would drop them at once.
    stage_id = models.UUIDField(null=True, blank=True)
    sent = models.PositiveIntegerField(default=0)
    bounced = models.PositiveIntegerField(default=0)
    opened = models.PositiveIntegerField(default=0)
    clicked = models.PositiveIntegerField(default=0)
    machine_opened = models.PositiveIntegerField(default=0)
    bot_clicked = models.PositiveIntegerField(default=0)
    complained = models.PositiveIntegerField(default=0)
    unsubscribed = models.PositiveIntegerField(default=0)
    converted = models.PositiveIntegerField(default=0)
    # The anonymous tracking mode stores opens and clicks per mail source, without the message
    # (tracking.Activity with message NULL): they cannot be told apart per mail or person, so
    # they are counted as events, on the UTC day they happened (there is no send day to put
    # them on). Human ones, and the machines' apart, like the milestones above.
    anonymous_opens = models.PositiveIntegerField(default=0)
    anonymous_clicks = models.PositiveIntegerField(default=0)
    anonymous_machine_opens = models.PositiveIntegerField(default=0)
    anonymous_bot_clicks = models.PositiveIntegerField(default=0)

    class Meta:
        verbose_name = _("daily message rollup")
        verbose_name_plural = _("daily message rollups")
        indexes = [
            models.Index(fields=["workspace", "day"], name="msgdaily_workspace_day"),
            models.Index(fields=["sequence", "day"], name="msgdaily_sequence_day"),
            models.Index(fields=["broadcast", "day"], name="msgdaily_broadcast_day"),
            models.Index(fields=["stage_id", "day"], name="msgdaily_stage_day"),
        ]

    def __str__(self) -> str:
        return f"{self.day} {self.sequence_id or self.broadcast_id} {self.step_key}/{self.variant}"


class StayOutcome(models.TextChoices):
    OPEN = "open", _("Still in the stage")
    ADVANCED = "advanced", _("Moved on to a later stage")
    WENT_BACK = "went_back", _("Moved back to an earlier stage")


class StageStay(models.Model):
    """One stay of a contact in a stage: from a stage transition into it to the next move in
    the same funnel. Its id is the transition's id; recomputed from the contact's transitions
    in that funnel whenever they change.

    converted: a goal conversion credited to this stage (funnel.Conversion.stage) happened
    during the stay.
    """

    id = models.UUIDField(primary_key=True, editable=False)
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="+")
    funnel = models.ForeignKey(Funnel, on_delete=models.CASCADE, related_name="+")
    stage = models.ForeignKey(Stage, on_delete=models.CASCADE, related_name="+")
    contact = models.ForeignKey(Contact, on_delete=models.CASCADE, related_name="+")
    entered_at = models.DateTimeField()
    day = models.DateField()
    # The first stay of the contact in this funnel (the move had no from-stage).
    entrant = models.BooleanField(default=False)
    left_at = models.DateTimeField(null=True, blank=True)
    outcome = models.CharField(max_length=10, choices=StayOutcome.choices)
    converted = models.BooleanField(default=False)
    duration_seconds = models.BigIntegerField(null=True, blank=True)

    class Meta:
        verbose_name = _("stage stay")
        verbose_name_plural = _("stage stays")
        indexes = [
            models.Index(fields=["funnel", "day"], name="stay_funnel_day"),
            models.Index(fields=["funnel", "contact"], name="stay_funnel_contact"),
            # The median time in a stage, where StageDurationDaily's buckets do not tell it:
            # the stays of one bucket's range, in duration order up to the middle one's rank
            # (a long period), or the period's days of the stage, sorted (a short one); the
            # planner picks by the period's share of the stays.
            models.Index(
                fields=["stage", "duration_seconds", "day"],
                condition=models.Q(duration_seconds__isnull=False),
                name="stay_stage_duration",
            ),
            models.Index(
                fields=["stage", "day", "duration_seconds"],
                condition=models.Q(duration_seconds__isnull=False),
                name="stay_stage_day_duration",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.contact_id} in {self.stage_id} from {self.entered_at:%Y-%m-%d}"


class StageDaily(models.Model):
    """Stays that began on one (UTC) day in one stage, by how they went on (cohort by entry
    day, like messages by send day)."""

    id = models.BigAutoField(primary_key=True)
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="+")
    funnel = models.ForeignKey(Funnel, on_delete=models.CASCADE, related_name="+")
    stage = models.ForeignKey(Stage, on_delete=models.CASCADE, related_name="+")
    day = models.DateField()
    entered = models.PositiveIntegerField(default=0)
    entrants = models.PositiveIntegerField(default=0)
    advanced = models.PositiveIntegerField(default=0)
    went_back = models.PositiveIntegerField(default=0)
    converted = models.PositiveIntegerField(default=0)
    # Advanced or converted (a purchase that also moves the contact on counts once).
    progressed = models.PositiveIntegerField(default=0)
    still_in = models.PositiveIntegerField(default=0)

    class Meta:
        verbose_name = _("daily stage rollup")
        verbose_name_plural = _("daily stage rollups")
        indexes = [models.Index(fields=["funnel", "day"], name="stagedaily_funnel_day")]

    def __str__(self) -> str:
        return f"{self.day} {self.stage_id}: {self.entered}"


class StageDurationDaily(models.Model):
    """The ended stays begun on one (UTC) day in one stage whose duration falls in one bucket
    (rollups.DURATION_BUCKETS, about 25 % wide): how many, the shortest and the longest.

    What makes the exact median time in stage cheap: summed over a period, the buckets tell
    which one holds the middle stay and its rank there; the shortest or longest is the answer
    when the rank is at an end or all durations in it are equal, otherwise one index read of
    StageStay within the bucket's range finds it. bucket is its lower bound in seconds.
    """

    id = models.BigAutoField(primary_key=True)
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="+")
    funnel = models.ForeignKey(Funnel, on_delete=models.CASCADE, related_name="+")
    stage = models.ForeignKey(Stage, on_delete=models.CASCADE, related_name="+")
    day = models.DateField()
    bucket = models.BigIntegerField()
    stays = models.PositiveIntegerField(default=0)
    shortest = models.BigIntegerField()
    longest = models.BigIntegerField()

    class Meta:
        verbose_name = _("daily stay-duration rollup")
        verbose_name_plural = _("daily stay-duration rollups")
        indexes = [models.Index(fields=["funnel", "day"], name="durationdaily_funnel_day")]

    def __str__(self) -> str:
        return f"{self.day} {self.stage_id} from {self.bucket} s: {self.stays}"


class ConversionDaily(models.Model):
    """Goal conversions of one funnel on one (UTC) day, per credited stage and currency, with
    their revenue (the sum of the goal events' values)."""

    id = models.BigAutoField(primary_key=True)
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="+")
    funnel = models.ForeignKey(Funnel, on_delete=models.CASCADE, related_name="+")
    stage_id = models.UUIDField(null=True, blank=True)
    day = models.DateField()
    currency = models.CharField(max_length=3, blank=True)
    conversions = models.PositiveIntegerField(default=0)
    # Conversions whose event carried a value (the denominator of the average order value).
    valued = models.PositiveIntegerField(default=0)
    revenue = models.DecimalField(max_digits=18, decimal_places=2, default=0)

    class Meta:
        verbose_name = _("daily conversion rollup")
        verbose_name_plural = _("daily conversion rollups")
        indexes = [models.Index(fields=["funnel", "day"], name="convdaily_funnel_day")]

    def __str__(self) -> str:
        return f"{self.day} {self.funnel_id}: {self.conversions}"


class DirtyKind(models.TextChoices):
    MESSAGES = "messages", _("Messages of a source on a day")
    STAYS = "stays", _("Stays of a contact in a funnel")
    FUNNEL_DAY = "funnel_day", _("Stages and conversions of a funnel on a day")


class DirtyKey(models.Model):
    """A rollup key whose figures changed and must be recomputed (rollups.rollups_refresh).

    Written in the transaction that changed the raw rows, so a committed change always leaves
    its mark. Plain inserts without a unique constraint: concurrent writers never wait for each
    other; duplicates are folded when the keys are claimed.
    """

    id = models.BigAutoField(primary_key=True)
    kind = models.CharField(max_length=12, choices=DirtyKind.choices)
    workspace_id = models.UUIDField()
    # MESSAGES: the sequence or broadcast; STAYS and FUNNEL_DAY: the funnel.
    object_id = models.UUIDField()
    is_broadcast = models.BooleanField(default=False)
    day = models.DateField(null=True, blank=True)
    contact_id = models.UUIDField(null=True, blank=True)
    marked_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = _("rollup key to recompute")
        verbose_name_plural = _("rollup keys to recompute")
        indexes = [models.Index(fields=["workspace_id", "id"], name="dirty_workspace")]

    def __str__(self) -> str:
        return f"{self.kind} {self.object_id} {self.day or self.contact_id}"


class RollupWatermark(models.Model):
    """How far the reconcile pass has looked at messages' sent_at (one row, name "sent")."""

    name = models.CharField(max_length=30, primary_key=True)
    until = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.name} until {self.until}"


class CampaignCost(models.Model):
    """Money spent on a sequence or a broadcast on a day (tools, design, list rental), the base
    of cost per acquisition and cost per impression."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="+")
    sequence = models.ForeignKey(
        Sequence, on_delete=models.CASCADE, null=True, blank=True, related_name="+"
    )
    broadcast = models.ForeignKey(
        Broadcast, on_delete=models.CASCADE, null=True, blank=True, related_name="+"
    )
    amount = models.DecimalField(
        _("amount"), max_digits=14, decimal_places=2, validators=[MinValueValidator(0)]
    )
    currency = models.CharField(_("currency"), max_length=3)
    spent_on = models.DateField(_("spent on"))
    note = models.CharField(_("note"), max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = _("campaign cost")
        verbose_name_plural = _("campaign costs")
        ordering = ["-spent_on", "-created_at"]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(sequence__isnull=True) ^ models.Q(broadcast__isnull=True),
                name="campaign_cost_one_campaign",
            ),
            models.CheckConstraint(condition=models.Q(amount__gte=0), name="campaign_cost_amount"),
        ]

    def __str__(self) -> str:
        return f"{self.amount} {self.currency} on {self.spent_on}"
