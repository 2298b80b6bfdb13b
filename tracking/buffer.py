"""The buffer between the hot path and the writer: a Redis stream.

The pixel and the redirect append each hit (XADD) and answer; the writer (hits_drain, a Celery
beat task every second) reads the stream through a consumer group, writes a batch with
tracking.ingest.hits_write and only then acknowledges and deletes the entries. A writer that
dies before its acknowledgement leaves its entries pending; the next run reads them again and
the unique Activity.key makes the second write a no-op: nothing is lost, nothing doubled.

Clicks younger than HOLD_SECONDS stay pending for the next run, so that the writer sees all
clicks a scanner makes on one mail within a few seconds together (the burst rule of
tracking.classification) before anything fires.

Without TRACKING_BUFFER_URL (the embedded default) and while Redis cannot be reached, hits are
written to the database at once, in the request.
"""

from __future__ import annotations

import functools
import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import redis
from django.conf import settings
from django.utils import timezone

from tracking import ingest
from tracking.hits import OPEN, Hit

logger = logging.getLogger(__name__)

GROUP = "writers"
CONSUMER = "writer"
HOLD_SECONDS = 4


# After a failure the hot path writes directly for this long instead of waiting for a Redis
# that hangs (socket timeout) on every hit.
SKIP_AFTER_FAILURE_SECONDS = 5.0
_skip_until: dict[str, float] = {}


@functools.lru_cache(maxsize=2)
def _client(url: str) -> redis.Redis:
    # One connection per process: fetching a connection from redis-py's pool on every XADD
    # cost the pixel a fifth of its speed (bench/tracking.py). Threads share it under a lock.
    return redis.Redis.from_url(
        url, socket_timeout=0.5, socket_connect_timeout=0.5, single_connection_client=True
    )


def _stream() -> str:
    return str(settings.TRACKING_STREAM)


def buffered() -> bool:
    return bool(settings.TRACKING_BUFFER_URL)


def hit_record(hit: Hit) -> None:
    """Append `hit` to the buffer; write it directly when there is none or it is down."""
    url = settings.TRACKING_BUFFER_URL
    if url and time.monotonic() >= _skip_until.get(url, 0.0):
        try:
            _client(url).xadd(_stream(), {"h": hit.dumps()})
            return
        except redis.RedisError:
            _skip_until[url] = time.monotonic() + SKIP_AFTER_FAILURE_SECONDS
            logger.warning("tracking buffer unreachable: writing hits directly", exc_info=True)
    ingest.hits_write([hit])


@dataclass(frozen=True)
class DrainResult:
    read: int
    written: int
    duplicates: int
    held: int
    malformed: int


def _ensure_group(client: redis.Redis) -> None:
    try:
        client.xgroup_create(_stream(), GROUP, id="0", mkstream=True)
    except redis.ResponseError as error:
        if "BUSYGROUP" not in str(error):
            raise


def _entries(reply: Any) -> list[tuple[bytes, dict[bytes, bytes]]]:
    # RESP2 reply: [[stream, [(id, fields), ...]]]
    return list(reply[0][1]) if reply else []


def hits_drain(*, limit: int = 5000, now: datetime | None = None) -> DrainResult:
    """Move up to `limit` buffered hits into the database (pending ones first)."""
    client = _client(settings.TRACKING_BUFFER_URL)
    _ensure_group(client)
    stream = _stream()
    entries = _entries(client.xreadgroup(GROUP, CONSUMER, {stream: "0"}, count=limit))
    if len(entries) < limit:
        entries += _entries(
            client.xreadgroup(GROUP, CONSUMER, {stream: ">"}, count=limit - len(entries))
        )
    hold_until = (now or timezone.now()) - timedelta(seconds=HOLD_SECONDS)
    ready: list[Hit] = []
    done: list[bytes] = []
    held = malformed = 0
    for entry_id, fields in entries:
        try:
            hit = Hit.loads(fields[b"h"])
        except (KeyError, ValueError, TypeError, IndexError):
            logger.error("tracking buffer: dropping malformed entry %r", entry_id)
            malformed += 1
            done.append(entry_id)
            continue
        if hit.kind != OPEN and hit.occurred_at > hold_until:
            held += 1
            continue
        ready.append(hit)
        done.append(entry_id)
    result = ingest.hits_write(ready) if ready else None
    if done:
        # Only after the commit: a crash before this line replays the batch, harmlessly.
        client.xack(stream, GROUP, *done)
        client.xdel(stream, *done)
    return DrainResult(
        read=len(entries),
        written=result.written if result else 0,
        duplicates=result.duplicates if result else 0,
        held=held,
        malformed=malformed,
    )


def hits_drain_all(*, now: datetime | None = None, limit: int = 5000) -> int:
    """Drain until only held-back clicks are left; returns how many were written."""
    written = 0
    while True:
        result = hits_drain(limit=limit, now=now)
        written += result.written
        if result.read - result.held == 0 or result.read < limit:
            return written
