"""The Idempotency-Key header on POST /api/v1/contacts/ (API.md: Auth, errors, lists)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import time_machine

from contacts.models import Contact
from core.models import IdempotencyRecord

pytestmark = pytest.mark.django_db

CONTACTS_URL = "/api/v1/contacts/"
START = datetime(2025, 3, 3, 9, 0, tzinfo=UTC)


def post(client, body, key):
    return client.post(CONTACTS_URL, body, format="json", HTTP_IDEMPOTENCY_KEY=key)


def test_same_key_and_body_replays_the_first_response(workspace, api):
    # given a contact created with an Idempotency-Key
    body = {"email": "ada@example.com", "first_name": "Ada"}
    first = post(api, body, "order-1001")
    assert first.status_code == 201
    assert "Idempotent-Replayed" not in first

    # when the same request is sent again with the same key
    replay = post(api, body, "order-1001")

    # then the first response comes back, marked as a replay, and nothing new is made
    assert replay.status_code == 201
    assert replay["Idempotent-Replayed"] == "true"
    assert replay.json() == first.json()
    assert replay.json()["id"] == first.json()["id"]
    assert Contact.objects.filter(workspace=workspace).count() == 1
    assert IdempotencyRecord.objects.filter(workspace=workspace).count() == 1


def test_replay_does_not_apply_the_request_again(workspace, api):
    # given a contact created with a key and changed afterwards without one
    body = {"email": "ada@example.com", "first_name": "Ada"}
    first = post(api, body, "order-1001")
    contact_id = first.json()["id"]
    api.patch(f"{CONTACTS_URL}{contact_id}/", {"first_name": "Augusta"}, format="json")

    # when the first request is retried with its key
    replay = post(api, body, "order-1001")

    # then the stored answer comes back and the later change stands
    assert replay.status_code == 201
    assert replay.json()["first_name"] == "Ada"
    assert Contact.objects.get(pk=contact_id).first_name == "Augusta"


def test_without_a_key_the_post_is_an_ordinary_upsert(workspace, api):
    # given
    body = {"email": "ada@example.com"}
    first = api.post(CONTACTS_URL, body, format="json")

    # when
    second = api.post(CONTACTS_URL, body, format="json")

    # then
    assert first.status_code == 201
    assert second.status_code == 200
    assert "Idempotent-Replayed" not in second
    assert second.json()["id"] == first.json()["id"]
    assert IdempotencyRecord.objects.count() == 0


def test_same_key_with_another_body_is_409_and_changes_nothing(workspace, api):
    # given
    first = post(api, {"email": "ada@example.com"}, "order-1001")
    assert first.status_code == 201

    # when the key is reused for another request
    response = post(api, {"email": "grace@example.com"}, "order-1001")

    # then
    assert response.status_code == 409
    assert set(response.json()) == {"detail"}
    assert "Idempotent-Replayed" not in response
    assert list(Contact.objects.values_list("email", flat=True)) == ["ada@example.com"]
    assert IdempotencyRecord.objects.count() == 1


def test_same_key_with_a_changed_field_is_409(workspace, api):
    # given
    post(api, {"email": "ada@example.com", "first_name": "Ada"}, "order-1001")

    # when the same address is sent with another name under the same key
    response = post(api, {"email": "ada@example.com", "first_name": "Eve"}, "order-1001")

    # then
    assert response.status_code == 409
    assert Contact.objects.get().first_name == "Ada"


def test_a_400_is_not_stored_and_the_corrected_request_succeeds(workspace, api):
    # given a request refused for a bad address
    refused = post(api, {"email": "not-an-address"}, "order-1001")
    assert refused.status_code == 400
    assert set(refused.json()) == {"email"}
    assert IdempotencyRecord.objects.count() == 0
    assert Contact.objects.count() == 0

    # when the corrected request is sent with the same key
    corrected = post(api, {"email": "ada@example.com"}, "order-1001")

    # then it is carried out, not refused as a different body
    assert corrected.status_code == 201
    assert "Idempotent-Replayed" not in corrected
    assert Contact.objects.get().email == "ada@example.com"
    assert IdempotencyRecord.objects.get().response_status == 201


def test_a_refused_request_is_not_replayed(workspace, api):
    # given a request refused by a rule of the domain (subscribed without consent)
    body = {"email": "ada@example.com", "status": "subscribed"}
    first = post(api, body, "order-1001")
    assert first.status_code == 400

    # when the same request is sent again
    second = post(api, body, "order-1001")

    # then it is judged afresh and still refused, and nothing was kept
    assert second.status_code == 400
    assert "Idempotent-Replayed" not in second
    assert IdempotencyRecord.objects.count() == 0
    assert Contact.objects.count() == 0


def test_keys_are_per_workspace(workspace, other_workspace, api, api_client_for):
    # given a key used in one workspace
    other_api = api_client_for(other_workspace)
    body = {"email": "ada@example.com"}
    first = post(api, body, "order-1001")

    # when another workspace uses the same key with the same body
    other = post(other_api, body, "order-1001")

    # then it is an independent request that creates its own contact
    assert first.status_code == 201
    assert other.status_code == 201
    assert "Idempotent-Replayed" not in other
    assert other.json()["id"] != first.json()["id"]
    assert Contact.objects.get(pk=other.json()["id"]).workspace_id == other_workspace.id
    assert Contact.objects.filter(workspace=workspace).count() == 1
    assert Contact.objects.filter(workspace=other_workspace).count() == 1


def test_same_key_with_another_body_in_another_workspace_is_not_a_conflict(
    workspace, other_workspace, api, api_client_for
):
    # given
    other_api = api_client_for(other_workspace)
    post(api, {"email": "ada@example.com"}, "order-1001")

    # when
    other = post(other_api, {"email": "grace@example.com"}, "order-1001")

    # then
    assert other.status_code == 201
    assert Contact.objects.get(workspace=other_workspace).email == "grace@example.com"


def test_replay_within_24_hours(workspace, api):
    # given a request made at START
    body = {"email": "ada@example.com"}
    with time_machine.travel(START, tick=False) as traveller:
        first = post(api, body, "order-1001")

        # when it is retried just under 24 hours later
        traveller.shift(timedelta(hours=23, minutes=59))
        replay = post(api, body, "order-1001")

    # then it is still replayed
    assert replay.status_code == 201
    assert replay["Idempotent-Replayed"] == "true"
    assert replay.json() == first.json()


def test_a_record_older_than_24_hours_no_longer_replays(workspace, api):
    # given a request made at START
    body = {"email": "ada@example.com"}
    with time_machine.travel(START, tick=False) as traveller:
        first = post(api, body, "order-1001")
        assert first.status_code == 201

        # when the same request comes more than 24 hours later
        traveller.shift(timedelta(hours=24, seconds=1))
        later = post(api, body, "order-1001")

    # then it is carried out again: the contact exists, so the upsert answers 200
    assert later.status_code == 200
    assert "Idempotent-Replayed" not in later
    assert later.json()["id"] == first.json()["id"]
    assert Contact.objects.count() == 1
    record = IdempotencyRecord.objects.get()
    assert record.created_at == START + timedelta(hours=24, seconds=1)
    assert record.response_status == 200


def test_an_expired_key_may_carry_another_body(workspace, api):
    # given a key used at START
    with time_machine.travel(START, tick=False) as traveller:
        post(api, {"email": "ada@example.com"}, "order-1001")

        # when it is used for another request a day later
        traveller.shift(timedelta(hours=25))
        response = post(api, {"email": "grace@example.com"}, "order-1001")

    # then it is no conflict
    assert response.status_code == 201
    assert Contact.objects.count() == 2


def test_erasing_the_contact_leaves_no_personal_data_in_stored_responses(workspace, api):
    # given a contact created with an Idempotency-Key, so its answer is kept for replays
    body = {"email": "ada@example.com", "first_name": "Ada", "last_name": "Lovelace"}
    created = post(api, body, "order-1001")
    assert created.status_code == 201

    # when the contact is erased (GDPR art. 17)
    assert api.delete(f"{CONTACTS_URL}{created.json()['id']}/").status_code == 204

    # then no kept response still holds the erased person's address or name
    assert Contact.objects.count() == 0
    assert not IdempotencyRecord.objects.filter(response_body__email="ada@example.com").exists()
    assert not IdempotencyRecord.objects.filter(response_body__last_name="Lovelace").exists()


def test_overlong_key_is_400(workspace, api):
    # when
    response = post(api, {"email": "ada@example.com"}, "k" * 256)

    # then
    assert response.status_code == 400
    assert set(response.json()) == {"Idempotency-Key"}
    assert Contact.objects.count() == 0
    assert IdempotencyRecord.objects.count() == 0
