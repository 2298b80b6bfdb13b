"""`Authorization: Bearer <api key>` for every /api/v1/ endpoint."""

from __future__ import annotations

from django.contrib.auth.models import AnonymousUser
from django.utils.translation import gettext as _
from rest_framework import authentication, exceptions
from rest_framework.request import Request

from core.models import ApiKey, Workspace
from core.services import api_key_authenticate


def request_workspace(request: Request) -> Workspace:
    """The workspace of the API key that authenticated this request."""
    if not isinstance(request.auth, ApiKey):
        raise exceptions.NotAuthenticated()
    return request.auth.workspace


class ApiKeyAuthentication(authentication.BaseAuthentication):
    """request.auth is the ApiKey (and through it the workspace); request.user is anonymous."""

    keyword = "Bearer"

    def authenticate(self, request: Request) -> tuple[AnonymousUser, ApiKey] | None:
        header = authentication.get_authorization_header(request).decode("latin-1")
        if not header:
            return None
        scheme, _sep, raw_key = header.partition(" ")
        if scheme.lower() != self.keyword.lower() or not raw_key.strip():
            raise exceptions.AuthenticationFailed(_("Use the header Authorization: Bearer <key>."))
        api_key = api_key_authenticate(raw_key=raw_key.strip())
        if api_key is None:
            raise exceptions.AuthenticationFailed(_("Invalid or revoked API key."))
        return AnonymousUser(), api_key

    def authenticate_header(self, request: Request) -> str:
        return f'{self.keyword} realm="api"'
