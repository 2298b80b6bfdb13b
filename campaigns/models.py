"""Sequences (multi-step, reactive), enrollments of contacts in them, broadcasts, and the
messages both send: one Message row per (enrollment, step) and per (broadcast, contact)."""

from __future__ import annotations

import uuid

from django.db import models
from django.utils.translation import gettext_lazy as _

from contacts.models import Contact, MailingList, Segment
from core.models import Workspace
from funnel.models import Funnel, Stage


class SequenceStatus(models.TextChoices):
    DRAFT = "draft", _("Draft")
    ACTIVE = "active", _("Active")
    PAUSED = "paused", _("Paused")
    ARCHIVED = "archived", _("Archived")


class Reentry(models.TextChoices):
    NEVER = "never", _("Never: once per contact")
    AFTER_EXIT = "after_exit", _("Again after the previous run ended")
    ALWAYS = "always", _("Always: a new entry restarts a run still going")


class Sequence(models.Model):
    """A graph of steps attached to a funnel, with its trigger, goals and send window.

    `steps` holds the graph in the JSON shape of API.md, validated by campaigns.graph;
    `version` grows with every change so rendered templates can be cached per version.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="sequences")
    funnel = models.ForeignKey(
        Funnel, on_delete=models.SET_NULL, null=True, blank=True, related_name="sequences"
    )
    name = models.CharField(_("name"), max_length=150)
    status = models.CharField(
        max_length=20, choices=SequenceStatus.choices, default=SequenceStatus.DRAFT
    )
    trigger = models.JSONField(default=dict)
    exit_on = models.JSONField(default=list, blank=True)
    reentry = models.CharField(max_length=20, choices=Reentry.choices, default=Reentry.NEVER)
    send_window = models.JSONField(null=True, blank=True)
    steps = models.JSONField(default=list)
    # UTM parameters added to every link of its mails that lacks them, e.g. {"utm_source":
    # "funnelwerk", "utm_medium": "email", "utm_campaign": "welcome"}.
    utm = models.JSONField(default=dict, blank=True)
    version = models.PositiveIntegerField(default=1)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = _("sequence")
        verbose_name_plural = _("sequences")
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class EnrollmentStatus(models.TextChoices):
    ACTIVE = "active", _("Active")
    COMPLETED = "completed", _("Completed")
    EXITED = "exited", _("Exited")
    CONVERTED = "converted", _("Converted")
    FAILED = "failed", _("Failed")


class Enrollment(models.Model):
    """One contact's run through one sequence. State lives here, not in Celery: a beat tick
    claims enrollments whose next_run_at is due."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="+")
    sequence = models.ForeignKey(Sequence, on_delete=models.CASCADE, related_name="enrollments")
    contact = models.ForeignKey(Contact, on_delete=models.CASCADE, related_name="enrollments")
    status = models.CharField(
        max_length=20, choices=EnrollmentStatus.choices, default=EnrollmentStatus.ACTIVE
    )
    current_step = models.CharField(max_length=100, blank=True)
    next_run_at = models.DateTimeField(null=True, blank=True)
    # When the current step began (a wait_for's timeout counts from here).
    step_started_at = models.DateTimeField(null=True, blank=True)
    entered_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    exit_reason = models.CharField(max_length=200, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["sequence", "contact"],
                condition=models.Q(status="active"),
                name="enrollment_one_active_per_contact",
            ),
        ]
        indexes = [
            models.Index(
                fields=["next_run_at"],
                condition=models.Q(status="active"),
                name="enrollment_due",
            ),
            models.Index(fields=["contact", "status"], name="enrollment_contact_status"),
        ]

    def __str__(self) -> str:
        return f"{self.contact_id} in {self.sequence_id} at {self.current_step}"


class BroadcastStatus(models.TextChoices):
    DRAFT = "draft", _("Draft")
    SCHEDULED = "scheduled", _("Scheduled")
    SENDING = "sending", _("Sending")
    PAUSED = "paused", _("Paused")
    SENT = "sent", _("Sent")
    CANCELLED = "cancelled", _("Cancelled")


class Broadcast(models.Model):
    """A one-off mail to a list or a segment, now or at a time (campaigns/broadcasts.py)."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="broadcasts")
    name = models.CharField(_("name"), max_length=150)
    mailing_list = models.ForeignKey(
        MailingList, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    segment = models.ForeignKey(
        Segment, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    subject = models.CharField(max_length=300, blank=True)
    html = models.TextField(blank=True)
    variants = models.JSONField(default=list, blank=True)
    utm = models.JSONField(default=dict, blank=True)
    send_at = models.DateTimeField(null=True, blank=True)
    local_time = models.BooleanField(default=False)
    ab_test = models.JSONField(null=True, blank=True)
    status = models.CharField(
        max_length=20, choices=BroadcastStatus.choices, default=BroadcastStatus.DRAFT
    )
    # How many contacts the audience had when sending started (the whole audience, also while
    # an A/B test mails only its sample).
    audience_count = models.PositiveIntegerField(default=0)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    # A/B test: when the winner is due to be decided (the sample's last send + the wait), the
    # winning variant (0 = the broadcast's own content) and whether nothing told them apart.
    ab_decide_at = models.DateTimeField(null=True, blank=True)
    winner = models.PositiveSmallIntegerField(null=True, blank=True)
    winner_by_chance = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(
                fields=["ab_decide_at"],
                condition=models.Q(winner__isnull=True, ab_decide_at__isnull=False),
                name="broadcast_ab_due",
            ),
        ]

    def __str__(self) -> str:
        return self.name


class MessageStatus(models.TextChoices):
    QUEUED = "queued", _("Queued")
    SENDING = "sending", _("Being handed to the mail service")
    SENT = "sent", _("Sent")
    RETRYING = "retrying", _("Temporary failure, will retry")
    FAILED = "failed", _("Failed")
    CANCELLED = "cancelled", _("Cancelled")


class Message(models.Model):
    """One mail to one contact from one sequence step or broadcast (and variant).

    Created before the send; the unique constraints make sending exactly-once in effect.
    `esp_accepted_at` is written only after the transport accepted the mail: a retry sends
    only messages without it.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="+")
    # contact, enrollment and broadcast are the first columns of message_contact_sent and of
    # the two unique constraints: no index of their own (every send inserts into each index).
    contact = models.ForeignKey(
        Contact, on_delete=models.CASCADE, related_name="messages", db_index=False
    )
    enrollment = models.ForeignKey(
        Enrollment,
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="messages",
        db_index=False,
    )
    step_key = models.CharField(max_length=100, blank=True)
    broadcast = models.ForeignKey(
        Broadcast,
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="messages",
        db_index=False,
    )
    variant = models.PositiveSmallIntegerField(default=0)
    stage = models.ForeignKey(
        Stage, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    subject = models.CharField(max_length=500, blank=True)
    status = models.CharField(
        max_length=20, choices=MessageStatus.choices, default=MessageStatus.QUEUED
    )
    attempts = models.PositiveSmallIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True)
    esp_message_id = models.CharField(max_length=255, blank=True)
    esp_accepted_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    opened_at = models.DateTimeField(null=True, blank=True)
    clicked_at = models.DateTimeField(null=True, blank=True)
    # Activity from machines, kept apart from the human milestones above (DESIGN: machine opens
    # and bot clicks are stored but flagged; rates use human activity only).
    machine_opened_at = models.DateTimeField(null=True, blank=True)
    bot_clicked_at = models.DateTimeField(null=True, blank=True)
    bounced_at = models.DateTimeField(null=True, blank=True)
    complained_at = models.DateTimeField(null=True, blank=True)
    unsubscribed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["enrollment", "step_key"],
                condition=models.Q(enrollment__isnull=False),
                name="message_once_per_enrollment_step",
            ),
            models.UniqueConstraint(
                fields=["broadcast", "contact"],
                condition=models.Q(broadcast__isnull=False),
                name="message_once_per_broadcast_contact",
            ),
        ]
        indexes = [
            models.Index(fields=["contact", "-sent_at"], name="message_contact_sent"),
            # ESP webhooks find their messages by the id the ESP gave at acceptance.
            models.Index(
                fields=["esp_message_id"],
                name="message_esp_id",
                condition=~models.Q(esp_message_id=""),
            ),
            models.Index(
                fields=["next_attempt_at"],
                condition=models.Q(status__in=["queued", "retrying"]),
                name="message_due",
            ),
            # The complaint-rate guard counts a workspace's complaints of the last day.
            models.Index(
                fields=["workspace", "complained_at"],
                condition=models.Q(complained_at__isnull=False),
                name="message_complaints",
            ),
            # Messages a dead worker left behind (campaigns.sending.messages_recover_stuck).
            models.Index(
                fields=["next_attempt_at"],
                condition=models.Q(status="sending"),
                name="message_sending",
            ),
        ]

    def __str__(self) -> str:
        return self.subject


class SegmentMembership(models.Model):
    """Whether a contact was in the segment of a segment-triggered sequence at the last scan.

    The segment scan (campaigns.engine.segment_scan) compares a segment's members now with
    these rows: a member without a present row has joined (a run starts if the re-entry policy
    lets it), a present row whose contact is no longer a member has left (left_at is set), so
    leaving and joining again is seen as a new entry. Kept per sequence, not per segment: each
    sequence sees entries from the moment it scans.
    """

    sequence = models.ForeignKey(
        Sequence, on_delete=models.CASCADE, related_name="segment_memberships"
    )
    contact = models.ForeignKey(Contact, on_delete=models.CASCADE, related_name="+")
    joined_at = models.DateTimeField()
    left_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["sequence", "contact"], name="segment_membership_once_per_sequence"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.contact_id} in the segment of {self.sequence_id}"


class StepWebhookStatus(models.TextChoices):
    PENDING = "pending", _("Pending")
    RETRYING = "retrying", _("Failed, will retry")
    DELIVERED = "delivered", _("Delivered")
    FAILED = "failed", _("Failed for good")


class StepWebhookDelivery(models.Model):
    """The POST of a sequence's webhook step for one run, tried until the receiver answers
    2xx or 24 hours have passed (campaigns/step_webhooks.py).

    One row per (enrollment, step), like a Message: however often a tick runs, one call is
    owed. The body is built at each try from the run and its contact (nothing personal is
    stored here); `error` is the last failure as a person can read it.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="+")
    enrollment = models.ForeignKey(
        Enrollment, on_delete=models.CASCADE, related_name="webhook_deliveries"
    )
    step_key = models.CharField(max_length=100)
    status = models.CharField(
        max_length=20, choices=StepWebhookStatus.choices, default=StepWebhookStatus.PENDING
    )
    attempts = models.PositiveSmallIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    last_status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["enrollment", "step_key"], name="step_webhook_once_per_enrollment_step"
            ),
        ]
        indexes = [
            models.Index(
                fields=["next_attempt_at"],
                condition=models.Q(status__in=["pending", "retrying"]),
                name="step_webhook_due",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.step_key} of {self.enrollment_id}: {self.status}"
