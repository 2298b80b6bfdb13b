"""The Idempotency-Key header on POST endpoints that create things (API.md)."""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Callable
from datetime import timedelta
from typing import Any, TypeVar

from django.db import IntegrityError, transaction
from django.utils import timezone
from rest_framework import exceptions
from rest_framework.request import Request
from rest_framework.response import Response

from core.models import ApiKey, IdempotencyRecord

IDEMPOTENCY_WINDOW = timedelta(hours=24)
HEADER = "Idempotency-Key"

ViewMethod = TypeVar("ViewMethod", bound=Callable[..., Response])


class IdempotencyConflict(exceptions.APIException):
    status_code = 409
    default_code = "idempotency_conflict"


def _fingerprint(request: Request) -> str:
    body = json.dumps(request.data, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(f"{request.method} {request.path}\n{body}".encode()).hexdigest()


def idempotent(view_method: ViewMethod) -> ViewMethod:
    """Replay the first successful response to the same key and body within 24 hours.

    The same key with another body is refused with 409, as is a key whose first request is
    still running. Only successful responses are kept, so a corrected retry can reuse the key.
    """

    @functools.wraps(view_method)
    def wrapper(view: Any, request: Request, *args: Any, **kwargs: Any) -> Response:
        key = request.headers.get(HEADER, "").strip()
        if not key or not isinstance(request.auth, ApiKey):
            return view_method(view, request, *args, **kwargs)
        if len(key) > 255:
            raise exceptions.ValidationError({HEADER: ["At most 255 characters."]})
        workspace_id = request.auth.workspace_id
        fingerprint = _fingerprint(request)
        IdempotencyRecord.objects.filter(
            workspace_id=workspace_id, key=key, created_at__lt=timezone.now() - IDEMPOTENCY_WINDOW
        ).delete()
        try:
            with transaction.atomic():
                record = IdempotencyRecord.objects.create(
                    workspace_id=workspace_id, key=key, request_fingerprint=fingerprint
                )
        except IntegrityError:
            earlier = IdempotencyRecord.objects.get(workspace_id=workspace_id, key=key)
            if earlier.request_fingerprint != fingerprint:
                raise IdempotencyConflict(
                    "This Idempotency-Key was used with a different request."
                ) from None
            if earlier.response_status is None:
                raise IdempotencyConflict(
                    "A request with this Idempotency-Key is still being processed."
                ) from None
            return Response(
                earlier.response_body,
                status=earlier.response_status,
                headers={"Idempotent-Replayed": "true"},
            )
        try:
            response = view_method(view, request, *args, **kwargs)
        except BaseException:
            record.delete()
            raise
        if 200 <= response.status_code < 300:
            IdempotencyRecord.objects.filter(pk=record.pk).update(
                response_status=response.status_code,
                response_body=json.loads(json.dumps(response.data, default=str)),
            )
        else:
            record.delete()
        return response

    return wrapper  # type: ignore[return-value]
