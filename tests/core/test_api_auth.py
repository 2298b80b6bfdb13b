"""Bearer auth, read-only keys, throttling and the schema of the REST API (API.md: Auth)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from drf_spectacular.validation import validate_schema
from rest_framework.test import APIClient

from contacts.models import Contact
from core import services
from core.api.throttling import ApiKeyRateThrottle
from core.models import ApiKey, Workspace

pytestmark = pytest.mark.django_db

CONTACTS_URL = "/api/v1/contacts/"
WORKSPACE_URL = "/api/v1/workspace/"
START = datetime(2025, 3, 3, 9, 0, tzinfo=UTC)


def make_key(workspace: Workspace, access: str = "full") -> tuple[ApiKey, APIClient]:
    api_key, raw_key = services.api_key_create(
        workspace=workspace, name="shop", access=access, created_by=None
    )
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {raw_key}")
    return api_key, client


def client_with_header(value: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=value)
    return client


# --- 401 ---------------------------------------------------------------------------------


def test_missing_header_is_401_with_www_authenticate(workspace):
    # given a client without any Authorization header
    client = APIClient()

    # when
    response = client.get(CONTACTS_URL)

    # then
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == 'Bearer realm="api"'
    assert set(response.json()) == {"detail"}


def test_missing_header_on_post_is_401_and_creates_nothing(workspace):
    # when
    response = APIClient().post(CONTACTS_URL, {"email": "ada@example.com"}, format="json")

    # then
    assert response.status_code == 401
    assert Contact.objects.count() == 0


@pytest.mark.parametrize("scheme", ["Token", "Basic", "Bearer2", "bearer-ish"])
def test_wrong_scheme_is_401(workspace, scheme):
    # given a valid key sent under another scheme
    _api_key, raw_key = services.api_key_create(
        workspace=workspace, name="shop", access="full", created_by=None
    )
    client = client_with_header(f"{scheme} {raw_key}")

    # when
    response = client.get(CONTACTS_URL)

    # then
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == 'Bearer realm="api"'


def test_bearer_scheme_is_case_insensitive(workspace):
    # given
    _api_key, raw_key = services.api_key_create(
        workspace=workspace, name="shop", access="full", created_by=None
    )

    # when
    response = client_with_header(f"bearer {raw_key}").get(WORKSPACE_URL)

    # then
    assert response.status_code == 200


@pytest.mark.parametrize(
    "header",
    [
        "Bearer",
        "Bearer ",
        "Bearer nonsense",
        "Bearer fw_deadbeef_not-a-real-key",
        "Bearer fw__",
        "Bearer xx_deadbeef_something",
    ],
)
def test_bad_key_is_401(workspace, header):
    # when
    response = client_with_header(header).get(CONTACTS_URL)

    # then
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == 'Bearer realm="api"'


def test_right_prefix_with_wrong_secret_is_401(workspace):
    # given a key whose prefix exists but whose secret part was altered
    _api_key, raw_key = services.api_key_create(
        workspace=workspace, name="shop", access="full", created_by=None
    )
    tampered = raw_key[:-1] + ("A" if raw_key[-1] != "A" else "B")

    # when
    response = client_with_header(f"Bearer {tampered}").get(CONTACTS_URL)

    # then
    assert response.status_code == 401


def test_revoked_key_is_401(workspace):
    # given a key that worked
    api_key, client = make_key(workspace)
    assert client.get(WORKSPACE_URL).status_code == 200

    # when it is revoked
    services.api_key_revoke(api_key=api_key)
    response = client.get(WORKSPACE_URL)

    # then
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == 'Bearer realm="api"'


def test_revoked_key_cannot_create(workspace):
    # given
    api_key, client = make_key(workspace)
    services.api_key_revoke(api_key=api_key)

    # when
    response = client.post(CONTACTS_URL, {"email": "ada@example.com"}, format="json")

    # then
    assert response.status_code == 401
    assert Contact.objects.count() == 0


# --- read-only keys ----------------------------------------------------------------------


def test_read_only_key_can_read(workspace):
    # given
    _api_key, client = make_key(workspace, access="read")

    # when
    response = client.get(CONTACTS_URL)

    # then
    assert response.status_code == 200
    assert response.json()["count"] == 0


def test_read_only_key_gets_403_on_post_and_nothing_is_created(workspace):
    # given
    _api_key, client = make_key(workspace, access="read")

    # when
    response = client.post(CONTACTS_URL, {"email": "ada@example.com"}, format="json")

    # then
    assert response.status_code == 403
    assert response.json() == {"detail": "This API key is read-only."}
    assert Contact.objects.count() == 0


def test_read_only_key_gets_403_on_patch_and_delete(workspace, api):
    # given a contact made with a full key
    contact_id = api.post(CONTACTS_URL, {"email": "ada@example.com"}, format="json").json()["id"]
    _api_key, read_only = make_key(workspace, access="read")

    # when
    patched = read_only.patch(f"{CONTACTS_URL}{contact_id}/", {"first_name": "Eve"}, format="json")
    deleted = read_only.delete(f"{CONTACTS_URL}{contact_id}/")

    # then
    assert patched.status_code == 403
    assert deleted.status_code == 403
    contact = Contact.objects.get(pk=contact_id)
    assert contact.first_name == ""


# --- last_used_at ------------------------------------------------------------------------


def test_last_used_at_is_set_on_first_use(workspace):
    # given a key never used
    api_key, client = make_key(workspace)
    assert api_key.last_used_at is None

    # when
    with time_machine.travel(START, tick=False):
        response = client.get(WORKSPACE_URL)

    # then
    assert response.status_code == 200
    api_key.refresh_from_db()
    assert api_key.last_used_at == START


def test_last_used_at_is_rewritten_only_once_a_minute(workspace):
    # given a key used at START
    api_key, client = make_key(workspace)
    with time_machine.travel(START, tick=False) as traveller:
        client.get(WORKSPACE_URL)

        # when it is used again 59 seconds later
        traveller.shift(timedelta(seconds=59))
        client.get(WORKSPACE_URL)

        # then the stored time has not moved
        api_key.refresh_from_db()
        assert api_key.last_used_at == START

        # when it is used more than a minute after the stored time
        traveller.shift(timedelta(seconds=2))
        client.get(WORKSPACE_URL)

        # then it is rewritten
        api_key.refresh_from_db()
        assert api_key.last_used_at == START + timedelta(seconds=61)


def test_failed_authentication_does_not_touch_last_used_at(workspace):
    # given
    api_key, _client = make_key(workspace)

    # when a wrong secret with the key's prefix is sent
    response = client_with_header(f"Bearer fw_{api_key.prefix}_wrong-secret").get(WORKSPACE_URL)

    # then
    assert response.status_code == 401
    api_key.refresh_from_db()
    assert api_key.last_used_at is None


# --- workspace ---------------------------------------------------------------------------


def test_workspace_endpoint_returns_the_keys_workspace(workspace, other_workspace):
    # given keys of two workspaces
    _key, client = make_key(workspace)
    _other_key, other_client = make_key(other_workspace)

    # when
    response = client.get(WORKSPACE_URL)
    other_response = other_client.get(WORKSPACE_URL)

    # then
    assert response.status_code == 200
    assert response.json() == {
        "id": str(workspace.id),
        "name": workspace.name,
        "slug": workspace.slug,
        "timezone": "UTC",
        "locale": "en",
    }
    assert other_response.json()["id"] == str(other_workspace.id)
    assert other_response.json()["slug"] == "other-co"


def test_workspace_endpoint_needs_a_key(workspace):
    # when
    response = APIClient().get(WORKSPACE_URL)

    # then
    assert response.status_code == 401


# --- schema, docs, 404 -------------------------------------------------------------------


def test_schema_is_served_without_a_key_and_is_valid_openapi(db):
    # when
    response = APIClient().get("/api/v1/schema/", {"format": "json"})

    # then
    assert response.status_code == 200
    schema = json.loads(response.content)
    assert schema["openapi"].startswith("3.")
    assert "/api/v1/contacts/" in schema["paths"]
    assert "/api/v1/contacts/{id}/" in schema["paths"]
    assert "/api/v1/workspace/" in schema["paths"]
    assert set(schema["paths"]["/api/v1/contacts/"]) >= {"get", "post"}
    validate_schema(schema)


def test_schema_default_format_is_yaml_and_names_the_contacts_path(db):
    # when
    response = APIClient().get("/api/v1/schema/")

    # then
    assert response.status_code == 200
    body = response.content.decode()
    assert body.startswith("openapi: ")
    assert "/api/v1/contacts/:" in body


def test_docs_are_served_as_html_without_a_key(db):
    # when
    response = APIClient().get("/api/v1/docs/")

    # then
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/html")
    assert b"swagger" in response.content.lower()


def test_unknown_api_url_is_json_404(workspace, api):
    # when
    response = api.get("/api/v1/no-such-thing/")

    # then
    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"
    assert response.json() == {"detail": "Not found."}


def test_unknown_api_url_without_a_key_is_json_404(db):
    # when
    response = APIClient().get("/api/v1/contacts/not-a-uuid/")

    # then
    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"
    assert response.json() == {"detail": "Not found."}


# --- throttling --------------------------------------------------------------------------


def test_throttle_answers_429_with_retry_after(workspace, monkeypatch):
    # given a rate of two requests per minute per key
    monkeypatch.setattr(ApiKeyRateThrottle, "THROTTLE_RATES", {"api_key": "2/min"})
    _key, client = make_key(workspace)

    with time_machine.travel(START, tick=False) as traveller:
        # when three requests are made in the same instant
        statuses = [client.get(WORKSPACE_URL).status_code for _ in range(3)]
        throttled = client.get(WORKSPACE_URL)

        # then the third and later are refused with the wait in seconds
        assert statuses == [200, 200, 429]
        assert throttled.status_code == 429
        assert throttled["Retry-After"] == "60"
        assert set(throttled.json()) == {"detail"}

        # when the minute has passed
        traveller.shift(timedelta(seconds=61))

        # then the key is served again
        assert client.get(WORKSPACE_URL).status_code == 200


def test_throttle_is_per_key(workspace, monkeypatch):
    # given one key that used up its rate
    monkeypatch.setattr(ApiKeyRateThrottle, "THROTTLE_RATES", {"api_key": "1/min"})
    _key, client = make_key(workspace)
    _second_key, second_client = make_key(workspace)
    with time_machine.travel(START, tick=False):
        assert client.get(WORKSPACE_URL).status_code == 200
        assert client.get(WORKSPACE_URL).status_code == 429

        # when another key of the same workspace asks
        response = second_client.get(WORKSPACE_URL)

    # then it is not throttled
    assert response.status_code == 200


def test_throttled_post_creates_nothing(workspace, monkeypatch):
    # given a key that used up its rate
    monkeypatch.setattr(ApiKeyRateThrottle, "THROTTLE_RATES", {"api_key": "1/min"})
    _key, client = make_key(workspace)
    with time_machine.travel(START, tick=False):
        assert client.get(WORKSPACE_URL).status_code == 200

        # when
        response = client.post(CONTACTS_URL, {"email": "ada@example.com"}, format="json")

    # then
    assert response.status_code == 429
    assert Contact.objects.count() == 0
