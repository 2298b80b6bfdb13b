"""Opens and clicks: links in the mail, the hot path (no database), the buffer and its writer,
machines and bots, tracking modes, and the re-classification of history."""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import hashlib
import hmac
import ipaddress
import re
import uuid
from typing import Any

import pytest
import redis
import time_machine
from django.conf import settings
from django.core import mail
from django.core.management import call_command
from django.test import Client, override_settings
from hypothesis import given
from hypothesis import strategies as st

from campaigns import engine
from campaigns.models import Enrollment, Message, SequenceStatus
from campaigns.services import enrollment_create, sequence_create, sequence_set_status
from campaigns.tracking_links import token_read
from contacts.models import ContactStatus
from core.models import TrackingMode, Workspace
from funnel.models import ContactStage
from funnel.services import funnel_create, rule_create
from tests.factories import ContactFactory
from tracking import buffer, classification
from tracking.hits import truncate_ip
from tracking.models import Activity, ActivityRow
from tracking.reclassify import activities_reclassify
from tracking.signals import AnonymousSource, anonymous_activity

pytestmark = pytest.mark.django_db

T0 = dt.datetime(2025, 3, 4, 10, 0, tzinfo=dt.UTC)
HTML = (
    "<html><body><p>Hello {{ contact.first_name }}</p>"
    '<a href="https://shop.example/spring?ref=mail">Shop</a> '
    '<a href="https://shop.example/b">B</a> '
    '<a href="https://shop.example/c">C</a> '
    '<a href="mailto:help@shop.example">Mail us</a> <a href="tel:+4930123">Call</a>'
    "</body></html>"
)
BROWSER = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko)"


@pytest.fixture
def sequence(workspace: Workspace):
    Workspace.objects.filter(pk=workspace.pk).update(
        frequency_cap_per_day=10, frequency_cap_per_week=30
    )
    funnel = funnel_create(workspace=workspace, name="AIDA", preset="aida", goal_event="purchase")
    stages = {stage.key: stage for stage in funnel.stages.all()}
    rule_create(funnel=funnel, when={"clicked_step": "hello"}, move_to=stages["desire"])
    steps = [
        {"key": "hello", "type": "email", "stage": str(stages["attention"].pk),
         "subject": "Hello", "html": HTML, "next": "clicked"},
        {"key": "clicked", "type": "wait_for", "event": {"clicked": "hello"},
         "timeout": "P3D", "yes": "thanks", "no": None},
        {"key": "thanks", "type": "email", "subject": "Thanks", "html": "<p>Thanks</p>",
         "next": None},
    ]  # fmt: skip
    created = sequence_create(
        workspace=workspace,
        funnel=funnel,
        name="Spring",
        steps=steps,
        utm={"utm_source": "funnelwerk", "utm_campaign": "spring"},
    )
    return sequence_set_status(sequence=created, status=SequenceStatus.ACTIVE)


@pytest.fixture
def sent(sequence, workspace, django_capture_on_commit_callbacks):
    """One mail of the sequence sent at T0; returns (message, its HTML)."""
    contact = ContactFactory(workspace=workspace, first_name="Ada", status=ContactStatus.SUBSCRIBED)
    with time_machine.travel(T0, tick=False):
        enrollment_create(sequence=sequence, contact=contact)
        with django_capture_on_commit_callbacks(execute=True):
            engine.tick()
    message = Message.objects.get(contact=contact, step_key="hello")
    return message, _html(mail.outbox[-1])


def _html(email: Any) -> str:
    return next(body for body, kind in email.alternatives if kind == "text/html")


def _links(html: str, kind: str) -> list[str]:
    return re.findall(rf'(?:href|src)="http://testserver(/t/{kind}/[^"]+)"', html)


def _drain(at: dt.datetime) -> None:
    with time_machine.travel(at, tick=False):
        buffer.hits_drain_all()


def _click(client: Client, path: str, at: dt.datetime, **headers: Any) -> Any:
    with time_machine.travel(at, tick=False):
        return client.get(path, HTTP_USER_AGENT=headers.pop("agent", BROWSER), **headers)


@pytest.fixture(autouse=True)
def _empty_stream():
    buffer._skip_until.clear()
    client = redis.Redis.from_url(settings.TRACKING_BUFFER_URL)
    client.delete(settings.TRACKING_STREAM)
    yield
    client.delete(settings.TRACKING_STREAM)


# --- the mail ------------------------------------------------------------------------------------


def test_every_web_link_is_rewritten_with_utm_and_the_rest_is_left_alone(sent):
    message, html = sent
    clicks = _links(html, "c")
    # three links, plus the hidden trap right after <body>
    assert len(clicks) == 4
    trap, *links = clicks
    assert token_read(trap.removeprefix("/t/c/")).kind == "t"
    targets = [token_read(link.removeprefix("/t/c/")) for link in links]
    assert [t.url for t in targets] == [
        "https://shop.example/spring?ref=mail&utm_source=funnelwerk&utm_campaign=spring",
        "https://shop.example/b?utm_source=funnelwerk&utm_campaign=spring",
        "https://shop.example/c?utm_source=funnelwerk&utm_campaign=spring",
    ]
    assert {t.message_id for t in targets} == {message.pk}
    assert [t.link_index for t in targets] == [0, 1, 2]
    assert 'href="mailto:help@shop.example"' in html
    assert 'href="tel:+4930123"' in html
    assert re.search(r'href="http://testserver/u/[^"]+"', html)  # unsubscribe untouched
    assert len(_links(html, "o")) == 1
    assert 'style="display:none' in html.split("<body>")[1][:400]


# --- the hot path ---------------------------------------------------------------------------------


def test_pixel_and_redirect_answer_without_touching_the_database(
    sent, client, django_assert_num_queries
):
    _, html = sent
    pixel, link = _links(html, "o")[0], _links(html, "c")[1]
    with django_assert_num_queries(0):
        opened = client.get(pixel, HTTP_USER_AGENT=BROWSER)
        clicked = client.get(link, HTTP_USER_AGENT=BROWSER)
    assert opened.status_code == 200
    assert opened["Content-Type"] == "image/gif"
    assert "no-store" in opened["Cache-Control"]
    assert clicked.status_code == 302
    assert clicked["Location"].startswith("https://shop.example/spring?ref=mail&utm_source=")
    assert "sessionid" not in clicked.cookies and "csrftoken" not in clicked.cookies


def _tamper(token: str) -> str:
    position = len(token) // 2
    return token[:position] + ("A" if token[position] != "A" else "B") + token[position + 1 :]


def test_tampered_and_unknown_tokens_get_404_and_record_nothing(sent, client):
    _, html = sent
    pixel, link = _links(html, "o")[0], _links(html, "c")[1]
    for path in (
        "/t/o/" + _tamper(pixel.removeprefix("/t/o/")),
        "/t/c/" + _tamper(link.removeprefix("/t/c/")),
        "/t/c/" + link.removeprefix("/t/c/")[:-3],
        "/t/c/not-a-token",
        "/t/c/" + pixel.removeprefix("/t/o/"),  # an open token is no click token
        "/t/o/" + link.removeprefix("/t/c/"),
    ):
        assert client.get(path).status_code == 404, path
    _drain(T0 + dt.timedelta(hours=1))
    assert not Activity.objects.exists()
    assert redis.Redis.from_url(settings.TRACKING_BUFFER_URL).xlen(settings.TRACKING_STREAM) == 0


def test_the_redirect_cannot_be_pointed_anywhere_else(sent, client):
    _, html = sent
    link = _links(html, "c")[1]
    # query strings and a changed target inside the token are no way to steer the redirect
    response = client.get(link + "?url=https://evil.example/&next=https://evil.example/")
    assert response.status_code == 404 or "evil" not in response.get("Location", "")
    token = token_read(link.removeprefix("/t/c/"))
    assert token is not None
    import base64

    raw = base64.urlsafe_b64decode(link.removeprefix("/t/c/") + "==")
    forged = raw.replace(b"shop.example", b"evil.example")
    forged_token = base64.urlsafe_b64encode(forged).rstrip(b"=").decode()
    assert client.get("/t/c/" + forged_token).status_code == 404


# --- the writer -------------------------------------------------------------------------------


def test_a_human_click_sets_milestones_moves_the_stage_and_sends_the_yes_mail(
    sent, client, django_capture_on_commit_callbacks
):
    message, html = sent
    later = T0 + dt.timedelta(hours=2)
    _click(client, _links(html, "o")[0], later)
    _click(client, _links(html, "c")[1], later + dt.timedelta(seconds=30))
    with django_capture_on_commit_callbacks(execute=True):
        _drain(later + dt.timedelta(minutes=1))
    message.refresh_from_db()
    assert message.opened_at == later
    assert message.clicked_at == later + dt.timedelta(seconds=30)
    assert message.machine_opened_at is None and message.bot_clicked_at is None
    rows = Activity.objects.filter(message=message)
    assert {(row.kind, row.actor) for row in rows} == {("open", "human"), ("click", "human")}
    assert all(row.ip == "127.0.0.0" for row in rows)  # truncated
    stage = ContactStage.objects.get(contact=message.contact)
    assert stage.stage.key == "desire"
    with (
        time_machine.travel(later + dt.timedelta(minutes=1), tick=False),
        django_capture_on_commit_callbacks(execute=True),
    ):
        engine.tick()
    assert [m.subject for m in mail.outbox] == ["Hello", "Thanks"]


def test_clicks_wait_in_the_buffer_until_their_burst_window_has_passed(sent, client):
    message, html = sent
    at = T0 + dt.timedelta(hours=2)
    _click(client, _links(html, "c")[1], at)
    _drain(at + dt.timedelta(seconds=1))
    assert not Activity.objects.exists()
    _drain(at + dt.timedelta(seconds=buffer.HOLD_SECONDS + 1))
    assert Activity.objects.filter(message=message, kind="click").count() == 1


def test_a_writer_crash_loses_nothing_and_doubles_nothing(sent, client):
    message, html = sent
    at = T0 + dt.timedelta(hours=2)
    _click(client, _links(html, "o")[0], at)
    _click(client, _links(html, "o")[0], at + dt.timedelta(seconds=1))
    # A writer reads the entries and commits them, then dies before acknowledging: the
    # entries stay pending in its consumer group, exactly as after a SIGKILL.
    from tracking import ingest
    from tracking.hits import Hit

    stream = redis.Redis.from_url(settings.TRACKING_BUFFER_URL)
    buffer._ensure_group(stream)
    reply = stream.xreadgroup(
        buffer.GROUP, buffer.CONSUMER, {settings.TRACKING_STREAM: ">"}, count=10
    )
    hits = [Hit.loads(fields[b"h"]) for _, fields in reply[0][1]]
    assert ingest.hits_write(hits).written == 2
    # the restarted writer replays them: nothing new, nothing lost
    _drain(at + dt.timedelta(minutes=1))
    assert Activity.objects.filter(message=message).count() == 2
    assert stream.xpending(settings.TRACKING_STREAM, buffer.GROUP)["pending"] == 0
    message.refresh_from_db()
    assert message.opened_at == at


@override_settings(TRACKING_BUFFER_URL="redis://127.0.0.1:1/0")
def test_events_are_written_directly_while_redis_is_down(sent, client):
    message, html = sent
    at = T0 + dt.timedelta(hours=2)
    response = _click(client, _links(html, "o")[0], at)
    assert response.status_code == 200
    message.refresh_from_db()
    assert message.opened_at == at
    assert Activity.objects.filter(message=message, actor="human").count() == 1


@override_settings(TRACKING_BUFFER_URL="")
def test_without_a_buffer_the_hit_is_written_in_the_request(sent, client):
    message, html = sent
    _click(client, _links(html, "c")[2], T0 + dt.timedelta(hours=3))
    message.refresh_from_db()
    assert message.clicked_at == T0 + dt.timedelta(hours=3)


# --- machines and bots ------------------------------------------------------------------------


APPLE = {"agent": "Mozilla/5.0", "REMOTE_ADDR": "17.58.101.7"}


@pytest.mark.parametrize(
    ("delay", "headers", "method", "reason"),
    [
        (dt.timedelta(hours=1), APPLE, "get", "apple_mpp"),
        (dt.timedelta(seconds=1), {}, "get", "prefetch"),
        (dt.timedelta(hours=1), {"agent": "python-requests/2.32"}, "get", "machine_agent"),
        (dt.timedelta(hours=1), {}, "head", "head_request"),
    ],
)
def test_machine_opens_are_stored_apart_and_fire_nothing(
    sent, client, delay, headers, method, reason
):
    message, html = sent
    at = T0 + delay
    headers = dict(headers)
    with time_machine.travel(at, tick=False):
        getattr(client, method)(
            _links(html, "o")[0], HTTP_USER_AGENT=headers.pop("agent", BROWSER), **headers
        )
    _drain(at + dt.timedelta(minutes=1))
    row = Activity.objects.get(message=message)
    assert (row.actor, row.reason) == ("machine", reason)
    message.refresh_from_db()
    assert message.opened_at is None
    assert message.machine_opened_at == at


def test_a_human_open_after_a_machine_open_counts_as_human(sent, client):
    message, html = sent
    pixel = _links(html, "o")[0]
    _click(client, pixel, T0 + dt.timedelta(minutes=5), agent="Mozilla/5.0", REMOTE_ADDR="17.1.2.3")
    _click(client, pixel, T0 + dt.timedelta(hours=5))
    _drain(T0 + dt.timedelta(hours=6))
    message.refresh_from_db()
    assert message.machine_opened_at == T0 + dt.timedelta(minutes=5)
    assert message.opened_at == T0 + dt.timedelta(hours=5)


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("trap", "trap_link"),
        ("head", "head_request"),
        ("agent", "machine_agent"),
        ("soon", "too_soon"),
        ("burst", "burst"),
    ],
)
def test_bot_clicks_fire_nothing(sent, client, case, reason, django_capture_on_commit_callbacks):
    message, html = sent
    trap, first, second, third = _links(html, "c")
    at = T0 + (dt.timedelta(seconds=3) if case == "soon" else dt.timedelta(hours=1))
    with time_machine.travel(at, tick=False):
        if case == "trap":
            assert client.get(trap, HTTP_USER_AGENT=BROWSER).status_code == 204
        elif case == "head":
            client.head(first, HTTP_USER_AGENT=BROWSER)
        elif case == "agent":
            client.get(first, HTTP_USER_AGENT="Mozilla/5.0 (compatible; Barracuda Sentinel)")
        elif case == "soon":
            client.get(first, HTTP_USER_AGENT=BROWSER)
        else:
            for link in (first, second, third):
                client.get(link, HTTP_USER_AGENT=BROWSER)
    with django_capture_on_commit_callbacks(execute=True):
        _drain(at + dt.timedelta(minutes=1))
    rows = list(Activity.objects.filter(message=message))
    assert rows and all((row.actor, row.reason) == ("bot", reason) for row in rows)
    message.refresh_from_db()
    assert message.clicked_at is None and message.opened_at is None
    assert message.bot_clicked_at == at
    # no stage rule, no wake-up: the run still waits for a click
    assert not ContactStage.objects.filter(contact=message.contact, stage__key="desire").exists()
    enrollment = Enrollment.objects.get(contact=message.contact)
    assert enrollment.current_step == "clicked"
    assert enrollment.next_run_at == T0 + dt.timedelta(days=3)


def test_one_link_clicked_twice_by_a_person_is_no_burst(sent, client):
    message, html = sent
    link = _links(html, "c")[1]
    at = T0 + dt.timedelta(hours=1)
    _click(client, link, at)
    _click(client, link, at + dt.timedelta(seconds=2))
    _drain(at + dt.timedelta(minutes=1))
    assert set(Activity.objects.filter(message=message).values_list("actor", flat=True)) == {
        "human"
    }


@override_settings(TRACKING_BUFFER_URL="")
def test_without_a_buffer_a_later_burst_reflags_the_clicks_before_it(sent, client):
    message, html = sent
    _, first, second, third = _links(html, "c")
    at = T0 + dt.timedelta(hours=1)
    for offset, link in enumerate((first, second, third)):
        _click(client, link, at + dt.timedelta(seconds=offset))
    assert set(Activity.objects.filter(message=message).values_list("actor", flat=True)) == {"bot"}
    message.refresh_from_db()
    assert message.clicked_at is None
    assert message.bot_clicked_at == at


def test_classification_rules_on_crafted_cases():
    at = T0 + dt.timedelta(hours=1)
    verdict = classification.classify_open(
        user_agent="Mozilla/5.0", ip="203.0.113.0", method="GET", at=at, sent_at=T0
    )
    assert verdict.actor == "human"  # the bare agent alone is not Apple's proxy
    verdict = classification.classify_open(
        user_agent="Mozilla/5.0 (Windows NT 10.0; Win64; x64) GoogleImageProxy",
        ip="66.249.84.0",
        method="GET",
        at=at,
        sent_at=T0,
    )
    assert verdict.actor == "human"  # Gmail fetches when the person opens
    seen = [classification.ClickSeen(at, 0), classification.ClickSeen(at, 1)]
    assert (
        classification.classify_click(
            trap=False,
            link=2,
            user_agent=BROWSER,
            method="GET",
            at=at + dt.timedelta(seconds=classification.BURST_SECONDS + 1),
            sent_at=T0,
            others=seen,
        ).actor
        == "human"
    )


# --- modes ----------------------------------------------------------------------------------------


def test_anonymous_mode_counts_per_mail_and_link_only(
    workspace, sequence, client, django_capture_on_commit_callbacks
):
    Workspace.objects.filter(pk=workspace.pk).update(tracking_mode=TrackingMode.ANONYMOUS)
    contact = ContactFactory(workspace=workspace, status=ContactStatus.SUBSCRIBED)
    with time_machine.travel(T0, tick=False):
        enrollment_create(sequence=sequence, contact=contact)
        with django_capture_on_commit_callbacks(execute=True):
            engine.tick()
    html = _html(mail.outbox[-1])
    link = _links(html, "c")[1]
    token = token_read(link.removeprefix("/t/c/"))
    assert token.message_id is None
    assert token.source.sequence_id == sequence.pk and token.source.step_key == "hello"
    at = T0 + dt.timedelta(hours=1)
    _click(client, _links(html, "o")[0], at)
    _click(client, link, at)
    announced: list[AnonymousSource] = []

    def listen(sender: Any, *, sources: list[AnonymousSource], **kwargs: Any) -> None:
        announced.extend(sources)

    anonymous_activity.connect(listen)
    try:
        _drain(at + dt.timedelta(minutes=1))
        _drain(at + dt.timedelta(minutes=2))  # nothing new: nothing announced again
    finally:
        anonymous_activity.disconnect(listen)
    # no message milestone tells the others: tracking announces the mail's source and day
    assert announced == [
        AnonymousSource(
            workspace_id=str(workspace.pk),
            sequence_id=str(sequence.pk),
            broadcast_id=None,
            day=at.date(),
        )
    ]
    rows = Activity.objects.filter(workspace=workspace)
    assert rows.count() == 2
    assert {(row.message_id, row.sequence_id, row.step_key, row.link_index) for row in rows} == {
        (None, sequence.pk, "hello", None),
        (None, sequence.pk, "hello", 0),
    }
    message = Message.objects.get(contact=contact)
    assert message.opened_at is None and message.clicked_at is None
    assert Enrollment.objects.get(contact=contact).current_step == "clicked"


def test_off_mode_has_no_pixel_and_keeps_links_as_written(
    workspace, sequence, django_capture_on_commit_callbacks
):
    Workspace.objects.filter(pk=workspace.pk).update(tracking_mode=TrackingMode.OFF)
    contact = ContactFactory(workspace=workspace, status=ContactStatus.SUBSCRIBED)
    with time_machine.travel(T0, tick=False):
        enrollment_create(sequence=sequence, contact=contact)
        with django_capture_on_commit_callbacks(execute=True):
            engine.tick()
    html = _html(mail.outbox[-1])
    assert "/t/o/" not in html and "/t/c/" not in html
    # UTM parameters are the marketer's own content and stay
    assert 'href="https://shop.example/b?utm_source=funnelwerk&amp;utm_campaign=spring"' in html


# --- history ----------------------------------------------------------------------------------


def test_reclassify_applies_the_current_rules_to_history(sent, client):
    message, html = sent
    at = T0 + dt.timedelta(hours=1)
    _click(client, _links(html, "o")[0], at, agent="Mozilla/5.0", REMOTE_ADDR="17.1.2.3")
    _drain(at + dt.timedelta(minutes=1))
    # as if an older rules version had called it human
    Activity.objects.update(actor="human", reason="", rules_version=0)
    from campaigns.models import Message as M

    M.objects.filter(pk=message.pk).update(opened_at=at, machine_opened_at=None)
    result = activities_reclassify()
    assert (result.examined, result.changed, result.messages) == (1, 1, 1)
    message.refresh_from_db()
    assert message.opened_at is None
    assert message.machine_opened_at == at
    assert Activity.objects.get().rules_version == classification.VERSION
    call_command("tracking_reclassify")  # nothing left to do, and the command runs
    assert activities_reclassify().examined == 0


def test_an_erased_message_drops_its_late_hits(sent, client):
    message, html = sent
    _click(client, _links(html, "o")[0], T0 + dt.timedelta(hours=1))
    Message.objects.filter(pk=message.pk).delete()
    _drain(T0 + dt.timedelta(hours=2))
    assert not Activity.objects.exists()


# --- where people see it ------------------------------------------------------------------------


def test_messages_api_and_timeline_show_the_activity_with_machines_labelled(
    sent, client, api, other_workspace, api_client_for
):
    message, html = sent
    _click(client, _links(html, "o")[0], T0 + dt.timedelta(minutes=5), **APPLE)
    _click(client, _links(html, "c")[1], T0 + dt.timedelta(hours=1))
    _drain(T0 + dt.timedelta(hours=2))

    listed = api.get(f"/api/v1/messages/?contact={message.contact_id}").json()["results"]
    assert len(listed) == 1
    shown = listed[0]
    assert shown["opened_at"] == "2025-03-04T11:00:00Z"  # the click counts as an open
    assert shown["machine_opened_at"] == "2025-03-04T10:05:00Z"
    assert [(a["kind"], a["actor"], a["reason"]) for a in shown["activity"]] == [
        ("open", "machine", "apple_mpp"),
        ("click", "human", ""),
    ]
    assert shown["activity"][1]["url"].startswith("https://shop.example/spring?ref=mail")
    assert api_client_for(other_workspace).get("/api/v1/messages/").json()["count"] == 0

    timeline = api.get(f"/api/v1/contacts/{message.contact_id}/timeline/").json()["results"]
    titles = [item["title"] for item in timeline if item["kind"] == "email_activity"]
    assert titles == ["Clicked: Hello", "Machine open: Hello"]


def test_human_opens_and_clicks_reach_webhooks_and_machines_do_not(sent, client, workspace):
    from funnel.models import WebhookDelivery
    from funnel.webhooks import webhook_endpoint_create

    webhook_endpoint_create(
        workspace=workspace,
        url="https://hooks.example.com/funnelwerk",
        events=["message.opened", "message.clicked"],
    )
    message, html = sent
    _click(client, _links(html, "o")[0], T0 + dt.timedelta(minutes=5), **APPLE)
    _drain(T0 + dt.timedelta(minutes=10))
    assert not WebhookDelivery.objects.exists()

    _click(client, _links(html, "c")[2], T0 + dt.timedelta(hours=1))
    _drain(T0 + dt.timedelta(hours=2))
    deliveries = {d.event_type: d.payload["data"] for d in WebhookDelivery.objects.all()}
    assert set(deliveries) == {"message.opened", "message.clicked"}
    assert deliveries["message.clicked"]["message"] == str(message.pk)
    assert deliveries["message.clicked"]["step"] == "hello"
    assert deliveries["message.clicked"]["at"] == "2025-03-04T11:00:00+00:00"


def test_a_scanner_fetching_the_unsubscribe_link_changes_and_records_nothing(sent, client):
    message, html = sent
    unsubscribe = re.search(r'href="http://testserver(/u/[^"]+)"', html)
    assert unsubscribe is not None
    scanner = "Mozilla/5.0 (compatible; Barracuda Sentinel)"
    assert client.get(unsubscribe.group(1), HTTP_USER_AGENT=scanner).status_code == 200
    assert client.head(unsubscribe.group(1), HTTP_USER_AGENT=scanner).status_code == 200
    _drain(T0 + dt.timedelta(hours=1))
    message.contact.refresh_from_db()
    assert message.contact.status == ContactStatus.SUBSCRIBED
    assert not Activity.objects.exists()
    assert Enrollment.objects.get(contact=message.contact).status == "active"


def test_a_wait_for_a_given_link_wakes_on_its_click_despite_the_utm_parameters(
    workspace, client, django_capture_on_commit_callbacks
):
    Workspace.objects.filter(pk=workspace.pk).update(
        frequency_cap_per_day=10, frequency_cap_per_week=30
    )
    steps = [
        {"key": "hello", "type": "email", "subject": "Hello", "html": HTML, "next": "which"},
        {"key": "which", "type": "wait_for",
         "event": {"clicked_url": {"step": "hello", "url": "https://shop.example/c"}},
         "timeout": "P3D", "yes": "thanks", "no": None},
        {"key": "thanks", "type": "email", "subject": "Thanks", "html": "<p>Thanks</p>",
         "next": None},
    ]  # fmt: skip
    sequence = sequence_set_status(
        sequence=sequence_create(
            workspace=workspace, name="Links", steps=steps, utm={"utm_source": "funnelwerk"}
        ),
        status=SequenceStatus.ACTIVE,
    )
    contact = ContactFactory(workspace=workspace, status=ContactStatus.SUBSCRIBED)
    with time_machine.travel(T0, tick=False):
        enrollment_create(sequence=sequence, contact=contact)
        with django_capture_on_commit_callbacks(execute=True):
            engine.tick()
    _, first, _, third = _links(_html(mail.outbox[-1]), "c")
    at = T0 + dt.timedelta(hours=1)
    _click(client, first, at)  # another link: keeps waiting
    _drain(at + dt.timedelta(minutes=1))
    assert Enrollment.objects.get(contact=contact).current_step == "which"
    _click(client, third, at + dt.timedelta(hours=1))
    _drain(at + dt.timedelta(hours=1, minutes=1))
    enrollment = Enrollment.objects.get(contact=contact)
    assert enrollment.current_step == "thanks"


def test_a_broadcast_carries_its_utm_parameters_through_the_redirect(
    workspace, api, django_capture_on_commit_callbacks
):
    from campaigns.broadcasts import broadcast_send, broadcasts_dispatch
    from contacts.models import MailingList, Subscription, SubscriptionStatus

    newsletter = MailingList.objects.create(workspace=workspace, name="News")
    contact = ContactFactory(workspace=workspace, status=ContactStatus.SUBSCRIBED)
    Subscription.objects.create(
        contact=contact, mailing_list=newsletter, status=SubscriptionStatus.SUBSCRIBED
    )
    payload = {
        "name": "March",
        "list": str(newsletter.pk),
        "subject": "Spring",
        "html": '<p><a href="https://shop.example/sale">Sale</a></p>',
        "utm": {"utm_source": "newsletter", "utm_campaign": "march"},
    }
    refused = api.post("/api/v1/broadcasts/", {**payload, "utm": {"utm_id": "x"}}, format="json")
    assert refused.status_code == 400
    assert "utm" in refused.json()
    created = api.post("/api/v1/broadcasts/", payload, format="json")
    assert created.status_code == 201
    assert created.json()["utm"] == {"utm_source": "newsletter", "utm_campaign": "march"}

    from campaigns.models import Broadcast

    broadcast = Broadcast.objects.get(pk=created.json()["id"])
    with time_machine.travel(T0, tick=False):
        broadcast_send(broadcast=broadcast, now=T0)
        with django_capture_on_commit_callbacks(execute=True):
            broadcasts_dispatch(now=T0)
    link = _links(_html(mail.outbox[-1]), "c")[1]
    token = token_read(link.removeprefix("/t/c/"))
    assert token is not None
    assert token.url == "https://shop.example/sale?utm_source=newsletter&utm_campaign=march"


def test_reclassify_command_takes_a_workspace_slug(workspace):
    from django.core.management.base import CommandError

    call_command("tracking_reclassify", "--workspace", workspace.slug)
    with pytest.raises(CommandError):
        call_command("tracking_reclassify", "--workspace", "no-such-workspace")


@override_settings(TRACKING_BUFFER_URL="")
def test_a_later_burst_leaves_a_persons_click_between_bursts_alone(sent, client):
    message, html = sent
    _, first, second, third = _links(html, "c")
    for start in (T0 + dt.timedelta(hours=1), T0 + dt.timedelta(hours=5)):
        for offset, link in enumerate((first, second, third)):
            _click(client, link, start + dt.timedelta(seconds=offset))
        if start == T0 + dt.timedelta(hours=1):
            _click(client, second, T0 + dt.timedelta(hours=3))  # the person, in between
    person = Activity.objects.get(message=message, occurred_at=T0 + dt.timedelta(hours=3))
    assert (person.actor, person.reason) == ("human", "")
    message.refresh_from_db()
    assert message.clicked_at == T0 + dt.timedelta(hours=3)


@given(
    st.lists(st.integers(min_value=0, max_value=300), min_size=3, max_size=5),
    st.sampled_from(["", "0", "00"]),
)
def test_truncated_addresses_agree_with_the_ipaddress_module(octets, prefix):
    """truncate_ip's quick path for dotted IPv4 gives what ipaddress gives, and refuses what
    it refuses (leading zeros, octets over 255, too few or too many parts)."""
    address = ".".join(
        prefix + str(octet) if index == 0 else str(octet) for index, octet in enumerate(octets)
    )
    try:
        network = ipaddress.ip_network(f"{ipaddress.ip_address(address)}/24", strict=False)
        expected = str(network.network_address)
    except ValueError:
        expected = ""
    assert truncate_ip(address) == expected


def test_the_bulk_row_has_the_models_columns():
    """tracking.models.ActivityRow, which the writers insert, names every column of Activity."""
    columns = {field.attname for field in Activity._meta.concrete_fields if field.name != "id"}
    assert {field.name for field in dataclasses.fields(ActivityRow)} == columns


def _signed(payload: bytes, mac: bytes) -> str:
    return base64.urlsafe_b64encode(payload + mac).decode().rstrip("=")


def test_links_in_mails_sent_before_the_v2_mac_still_work(settings):
    """Tokens of the first format (HMAC-SHA256 with the v1 salt) stay valid; a keyed BLAKE2b
    or HMAC under any other key does not."""
    message_id = uuid.uuid4()
    payload = f"c\nm{message_id.hex}\n3\nhttps://shop.example/spring".encode()
    v1_key = hashlib.sha256(f"funnelwerk.tracking.v1signer{settings.SECRET_KEY}".encode()).digest()
    v1 = _signed(payload, hmac.digest(v1_key, payload, "sha256")[:16])
    read = token_read(v1)
    assert read is not None
    assert (read.kind, read.message_id, read.link_index, read.url) == (
        "c",
        message_id,
        3,
        "https://shop.example/spring",
    )
    v2_key = hashlib.sha256(f"funnelwerk.tracking.v2signer{settings.SECRET_KEY}".encode()).digest()
    v2 = _signed(payload, hashlib.blake2b(payload, key=v2_key, digest_size=16).digest())
    assert token_read(v2) == read
    other = hashlib.sha256(b"funnelwerk.tracking.v1signerSOME-OTHER-SECRET").digest()
    assert token_read(_signed(payload, hmac.digest(other, payload, "sha256")[:16])) is None
    assert (
        token_read(_signed(payload, hashlib.blake2b(payload, key=other, digest_size=16).digest()))
        is None
    )
