"""The public hot path: the open pixel /t/o/<token> and the click redirect /t/c/<token>.

No database read: the signed token says everything (campaigns.tracking_links), the hit goes to
the buffer (tracking.buffer) and the answer goes out. tracking.middleware serves these URLs
before the session, CSRF, auth and workspace middleware run. A tampered or unknown token gets
404 and records nothing.
"""

from __future__ import annotations

import base64
import uuid

from django.http import HttpRequest, HttpResponse, HttpResponseNotFound, HttpResponseRedirect
from django.utils import timezone

from campaigns.tracking_links import CLICK as CLICK_TOKEN
from campaigns.tracking_links import OPEN, TRAP, TrackingToken, token_read
from core.http import client_ip
from tracking import buffer
from tracking.hits import CLICK, USER_AGENT_LIMIT, Hit, truncate_ip
from tracking.hits import OPEN as OPEN_HIT
from tracking.hits import TRAP as TRAP_HIT
from tracking.models import Origin

PIXEL = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
NO_STORE = "no-store, no-cache, must-revalidate, max-age=0, private"


def _hit(request: HttpRequest, token: TrackingToken, kind: str, origin: str) -> Hit:
    return Hit(
        key=uuid.uuid4().hex,
        kind=kind,
        message_id=token.message_id,
        source=token.source,
        link_index=token.link_index,
        url=token.url,
        occurred_at=timezone.now(),
        user_agent=request.META.get("HTTP_USER_AGENT", "")[:USER_AGENT_LIMIT],
        ip=truncate_ip(client_ip(request)),
        method=request.method or "GET",
        origin=origin,
    )


def _token(token: str, kinds: tuple[str, ...]) -> TrackingToken | None:
    read = token_read(token)
    return read if read is not None and read.kind in kinds else None


def _not_found() -> HttpResponse:
    # Plain, the same for every bad token, and without the site's 404 page: that would need
    # the session and user this path runs without.
    return HttpResponseNotFound(b"Not found", content_type="text/plain")


def open_pixel(request: HttpRequest, token: str) -> HttpResponse:
    read = _token(token, (OPEN,))
    if read is None:
        return _not_found()
    buffer.hit_record(_hit(request, read, OPEN_HIT, Origin.PIXEL))
    response = HttpResponse(PIXEL, content_type="image/gif")
    response["Cache-Control"] = NO_STORE
    response["Pragma"] = "no-cache"
    response["Expires"] = "0"
    return response


def click_redirect(request: HttpRequest, token: str) -> HttpResponse:
    read = _token(token, (CLICK_TOKEN, TRAP))
    if read is None:
        return _not_found()
    trap = read.kind == TRAP
    buffer.hit_record(_hit(request, read, TRAP_HIT if trap else CLICK, Origin.REDIRECT))
    # The trap is the link no person sees: nothing to show.
    response = HttpResponse(status=204) if trap else HttpResponseRedirect(read.url)
    response["Cache-Control"] = NO_STORE
    response["Referrer-Policy"] = "no-referrer"
    return response
