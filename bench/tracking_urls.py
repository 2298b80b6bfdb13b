"""The reference views of bench/tracking.py (bench only, never part of the app).

- bare_gif at /bench/gif/<anything>: a bare Django view answering the 1x1 GIF with the pixel's
  headers, routed by this URLconf through the whole middleware stack, as any page of the app.
- BenchMiddleware, right after tracking.middleware.TrackingMiddleware (see
  bench/tracking_settings.py), serves three paths exactly where the real pixel is served, the
  same way TrackingMiddleware does:
  - /b/g/<anything>: the bare GIF again ("bare, early": what answering at that place costs);
  - /b/o/<token>, /b/c/<token>: the pixel and the redirect with the hit written synchronously,
    in the request (tracking.ingest.hits_write), instead of appended to the Redis buffer. Token
    check, the hit and the response are the app's own (tracking.views), so the write is the
    only difference.
"""

from __future__ import annotations

from collections.abc import Callable

from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import URLPattern, URLResolver, path

from campaigns.tracking_links import CLICK as CLICK_TOKEN
from campaigns.tracking_links import OPEN, TRAP
from config import urls as app_urls
from tracking import ingest, views
from tracking.hits import CLICK
from tracking.hits import OPEN as OPEN_HIT
from tracking.hits import TRAP as TRAP_HIT
from tracking.models import Origin


def _gif() -> HttpResponse:
    response = HttpResponse(views.PIXEL, content_type="image/gif")
    response["Cache-Control"] = views.NO_STORE
    response["Pragma"] = "no-cache"
    response["Expires"] = "0"
    return response


def bare_gif(request: HttpRequest, token: str = "") -> HttpResponse:
    return _gif()


def sync_pixel(request: HttpRequest, token: str) -> HttpResponse:
    read = views._token(token, (OPEN,))
    if read is None:
        return views._not_found()
    ingest.hits_write([views._hit(request, read, OPEN_HIT, Origin.PIXEL)])
    return _gif()


def sync_redirect(request: HttpRequest, token: str) -> HttpResponse:
    read = views._token(token, (CLICK_TOKEN, TRAP))
    if read is None:
        return views._not_found()
    trap = read.kind == TRAP
    ingest.hits_write([views._hit(request, read, TRAP_HIT if trap else CLICK, Origin.REDIRECT)])
    response = HttpResponse(status=204) if trap else HttpResponseRedirect(read.url)
    response["Cache-Control"] = views.NO_STORE
    response["Referrer-Policy"] = "no-referrer"
    return response


_ROUTES: dict[str, Callable[[HttpRequest, str], HttpResponse]] = {
    "/b/g/": bare_gif,
    "/b/o/": sync_pixel,
    "/b/c/": sync_redirect,
}


class BenchMiddleware:
    """TrackingMiddleware's dispatch, for the bench's paths."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        path_info = request.path_info
        view = _ROUTES.get(path_info[:5])
        if view is None or request.method not in ("GET", "HEAD"):
            return self.get_response(request)
        token = path_info[5:]
        if not token or "/" in token:
            return self.get_response(request)
        response = view(request, token)
        if request.method == "HEAD":
            response.content = b""
        return response


urlpatterns: list[URLPattern | URLResolver] = [
    path("bench/gif/<str:token>", bare_gif, name="bench-gif"),
    *app_urls.urlpatterns,
]

handler404 = app_urls.handler404
handler500 = app_urls.handler500
handler403 = app_urls.handler403
