"""Contacts, their tags, proof of consent, and the suppression list."""

from __future__ import annotations

import hashlib
import uuid

from django.conf import settings
from django.db import models
from django.utils.translation import gettext_lazy as _

from core.models import Workspace


class ContactStatus(models.TextChoices):
    NOT_SUBSCRIBED = "not_subscribed", _("Not subscribed")
    PENDING = "pending", _("Pending confirmation")
    SUBSCRIBED = "subscribed", _("Subscribed")
    UNSUBSCRIBED = "unsubscribed", _("Unsubscribed")
    BOUNCED = "bounced", _("Bounced")
    COMPLAINED = "complained", _("Complained")


# Statuses that a person or the mail system reached; only a new double opt-in leaves them.
SUPPRESSING_STATUSES = frozenset(
    {ContactStatus.UNSUBSCRIBED, ContactStatus.BOUNCED, ContactStatus.COMPLAINED}
)


class Tag(models.Model):
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="tags")
    name = models.CharField(_("name"), max_length=100)

    class Meta:
        verbose_name = _("tag")
        verbose_name_plural = _("tags")
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(fields=["workspace", "name"], name="tag_unique_per_workspace"),
        ]

    def __str__(self) -> str:
        return self.name


class ContactQuerySet(models.QuerySet["Contact"]):
    def for_workspace(self, workspace: Workspace | uuid.UUID) -> ContactQuerySet:
        return self.filter(workspace=workspace)

    def subscribed(self) -> ContactQuerySet:
        return self.filter(status=ContactStatus.SUBSCRIBED)


class Contact(models.Model):
    """A person the workspace knows. Email is stored normalised and lower-cased (see docs)."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="contacts")
    email = models.EmailField(_("email address"), max_length=320)
    first_name = models.CharField(_("first name"), max_length=150, blank=True)
    last_name = models.CharField(_("last name"), max_length=150, blank=True)
    locale = models.CharField(_("language"), max_length=10, blank=True)
    timezone = models.CharField(_("time zone"), max_length=64, blank=True)
    attributes = models.JSONField(_("attributes"), default=dict, blank=True)
    tags = models.ManyToManyField(Tag, related_name="contacts", blank=True)
    status = models.CharField(
        _("status"),
        max_length=20,
        choices=ContactStatus.choices,
        default=ContactStatus.NOT_SUBSCRIBED,
    )
    source = models.CharField(_("source"), max_length=200, blank=True)
    score = models.IntegerField(_("score"), default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    confirmed_at = models.DateTimeField(null=True, blank=True)
    unsubscribed_at = models.DateTimeField(null=True, blank=True)
    # Double opt-in: the nonce inside the confirmation link (rotated when it is used, so a link
    # works once), when the person last asked, and when we last mailed a confirmation (at most
    # one per address per 10 minutes, whatever the number of lists or forms).
    confirmation_nonce = models.CharField(max_length=32, blank=True)
    confirmation_requested_at = models.DateTimeField(null=True, blank=True)
    confirmation_sent_at = models.DateTimeField(null=True, blank=True)
    confirmation_reminded_at = models.DateTimeField(null=True, blank=True)

    objects = ContactQuerySet.as_manager()

    class Meta:
        verbose_name = _("contact")
        verbose_name_plural = _("contacts")
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["workspace", "email"], name="contact_email_unique_per_workspace"
            ),
            models.CheckConstraint(
                condition=models.Q(status__in=ContactStatus.values), name="contact_status_valid"
            ),
        ]
        indexes = [
            models.Index(fields=["workspace", "status"], name="contact_ws_status"),
            models.Index(fields=["workspace", "-created_at"], name="contact_ws_created"),
        ]

    def __str__(self) -> str:
        return self.email

    @property
    def full_name(self) -> str:
        return " ".join(part for part in (self.first_name, self.last_name) if part)


class MailingList(models.Model):
    """Something one subscribes to (newsletter, product news). API.md calls it a list."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="lists")
    name = models.CharField(_("name"), max_length=150)
    description = models.TextField(
        _("description"), blank=True, help_text=_("Shown on the preference page.")
    )
    double_opt_in = models.BooleanField(_("double opt-in"), default=True)
    # Per language, an optional replacement of the built-in confirmation mail:
    # {"de": {"subject": "...", "body": "... {confirm_url} ..."}}.
    confirmation_templates = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = _("list")
        verbose_name_plural = _("lists")
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(fields=["workspace", "name"], name="list_name_unique"),
        ]

    def __str__(self) -> str:
        return self.name


class SubscriptionStatus(models.TextChoices):
    PENDING = "pending", _("Pending confirmation")
    SUBSCRIBED = "subscribed", _("Subscribed")
    UNSUBSCRIBED = "unsubscribed", _("Unsubscribed")
    EXPIRED = "expired", _("Expired unconfirmed")


class Subscription(models.Model):
    """One contact on one list."""

    contact = models.ForeignKey(Contact, on_delete=models.CASCADE, related_name="subscriptions")
    mailing_list = models.ForeignKey(
        MailingList, on_delete=models.CASCADE, related_name="subscriptions"
    )
    status = models.CharField(max_length=20, choices=SubscriptionStatus.choices)
    source = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    # When this list's double opt-in was last asked for: each pending request expires on its own.
    requested_at = models.DateTimeField(null=True, blank=True)
    confirmed_at = models.DateTimeField(null=True, blank=True)
    unsubscribed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["contact", "mailing_list"], name="subscription_unique"),
        ]
        indexes = [models.Index(fields=["mailing_list", "status"], name="subscription_list_status")]

    def __str__(self) -> str:
        return f"{self.contact_id} on {self.mailing_list_id}: {self.status}"


class ConsentText(models.Model):
    """One version of a consent text, immutable: proofs point at the exact words shown."""

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="+")
    text = models.TextField()
    digest = models.CharField(max_length=64)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["workspace", "digest"], name="consent_text_unique_per_workspace"
            ),
        ]

    def __str__(self) -> str:
        return self.text[:60]

    @staticmethod
    def digest_of(text: str) -> str:
        return hashlib.sha256(text.encode()).hexdigest()


class ConsentKind(models.TextChoices):
    SIGNUP = "signup", _("Signup")
    CONFIRMATION = "confirmation", _("Confirmation")
    UNSUBSCRIBE = "unsubscribe", _("Unsubscribe")
    PREFERENCE_CHANGE = "preference_change", _("Preference change")
    RECORDED = "recorded", _("Consent recorded by API or import")


class ConsentRecord(models.Model):
    """Append-only proof of a consent event. Never updated; erased only with its contact."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="+")
    contact = models.ForeignKey(Contact, on_delete=models.CASCADE, related_name="consent_records")
    kind = models.CharField(max_length=20, choices=ConsentKind.choices)
    occurred_at = models.DateTimeField()
    recorded_at = models.DateTimeField(auto_now_add=True)
    ip_address = models.GenericIPAddressField(null=True, blank=True)
    user_agent = models.TextField(blank=True)
    consent_text = models.ForeignKey(
        ConsentText, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    privacy_policy_url = models.URLField(blank=True)
    mailing_list = models.ForeignKey(
        MailingList, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    signup_form = models.ForeignKey(
        "SignupForm", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    page_url = models.TextField(blank=True)
    utm = models.JSONField(default=dict, blank=True)
    source = models.CharField(max_length=200, blank=True)
    recorded_by = models.CharField(
        max_length=200, blank=True, help_text=_("API key, user or form that recorded it")
    )

    class Meta:
        ordering = ["-occurred_at"]

    def __str__(self) -> str:
        return f"{self.kind} {self.occurred_at:%Y-%m-%d}"


class SuppressionReason(models.TextChoices):
    UNSUBSCRIBED = "unsubscribed", _("Unsubscribed from everything")
    BOUNCED = "bounced", _("Hard bounce")
    COMPLAINED = "complained", _("Spam complaint")
    ERASED = "erased", _("Personal data erased")


class Suppression(models.Model):
    """An address that must never be mailed again, kept as a hash so erasure can't undo it."""

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="+")
    email_hash = models.CharField(max_length=64)
    reason = models.CharField(max_length=20, choices=SuppressionReason.choices)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["workspace", "email_hash"], name="suppression_unique_per_workspace"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.email_hash[:12]}… ({self.reason})"

    @staticmethod
    def hash_email(email: str) -> str:
        return hashlib.sha256(email.strip().lower().encode()).hexdigest()


class SignupForm(models.Model):
    """A signup form feeding one list: hosted at /f/{id}/ and embeddable as plain HTML."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="forms")
    name = models.CharField(_("name"), max_length=150)
    mailing_list = models.ForeignKey(
        MailingList, on_delete=models.PROTECT, related_name="forms", verbose_name=_("list")
    )
    # [{"name": "first_name" | "last_name" | "attributes.<key>", "label": "...", "required": bool}]
    fields = models.JSONField(default=list, blank=True)
    consent_text = models.ForeignKey(
        ConsentText, on_delete=models.PROTECT, related_name="+", verbose_name=_("consent text")
    )
    privacy_policy_url = models.URLField(_("privacy policy URL"))
    success_url = models.URLField(_("after signing up, go to"), blank=True)
    confirmed_url = models.URLField(_("after confirming, go to"), blank=True)
    locale = models.CharField(
        _("language"), max_length=10, choices=settings.LANGUAGES, default="en"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = _("signup form")
        verbose_name_plural = _("signup forms")
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Segment(models.Model):
    """A saved filter over contacts (the grammar of API.md, compiled in contacts/segments.py)."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="segments")
    name = models.CharField(_("name"), max_length=150)
    filter = models.JSONField(default=dict)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = _("segment")
        verbose_name_plural = _("segments")
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class ImportStatus(models.TextChoices):
    UPLOADED = "uploaded", _("Uploaded, waiting for the column mapping")
    QUEUED = "queued", _("Queued")
    RUNNING = "running", _("Running")
    COMPLETED = "completed", _("Completed")
    FAILED = "failed", _("Failed")


class ContactImport(models.Model):
    """A CSV upload and the progress of importing it."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="+")
    created_by = models.CharField(max_length=200, blank=True)
    file = models.FileField(upload_to="imports/%Y/%m/")
    original_name = models.CharField(max_length=255, blank=True)
    encoding = models.CharField(max_length=20, blank=True)
    delimiter = models.CharField(max_length=1, blank=True)
    headers = models.JSONField(default=list, blank=True)
    # CSV column -> contact field ("email", "first_name", "attributes.city", "consent_at", ...)
    mapping = models.JSONField(default=dict, blank=True)
    tags = models.JSONField(default=list, blank=True)
    mailing_list = models.ForeignKey(
        MailingList, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    status = models.CharField(
        max_length=20, choices=ImportStatus.choices, default=ImportStatus.UPLOADED
    )
    total = models.PositiveIntegerField(default=0)
    processed = models.PositiveIntegerField(default=0)
    created = models.PositiveIntegerField(default=0)
    updated = models.PositiveIntegerField(default=0)
    failed = models.PositiveIntegerField(default=0)
    failure_reason = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return self.original_name or str(self.id)


class ContactImportError(models.Model):
    """One bad row of an import: its number in the file and why it was not imported."""

    contact_import = models.ForeignKey(
        ContactImport, on_delete=models.CASCADE, related_name="errors"
    )
    row = models.PositiveIntegerField()
    message = models.TextField()

    class Meta:
        ordering = ["row"]

    def __str__(self) -> str:
        return f"row {self.row}: {self.message}"
