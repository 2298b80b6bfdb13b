from __future__ import annotations

from typing import Any

from rest_framework.request import Request
from rest_framework.throttling import SimpleRateThrottle

from core.models import ApiKey


class ApiKeyRateThrottle(SimpleRateThrottle):
    """Requests per API key (API_RATE_LIMIT, default 1200/min); 429 with Retry-After beyond."""

    scope = "api_key"

    def get_cache_key(self, request: Request, view: Any) -> str | None:
        if not isinstance(request.auth, ApiKey):
            return None
        return f"throttle:api_key:{request.auth.pk}"
