"""Funnels and their stages, each contact's place in them, touchpoint events, stage rules,
conversions, and the outgoing webhooks that tell other systems about it all."""

from __future__ import annotations

import uuid

from django.db import models
from django.utils.translation import gettext_lazy as _

from contacts.models import Contact
from core.models import Workspace


class FunnelPreset(models.TextChoices):
    AIDA = "aida", _("AIDA: attention, interest, desire, action")
    JOURNEY = "journey", _("Customer journey: awareness to advocacy")


class Funnel(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="funnels")
    name = models.CharField(_("name"), max_length=150)
    preset = models.CharField(  # noqa: DJ001  (API.md: "aida" | "journey" | null)
        _("preset"), max_length=20, choices=FunnelPreset.choices, null=True, blank=True
    )
    goal_event = models.CharField(
        _("conversion goal (event name)"),
        max_length=100,
        blank=True,
        help_text=_("An event with this name counts as a conversion, e.g. purchase."),
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = _("funnel")
        verbose_name_plural = _("funnels")
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Stage(models.Model):
    """A stage of a funnel. Renaming or reordering keeps its id, so history stays attached."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    funnel = models.ForeignKey(Funnel, on_delete=models.CASCADE, related_name="stages")
    name = models.CharField(_("name"), max_length=100)
    key = models.SlugField(_("key"), max_length=60)
    position = models.PositiveIntegerField(_("position"))

    class Meta:
        verbose_name = _("stage")
        verbose_name_plural = _("stages")
        ordering = ["funnel", "position"]
        constraints = [
            models.UniqueConstraint(fields=["funnel", "key"], name="stage_key_unique"),
        ]

    def __str__(self) -> str:
        return self.name


class ContactStage(models.Model):
    """The contact's current stage in one funnel (at most one per funnel)."""

    contact = models.ForeignKey(Contact, on_delete=models.CASCADE, related_name="funnel_stages")
    funnel = models.ForeignKey(Funnel, on_delete=models.CASCADE, related_name="memberships")
    stage = models.ForeignKey(Stage, on_delete=models.CASCADE, related_name="memberships")
    entered_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["contact", "funnel"], name="contact_stage_unique"),
        ]
        indexes = [models.Index(fields=["stage", "-entered_at"], name="contact_stage_board")]

    def __str__(self) -> str:
        return f"{self.contact_id} in {self.stage_id}"


class TransitionCause(models.TextChoices):
    RULE = "rule", _("Stage rule")
    EVENT = "event", _("Event")
    MANUAL = "manual", _("Moved by hand")
    SEQUENCE_STEP = "sequence_step", _("Sequence step")
    API = "api", _("API")


class StageTransition(models.Model):
    """One move of a contact in a funnel: forward, backward, skipping, or entering."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="+")
    funnel = models.ForeignKey(Funnel, on_delete=models.CASCADE, related_name="transitions")
    contact = models.ForeignKey(Contact, on_delete=models.CASCADE, related_name="stage_transitions")
    from_stage = models.ForeignKey(
        Stage, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    # RESTRICT: a stage with history cannot be deleted on its own (rename or move it); deleting
    # the whole funnel takes its history with it.
    to_stage = models.ForeignKey(Stage, on_delete=models.RESTRICT, related_name="transitions_in")
    occurred_at = models.DateTimeField()
    cause = models.CharField(max_length=20, choices=TransitionCause.choices)
    # What caused it: a rule id, an event id, "user:<id>", a sequence step, an API key prefix.
    cause_detail = models.CharField(max_length=200, blank=True)
    reason = models.CharField(max_length=500, blank=True)

    class Meta:
        ordering = ["-occurred_at"]
        indexes = [
            models.Index(fields=["funnel", "occurred_at"], name="transition_funnel_time"),
            models.Index(fields=["contact", "-occurred_at"], name="transition_contact_time"),
        ]

    def __str__(self) -> str:
        return f"{self.from_stage_id} -> {self.to_stage_id}"


class Event(models.Model):
    """A touchpoint: something a contact did in any channel (purchase, demo booked, ...)."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="+")
    contact = models.ForeignKey(Contact, on_delete=models.CASCADE, related_name="events")
    name = models.CharField(max_length=100)
    properties = models.JSONField(default=dict, blank=True)
    value = models.DecimalField(max_digits=14, decimal_places=2, null=True, blank=True)
    currency = models.CharField(max_length=3, blank=True)
    occurred_at = models.DateTimeField()
    received_at = models.DateTimeField(auto_now_add=True)
    source = models.CharField(max_length=100, blank=True)
    channel = models.CharField(max_length=50, blank=True)
    # NULL, not "": many events have none, and the unique constraint applies only to set ones.
    external_id = models.CharField(max_length=200, null=True, blank=True)  # noqa: DJ001
    processed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-occurred_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["workspace", "external_id"],
                condition=models.Q(external_id__isnull=False),
                name="event_external_id_unique",
            ),
        ]
        indexes = [
            models.Index(fields=["workspace", "name", "occurred_at"], name="event_ws_name_time"),
            models.Index(fields=["contact", "-occurred_at"], name="event_contact_time"),
            models.Index(
                fields=["received_at"],
                condition=models.Q(processed_at__isnull=True),
                name="event_unprocessed",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.occurred_at:%Y-%m-%d})"


class StageRule(models.Model):
    """When an event (with property conditions) or a click on a sequence step happens, move
    the contact to a stage."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    funnel = models.ForeignKey(Funnel, on_delete=models.CASCADE, related_name="rules")
    # {"event": "demo_booked", "where": {"plan": "pro"}} or {"clicked_step": "<step id>"}
    when = models.JSONField()
    move_to = models.ForeignKey(Stage, on_delete=models.CASCADE, related_name="rules")
    position = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["funnel", "position", "created_at"]

    def __str__(self) -> str:
        return f"{self.when} -> {self.move_to_id}"


class Conversion(models.Model):
    """A contact reached the funnel's goal: one per goal event."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    funnel = models.ForeignKey(Funnel, on_delete=models.CASCADE, related_name="conversions")
    contact = models.ForeignKey(Contact, on_delete=models.CASCADE, related_name="conversions")
    event = models.ForeignKey(Event, on_delete=models.CASCADE, related_name="conversions")
    stage = models.ForeignKey(
        Stage, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    value = models.DecimalField(max_digits=14, decimal_places=2, null=True, blank=True)
    currency = models.CharField(max_length=3, blank=True)
    occurred_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["funnel", "event"], name="conversion_once_per_event"),
        ]
        indexes = [models.Index(fields=["funnel", "occurred_at"], name="conversion_funnel_time")]

    def __str__(self) -> str:
        return f"{self.contact_id} converted in {self.funnel_id}"


class WebhookEndpoint(models.Model):
    """An outgoing webhook: a URL, the event types it wants, and the secret that signs them."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="webhooks")
    url = models.URLField(_("URL"), max_length=2000)
    events = models.JSONField(_("event types"), default=list)
    # Needed in clear to sign every delivery; shown to the user once, at creation.
    secret = models.CharField(max_length=100)
    enabled = models.BooleanField(default=True)
    disabled_reason = models.TextField(blank=True)
    failing_since = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at"]

    def __str__(self) -> str:
        return self.url


class DeliveryStatus(models.TextChoices):
    PENDING = "pending", _("Pending")
    SUCCEEDED = "succeeded", _("Delivered")
    RETRYING = "retrying", _("Failed, will retry")
    FAILED = "failed", _("Failed for good")


class WebhookDelivery(models.Model):
    """One event for one endpoint, tried until it succeeds or 24 hours have passed."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    endpoint = models.ForeignKey(
        WebhookEndpoint, on_delete=models.CASCADE, related_name="deliveries"
    )
    event_type = models.CharField(max_length=50)
    payload = models.JSONField()
    status = models.CharField(
        max_length=20, choices=DeliveryStatus.choices, default=DeliveryStatus.PENDING
    )
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(
                fields=["next_attempt_at"],
                condition=models.Q(status__in=["pending", "retrying"]),
                name="delivery_due",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.event_type} -> {self.endpoint_id}"


class WebhookAttempt(models.Model):
    """One HTTP attempt of a delivery: what came back, shown in the delivery log."""

    delivery = models.ForeignKey(
        WebhookDelivery, on_delete=models.CASCADE, related_name="attempt_log"
    )
    attempted_at = models.DateTimeField()
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    error = models.CharField(max_length=500, blank=True)
    response_excerpt = models.CharField(max_length=500, blank=True)
    duration_ms = models.PositiveIntegerField(default=0)

    class Meta:
        ordering = ["-attempted_at"]

    def __str__(self) -> str:
        return f"{self.status_code or self.error}"


class ShopifyIntegration(models.Model):
    """A Shopify shop sending orders/create webhooks to this workspace."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="+")
    name = models.CharField(_("name"), max_length=150)
    # The shop's webhook signing secret (from Shopify's admin), needed to verify each request.
    secret = models.CharField(_("webhook signing secret"), max_length=200)
    event_name = models.CharField(_("event name"), max_length=100, default="purchase")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name
