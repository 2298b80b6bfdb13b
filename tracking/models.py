"""What recipients did with a mail and what the mail service reported about it.

One Activity row per open, click or ESP event, machines included (flagged by `actor`). The
human first-time milestones live on campaigns.Message (opened_at, clicked_at, ...); rates and
reactions read those, reports show the machine rows beside them.
"""

from __future__ import annotations

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
    # buffer or webhook inserts nothing new.
    key = models.CharField(max_length=200, unique=True)
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="+")
    # Null in the anonymous tracking mode: counted per mail and link, not tied to a contact.
    message = models.ForeignKey(
        Message, on_delete=models.CASCADE, null=True, blank=True, related_name="activities"
    )
    sequence = models.ForeignKey(
        Sequence, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    step_key = models.CharField(max_length=100, blank=True)
    broadcast = models.ForeignKey(
        Broadcast, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
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
        indexes = [
            models.Index(fields=["message", "kind", "occurred_at"], name="activity_message_kind"),
            models.Index(fields=["workspace", "occurred_at"], name="activity_workspace_time"),
        ]

    def __str__(self) -> str:
        return f"{self.kind} {self.actor} {self.occurred_at:%Y-%m-%d %H:%M}"
