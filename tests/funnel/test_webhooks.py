"""Outgoing webhooks against a real HTTP receiver on loopback: signing, retries with growing
delays, disabling, SSRF refusals, the REST API and the pages."""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import time_machine
from django.db import transaction

from contacts.models import Contact
from contacts.services import contact_erase, contact_upsert
from core.exceptions import ApplicationError
from core.models import Role
from funnel import webhook_receivers, webhooks
from funnel.delivery_tries import TryOutcome
from funnel.models import (
    DeliveryStatus,
    Stage,
    TransitionCause,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
)
from funnel.services import contact_move, funnel_create
from funnel.webhook_tasks import webhook_deliveries_due, webhook_deliveries_purge
from tests.factories import ContactFactory

pytestmark = pytest.mark.django_db

T0 = datetime(2025, 6, 2, 8, 0, tzinfo=UTC)
WEBHOOKS_URL = "/api/v1/webhooks/"
ENDPOINT_FIELDS = {
    "id",
    "url",
    "events",
    "enabled",
    "disabled_reason",
    "failing_since",
    "created_at",
}


# --- a real receiver on loopback


@dataclass
class ReceivedRequest:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    port: int
    status: int = 200
    response_body: bytes = b"ok"
    extra_headers: dict[str, str] = field(default_factory=dict)
    requests: list[ReceivedRequest] = field(default_factory=list)
    got_request: threading.Event = field(default_factory=threading.Event)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/funnelwerk"


def _handler(receiver_state: list[Receiver]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            receiver = receiver_state[0]
            length = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(length)
            receiver.requests.append(
                ReceivedRequest(path=self.path, headers=dict(self.headers.items()), body=body)
            )
            receiver.got_request.set()
            self.send_response(receiver.status)
            for name, value in receiver.extra_headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(receiver.response_body)))
            self.end_headers()
            self.wfile.write(receiver.response_body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@pytest.fixture
def receiver(settings: Any) -> Iterator[Receiver]:
    """A webhook receiver on 127.0.0.1 (free port); loopback allowed for this test only."""
    settings.WEBHOOKS_ALLOW_INSECURE_LOOPBACK = True
    state: list[Receiver] = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    state.append(Receiver(port=server.server_address[1]))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state[0]
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


@pytest.fixture(autouse=True)
def webhook_signals() -> Iterator[None]:
    """The receivers are wired by FunnelConfig.ready; connect them here if that is not done."""
    connected_here = not webhook_receivers.is_connected()
    if connected_here:
        webhook_receivers.connect()
    yield
    if connected_here:
        webhook_receivers.disconnect()


@pytest.fixture
def run_on_commit(django_capture_on_commit_callbacks: Any) -> Callable[[], Any]:
    """Run the after-commit callbacks (Celery is eager) of what happens inside the block."""
    return lambda: django_capture_on_commit_callbacks(execute=True)


def expected_signature(secret: str, request: ReceivedRequest) -> str:
    timestamp = request.headers["X-Funnelwerk-Timestamp"]
    return hmac.new(secret.encode(), timestamp.encode() + request.body, hashlib.sha256).hexdigest()


def make_endpoint(workspace: Any, url: str, events: list[str]) -> tuple[WebhookEndpoint, str]:
    return webhooks.webhook_endpoint_create(workspace=workspace, url=url, events=events)


# --- delivering events


def test_a_stage_change_is_delivered_signed_to_the_receiver(
    workspace, receiver, run_on_commit
) -> None:
    # given
    endpoint, secret = make_endpoint(workspace, receiver.url, ["contact.stage_changed"])
    funnel = funnel_create(workspace=workspace, name="Shop", preset="aida")
    interest = Stage.objects.get(funnel=funnel, key="interest")
    contact = ContactFactory(workspace=workspace, email="ada@example.org")

    # when
    with time_machine.travel(T0, tick=False), run_on_commit():
        transition = contact_move(
            funnel=funnel, contact=contact, stage=interest, cause=TransitionCause.MANUAL
        )

    # then
    assert transition is not None
    assert len(receiver.requests) == 1
    request = receiver.requests[0]
    assert request.path == "/hooks/funnelwerk"
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["User-Agent"] == "Funnelwerk-Webhooks/1"
    assert request.headers["X-Funnelwerk-Timestamp"] == str(int(T0.timestamp()))
    assert request.headers["X-Funnelwerk-Signature"] == expected_signature(secret, request)
    delivery = WebhookDelivery.objects.get(endpoint=endpoint)
    assert json.loads(request.body) == {
        "id": str(delivery.pk),
        "type": "contact.stage_changed",
        "created_at": T0.isoformat(),
        "data": {
            "contact": {"id": str(contact.pk), "email": "ada@example.org"},
            "funnel": str(funnel.pk),
            "from_stage": None,
            "to_stage": str(interest.pk),
            "cause": "manual",
            "transition": str(transition.pk),
        },
    }
    assert (delivery.status, delivery.attempts, delivery.delivered_at) == (
        DeliveryStatus.SUCCEEDED,
        1,
        T0,
    )
    attempt = WebhookAttempt.objects.get(delivery=delivery)
    assert (attempt.status_code, attempt.error, attempt.response_excerpt) == (200, "", "ok")


def test_a_new_contact_is_delivered_as_contact_created(workspace, receiver, run_on_commit) -> None:
    # given
    _endpoint, secret = make_endpoint(workspace, receiver.url, ["contact.created"])

    # when
    with run_on_commit():
        contact, created = contact_upsert(
            workspace=workspace, email="grace@example.org", changes={"first_name": "Grace"}
        )

    # then
    assert created is True
    assert len(receiver.requests) == 1
    request = receiver.requests[0]
    assert request.headers["X-Funnelwerk-Signature"] == expected_signature(secret, request)
    body = json.loads(request.body)
    assert set(body) == {"id", "type", "created_at", "data"}
    assert body["type"] == "contact.created"
    # ids and the address only: no names or other personal data
    assert body["data"] == {"contact": {"id": str(contact.pk), "email": "grace@example.org"}}


def test_an_event_type_nobody_wants_costs_one_query_and_sends_nothing(
    workspace, receiver, django_assert_num_queries
) -> None:
    # given: an endpoint for another event type only
    make_endpoint(workspace, receiver.url, ["contact.converted"])
    contact = ContactFactory(workspace=workspace)

    # when
    with django_assert_num_queries(1):
        webhook_receivers.on_contact_created(
            sender=Contact, workspace_id=str(workspace.pk), contact_id=str(contact.pk)
        )

    # then
    assert WebhookDelivery.objects.count() == 0
    assert receiver.requests == []


def test_disabled_endpoints_and_other_workspaces_get_nothing(
    workspace, other_workspace, receiver, run_on_commit
) -> None:
    # given
    disabled, _secret = make_endpoint(workspace, receiver.url, ["contact.created"])
    webhooks.webhook_endpoint_update(endpoint=disabled, enabled=False)
    make_endpoint(other_workspace, receiver.url, ["contact.created"])

    # when
    with run_on_commit():
        sent = webhooks.webhook_enqueue(
            workspace_id=workspace.pk, event_type="contact.created", data={"contact": {}}
        )

    # then
    assert sent == 0
    assert WebhookDelivery.objects.count() == 0
    assert receiver.requests == []


def test_a_rolled_back_change_announces_nothing(workspace, receiver, run_on_commit) -> None:
    make_endpoint(workspace, receiver.url, ["contact.created"])

    with run_on_commit(), pytest.raises(RuntimeError), transaction.atomic():
        contact_upsert(workspace=workspace, email="late@example.org", changes={})
        raise RuntimeError("the request failed after creating the contact")

    assert WebhookDelivery.objects.count() == 0
    assert receiver.requests == []


def test_erasing_a_contact_blanks_its_address_in_every_delivery(
    workspace, receiver, run_on_commit
) -> None:
    # given a contact whose creation was delivered with its address
    make_endpoint(workspace, receiver.url, ["contact.created", "contact.unsubscribed"])
    with run_on_commit():
        contact, _created = contact_upsert(workspace=workspace, email="eve@example.org", changes={})
    contact_id = str(contact.pk)

    # when it is erased (GDPR art. 17)
    with run_on_commit():
        contact_erase(contact=contact)

    # then the unsubscription goes out without the address, and none is kept
    sent = [json.loads(request.body) for request in receiver.requests]
    assert [(body["type"], body["data"]) for body in sent] == [
        ("contact.created", {"contact": {"id": contact_id, "email": "eve@example.org"}}),
        ("contact.unsubscribed", {"contact": {"id": contact_id, "email": ""}}),
    ]
    assert [
        delivery.payload["data"]["contact"]
        for delivery in WebhookDelivery.objects.order_by("created_at", "event_type")
    ] == [{"id": contact_id, "email": ""}, {"id": contact_id, "email": ""}]


def test_finished_deliveries_are_purged_after_30_days(workspace, receiver, run_on_commit) -> None:
    make_endpoint(workspace, receiver.url, ["contact.created"])
    receiver.status = 500
    with time_machine.travel(T0, tick=False), run_on_commit():
        webhooks.webhook_enqueue(workspace_id=workspace.pk, event_type="contact.created", data={})
    old_failed = WebhookDelivery.objects.get()
    WebhookDelivery.objects.filter(pk=old_failed.pk).update(status=DeliveryStatus.FAILED)
    receiver.status = 200
    with time_machine.travel(T0 + timedelta(days=29), tick=False), run_on_commit():
        webhooks.webhook_enqueue(workspace_id=workspace.pk, event_type="contact.created", data={})

    with time_machine.travel(T0 + timedelta(days=30, seconds=1), tick=False):
        webhook_deliveries_purge()

    assert WebhookDelivery.objects.filter(pk=old_failed.pk).exists() is False
    assert WebhookDelivery.objects.count() == 1
    assert WebhookAttempt.objects.count() == 1


# --- retries, backoff, disabling


def test_a_failing_receiver_is_retried_with_growing_delays_then_disabled(
    workspace, receiver, run_on_commit
) -> None:
    # given a receiver that answers 500
    receiver.status = 500
    receiver.response_body = b"Internal Server Error"
    endpoint, _secret = make_endpoint(workspace, receiver.url, ["contact.created"])

    # when the event is delivered and every due retry runs
    with time_machine.travel(T0, tick=False) as clock:
        with run_on_commit():
            webhooks.webhook_enqueue(
                workspace_id=workspace.pk, event_type="contact.created", data={"n": 1}
            )
        delivery = WebhookDelivery.objects.get()
        schedule = []
        while True:
            delivery.refresh_from_db()
            if delivery.status != DeliveryStatus.RETRYING:
                break
            endpoint.refresh_from_db()
            assert (endpoint.enabled, endpoint.failing_since) == (True, T0)
            schedule.append(delivery.next_attempt_at)
            clock.move_to(delivery.next_attempt_at)
            webhook_deliveries_due()

    # then: 1, 2, 4, 8, 16, 32 minutes apart, then hourly, the last try at 24 h
    gaps = [
        int((later - earlier).total_seconds() // 60)
        for earlier, later in zip([T0, *schedule], schedule, strict=False)
    ]
    assert gaps == [1, 2, 4, 8, 16, 32] + [60] * 22 + [57]
    assert schedule[-1] == T0 + timedelta(hours=24)
    assert (delivery.status, delivery.attempts, delivery.next_attempt_at) == (
        DeliveryStatus.FAILED,
        30,
        None,
    )
    assert len(receiver.requests) == 30
    attempts = list(WebhookAttempt.objects.filter(delivery=delivery))
    assert {(a.status_code, a.error, a.response_excerpt) for a in attempts} == {
        (500, "Answered with HTTP 500.", "Internal Server Error")
    }
    endpoint.refresh_from_db()
    assert endpoint.enabled is False
    assert endpoint.disabled_reason == (
        "Disabled automatically on 2025-06-03 08:00 UTC after 24 hours without a successful "
        "delivery. Last error: Answered with HTTP 500."
    )


def test_disabling_fails_the_deliveries_still_waiting(workspace, receiver, run_on_commit) -> None:
    # given: an endpoint failing since T0 with an older delivery waiting for its retry
    receiver.status = 503
    endpoint, _secret = make_endpoint(workspace, receiver.url, ["contact.created"])
    with time_machine.travel(T0, tick=False), run_on_commit():
        webhooks.webhook_enqueue(
            workspace_id=workspace.pk, event_type="contact.created", data={"n": 1}
        )
    waiting = WebhookDelivery.objects.get()
    with time_machine.travel(T0 + timedelta(hours=23, minutes=59), tick=False), run_on_commit():
        webhooks.webhook_enqueue(
            workspace_id=workspace.pk, event_type="contact.created", data={"n": 2}
        )
    latest = WebhookDelivery.objects.exclude(pk=waiting.pk).get()

    # when the latest delivery fails again 24 hours after the first failure
    with time_machine.travel(T0 + timedelta(hours=24), tick=False):
        webhooks.deliveries_send(delivery_ids=[latest.pk])

    # then the endpoint is off and nothing is left waiting
    endpoint.refresh_from_db()
    assert endpoint.enabled is False
    assert endpoint.disabled_reason.endswith("Last error: Answered with HTTP 503.")
    assert set(WebhookDelivery.objects.values_list("pk", "status", "attempts")) == {
        (waiting.pk, DeliveryStatus.FAILED, 1),
        (latest.pk, DeliveryStatus.FAILED, 2),
    }
    assert len(receiver.requests) == 3


def test_a_success_clears_the_failure_streak(workspace, receiver, run_on_commit) -> None:
    # given a failed first try
    receiver.status = 502
    endpoint, _secret = make_endpoint(workspace, receiver.url, ["contact.created"])
    with time_machine.travel(T0, tick=False) as clock:
        with run_on_commit():
            webhooks.webhook_enqueue(
                workspace_id=workspace.pk, event_type="contact.created", data={}
            )
        endpoint.refresh_from_db()
        assert endpoint.failing_since == T0

        # when the receiver recovers before the retry
        receiver.status = 204
        receiver.response_body = b""
        clock.move_to(T0 + timedelta(minutes=1))
        webhook_deliveries_due()

    # then
    endpoint.refresh_from_db()
    delivery = WebhookDelivery.objects.get()
    assert endpoint.failing_since is None
    assert (delivery.status, delivery.attempts, delivery.delivered_at) == (
        DeliveryStatus.SUCCEEDED,
        2,
        T0 + timedelta(minutes=1),
    )


def test_a_delivery_is_sent_once_even_when_the_task_runs_twice(
    workspace, receiver, run_on_commit
) -> None:
    make_endpoint(workspace, receiver.url, ["contact.created"])
    with time_machine.travel(T0, tick=False):
        with run_on_commit():
            webhooks.webhook_enqueue(
                workspace_id=workspace.pk, event_type="contact.created", data={}
            )
        delivery = WebhookDelivery.objects.get()

        outcome = webhooks.deliveries_send(delivery_ids=[delivery.pk])
        webhook_deliveries_due()

    assert outcome == TryOutcome(succeeded=0, failed=0)
    assert len(receiver.requests) == 1


def test_a_redirect_is_a_failure_and_not_followed(workspace, receiver, run_on_commit) -> None:
    # given a receiver that redirects
    receiver.status = 302
    receiver.response_body = b""
    receiver.extra_headers = {"Location": f"http://127.0.0.1:{receiver.port}/elsewhere"}
    make_endpoint(workspace, receiver.url, ["contact.created"])

    # when
    with time_machine.travel(T0, tick=False), run_on_commit():
        webhooks.webhook_enqueue(workspace_id=workspace.pk, event_type="contact.created", data={})

    # then
    assert [request.path for request in receiver.requests] == ["/hooks/funnelwerk"]
    delivery = WebhookDelivery.objects.get()
    assert (delivery.status, delivery.next_attempt_at) == (
        DeliveryStatus.RETRYING,
        T0 + timedelta(minutes=1),
    )
    attempt = WebhookAttempt.objects.get()
    assert (attempt.status_code, attempt.error) == (
        302,
        "Answered with a redirect (302); redirects are not followed.",
    )


def test_response_excerpts_are_capped_and_stripped_of_control_characters(
    workspace, receiver, run_on_commit
) -> None:
    receiver.status = 400
    receiver.response_body = b"bad\x1b[31m request\r\n" + b"x" * 100_000
    make_endpoint(workspace, receiver.url, ["contact.created"])

    with run_on_commit():
        webhooks.webhook_enqueue(workspace_id=workspace.pk, event_type="contact.created", data={})

    attempt = WebhookAttempt.objects.get()
    assert attempt.response_excerpt == ("bad[31m request " + "x" * 500)[:500]
    assert len(attempt.response_excerpt) == 500


def test_send_test_posts_a_ping_once_without_retries(workspace, receiver, run_on_commit) -> None:
    receiver.status = 500
    endpoint, secret = make_endpoint(workspace, receiver.url, ["contact.created"])

    with time_machine.travel(T0, tick=False), run_on_commit():
        delivery = webhooks.webhook_send_test(endpoint=endpoint)

    request = receiver.requests[0]
    assert request.headers["X-Funnelwerk-Signature"] == expected_signature(secret, request)
    assert json.loads(request.body) == {
        "id": str(delivery.pk),
        "type": "ping",
        "created_at": T0.isoformat(),
        "data": {"endpoint": str(endpoint.pk), "message": "Test delivery from Funnelwerk."},
    }
    delivery.refresh_from_db()
    endpoint.refresh_from_db()
    assert (delivery.status, delivery.attempts) == (DeliveryStatus.FAILED, 1)
    # a failed test does not start a failure streak
    assert endpoint.failing_since is None


# --- SSRF


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://hooks.example.com/in", "Use an https:// URL."),
        ("ftp://hooks.example.com/in", "Use an https:// URL."),
        ("https://127.0.0.1/in", "127.0.0.1 is not a public address."),
        ("https://10.0.0.1/in", "10.0.0.1 is not a public address."),
        ("https://192.168.1.20:8443/in", "192.168.1.20 is not a public address."),
        ("https://169.254.169.254/latest/meta-data/", "169.254.169.254 is not a public address."),
        ("https://100.64.0.1/in", "100.64.0.1 is not a public address."),
        ("https://[::1]/in", "::1 is not a public address."),
        ("https://[fd00::1]/in", "fd00::1 is not a public address."),
        ("https://[::ffff:127.0.0.1]/in", "::ffff:7f00:1 is not a public address."),
        ("https://0.0.0.0/in", "0.0.0.0 is not a public address."),
        (
            "https://user:pw@hooks.example.com/in",
            "Credentials in the URL are not supported; verify the signature.",
        ),
    ],
)
def test_unsafe_urls_are_refused_at_creation(workspace, settings, url, message) -> None:
    settings.WEBHOOKS_ALLOW_INSECURE_LOOPBACK = False

    with pytest.raises(ApplicationError) as refused:
        make_endpoint(workspace, url, ["contact.created"])

    assert (refused.value.field, refused.value.message) == ("url", message)
    assert WebhookEndpoint.objects.count() == 0


def test_loopback_http_needs_the_test_setting(workspace, settings) -> None:
    settings.WEBHOOKS_ALLOW_INSECURE_LOOPBACK = False

    with pytest.raises(ApplicationError) as refused:
        make_endpoint(workspace, "http://127.0.0.1:8080/in", ["contact.created"])

    assert refused.value.message == "Use an https:// URL."


@pytest.fixture
def loopback_listener() -> Iterator[socket.socket]:
    """A TCP port on 127.0.0.1 that records whether anyone tried to connect."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(5)
    yield listener
    listener.close()


def assert_nobody_connected(listener: socket.socket) -> None:
    listener.setblocking(False)
    with pytest.raises(BlockingIOError):
        listener.accept()


def test_a_name_resolving_to_loopback_is_refused_before_connecting(
    workspace, settings, loopback_listener, run_on_commit
) -> None:
    # given: "localhost" is a name, so it passes creation; it resolves to loopback for real
    settings.WEBHOOKS_ALLOW_INSECURE_LOOPBACK = False
    port = loopback_listener.getsockname()[1]
    make_endpoint(workspace, f"https://localhost:{port}/in", ["contact.created"])

    # when
    with run_on_commit():
        webhooks.webhook_enqueue(workspace_id=workspace.pk, event_type="contact.created", data={})

    # then
    attempt = WebhookAttempt.objects.get()
    assert attempt.status_code is None
    assert attempt.error in {
        f"Refused: localhost resolves to {address}, which is not a public address."
        for address in ("127.0.0.1", "::1")
    }
    assert WebhookDelivery.objects.get().status == DeliveryStatus.RETRYING
    assert_nobody_connected(loopback_listener)


def test_one_private_address_among_public_ones_is_refused(
    workspace, settings, monkeypatch, run_on_commit
) -> None:
    # given a DNS answer (outside the machine, so faked) mixing a public and a private address
    settings.WEBHOOKS_ALLOW_INSECURE_LOOPBACK = False
    answers = {
        "hooks.example.com": [
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.215.14", 443)),
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.0.0.7", 443)),
        ]
    }
    monkeypatch.setattr(socket, "getaddrinfo", lambda host, *args, **kwargs: answers[host])
    make_endpoint(workspace, "https://hooks.example.com/in", ["contact.created"])

    # when
    with run_on_commit():
        webhooks.webhook_enqueue(workspace_id=workspace.pk, event_type="contact.created", data={})

    # then
    assert WebhookAttempt.objects.get().error == (
        "Refused: hooks.example.com resolves to 10.0.0.7, which is not a public address."
    )


# --- REST API


def test_api_creates_an_endpoint_and_returns_the_secret_once(workspace, api) -> None:
    # when
    response = api.post(
        WEBHOOKS_URL,
        {"url": "https://crm.example.com/in", "events": ["contact.converted", "contact.created"]},
        format="json",
    )

    # then
    assert response.status_code == 201
    body = response.json()
    assert set(body) == ENDPOINT_FIELDS | {"secret"}
    endpoint = WebhookEndpoint.objects.get()
    assert body["secret"] == endpoint.secret
    assert body["secret"].startswith("whsec_")
    assert len(body["secret"]) == len("whsec_") + 43
    assert body["events"] == ["contact.created", "contact.converted"]
    assert (body["enabled"], body["disabled_reason"], body["failing_since"]) == (True, "", None)

    listed = api.get(WEBHOOKS_URL).json()
    assert listed["count"] == 1
    assert set(listed["results"][0]) == ENDPOINT_FIELDS
    detail = api.get(f"{WEBHOOKS_URL}{endpoint.pk}/").json()
    assert set(detail) == ENDPOINT_FIELDS
    assert endpoint.secret not in json.dumps([listed, detail])


def test_api_idempotency_key_replays_the_creation(workspace, api) -> None:
    payload = {"url": "https://crm.example.com/in", "events": ["contact.created"]}

    first = api.post(WEBHOOKS_URL, payload, format="json", HTTP_IDEMPOTENCY_KEY="hook-1")
    second = api.post(WEBHOOKS_URL, payload, format="json", HTTP_IDEMPOTENCY_KEY="hook-1")

    assert (first.status_code, second.status_code) == (201, 201)
    assert second.json() == first.json()
    assert WebhookEndpoint.objects.count() == 1


def test_api_validation_errors(workspace, api) -> None:
    unknown_type = api.post(
        WEBHOOKS_URL,
        {"url": "https://crm.example.com/in", "events": ["contact.hugged"]},
        format="json",
    )
    private = api.post(
        WEBHOOKS_URL, {"url": "https://10.1.2.3/in", "events": ["contact.created"]}, format="json"
    )
    no_events = api.post(
        WEBHOOKS_URL, {"url": "https://crm.example.com/in", "events": []}, format="json"
    )

    assert (unknown_type.status_code, unknown_type.json()) == (
        400,
        {"events": {"0": ['"contact.hugged" is not a valid choice.']}},
    )
    assert (private.status_code, private.json()) == (
        400,
        {"url": ["10.1.2.3 is not a public address."]},
    )
    assert (no_events.status_code, no_events.json()) == (
        400,
        {"events": ["This list may not be empty."]},
    )
    assert WebhookEndpoint.objects.count() == 0


def test_api_patch_enables_again_and_delete_removes(workspace, api) -> None:
    endpoint, _secret = make_endpoint(workspace, "https://crm.example.com/in", ["contact.created"])
    WebhookEndpoint.objects.filter(pk=endpoint.pk).update(
        enabled=False, disabled_reason="Disabled automatically", failing_since=T0
    )

    patched = api.patch(
        f"{WEBHOOKS_URL}{endpoint.pk}/",
        {"enabled": True, "events": ["contact.unsubscribed"]},
        format="json",
    )
    deleted = api.delete(f"{WEBHOOKS_URL}{endpoint.pk}/")

    assert patched.status_code == 200
    body = patched.json()
    assert (body["enabled"], body["disabled_reason"], body["failing_since"], body["events"]) == (
        True,
        "",
        None,
        ["contact.unsubscribed"],
    )
    assert deleted.status_code == 204
    assert WebhookEndpoint.objects.count() == 0


def test_api_deliveries_show_every_attempt(
    workspace, api, receiver, run_on_commit, django_assert_num_queries
) -> None:
    # given a delivery that failed once and then succeeded
    receiver.status = 500
    receiver.response_body = b"<h1>down</h1>"
    endpoint, _secret = make_endpoint(workspace, receiver.url, ["contact.created"])
    with time_machine.travel(T0, tick=False) as clock:
        with run_on_commit():
            webhooks.webhook_enqueue(
                workspace_id=workspace.pk, event_type="contact.created", data={"x": 1}
            )
        receiver.status = 200
        receiver.response_body = b"thanks"
        clock.move_to(T0 + timedelta(minutes=1))
        webhook_deliveries_due()
    delivery = WebhookDelivery.objects.get()

    # when (auth, key touch, endpoint, count, deliveries, attempts)
    with django_assert_num_queries(6):
        response = api.get(f"{WEBHOOKS_URL}{endpoint.pk}/deliveries/")

    # then
    assert response.status_code == 200
    body = response.json()
    assert (body["count"], body["next"], body["previous"]) == (1, None, None)
    result = body["results"][0]
    for timing in ("duration_ms",):
        for attempt in result["attempt_log"]:
            assert attempt.pop(timing) >= 0
    assert result == {
        "id": str(delivery.pk),
        "type": "contact.created",
        "status": "succeeded",
        "attempts": 2,
        "created_at": "2025-06-02T08:00:00Z",
        "delivered_at": "2025-06-02T08:01:00Z",
        "next_attempt_at": None,
        "payload": delivery.payload,
        "attempt_log": [
            {
                "attempted_at": "2025-06-02T08:01:00Z",
                "status_code": 200,
                "error": "",
                "response_excerpt": "thanks",
            },
            {
                "attempted_at": "2025-06-02T08:00:00Z",
                "status_code": 500,
                "error": "Answered with HTTP 500.",
                "response_excerpt": "<h1>down</h1>",
            },
        ],
    }


def test_api_test_ping_is_accepted(workspace, api, receiver, run_on_commit) -> None:
    endpoint, _secret = make_endpoint(workspace, receiver.url, ["contact.created"])

    with run_on_commit():
        response = api.post(f"{WEBHOOKS_URL}{endpoint.pk}/test/")

    assert response.status_code == 202
    delivery = WebhookDelivery.objects.get()
    assert response.json() == {"id": str(delivery.pk), "type": "ping", "status": "queued"}
    assert [json.loads(request.body)["type"] for request in receiver.requests] == ["ping"]


def test_api_hides_other_workspaces_endpoints(
    workspace, other_workspace, api, api_client_for
) -> None:
    endpoint, _secret = make_endpoint(workspace, "https://crm.example.com/in", ["contact.created"])
    foreign = api_client_for(other_workspace)
    detail = f"{WEBHOOKS_URL}{endpoint.pk}/"

    responses = [
        foreign.get(detail),
        foreign.patch(detail, {"enabled": False}, format="json"),
        foreign.delete(detail),
        foreign.get(f"{detail}deliveries/"),
        foreign.post(f"{detail}test/"),
    ]

    assert [response.status_code for response in responses] == [404] * 5
    assert foreign.get(WEBHOOKS_URL).json()["count"] == 0
    endpoint.refresh_from_db()
    assert endpoint.enabled is True
    assert WebhookDelivery.objects.count() == 0


# --- pages


def test_admin_sees_the_delivery_log_escaped(
    workspace, owner, logged_in, receiver, run_on_commit
) -> None:
    # given a delivery whose receiver answered with markup
    receiver.status = 500
    receiver.response_body = b"<script>alert('x')</script>"
    endpoint, _secret = make_endpoint(workspace, receiver.url, ["contact.created"])
    with run_on_commit():
        webhooks.webhook_enqueue(workspace_id=workspace.pk, event_type="contact.created", data={})
    client = logged_in(owner)

    # when
    listing = client.get("/funnels/webhooks/")
    detail = client.get(f"/funnels/webhooks/{endpoint.pk}/")

    # then
    assert listing.status_code == 200
    assert receiver.url in listing.content.decode()
    assert detail.status_code == 200
    html = detail.content.decode()
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in html
    assert "<script>alert(" not in html
    assert "Answered with HTTP 500." in html
    assert endpoint.secret not in html


def test_editor_gets_403_on_webhook_and_integration_pages(
    workspace, member_of, logged_in, receiver
) -> None:
    endpoint, _secret = make_endpoint(workspace, receiver.url, ["contact.created"])
    client = logged_in(member_of(workspace, Role.EDITOR))

    responses = [
        client.get("/funnels/webhooks/"),
        client.get("/funnels/webhooks/new/"),
        client.post("/funnels/webhooks/new/", {"url": receiver.url, "events": ["contact.created"]}),
        client.get(f"/funnels/webhooks/{endpoint.pk}/"),
        client.post(f"/funnels/webhooks/{endpoint.pk}/test/"),
        client.post(f"/funnels/webhooks/{endpoint.pk}/delete/"),
        client.get("/funnels/integrations/"),
    ]

    assert [response.status_code for response in responses] == [403] * 7
    assert WebhookEndpoint.objects.count() == 1
    assert WebhookDelivery.objects.count() == 0


def test_page_creates_an_endpoint_and_shows_the_secret_once(
    workspace, owner, logged_in, receiver
) -> None:
    client = logged_in(owner)

    created = client.post(
        "/funnels/webhooks/new/",
        {"url": receiver.url, "events": ["contact.created", "contact.stage_changed"]},
    )

    endpoint = WebhookEndpoint.objects.get()
    assert created.status_code == 200
    assert created["Cache-Control"] == "no-store"
    assert endpoint.secret in created.content.decode()
    assert endpoint.events == ["contact.created", "contact.stage_changed"]
    assert endpoint.secret not in client.get(f"/funnels/webhooks/{endpoint.pk}/").content.decode()


def test_page_refuses_a_private_url(workspace, owner, logged_in, settings) -> None:
    settings.WEBHOOKS_ALLOW_INSECURE_LOOPBACK = False
    client = logged_in(owner)

    response = client.post(
        "/funnels/webhooks/new/", {"url": "https://169.254.169.254/", "events": ["contact.created"]}
    )

    assert response.status_code == 200
    assert "169.254.169.254 is not a public address." in response.content.decode()
    assert WebhookEndpoint.objects.count() == 0


def test_page_buttons_test_enable_and_delete(
    workspace, owner, logged_in, receiver, run_on_commit
) -> None:
    endpoint, _secret = make_endpoint(workspace, receiver.url, ["contact.created"])
    WebhookEndpoint.objects.filter(pk=endpoint.pk).update(
        enabled=False, disabled_reason="Disabled automatically", failing_since=T0
    )
    client = logged_in(owner)

    with run_on_commit():
        tested = client.post(f"/funnels/webhooks/{endpoint.pk}/test/")
    enabled = client.post(f"/funnels/webhooks/{endpoint.pk}/enable/")

    assert (tested.status_code, tested["Location"]) == (302, f"/funnels/webhooks/{endpoint.pk}/")
    assert [json.loads(request.body)["type"] for request in receiver.requests] == ["ping"]
    assert enabled.status_code == 302
    endpoint.refresh_from_db()
    assert (endpoint.enabled, endpoint.disabled_reason, endpoint.failing_since) == (True, "", None)

    deleted = client.post(f"/funnels/webhooks/{endpoint.pk}/delete/")
    assert (deleted.status_code, deleted["Location"]) == (302, "/funnels/webhooks/")
    assert WebhookEndpoint.objects.count() == 0


def test_pages_of_another_workspace_are_404(
    workspace, other_workspace, member_of, logged_in
) -> None:
    endpoint, _secret = make_endpoint(
        other_workspace, "https://crm.example.com/in", ["contact.created"]
    )
    client = logged_in(member_of(workspace, Role.OWNER))

    assert client.get(f"/funnels/webhooks/{endpoint.pk}/").status_code == 404
    assert client.post(f"/funnels/webhooks/{endpoint.pk}/delete/").status_code == 404
    assert WebhookEndpoint.objects.count() == 1
