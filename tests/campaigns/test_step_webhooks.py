"""The webhook step: one call per run and step, retried with backoff from the database, a
reason a person can read, shown in the builder. A real HTTP receiver on loopback answers."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import time_machine
from django.test import Client
from django.urls import URLPattern, URLResolver, include, path

import config.urls
from campaigns import engine
from campaigns.models import (
    Enrollment,
    Sequence,
    SequenceStatus,
    StepWebhookDelivery,
    StepWebhookStatus,
)
from campaigns.services import enrollment_create, sequence_create, sequence_set_status
from campaigns.step_webhooks import (
    step_webhook_deliveries_create,
    step_webhooks_due,
    step_webhooks_send,
)
from contacts.models import Contact, ContactStatus
from core.models import Role, Workspace
from tests.factories import ContactFactory

urlpatterns: list[URLPattern | URLResolver] = list(config.urls.urlpatterns)
if not any(str(pattern.pattern) == "sequences/" for pattern in urlpatterns):
    urlpatterns.append(path("sequences/", include("campaigns.urls")))
handler404 = config.urls.handler404
handler500 = config.urls.handler500
handler403 = config.urls.handler403

pytestmark = pytest.mark.django_db

T0 = dt.datetime(2025, 1, 6, 10, 0, tzinfo=dt.UTC)


@dataclass
class Receiver:
    """Answers each POST with the next status of `statuses` (the last one repeats)."""

    port: int
    statuses: list[int] = field(default_factory=lambda: [200])
    requests: list[tuple[dict[str, str], bytes]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/sequence"


@pytest.fixture
def receiver(settings: Any) -> Iterator[Receiver]:
    settings.WEBHOOKS_ALLOW_INSECURE_LOOPBACK = True
    state: list[Receiver] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            receiver = state[0]
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            receiver.requests.append((dict(self.headers.items()), body))
            status = receiver.statuses[min(len(receiver.requests), len(receiver.statuses)) - 1]
            self.send_response(status)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.append(Receiver(port=server.server_address[1]))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state[0]
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


@pytest.fixture
def subscriber(workspace: Workspace) -> Contact:
    contact: Contact = ContactFactory(
        workspace=workspace, status=ContactStatus.SUBSCRIBED, email="ada@example.org"
    )
    return contact


def webhook_sequence(workspace: Workspace, url: str) -> Sequence:
    """webhook -> wait P1D. The graph only takes https URLs (DESIGN: outgoing HTTP is https to
    public addresses); the loopback receiver speaks http, so its URL is put in afterwards."""
    sequence = sequence_create(
        workspace=workspace,
        name="Notify the CRM",
        steps=[
            {"key": "crm", "type": "webhook", "url": "https://crm.example.com/hook", "next": "w"},
            {"key": "w", "type": "wait", "duration": "P1D", "next": None},
        ],
    )
    steps = [dict(step) for step in sequence.steps]
    steps[0]["url"] = url
    Sequence.objects.filter(pk=sequence.pk).update(steps=steps)
    return sequence_set_status(sequence=sequence, status=SequenceStatus.ACTIVE)


def run_tick(capture: Callable[..., Any]) -> engine.TickResult:
    """A tick and what it scheduled after commit (Celery runs eagerly in tests)."""
    with capture(execute=True):
        return engine.tick()


def test_a_failed_call_is_retried_from_its_row_and_the_run_goes_on(
    workspace, subscriber, receiver, django_capture_on_commit_callbacks
) -> None:
    # given a receiver that fails once with 503, then answers 200
    receiver.statuses = [503, 200]
    sequence = webhook_sequence(workspace, receiver.url)
    with time_machine.travel(T0, tick=False) as clock:
        enrollment = enrollment_create(sequence=sequence, contact=subscriber)
        assert enrollment is not None

        # when the tick reaches the webhook step
        run_tick(django_capture_on_commit_callbacks)

        # then the first try failed, the reason is kept, the next try is due in a minute
        delivery = StepWebhookDelivery.objects.get()
        assert (delivery.enrollment_id, delivery.step_key) == (enrollment.pk, "crm")
        assert delivery.status == StepWebhookStatus.RETRYING
        assert (delivery.attempts, delivery.last_status_code) == (1, 503)
        assert delivery.error == "Answered with HTTP 503."
        assert delivery.next_attempt_at == T0 + dt.timedelta(minutes=1)
        # and the run did not wait for it
        enrollment.refresh_from_db()
        assert (enrollment.current_step, enrollment.next_run_at) == ("w", T0 + dt.timedelta(days=1))

        # when the beat looks before the minute is up, nothing is tried
        clock.move_to(T0 + dt.timedelta(seconds=59))
        assert step_webhooks_due().succeeded == 0
        assert len(receiver.requests) == 1

        # and at the minute, the retry goes through
        clock.move_to(T0 + dt.timedelta(minutes=1))
        assert step_webhooks_due().succeeded == 1

    delivery.refresh_from_db()
    assert delivery.status == StepWebhookStatus.DELIVERED
    assert (delivery.attempts, delivery.error, delivery.next_attempt_at) == (2, "", None)
    assert delivery.delivered_at == T0 + dt.timedelta(minutes=1)
    # both tries carried the same delivery id, so the receiver can tell a retry apart
    bodies = [json.loads(body) for _headers, body in receiver.requests]
    assert [headers["X-Funnelwerk-Delivery"] for headers, _body in receiver.requests] == [
        str(delivery.pk)
    ] * 2
    assert (
        bodies
        == [
            {
                "id": str(delivery.pk),
                "type": "sequence.step",
                "sequence": str(sequence.pk),
                "enrollment": str(enrollment.pk),
                "step": "crm",
                "contact": {"id": str(subscriber.pk), "email": "ada@example.org"},
            }
        ]
        * 2
    )


def test_a_receiver_failing_for_a_day_gets_growing_gaps_then_the_call_fails_with_the_reason(
    workspace, subscriber, receiver, django_capture_on_commit_callbacks
) -> None:
    receiver.statuses = [500]
    sequence = webhook_sequence(workspace, receiver.url)
    with time_machine.travel(T0, tick=False) as clock:
        enrollment_create(sequence=sequence, contact=subscriber)
        run_tick(django_capture_on_commit_callbacks)
        tries = [T0]
        while True:
            delivery = StepWebhookDelivery.objects.get()
            if delivery.next_attempt_at is None:
                break
            clock.move_to(delivery.next_attempt_at)
            step_webhooks_due()
            tries.append(delivery.next_attempt_at)

    gaps = [round((b - a).total_seconds() / 60) for a, b in itertools.pairwise(tries)]
    assert gaps[:7] == [1, 2, 4, 8, 16, 32, 60]
    assert set(gaps[7:-1]) == {60}
    assert tries[-1] == T0 + dt.timedelta(hours=24)  # the last try is on the deadline
    delivery.refresh_from_db()
    assert delivery.status == StepWebhookStatus.FAILED
    assert delivery.attempts == len(tries) == len(receiver.requests)
    assert delivery.error == (
        f"Gave up after {len(tries)} tries over 24 hours. Answered with HTTP 500."
    )


def test_a_url_that_can_never_be_called_fails_at_once_without_a_request(
    workspace, subscriber, receiver, settings, django_capture_on_commit_callbacks
) -> None:
    sequence = webhook_sequence(workspace, "https://10.1.2.3/hook")
    with time_machine.travel(T0, tick=False) as clock:
        enrollment_create(sequence=sequence, contact=subscriber)
        run_tick(django_capture_on_commit_callbacks)
        clock.move_to(T0 + dt.timedelta(hours=1))
        assert step_webhooks_due().succeeded == 0

    delivery = StepWebhookDelivery.objects.get()
    assert delivery.status == StepWebhookStatus.FAILED
    assert delivery.error == "This URL cannot be called: 10.1.2.3 is not a public address."
    assert (delivery.attempts, delivery.next_attempt_at) == (0, None)
    assert receiver.requests == []


def test_each_run_owes_one_call_however_often_it_is_scheduled(
    workspace, subscriber, receiver
) -> None:
    sequence = webhook_sequence(workspace, receiver.url)
    enrollment = Enrollment.objects.create(
        workspace=workspace, sequence=sequence, contact=subscriber, current_step="w"
    )
    calls = [(enrollment.pk, "crm")]

    first = step_webhook_deliveries_create(workspace_ids={enrollment.pk: workspace.pk}, calls=calls)
    again = step_webhook_deliveries_create(workspace_ids={enrollment.pk: workspace.pk}, calls=calls)
    sent = step_webhooks_send(delivery_ids=first + again)
    resent = step_webhooks_send(delivery_ids=first)

    assert first == again and len(first) == 1
    assert (sent.succeeded, resent.succeeded) == (1, 0)
    assert len(receiver.requests) == 1
    assert StepWebhookDelivery.objects.get().status == StepWebhookStatus.DELIVERED


@pytest.mark.urls(__name__)
def test_the_builder_shows_the_calls_and_the_last_failure_at_the_step(
    workspace, subscriber, receiver, member_of, logged_in, django_capture_on_commit_callbacks
) -> None:
    receiver.statuses = [502]
    sequence = webhook_sequence(workspace, receiver.url)
    second = ContactFactory(workspace=workspace, status=ContactStatus.SUBSCRIBED)
    with time_machine.travel(T0, tick=False):
        enrollment_create(sequence=sequence, contact=subscriber)
        enrollment_create(sequence=sequence, contact=second)
        run_tick(django_capture_on_commit_callbacks)
    client: Client = logged_in(member_of(workspace, Role.VIEWER))

    page = client.get(f"/sequences/{sequence.pk}/").content.decode()

    assert "Calls: 0 delivered · 2 waiting for a try · 0 failed" in page
    assert "Last failure (" in page and "): Answered with HTTP 502." in page
