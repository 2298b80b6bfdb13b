"""Writes for workspaces, users, memberships, invitations and API keys."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone
from django.utils.text import slugify
from django.utils.translation import gettext as _

from core.exceptions import ApplicationError, ConflictError
from core.models import (
    ApiKey,
    ApiKeyAccess,
    IdempotencyRecord,
    Invitation,
    Membership,
    Role,
    User,
    Workspace,
)
from core.tokens import TokenPurpose, token_make, token_read

API_KEY_PREFIX = "fw"
API_KEY_LAST_USED_RESOLUTION = timedelta(minutes=1)


def _slug_candidates(name: str) -> list[str]:
    base = slugify(name)[:50] or "workspace"
    return [base] + [f"{base}-{secrets.token_hex(3)}" for _ in range(5)]


def user_get_or_create(*, email: str, password: str | None = None, name: str = "") -> User:
    """The user with this login, created with `password` when new. Safe to run twice."""
    user = User.objects.filter(email__iexact=email.strip()).first()
    if user is None:
        user = User.objects.create_user(email=email.strip(), password=password, name=name)
    return user


@transaction.atomic
def workspace_create(*, name: str, owner: User, **fields: object) -> Workspace:
    """Create a workspace with `owner` as its owner. Not idempotent: each call makes one."""
    name = name.strip()
    if not name:
        raise ApplicationError(_("A workspace needs a name."), field="name")
    for slug in _slug_candidates(name):
        try:
            with transaction.atomic():
                workspace = Workspace.objects.create(name=name, slug=slug, **fields)
        except IntegrityError:
            continue
        Membership.objects.create(user=owner, workspace=workspace, role=Role.OWNER)
        return workspace
    raise ConflictError(_("Could not find a free address for this workspace; try another name."))


@transaction.atomic
def user_signup(*, email: str, password: str, name: str, workspace_name: str) -> User:
    """Create a new user and their own workspace (SaaS sign-up)."""
    if User.objects.filter(email__iexact=email.strip()).exists():
        raise ConflictError(
            _("An account with this address exists; log in instead."), field="email"
        )
    user = User.objects.create_user(email=email.strip(), password=password, name=name.strip())
    workspace_create(name=workspace_name, owner=user)
    return user


def _require_role(*, actor: Membership, required: str) -> None:
    if not actor.allows(required):
        raise ApplicationError(_("Your role does not allow this."))


@transaction.atomic
def invitation_create(
    *, actor: Membership, email: str, role: str, valid_for: timedelta | None = None
) -> Invitation:
    """Invite `email` into the actor's workspace and mail the link after commit.

    Replaces an open invitation to the same address (the old link stops working).
    """
    from core.tasks import invitation_send_email

    _require_role(actor=actor, required=Role.ADMIN)
    if role not in Role.values:
        raise ApplicationError(_("Choose a valid role."), field="role")
    if role == Role.OWNER and actor.role != Role.OWNER:
        raise ApplicationError(_("Only an owner can invite another owner."), field="role")
    email = User.objects.normalize_email(email.strip()).lower()
    workspace = actor.workspace
    if Membership.objects.filter(workspace=workspace, user__email__iexact=email).exists():
        raise ConflictError(_("This person is already a member."), field="email")
    now = timezone.now()
    Invitation.objects.filter(
        workspace=workspace, email__iexact=email, accepted_at__isnull=True, revoked_at__isnull=True
    ).update(revoked_at=now)
    invitation = Invitation.objects.create(
        workspace=workspace,
        email=email,
        role=role,
        invited_by=actor.user,
        expires_at=now + (valid_for or timedelta(days=settings.INVITATION_VALID_DAYS)),
    )
    transaction.on_commit(lambda: invitation_send_email.delay(str(invitation.id)))
    return invitation


def invitation_token(invitation: Invitation) -> str:
    return token_make(purpose=TokenPurpose.INVITATION, value=str(invitation.id))


def invitation_from_token(token: str) -> Invitation | None:
    """The open invitation this token names, or None (tampered, expired, used, revoked)."""
    invitation_id = token_read(purpose=TokenPurpose.INVITATION, token=token)
    if invitation_id is None:
        return None
    invitation = (
        Invitation.objects.select_related("workspace", "invited_by")
        .filter(id=invitation_id)
        .first()
    )
    if invitation is None or not invitation.is_open:
        return None
    return invitation


@transaction.atomic
def invitation_accept(*, invitation: Invitation, user: User) -> Membership:
    """Make `user` a member with the invited role. Safe to run twice."""
    if user.email.lower() != invitation.email.lower():
        raise ApplicationError(
            _("This invitation is for %(email)s. Log in with that address to accept it.")
            % {"email": invitation.email}
        )
    claimed = Invitation.objects.filter(
        id=invitation.id,
        accepted_at__isnull=True,
        revoked_at__isnull=True,
        expires_at__gt=timezone.now(),
    ).update(accepted_at=timezone.now())
    membership = Membership.objects.filter(user=user, workspace=invitation.workspace).first()
    if membership is not None:
        return membership
    if not claimed:
        raise ApplicationError(_("This invitation is no longer valid."))
    return Membership.objects.create(
        user=user, workspace=invitation.workspace, role=invitation.role
    )


@transaction.atomic
def invitation_revoke(*, actor: Membership, invitation: Invitation) -> None:
    """Revoke an open invitation of the actor's workspace. Safe to run twice."""
    _require_role(actor=actor, required=Role.ADMIN)
    Invitation.objects.filter(
        id=invitation.id,
        workspace=actor.workspace,
        revoked_at__isnull=True,
        accepted_at__isnull=True,
    ).update(revoked_at=timezone.now())


@transaction.atomic
def membership_change_role(*, actor: Membership, membership: Membership, role: str) -> Membership:
    """Give a member another role; the last owner stays an owner."""
    _require_role(actor=actor, required=Role.ADMIN)
    if role not in Role.values:
        raise ApplicationError(_("Choose a valid role."), field="role")
    if Role.OWNER in (role, membership.role) and actor.role != Role.OWNER:
        raise ApplicationError(_("Only an owner can grant or take the owner role."))
    _keep_an_owner(membership=membership, leaving=role != Role.OWNER)
    membership.role = role
    membership.save(update_fields=["role"])
    return membership


@transaction.atomic
def membership_remove(*, actor: Membership, membership: Membership) -> None:
    """Remove a member (or let a member leave); the last owner cannot leave."""
    if actor.pk != membership.pk:
        _require_role(actor=actor, required=Role.ADMIN)
        if membership.role == Role.OWNER and actor.role != Role.OWNER:
            raise ApplicationError(_("Only an owner can remove an owner."))
    _keep_an_owner(membership=membership, leaving=True)
    membership.delete()


def _keep_an_owner(*, membership: Membership, leaving: bool) -> None:
    if not leaving or membership.role != Role.OWNER:
        return
    owners = (
        Membership.objects.select_for_update()
        .filter(workspace_id=membership.workspace_id, role=Role.OWNER)
        .exclude(pk=membership.pk)
    )
    if not list(owners):
        raise ConflictError(_("A workspace needs at least one owner."))


def workspace_sending_resume(*, actor: Membership) -> Workspace:
    """Resume the marketing mail of a workspace that the complaint-rate guard paused (mail
    that waited is due at once)."""
    _require_role(actor=actor, required=Role.ADMIN)
    Workspace.objects.filter(pk=actor.workspace_id).update(
        sending_paused_at=None, sending_paused_reason=""
    )
    actor.workspace.refresh_from_db()
    return actor.workspace


def _api_key_digest(raw_key: str) -> str:
    # The key carries 256 random bits, so a fast hash is enough; a slow KDF would only slow
    # every API request down.
    return hashlib.sha256(raw_key.encode()).hexdigest()


@transaction.atomic
def api_key_create(
    *, workspace: Workspace, name: str, access: str = ApiKeyAccess.FULL, created_by: User | None
) -> tuple[ApiKey, str]:
    """Create an API key; returns the row and the key itself, which is never shown again."""
    name = name.strip()
    if not name:
        raise ApplicationError(_("Give the key a name that says where it is used."), field="name")
    if access not in ApiKeyAccess.values:
        raise ApplicationError(_("Choose read-only or read-and-write access."), field="access")
    prefix = secrets.token_hex(4)
    raw_key = f"{API_KEY_PREFIX}_{prefix}_{secrets.token_urlsafe(32)}"
    api_key = ApiKey.objects.create(
        workspace=workspace,
        name=name,
        prefix=prefix,
        key_hash=_api_key_digest(raw_key),
        access=access,
        created_by=created_by,
    )
    return api_key, raw_key


def api_key_revoke(*, api_key: ApiKey) -> None:
    """Revoke a key: the next request with it gets 401. Safe to run twice."""
    ApiKey.objects.filter(pk=api_key.pk, revoked_at__isnull=True).update(revoked_at=timezone.now())


def api_key_authenticate(*, raw_key: str) -> ApiKey | None:
    """The active key for `raw_key`, or None; notes when it was last used (once a minute)."""
    parts = raw_key.split("_")
    if len(parts) < 3 or parts[0] != API_KEY_PREFIX:
        return None
    api_key = ApiKey.objects.active().select_related("workspace").filter(prefix=parts[1]).first()
    if api_key is None or not hmac.compare_digest(api_key.key_hash, _api_key_digest(raw_key)):
        return None
    now = timezone.now()
    if api_key.last_used_at is None or now - api_key.last_used_at >= API_KEY_LAST_USED_RESOLUTION:
        ApiKey.objects.filter(pk=api_key.pk).filter(
            Q(last_used_at__isnull=True) | Q(last_used_at__lte=now - API_KEY_LAST_USED_RESOLUTION)
        ).update(last_used_at=now)
        api_key.last_used_at = now
    return api_key


def idempotency_records_forget(*, workspace_id: str, resource_id: str) -> None:
    """Drop kept Idempotency-Key responses that describe this resource (e.g. an erased
    contact), so no personal data outlives its erasure. Safe to run twice."""
    IdempotencyRecord.objects.filter(
        workspace_id=workspace_id, response_body__id=resource_id
    ).delete()


def outbox_forget_address(*, email: str) -> None:
    """Delete local-outbox copies of mails to this address (part of erasing a person)."""
    from core.mail import recipients_key
    from core.models import OutboxMessage

    needle = recipients_key([email])  # "|ann@example.org|" never matches joann@example.org
    OutboxMessage.objects.filter(recipients__contains=needle).delete()
