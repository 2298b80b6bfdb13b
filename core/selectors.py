"""Reads for workspaces, memberships, invitations, API keys and the outbox."""

from __future__ import annotations

import uuid

from django.db.models import QuerySet

from core.models import ApiKey, Invitation, Membership, OutboxMessage, Role, User, Workspace


def memberships_for_user(*, user: User) -> QuerySet[Membership]:
    return (
        Membership.objects.filter(user=user).select_related("workspace").order_by("workspace__name")
    )


def membership_for(*, user: User, workspace_id: object) -> Membership | None:
    """The user's membership in that workspace, or None when they are not a member
    (or when `workspace_id` is not a workspace id at all)."""
    try:
        workspace_uuid = uuid.UUID(str(workspace_id))
    except ValueError:
        return None
    return (
        Membership.objects.select_related("workspace", "user")
        .filter(user=user, workspace_id=workspace_uuid)
        .first()
    )


def workspace_members(*, workspace: Workspace) -> QuerySet[Membership]:
    return (
        Membership.objects.filter(workspace=workspace)
        .select_related("user")
        .order_by("user__email")
    )


def workspace_open_invitations(*, workspace: Workspace) -> QuerySet[Invitation]:
    from django.utils import timezone

    return Invitation.objects.filter(
        workspace=workspace,
        accepted_at__isnull=True,
        revoked_at__isnull=True,
        expires_at__gt=timezone.now(),
    ).order_by("-created_at")


def workspace_api_keys(*, workspace: Workspace) -> QuerySet[ApiKey]:
    return ApiKey.objects.filter(workspace=workspace).select_related("created_by")


def outbox_for_user(*, user: User) -> QuerySet[OutboxMessage]:
    """Mails in the local outbox this user may read.

    Operators (superusers) see the whole installation's outbox; admins and owners see the
    mails of their workspaces. Nobody else sees any: mails carry other people's data.
    """
    messages = OutboxMessage.objects.all()
    if user.is_superuser:
        return messages
    workspace_ids = Membership.objects.filter(user=user, role__in=[Role.ADMIN, Role.OWNER]).values(
        "workspace_id"
    )
    return messages.filter(workspace_id__in=workspace_ids)
