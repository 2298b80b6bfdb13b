from __future__ import annotations

from typing import Any

from django.conf import settings
from django.http import HttpRequest

from core.models import Role, User
from core.selectors import memberships_for_user


def workspace(request: HttpRequest) -> dict[str, Any]:
    """The current membership and the workspaces the user can switch to, for the layout."""
    membership = getattr(request, "membership", None)
    user = request.user
    if membership is None or not isinstance(user, User):
        return {"membership": None, "signup_open": settings.SIGNUP_OPEN}
    return {
        "signup_open": settings.SIGNUP_OPEN,
        "membership": membership,
        "current_workspace": membership.workspace,
        "can_edit": membership.allows(Role.EDITOR),
        "can_admin": membership.allows(Role.ADMIN),
        "switchable_memberships": lambda: list(memberships_for_user(user=user)),
    }
