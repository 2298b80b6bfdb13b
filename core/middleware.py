from __future__ import annotations

import zoneinfo
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse
from django.utils import timezone

from core.selectors import membership_for, memberships_for_user

SESSION_WORKSPACE_KEY = "funnelwerk_workspace_id"


class CurrentWorkspaceMiddleware:
    """Sets request.membership: the logged-in user's role in the workspace they work in.

    The workspace is the one chosen with the switcher (kept in the session), else the first
    one the user belongs to; None for a user without any workspace.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        request.membership = None  # type: ignore[attr-defined]
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated:
            membership = None
            workspace_id = request.session.get(SESSION_WORKSPACE_KEY)
            if workspace_id:
                membership = membership_for(user=user, workspace_id=workspace_id)
            if membership is None:
                membership = memberships_for_user(user=user).select_related("user").first()
                if membership is not None:
                    request.session[SESSION_WORKSPACE_KEY] = str(membership.workspace_id)
            request.membership = membership  # type: ignore[attr-defined]
            if membership is not None:
                # Times on pages are shown and entered in the workspace's time zone.
                timezone.activate(zoneinfo.ZoneInfo(membership.workspace.timezone))
        try:
            return self.get_response(request)
        finally:
            timezone.deactivate()
