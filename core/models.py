"""Workspaces (tenants), their users and roles, API keys, and the local outbox."""

from __future__ import annotations

import uuid
from typing import ClassVar

from django.conf import settings
from django.contrib.auth.base_user import AbstractBaseUser, BaseUserManager
from django.contrib.auth.models import PermissionsMixin
from django.db import models
from django.db.models.functions import Lower
from django.utils import timezone
from django.utils.translation import gettext_lazy as _


class Role(models.TextChoices):
    """A member's role; each includes everything the roles below it may do."""

    VIEWER = "viewer", _("Viewer")
    EDITOR = "editor", _("Editor")
    ADMIN = "admin", _("Admin")
    OWNER = "owner", _("Owner")

    @classmethod
    def rank(cls, role: str) -> int:
        return [cls.VIEWER, cls.EDITOR, cls.ADMIN, cls.OWNER].index(cls(role))

    @classmethod
    def allows(cls, role: str, required: str) -> bool:
        """True when `role` may do what `required` may do."""
        return cls.rank(role) >= cls.rank(required)


class UserManager(BaseUserManager["User"]):
    use_in_migrations = True

    def create_user(self, email: str, password: str | None = None, **extra: object) -> User:
        user = self.model(email=self.normalize_email(email).lower(), **extra)
        user.set_password(password)
        user.save(using=self._db)
        return user

    def get_by_natural_key(self, username: str | None) -> User:
        # Logins are email addresses, which people type in any case.
        return self.get(email__iexact=(username or "").strip())

    def create_superuser(self, email: str, password: str | None = None, **extra: object) -> User:
        extra.setdefault("is_staff", True)
        extra.setdefault("is_superuser", True)
        return self.create_user(email, password, **extra)


class User(AbstractBaseUser, PermissionsMixin):
    """A person who logs in; their email address is their login."""

    email = models.EmailField(_("email address"), unique=True)
    name = models.CharField(_("name"), max_length=150, blank=True)
    is_active = models.BooleanField(_("active"), default=True)
    is_staff = models.BooleanField(_("staff"), default=False)
    date_joined = models.DateTimeField(_("joined"), default=timezone.now)

    objects: ClassVar[UserManager] = UserManager()

    USERNAME_FIELD = "email"
    EMAIL_FIELD = "email"
    REQUIRED_FIELDS: ClassVar[list[str]] = []

    class Meta:
        verbose_name = _("user")
        verbose_name_plural = _("users")

    def __str__(self) -> str:
        return self.email

    def get_full_name(self) -> str:
        return self.name or self.email

    def get_short_name(self) -> str:
        return self.name or self.email


class TrackingMode(models.TextChoices):
    PERSONAL = "personal", _("Personal")
    ANONYMOUS = "anonymous", _("Anonymous")
    OFF = "off", _("Off")


class Workspace(models.Model):
    """A tenant: its sender identity, legal footer, defaults and sending limits."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    name = models.CharField(_("name"), max_length=120)
    slug = models.SlugField(_("slug"), max_length=60, unique=True)
    sender_name = models.CharField(_("sender name"), max_length=120, blank=True)
    sender_email = models.EmailField(_("sender email"), blank=True)
    postal_address = models.TextField(
        _("postal address"),
        blank=True,
        help_text=_("Shown in the footer of every mail; required before marketing mail goes out."),
    )
    privacy_policy_url = models.URLField(_("privacy policy URL"), blank=True)
    timezone = models.CharField(_("default time zone"), max_length=64, default="UTC")
    locale = models.CharField(
        _("default language"), max_length=10, choices=settings.LANGUAGES, default="en"
    )
    frequency_cap_per_day = models.PositiveSmallIntegerField(
        _("marketing mails per contact per 24 hours"), default=1
    )
    frequency_cap_per_week = models.PositiveSmallIntegerField(
        _("marketing mails per contact per 7 days"), default=3
    )
    send_rate_per_second = models.PositiveIntegerField(
        _("marketing mails per second"),
        default=20,
        help_text=_("Across all workers; keep it within what your mail service allows."),
    )
    track_opens = models.BooleanField(_("track opens"), default=True)
    track_clicks = models.BooleanField(_("track clicks"), default=True)
    tracking_mode = models.CharField(
        _("tracking mode"),
        max_length=20,
        choices=TrackingMode.choices,
        default=TrackingMode.PERSONAL,
        help_text=_(
            "Personal: opens and clicks per contact (reactions and segments use them). "
            "Anonymous: counts per mail and link only, not tied to anyone. Off: no pixel, "
            "links as written."
        ),
    )
    # Set when the complaint rate of the last day went over the limit (DESIGN: Gmail's 0.3 %):
    # marketing mail waits, queued, until an admin resumes sending.
    sending_paused_at = models.DateTimeField(_("sending paused at"), null=True, blank=True)
    sending_paused_reason = models.CharField(_("why sending is paused"), max_length=300, blank=True)
    soft_bounce_limit = models.PositiveSmallIntegerField(
        _("soft bounces in a row before an address is suppressed"), default=3
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name = _("workspace")
        verbose_name_plural = _("workspaces")
        constraints = [
            models.CheckConstraint(
                condition=models.Q(frequency_cap_per_week__gte=models.F("frequency_cap_per_day")),
                name="workspace_weekly_cap_covers_daily_cap",
            ),
        ]

    def __str__(self) -> str:
        return self.name


class MembershipQuerySet(models.QuerySet["Membership"]):
    def owners(self) -> MembershipQuerySet:
        return self.filter(role=Role.OWNER)


class Membership(models.Model):
    """A user's role in one workspace."""

    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="memberships")
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(_("role"), max_length=10, choices=Role.choices)
    created_at = models.DateTimeField(auto_now_add=True)

    objects = MembershipQuerySet.as_manager()

    class Meta:
        verbose_name = _("membership")
        verbose_name_plural = _("memberships")
        constraints = [
            models.UniqueConstraint(fields=["user", "workspace"], name="membership_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.user} in {self.workspace} as {self.role}"

    def allows(self, required: str) -> bool:
        return Role.allows(self.role, required)


class Invitation(models.Model):
    """An invitation by email to join a workspace with a role.

    Its link carries a signed token naming this row (see core.tokens), so nothing secret is stored.
    """

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="invitations")
    email = models.EmailField(_("email address"))
    role = models.CharField(_("role"), max_length=10, choices=Role.choices)
    invited_by = models.ForeignKey(User, on_delete=models.SET_NULL, null=True, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField()
    accepted_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = _("invitation")
        verbose_name_plural = _("invitations")
        constraints = [
            models.UniqueConstraint(
                "workspace",
                Lower("email"),
                condition=models.Q(accepted_at__isnull=True, revoked_at__isnull=True),
                name="invitation_one_open_per_email",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.email} to {self.workspace}"

    @property
    def is_open(self) -> bool:
        return (
            self.accepted_at is None
            and self.revoked_at is None
            and self.expires_at > timezone.now()
        )


class ApiKeyAccess(models.TextChoices):
    FULL = "full", _("Read and write")
    READ = "read", _("Read only")


class ApiKeyQuerySet(models.QuerySet["ApiKey"]):
    def active(self) -> ApiKeyQuerySet:
        return self.filter(revoked_at__isnull=True)


class ApiKey(models.Model):
    """A workspace's key for the REST API. Only its SHA-256 digest is stored."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField(_("name"), max_length=100)
    prefix = models.CharField(max_length=16, unique=True)
    key_hash = models.CharField(max_length=64)
    access = models.CharField(
        _("access"), max_length=10, choices=ApiKeyAccess.choices, default=ApiKeyAccess.FULL
    )
    created_by = models.ForeignKey(User, on_delete=models.SET_NULL, null=True, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    objects = ApiKeyQuerySet.as_manager()

    class Meta:
        verbose_name = _("API key")
        verbose_name_plural = _("API keys")
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None


class IdempotencyRecord(models.Model):
    """The first response to a POST sent with an Idempotency-Key, replayed for 24 hours."""

    workspace = models.ForeignKey(Workspace, on_delete=models.CASCADE, related_name="+")
    key = models.CharField(max_length=255)
    request_fingerprint = models.CharField(max_length=64)
    response_status = models.PositiveSmallIntegerField(null=True)
    response_body = models.JSONField(null=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["workspace", "key"], name="idempotency_key_unique"),
        ]

    def __str__(self) -> str:
        return self.key


class OutboxMessage(models.Model):
    """A mail kept by the local outbox transport (EMAIL_URL=outbox://) instead of being sent."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    workspace = models.ForeignKey(
        Workspace, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    from_email = models.CharField(max_length=320)
    to = models.JSONField(default=list)
    cc = models.JSONField(default=list)
    bcc = models.JSONField(default=list)
    subject = models.CharField(max_length=998)
    text_body = models.TextField(blank=True)
    html_body = models.TextField(blank=True)
    headers = models.JSONField(default=dict)
    # "|a@x|b@y|": every recipient's bare address, lower-cased, for exact look-ups (erasure).
    recipients = models.TextField(blank=True, default="")
    raw = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        verbose_name = _("outbox message")
        verbose_name_plural = _("outbox messages")
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return self.subject
