"""Role checks for pages: one decorator that every workspace page goes through."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect

from core.models import Membership, Role

View = Callable[..., HttpResponse]


def workspace_view(*, read: str = Role.VIEWER, write: str = Role.EDITOR) -> Callable[[View], View]:
    """Require a logged-in member; `read` role for GET/HEAD, `write` role for anything else.

    The view receives the membership as its second argument.
    """

    def decorator(view: View) -> View:
        @functools.wraps(view)
        def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
            if not request.user.is_authenticated:
                return redirect_to_login(request.get_full_path())
            membership: Membership | None = getattr(request, "membership", None)
            if membership is None:
                return redirect("workspace-create")
            required = read if request.method in ("GET", "HEAD") else write
            if not membership.allows(required):
                raise PermissionDenied
            return view(request, membership, *args, **kwargs)

        return wrapper

    return decorator
