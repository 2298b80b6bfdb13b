"""What recipients did with a mail and what the mail service reported about it.

One Activity row per open, click or ESP event, machines included (flagged by `actor`). The
human first-time milestones live on campaigns.Message (opened_at, clicked_at, ...); rates and
reactions read those, reports show the machine rows beside them.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from django.db import models
from django.utils.translation import gettext_lazy as _

from campaigns.models import Broadcast, Message, Sequence
from core.models import Workspace


class ActivityKind(models.TextChoices):
    OPEN = "open", _("Open")
    CLICK = "click", _("Click")
    DELIVERED = "delivered", _("Delivered")
    BOUNCED = "bounced", _("Bounced")
    SOFT_BOUNCED = "soft_bounced", _("Soft bounce")
    DEFERRED = "deferred", _("Deferred")
    COMPLAINED = "complained", _("Complaint")
    UNSUBSCRIBED = "unsubscribed", _("Unsubscribed")


class Actor(models.TextChoices):
    """Who did it, as classified by tracking.classification (opens and clicks only)."""

    HUMAN = "human", _("Person")
    MACHINE = "machine", _("Machine open")
    BOT = "bot", _("Bot click")
    SERVICE = "service", _("Mail service")


class Origin(models.TextChoices):
    PIXEL = "pixel", _("Open pixel")
    REDIRECT = "redirect", _("Click redirect")
    ESP = "esp", _("Mail service")


class Activity(models.Model):
    id = models.BigAutoField(primary_key=True)
    # Dedupe key: the hot path's event id, or "esp:<esp>:<event id>" for ESP events. A replayed
    # buffer or webhook inserts nothing new. (Unique by a constraint, see Meta.)
    key = models.CharField(max_length=200)
    # The foreign keys have the indexes of Meta, not one each (see there).
    workspace = models.ForeignKey(
        Workspace, on_delete=models.CASCADE, related_name="+", db_index=False
    )
    # Null in the anonymous tracking mode: counted per mail and link, not tied to a contact.
    message = models.ForeignKey(
        Message,
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="activities",
        db_index=False,
    )
    sequence = models.ForeignKey(
        Sequence, on_delete=models.SET_NULL, null=True, blank=True, related_name="+", db_index=False
    )
    step_key = models.CharField(max_length=100, blank=True)
    broadcast = models.ForeignKey(
        Broadcast,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        db_index=False,
    )
    variant = models.PositiveSmallIntegerField(default=0)
    kind = models.CharField(max_length=20, choices=ActivityKind.choices)
    origin = models.CharField(max_length=10, choices=Origin.choices)
    actor = models.CharField(max_length=10, choices=Actor.choices)
    # The classification rules' version that set `actor` (tracking.classification.VERSION).
    rules_version = models.PositiveSmallIntegerField(default=0)
    reason = models.CharField(max_length=100, blank=True)
    link_index = models.SmallIntegerField(null=True, blank=True)
    url = models.TextField(blank=True)
    occurred_at = models.DateTimeField()
    recorded_at = models.DateTimeField(auto_now_add=True)
    method = models.CharField(max_length=8, blank=True)
    user_agent = models.CharField(max_length=500, blank=True)
    # Truncated: /24 for IPv4, /48 for IPv6.
    ip = models.CharField(max_length=64, blank=True)
    esp = models.CharField(max_length=40, blank=True)
    # What the mail service said (bounce text, SMTP response): shown escaped.
    detail = models.TextField(blank=True)

    class Meta:
        verbose_name = _("activity")
        verbose_name_plural = _("activities")
        # The table takes every open, click and ESP event, so each index costs on every write
        # (bench/webhooks.py): no index that another one covers. The key's unique constraint
        # without the LIKE index Django adds to a unique CharField; the message and the
        # workspace are the first columns of the two composite indexes; a sequence's or a
        # broadcast's activity (found when one is deleted) is a partial index each, without
        # the rows of the other kind of mail.
        constraints = [models.UniqueConstraint(fields=["key"], name="activity_key_unique")]
        indexes = [
            models.Index(fields=["message", "kind", "occurred_at"], name="activity_message_kind"),
            models.Index(fields=["workspace", "occurred_at"], name="activity_workspace_time"),
            models.Index(
                fields=["sequence"],
                name="activity_sequence",
                condition=models.Q(sequence__isnull=False),
            ),
            models.Index(
                fields=["broadcast"],
                name="activity_broadcast",
                condition=models.Q(broadcast__isnull=False),
            ),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.actor} {self.occurred_at:%Y-%m-%d %H:%M}"


@dataclass(slots=True)
class ActivityRow:
    """The column values of one Activity row to be inserted by the bulk writers
    (tracking.ingest.activities_insert): a model instance costs more to build than the insert
    of its row (Model.__init__ and its pre_init/post_init signals). Attribute names are the
    model's attnames; tests keep the two in step."""

    key: str
    workspace_id: uuid.UUID
    message_id: uuid.UUID | None
    sequence_id: uuid.UUID | None
    step_key: str
    broadcast_id: uuid.UUID | None
    variant: int
    kind: str
    origin: str
    actor: str
    occurred_at: datetime
    rules_version: int = 0
    reason: str = ""
    link_index: int | None = None
    url: str = ""
    recorded_at: datetime | None = None
    method: str = ""
    user_agent: str = ""
    ip: str = ""
    esp: str = ""
    detail: str = ""
