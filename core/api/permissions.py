from __future__ import annotations

from typing import Any

from rest_framework.permissions import SAFE_METHODS, BasePermission
from rest_framework.request import Request

from core.models import ApiKey, ApiKeyAccess


class HasWorkspaceApiKey(BasePermission):
    """A valid key is required; a read-only key may only read."""

    message = "This API key is read-only."

    def has_permission(self, request: Request, view: Any) -> bool:
        api_key = request.auth
        if not isinstance(api_key, ApiKey):
            return False
        return request.method in SAFE_METHODS or api_key.access == ApiKeyAccess.FULL
