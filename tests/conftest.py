"""Shared fixtures. Tests run on real PostgreSQL and Redis (see config/settings/test.py)."""

from __future__ import annotations

import os
from collections.abc import Callable

import psycopg2
import pytest
import redis
from django.conf import settings
from django.test import Client
from rest_framework.test import APIClient

from core import services
from core.models import Membership, Role, Workspace
from tests.factories import MembershipFactory, UserFactory, WorkspaceFactory


def pytest_sessionstart(session: pytest.Session) -> None:
    """Fail at once, with a clear reason, when PostgreSQL or Redis cannot be reached.

    Tests never skip for a missing service: a green run means they ran against both.
    """
    database = settings.DATABASES["default"]
    try:
        psycopg2.connect(
            dbname="postgres",
            user=database.get("USER") or None,
            password=database.get("PASSWORD") or None,
            host=database.get("HOST") or None,
            port=database.get("PORT") or None,
            connect_timeout=5,
        ).close()
    except psycopg2.OperationalError as exc:
        pytest.exit(f"PostgreSQL is unreachable ({settings.DATABASE_URL}): {exc}", returncode=3)
    try:
        redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=5).ping()
    except redis.RedisError as exc:
        pytest.exit(f"Redis is unreachable ({settings.REDIS_URL}): {exc}", returncode=3)


@pytest.fixture(autouse=True)
def _clear_cache() -> None:
    from django.core.cache import cache

    cache.clear()


@pytest.fixture
def workspace(db: None) -> Workspace:
    return WorkspaceFactory()


@pytest.fixture
def other_workspace(db: None) -> Workspace:
    return WorkspaceFactory(name="Other Co", slug="other-co")


@pytest.fixture
def member_of(db: None) -> Callable[..., Membership]:
    """member_of(workspace, role) -> a new user's membership with that role."""

    def make(workspace: Workspace, role: str = Role.OWNER) -> Membership:
        return MembershipFactory(workspace=workspace, role=role, user=UserFactory())

    return make


@pytest.fixture
def owner(workspace: Workspace, member_of: Callable[..., Membership]) -> Membership:
    return member_of(workspace, Role.OWNER)


@pytest.fixture
def logged_in(client: Client) -> Callable[[Membership], Client]:
    """logged_in(membership) -> the test client logged in as that member, in that workspace."""

    def login(membership: Membership) -> Client:
        client.force_login(membership.user)
        session = client.session
        session["funnelwerk_workspace_id"] = str(membership.workspace_id)
        session.save()
        return client

    return login


@pytest.fixture
def api_client_for(db: None) -> Callable[..., APIClient]:
    """api_client_for(workspace, access="full") -> an APIClient with a fresh key of it."""

    def make(workspace: Workspace, access: str = "full") -> APIClient:
        _api_key, raw_key = services.api_key_create(
            workspace=workspace, name="test", access=access, created_by=None
        )
        api = APIClient()
        api.credentials(HTTP_AUTHORIZATION=f"Bearer {raw_key}")
        return api

    return make


@pytest.fixture
def api(workspace: Workspace, api_client_for: Callable[..., APIClient]) -> APIClient:
    return api_client_for(workspace)


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}
