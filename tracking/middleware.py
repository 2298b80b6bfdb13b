"""Serve the tracking URLs before the rest of the middleware.

Placed right after SecurityMiddleware: the pixel and the redirect need no session, CSRF token,
user, workspace or language, and must not touch the database, so /t/o/ and /t/c/ are answered
here and never reach the middleware below (sessions, auth and the workspace would each read the
database).
"""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

from tracking import views

_ROUTES = {"/t/o/": views.open_pixel, "/t/c/": views.click_redirect}


class TrackingMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        path = request.path_info
        view = _ROUTES.get(path[:5])
        if view is None or request.method not in ("GET", "HEAD"):
            return self.get_response(request)
        token = path[5:]
        if not token or "/" in token:
            return self.get_response(request)
        response = view(request, token)
        if request.method == "HEAD":
            response.content = b""
        return response
