"""ESP tracking webhooks: payloads of SendGrid, Mailgun, Postmark and Amazon SES (SNS), posted
through the Django test client to anymail's real URLs, update the right messages and contacts;
a replayed payload changes nothing; a bad signature or basic auth is refused and records
nothing; hard bounces, complaints and runs of soft bounces suppress; workspaces stay apart.

The payloads follow the ESPs' documented shapes (SendGrid's Event Webhook, Mailgun's webhooks
with their signature block, Postmark's webhooks, SES event publishing through SNS).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import json
import secrets
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from campaigns import engine
from campaigns.models import Enrollment, Message, MessageStatus, Sequence, SequenceStatus
from campaigns.services import enrollment_create, sequence_create, sequence_set_status
from contacts.models import (
    ConsentKind,
    ConsentRecord,
    Contact,
    Subscription,
    SubscriptionStatus,
    Suppression,
    SuppressionReason,
)
from contacts.subscriptions import SignupContext, list_subscribe, mailing_list_create
from core.models import TrackingMode, Workspace
from funnel.models import WebhookDelivery
from funnel.webhooks import webhook_endpoint_create
from tests.factories import WorkspaceFactory
from tests.tracking.sns_signing import SnsSigner
from tracking.esp import _messages_by_esp_id
from tracking.hits import Hit
from tracking.ingest import hits_write
from tracking.models import Activity
from tracking.sns import signing_cert_url_allowed

pytestmark = pytest.mark.django_db

SECRET = "funnelwerk:webhook-secret-0123456789"
MAILGUN_KEY = "mailgun-webhook-signing-key-0123456789abcdef"
T0 = datetime(2026, 5, 4, 9, 0, tzinfo=UTC)
BROWSER = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko)"
_numbers = itertools.count(1)


@pytest.fixture(autouse=True)
def _esp_settings(settings: Any) -> None:
    settings.ANYMAIL = {"WEBHOOK_SECRET": [SECRET], "MAILGUN_WEBHOOK_SIGNING_KEY": MAILGUN_KEY}


def auth(secret: str = SECRET) -> dict[str, str]:
    return {"HTTP_AUTHORIZATION": "Basic " + base64.b64encode(secret.encode()).decode()}


def subscriber(workspace: Workspace, email: str | None = None) -> Contact:
    """A contact subscribed to a list without double opt-in (the real signup service)."""
    mailing_list = mailing_list_create(
        workspace=workspace, name=f"News {next(_numbers)}", double_opt_in=False
    )
    result = list_subscribe(
        mailing_list=mailing_list,
        email=email or f"reader{next(_numbers)}@example.org",
        context=SignupContext(consent_text="Yes, send me news.", source="test"),
    )
    assert result.status == SubscriptionStatus.SUBSCRIBED
    return result.contact


def sent_message(contact: Contact, esp_id: str, *, at: datetime = T0) -> Message:
    """A message as the send path leaves it once the ESP accepted it."""
    return Message.objects.create(
        workspace_id=contact.workspace_id,
        contact=contact,
        subject="Spring sale",
        status=MessageStatus.SENT,
        esp_message_id=esp_id,
        esp_accepted_at=at,
        sent_at=at,
    )


def snapshot(*messages: Message) -> list[tuple[Any, ...]]:
    return [
        Message.objects.filter(pk=message.pk)
        .values_list(
            "status",
            "error",
            "delivered_at",
            "opened_at",
            "clicked_at",
            "bounced_at",
            "complained_at",
            "unsubscribed_at",
        )
        .get()
        for message in messages
    ]


def kinds(message: Message) -> list[tuple[str, str, str, str]]:
    return list(
        Activity.objects.filter(message=message)
        .order_by("occurred_at", "kind")
        .values_list("kind", "actor", "origin", "esp")
    )


def suppressed(contact: Contact) -> str | None:
    return (
        Suppression.objects.filter(
            workspace_id=contact.workspace_id, email_hash=Suppression.hash_email(contact.email)
        )
        .values_list("reason", flat=True)
        .first()
    )


def status_of(contact: Contact) -> str:
    return Contact.objects.get(pk=contact.pk).status


# --- the ESPs' payloads ----------------------------------------------------------------------


def sendgrid_event(event: str, message: Message, at: datetime, **fields: Any) -> dict[str, Any]:
    """One event of SendGrid's Event Webhook (anymail_id is the custom arg anymail sends)."""
    return {
        "email": message.contact.email,
        "timestamp": int(at.timestamp()),
        "smtp-id": f"<{uuid.uuid4().hex}@sendgrid.example>",
        "event": event,
        "category": ["newsletter"],
        "sg_event_id": base64.b64encode(f"{event}-{message.pk}-{at}".encode()).decode(),
        "sg_message_id": f"{uuid.uuid4().hex[:22]}.filterdrecv-5645d9c87f-6r2ch-1-0",
        "anymail_id": message.esp_message_id,
        **fields,
    }


def post_sendgrid(client: Client, events: list[dict[str, Any]], secret: str = SECRET) -> Any:
    return client.post(
        reverse("anymail:sendgrid_tracking_webhook"),
        json.dumps(events),
        content_type="application/json",
        **auth(secret),
    )


def mailgun_payload(event_data: dict[str, Any], key: str = MAILGUN_KEY) -> dict[str, Any]:
    token = secrets.token_hex(25)
    timestamp = str(int(T0.timestamp()))
    signature = hmac.new(key.encode(), f"{timestamp}{token}".encode(), hashlib.sha256)
    return {
        "signature": {"timestamp": timestamp, "token": token, "signature": signature.hexdigest()},
        "event-data": event_data,
    }


def mailgun_event(event: str, message: Message, at: datetime, **fields: Any) -> dict[str, Any]:
    return {
        "event": event,
        "id": secrets.token_urlsafe(16),
        "timestamp": at.timestamp(),
        "log-level": "info",
        "recipient": message.contact.email,
        "recipient-domain": "example.org",
        "tags": [],
        "user-variables": {},
        "message": {
            "headers": {
                "message-id": message.esp_message_id.strip("<>"),
                "to": message.contact.email,
                "from": "shop@mg.example.com",
                "subject": message.subject,
            },
            "size": 2048,
        },
        **fields,
    }


def post_mailgun(client: Client, payload: dict[str, Any]) -> Any:
    return client.post(
        reverse("anymail:mailgun_tracking_webhook"),
        json.dumps(payload),
        content_type="application/json",
        **auth(),
    )


def post_postmark(client: Client, payload: dict[str, Any]) -> Any:
    return client.post(
        reverse("anymail:postmark_tracking_webhook"),
        json.dumps(payload),
        content_type="application/json",
        **auth(),
    )


def ses_notification(ses_event: dict[str, Any], message: Message, at: datetime) -> dict[str, Any]:
    """An SNS notification wrapping an SES event (SES event publishing to an SNS topic); post_ses
    signs it."""
    ses_event["mail"] = {
        "timestamp": T0.isoformat().replace("+00:00", "Z"),
        "source": "Shop <shop@example.com>",
        "sourceArn": "arn:aws:ses:eu-central-1:123456789012:identity/example.com",
        "sendingAccountId": "123456789012",
        "messageId": message.esp_message_id,
        "destination": [message.contact.email],
        "headersTruncated": False,
        "commonHeaders": {
            "from": ["Shop <shop@example.com>"],
            "to": [message.contact.email],
            "messageId": f"<{message.pk}@testserver>",
            "subject": message.subject,
        },
        "tags": {"ses:configuration-set": ["funnelwerk"]},
    }
    return {
        "Type": "Notification",
        "MessageId": str(uuid.uuid4()),
        "TopicArn": "arn:aws:sns:eu-central-1:123456789012:ses-events",
        "Message": json.dumps(ses_event),
        "Timestamp": at.isoformat().replace("+00:00", "Z"),
        "UnsubscribeURL": "https://sns.eu-central-1.amazonaws.com/?Action=Unsubscribe",
    }


def post_ses(client: Client, sns: SnsSigner, notification: dict[str, Any], **headers: str) -> Any:
    """POST `notification` as SNS does: signed (see tests/tracking/sns_signing.py)."""
    return client.post(
        reverse("anymail:amazon_ses_tracking_webhook"),
        json.dumps(sns.sign(notification)),
        content_type="text/plain; charset=UTF-8",
        HTTP_X_AMZ_SNS_MESSAGE_TYPE=notification["Type"],
        HTTP_X_AMZ_SNS_MESSAGE_ID=notification["MessageId"],
        **(headers or auth()),
    )


def ses_bounce(bounce_type: str, diagnostic: str, message: Message) -> dict[str, Any]:
    return {
        "eventType": "Bounce",
        "bounce": {
            "bounceType": bounce_type,
            "bounceSubType": "General",
            "bouncedRecipients": [
                {
                    "emailAddress": message.contact.email,
                    "action": "failed",
                    "status": diagnostic.split()[1],
                    "diagnosticCode": diagnostic,
                }
            ],
            "timestamp": T0.isoformat(),
            "feedbackId": secrets.token_hex(16),
            "reportingMTA": "dsn; a1-2.smtp-out.eu-central-1.amazonses.com",
        },
    }


# --- each ESP updates the right messages ------------------------------------------------------


def test_a_sendgrid_batch_updates_each_message_and_a_replay_changes_nothing(
    client: Client, workspace: Workspace
) -> None:
    # given four sent messages to four subscribers, and one we never sent
    delivered, opened, bounced, complained = (
        sent_message(subscriber(workspace), str(uuid.uuid4())) for _ in range(4)
    )
    untouched = sent_message(subscriber(workspace), str(uuid.uuid4()))
    minute = timedelta(minutes=1)
    events = [
        sendgrid_event("processed", delivered, T0),
        sendgrid_event("delivered", delivered, T0 + minute, response="250 2.0.0 OK"),
        sendgrid_event("delivered", opened, T0 + minute, response="250 OK"),
        sendgrid_event("open", opened, T0 + 60 * minute, useragent=BROWSER, ip="203.0.113.7"),
        sendgrid_event(
            "deferred",
            bounced,
            T0 + minute,
            response="421 4.7.0 Try again later",
            attempt="1",
        ),
        sendgrid_event(
            "bounce",
            bounced,
            T0 + 2 * minute,
            type="bounce",
            status="5.1.1",
            reason="550 5.1.1 <b>The email account that you tried to reach does not exist</b>",
        ),
        sendgrid_event("delivered", complained, T0 + minute),
        sendgrid_event("spamreport", complained, T0 + 5 * minute),
        {**sendgrid_event("delivered", untouched, T0), "anymail_id": "not-one-of-ours"},
    ]

    # when SendGrid posts them in one request
    response = post_sendgrid(client, events)

    # then each message got what was reported about it, and nothing else
    assert response.status_code == 200
    after = snapshot(delivered, opened, bounced, complained, untouched)
    assert after == [
        ("sent", "", T0 + minute, None, None, None, None, None),
        ("sent", "", T0 + minute, T0 + 60 * minute, None, None, None, None),
        (
            "sent",
            "Hard bounce reported by the mail service: "
            "550 5.1.1 <b>The email account that you tried to reach does not exist</b>",
            None,
            None,
            None,
            T0 + 2 * minute,
            None,
            None,
        ),
        ("sent", "", T0 + minute, None, None, None, T0 + 5 * minute, None),
        ("sent", "", None, None, None, None, None, None),
    ]
    assert kinds(opened) == [
        ("delivered", "service", "esp", "sendgrid"),
        ("open", "human", "esp", "sendgrid"),
    ]
    assert kinds(bounced) == [
        ("deferred", "service", "esp", "sendgrid"),
        ("bounced", "service", "esp", "sendgrid"),
    ]
    assert Activity.objects.get(message=bounced, kind="deferred").detail == (
        "421 4.7.0 Try again later"
    )
    assert kinds(untouched) == []
    assert [status_of(message.contact) for message in (delivered, bounced, complained)] == [
        "subscribed",
        "bounced",
        "complained",
    ]

    # when the same payload is posted again
    activities = Activity.objects.count()
    replay = post_sendgrid(client, events)

    # then nothing changes
    assert replay.status_code == 200
    assert Activity.objects.count() == activities == 7
    assert snapshot(delivered, opened, bounced, complained, untouched) == after


def test_mailgun_signed_events_update_their_messages_and_a_replay_changes_nothing(
    client: Client, workspace: Workspace
) -> None:
    # given two messages sent through Mailgun (its ids are Message-IDs in angle brackets)
    delivered = sent_message(subscriber(workspace), "<20260504090000.1.ABCD@mg.example.com>")
    bounced = sent_message(subscriber(workspace), "<20260504090000.2.EF01@mg.example.com>")
    delivery = mailgun_payload(
        mailgun_event(
            "delivered",
            delivered,
            T0 + timedelta(seconds=30),
            **{"delivery-status": {"code": 250, "message": "OK", "tls": True}},
        )
    )
    failure = mailgun_payload(
        mailgun_event(
            "failed",
            bounced,
            T0 + timedelta(seconds=40),
            severity="permanent",
            reason="bounce",
            **{
                "log-level": "error",
                "delivery-status": {
                    "code": 550,
                    "message": "5.1.1 The email account that you tried to reach does not exist.",
                    "description": "",
                    "attempt-no": 1,
                },
            },
        )
    )

    # when Mailgun posts each event
    responses = [post_mailgun(client, delivery), post_mailgun(client, failure)]

    # then
    assert [response.status_code for response in responses] == [200, 200]
    after = snapshot(delivered, bounced)
    assert after == [
        ("sent", "", T0 + timedelta(seconds=30), None, None, None, None, None),
        (
            "sent",
            "Hard bounce reported by the mail service: "
            "5.1.1 The email account that you tried to reach does not exist.",
            None,
            None,
            None,
            T0 + timedelta(seconds=40),
            None,
            None,
        ),
    ]
    assert kinds(bounced) == [("bounced", "service", "esp", "mailgun")]
    assert suppressed(bounced.contact) == SuppressionReason.BOUNCED

    # a replay of both changes nothing
    replays = [post_mailgun(client, delivery), post_mailgun(client, failure)]
    assert [response.status_code for response in replays] == [200, 200]
    assert Activity.objects.count() == 2
    assert snapshot(delivered, bounced) == after


def test_postmark_delivery_open_bounce_and_complaint(client: Client, workspace: Workspace) -> None:
    # given three messages sent through Postmark
    opened, bounced, complained = (
        sent_message(subscriber(workspace), str(uuid.uuid4())) for _ in range(3)
    )
    at = "2026-05-04T09:05:00.1234567Z"
    payloads = [
        {
            "RecordType": "Delivery",
            "ServerID": 23,
            "MessageStream": "outbound",
            "MessageID": opened.esp_message_id,
            "Recipient": opened.contact.email,
            "Tag": "spring",
            "DeliveredAt": at,
            "Details": "smtp;250 2.0.0 OK",
            "Metadata": {},
        },
        {
            "RecordType": "Open",
            "MessageStream": "outbound",
            "FirstOpen": True,
            "Client": {"Name": "Chrome 120", "Company": "Google", "Family": "Chrome"},
            "OS": {"Name": "Windows 10", "Company": "Microsoft", "Family": "Windows"},
            "Platform": "Desktop",
            "UserAgent": BROWSER,
            "Geo": {"CountryISOCode": "DE", "Country": "Germany", "IP": "203.0.113.7"},
            "MessageID": opened.esp_message_id,
            "Metadata": {},
            "ReceivedAt": "2026-05-04T10:00:00Z",
            "Tag": "spring",
            "Recipient": opened.contact.email,
        },
        {
            "RecordType": "Bounce",
            "ID": 4323372036854775807,
            "Type": "HardBounce",
            "TypeCode": 1,
            "Name": "Hard bounce",
            "Tag": "spring",
            "MessageID": bounced.esp_message_id,
            "ServerID": 23,
            "MessageStream": "outbound",
            "Description": "The server was unable to deliver your message (ex: unknown user).",
            "Details": "smtp;550 5.1.1 The email account does not exist",
            "Email": bounced.contact.email,
            "From": "shop@example.com",
            "BouncedAt": at,
            "DumpAvailable": False,
            "Inactive": True,
            "CanActivate": True,
            "Subject": "Spring sale",
        },
        {
            "RecordType": "SpamComplaint",
            "ID": 4323372036854775808,
            "Type": "SpamComplaint",
            "TypeCode": 512,
            "Name": "Spam complaint",
            "Tag": "spring",
            "MessageID": complained.esp_message_id,
            "ServerID": 23,
            "MessageStream": "outbound",
            "Description": "The subscriber explicitly marked this message as spam.",
            "Details": "Test spam complaint details",
            "Email": complained.contact.email,
            "From": "shop@example.com",
            "BouncedAt": at,
            "Subject": "Spring sale",
        },
    ]

    # when Postmark posts each one
    assert [post_postmark(client, payload).status_code for payload in payloads] == [200] * 4

    # then
    five_past = datetime(2026, 5, 4, 9, 5, 0, 123456, tzinfo=UTC)
    assert snapshot(opened, complained) == [
        ("sent", "", five_past, datetime(2026, 5, 4, 10, 0, tzinfo=UTC), None, None, None, None),
        ("sent", "", None, None, None, None, five_past, None),
    ]
    assert Message.objects.get(pk=bounced.pk).bounced_at == five_past
    assert Activity.objects.get(message=bounced).detail == (
        "The server was unable to deliver your message (ex: unknown user). | "
        "smtp;550 5.1.1 The email account does not exist"
    )
    assert (status_of(bounced.contact), suppressed(bounced.contact)) == ("bounced", "bounced")
    assert (status_of(complained.contact), suppressed(complained.contact)) == (
        "complained",
        "complained",
    )
    # Postmark's delivery and open events have no event id: the key is derived from the
    # payload, so a replay is still recognised.
    activities = Activity.objects.count()
    assert [post_postmark(client, payload).status_code for payload in payloads] == [200] * 4
    assert Activity.objects.count() == activities == 4


def test_amazon_ses_notifications_through_sns(
    client: Client, workspace: Workspace, sns: SnsSigner
) -> None:
    # given two messages sent through SES
    delivered = sent_message(subscriber(workspace), "0107018f3b0a1d2c-delivered-000000")
    complained = sent_message(subscriber(workspace), "0107018f3b0a1d2c-complained-000000")
    delivery = ses_notification(
        {
            "eventType": "Delivery",
            "delivery": {
                "timestamp": "2026-05-04T09:00:02.000Z",
                "processingTimeMillis": 1200,
                "recipients": [delivered.contact.email],
                "smtpResponse": "250 2.6.0 Message received",
                "reportingMTA": "a1-2.smtp-out.eu-central-1.amazonses.com",
            },
        },
        delivered,
        T0 + timedelta(seconds=2),
    )
    complaint = ses_notification(
        {
            "eventType": "Complaint",
            "complaint": {
                "complainedRecipients": [{"emailAddress": complained.contact.email}],
                "timestamp": "2026-05-04T10:00:00.000Z",
                "feedbackId": secrets.token_hex(16),
                "userAgent": "Mozilla/5.0 (compatible; feedback loop)",
                "complaintFeedbackType": "abuse",
                "arrivalDate": "2026-05-04T10:00:00.000Z",
            },
        },
        complained,
        T0 + timedelta(hours=1),
    )

    # when SNS posts them
    answers = [post_ses(client, sns, delivery), post_ses(client, sns, complaint)]
    assert [answer.status_code for answer in answers] == [200, 200]

    # then
    assert snapshot(delivered, complained) == [
        ("sent", "", T0 + timedelta(seconds=2), None, None, None, None, None),
        ("sent", "", None, None, None, None, T0 + timedelta(hours=1), None),
    ]
    assert Activity.objects.get(message=complained).detail == "abuse"
    assert (status_of(complained.contact), suppressed(complained.contact)) == (
        "complained",
        "complained",
    )
    # a complaint withdraws consent: every list subscription ended, with proof
    assert list(
        Subscription.objects.filter(contact=complained.contact).values_list("status", flat=True)
    ) == ["unsubscribed"]
    assert list(
        complained.contact.consent_records.filter(kind="unsubscribe").values_list(
            "source", flat=True
        )
    ) == ["esp:amazon_ses complaint"]

    # SNS redelivers the same notification: nothing changes
    assert post_ses(client, sns, complaint).status_code == 200
    assert Activity.objects.count() == 2
    assert complained.contact.consent_records.filter(kind="unsubscribe").count() == 1


def test_an_smtp_send_through_ses_is_found_by_its_message_id_header(
    client: Client, workspace: Workspace, sns: SnsSigner
) -> None:
    # given a message sent over SES's SMTP relay: we only know our own Message-ID header
    message = sent_message(subscriber(workspace), "<placeholder>")
    Message.objects.filter(pk=message.pk).update(esp_message_id=f"<{message.pk}@testserver>")
    message.refresh_from_db()
    notification = ses_notification(
        {
            "eventType": "Delivery",
            "delivery": {
                "timestamp": "2026-05-04T09:00:02.000Z",
                "recipients": [message.contact.email],
                "smtpResponse": "250 OK",
            },
        },
        message,
        T0 + timedelta(seconds=2),
    )
    event = json.loads(notification["Message"])
    event["mail"]["messageId"] = "0107018f3b0a1d2c-ses-own-id-000000"
    notification["Message"] = json.dumps(event)

    assert post_ses(client, sns, notification).status_code == 200

    assert Message.objects.get(pk=message.pk).delivered_at == T0 + timedelta(seconds=2)


# --- signatures and basic auth -----------------------------------------------------------------


def test_a_wrong_basic_auth_is_refused_and_records_nothing(
    client: Client, workspace: Workspace
) -> None:
    message = sent_message(subscriber(workspace), str(uuid.uuid4()))
    events = [sendgrid_event("bounce", message, T0, type="bounce", reason="550 5.1.1 unknown")]

    wrong = post_sendgrid(client, events, secret="funnelwerk:guessed")
    missing = client.post(
        reverse("anymail:sendgrid_tracking_webhook"),
        json.dumps(events),
        content_type="application/json",
    )

    assert (wrong.status_code, missing.status_code) == (400, 400)
    assert Activity.objects.count() == 0
    assert snapshot(message) == [("sent", "", None, None, None, None, None, None)]
    assert (status_of(message.contact), suppressed(message.contact)) == ("subscribed", None)


def test_a_bad_mailgun_signature_is_refused_and_records_nothing(
    client: Client, workspace: Workspace
) -> None:
    message = sent_message(subscriber(workspace), "<20260504.3.AB@mg.example.com>")
    event = mailgun_event("failed", message, T0, severity="permanent", reason="bounce")
    forged = mailgun_payload(event, key="not-the-signing-key")
    replayed_signature = mailgun_payload(event)
    replayed_signature["signature"]["token"] = secrets.token_hex(25)

    responses = [post_mailgun(client, forged), post_mailgun(client, replayed_signature)]

    assert [response.status_code for response in responses] == [400, 400]
    assert Activity.objects.count() == 0
    assert snapshot(message) == [("sent", "", None, None, None, None, None, None)]
    assert suppressed(message.contact) is None


def test_sendgrid_signed_event_webhook_is_verified(
    client: Client, workspace: Workspace, settings: Any
) -> None:
    # given SendGrid's Signed Event Webhook: an ECDSA (P-256) signature of timestamp + body
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    private_key = ec.generate_private_key(ec.SECP256R1())
    public_der = private_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    settings.ANYMAIL = {
        "WEBHOOK_SECRET": [SECRET],
        "SENDGRID_TRACKING_WEBHOOK_VERIFICATION_KEY": base64.b64encode(public_der).decode(),
    }
    message = sent_message(subscriber(workspace), str(uuid.uuid4()))
    body = json.dumps([sendgrid_event("delivered", message, T0)])
    timestamp = str(int(T0.timestamp()))
    signature = private_key.sign((timestamp + body).encode(), ec.ECDSA(hashes.SHA256()))

    def post(payload: str) -> Any:
        return client.post(
            reverse("anymail:sendgrid_tracking_webhook"),
            payload,
            content_type="application/json",
            HTTP_X_TWILIO_EMAIL_EVENT_WEBHOOK_SIGNATURE=base64.b64encode(signature).decode(),
            HTTP_X_TWILIO_EMAIL_EVENT_WEBHOOK_TIMESTAMP=timestamp,
            **auth(),
        )

    # when the body is changed after signing, then it is refused
    forged = post(body.replace('"delivered"', '"spamreport"'))
    assert forged.status_code == 400
    assert Activity.objects.count() == 0

    # the signed body is taken
    assert post(body).status_code == 200
    assert kinds(message) == [("delivered", "service", "esp", "sendgrid")]


def test_ses_without_basic_auth_gets_the_challenge_and_with_a_wrong_one_is_refused(
    client: Client, workspace: Workspace, sns: SnsSigner
) -> None:
    message = sent_message(subscriber(workspace), "0107018f3b0a1d2c-challenge-000000")
    notification = ses_notification(
        ses_bounce("Permanent", "smtp; 550 5.1.1 user unknown", message), message, T0
    )

    challenge = post_ses(client, sns, notification, HTTP_X_NOTHING="")
    wrong = post_ses(client, sns, notification, **auth("funnelwerk:guessed"))

    # SNS sends basic auth only after a 401 asking for it
    assert (challenge.status_code, challenge["WWW-Authenticate"]) == (
        401,
        'Basic realm="Anymail WEBHOOK_SECRET"',
    )
    assert wrong.status_code == 400
    assert Activity.objects.count() == 0
    assert status_of(message.contact) == "subscribed"


def _post_sns_json(client: Client, message: dict[str, Any]) -> Any:
    """POST an SNS message exactly as given (signed or not), with basic auth."""
    return client.post(
        reverse("anymail:amazon_ses_tracking_webhook"),
        json.dumps(message),
        content_type="text/plain; charset=UTF-8",
        HTTP_X_AMZ_SNS_MESSAGE_TYPE=str(message.get("Type")),
        HTTP_X_AMZ_SNS_MESSAGE_ID=str(message.get("MessageId")),
        **auth(),
    )


def _ses_delivery(message: Message) -> dict[str, Any]:
    delivery = {
        "eventType": "Delivery",
        "delivery": {
            "timestamp": "2026-05-04T09:00:02.000Z",
            "recipients": [message.contact.email],
            "smtpResponse": "250 2.6.0 Message received",
        },
    }
    return ses_notification(delivery, message, T0 + timedelta(seconds=2))


@pytest.mark.parametrize("version", ["1", "2"])
def test_a_notification_signed_by_sns_is_recorded_and_its_certificate_fetched_once(
    client: Client, workspace: Workspace, sns: SnsSigner, version: str
) -> None:
    # given two notifications signed as SNS signs them (SHA1withRSA or SHA256withRSA)
    first, second = (sent_message(subscriber(workspace), f"ses-signed-{n}") for n in (1, 2))

    # when both are posted
    answers = [
        _post_sns_json(client, sns.sign(_ses_delivery(m), version=version)) for m in (first, second)
    ]

    # then both are recorded, and the signing certificate was fetched once (then cached)
    assert [answer.status_code for answer in answers] == [200, 200]
    assert Activity.objects.filter(kind="delivered").count() == 2
    assert sns.requests == 1


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(
            lambda m: {**m, "Message": m["Message"].replace("Delivery", "Bounce")}, id="message"
        ),
        pytest.param(lambda m: {**m, "Timestamp": "2026-05-04T09:00:03.000Z"}, id="timestamp"),
        pytest.param(
            lambda m: {**m, "Signature": base64.b64encode(b"x" * 256).decode()}, id="signature"
        ),
        pytest.param(lambda m: {k: v for k, v in m.items() if k != "Signature"}, id="no-signature"),
        pytest.param(lambda m: {**m, "SignatureVersion": "3"}, id="unknown-version"),
    ],
)
def test_an_altered_or_unsigned_notification_is_refused_and_records_nothing(
    client: Client,
    workspace: Workspace,
    sns: SnsSigner,
    tamper: Callable[[dict[str, Any]], dict[str, Any]],
) -> None:
    # given a signed notification, changed after signing
    message = sent_message(subscriber(workspace), "ses-tampered")
    notification = tamper(sns.sign(_ses_delivery(message)))

    # when it is posted with the right basic auth
    answer = _post_sns_json(client, notification)

    # then it is refused before anymail reads it
    assert answer.status_code == 403
    assert Activity.objects.count() == 0
    assert snapshot(message)[0][2] is None  # not delivered


def test_a_certificate_url_off_the_sns_hosts_is_never_fetched(
    client: Client, workspace: Workspace, sns: SnsSigner
) -> None:
    # given a notification signed with our key but naming a certificate on another host
    message = sent_message(subscriber(workspace), "ses-elsewhere")
    elsewhere = sns.url.replace("127.0.0.1", "localhost")
    notification = sns.sign(_ses_delivery(message), url=elsewhere)

    # when it is posted
    answer = _post_sns_json(client, notification)

    # then it is refused without fetching anything
    assert answer.status_code == 403
    assert sns.requests == 0
    assert Activity.objects.count() == 0


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("https://sns.eu-central-1.amazonaws.com/SimpleNotificationService-abc123.pem", True),
        ("https://sns.cn-north-1.amazonaws.com.cn/SimpleNotificationService-abc.pem", True),
        ("http://sns.eu-central-1.amazonaws.com/SimpleNotificationService-abc.pem", False),
        ("https://sns.eu-central-1.amazonaws.com.evil.example/cert.pem", False),
        ("https://evil.example/sns.eu-central-1.amazonaws.com/cert.pem", False),
        ("https://s3.amazonaws.com/bucket/cert.pem", False),
        ("https://sns.eu-central-1.amazonaws.com/cert.txt", False),
        ("https://sns.eu-central-1.amazonaws.com/cert.pem?x=1", False),
        ("https://user@sns.eu-central-1.amazonaws.com/cert.pem", False),
        (None, False),
    ],
)
def test_signing_certificates_come_only_from_sns_hosts_of_aws(url: Any, allowed: bool) -> None:
    assert signing_cert_url_allowed(url) is allowed


def test_an_expired_signing_certificate_is_refused(
    client: Client, workspace: Workspace, settings: Any
) -> None:
    settings.WEBHOOKS_ALLOW_INSECURE_LOOPBACK = True
    settings.SNS_SIGNING_CERT_HOSTS = r"127\.0\.0\.1"
    expired = SnsSigner(expired=True)
    try:
        message = sent_message(subscriber(workspace), "ses-expired")
        answer = _post_sns_json(client, expired.sign(_ses_delivery(message)))
    finally:
        expired.close()
    assert answer.status_code == 403
    assert Activity.objects.count() == 0


def test_an_unsigned_subscription_confirmation_is_refused(
    client: Client, workspace: Workspace, sns: SnsSigner
) -> None:
    # anymail would otherwise confirm the subscription (load its SubscribeURL)
    confirmation = {
        "Type": "SubscriptionConfirmation",
        "MessageId": str(uuid.uuid4()),
        "Token": secrets.token_hex(32),
        "TopicArn": "arn:aws:sns:eu-central-1:123456789012:ses-events",
        "Message": "You have chosen to subscribe to the topic.",
        "SubscribeURL": "https://sns.eu-central-1.amazonaws.com/?Action=ConfirmSubscription",
        "Timestamp": "2026-05-04T09:00:00.000Z",
    }
    assert _post_sns_json(client, confirmation).status_code == 403
    assert sns.requests == 0


def test_sns_signatures_can_be_switched_off_for_a_relay(
    client: Client, workspace: Workspace, settings: Any
) -> None:
    # given SES_VERIFY_SNS_SIGNATURES=false and an unsigned notification
    settings.SES_VERIFY_SNS_SIGNATURES = False
    message = sent_message(subscriber(workspace), "ses-unsigned")

    # when it is posted with the basic auth, it is recorded (the basic auth still applies)
    assert _post_sns_json(client, _ses_delivery(message)).status_code == 200
    assert Activity.objects.filter(kind="delivered").count() == 1


def test_without_a_webhook_secret_the_webhooks_are_refused(
    client: Client, workspace: Workspace, settings: Any
) -> None:
    # anymail would only warn and take the post from anyone
    settings.ANYMAIL = {}
    message = sent_message(subscriber(workspace), str(uuid.uuid4()))
    events = [sendgrid_event("spamreport", message, T0)]

    response = client.post(
        reverse("anymail:sendgrid_tracking_webhook"),
        json.dumps(events),
        content_type="application/json",
    )

    assert response.status_code == 403
    assert Activity.objects.count() == 0
    assert status_of(message.contact) == "subscribed"


# --- bounces and complaints stop the mail --------------------------------------------------------


@pytest.fixture
def running(workspace: Workspace) -> Callable[[Contact], tuple[Message, Message]]:
    """running(contact) -> (its sent first mail, its queued mail of a second sequence), each
    made by the engine for an active enrollment."""
    Workspace.objects.filter(pk=workspace.pk).update(
        frequency_cap_per_day=10, frequency_cap_per_week=30
    )

    def sequence(name: str) -> Sequence:
        steps = [
            {"key": "hello", "type": "email", "subject": name, "html": "<p>Hi</p>", "next": "w"},
            {"key": "w", "type": "wait", "duration": "P2D", "next": "again"},
            {"key": "again", "type": "email", "subject": "Again", "html": "<p>!</p>", "next": None},
        ]
        created = sequence_create(workspace=workspace, name=name, steps=steps)
        return sequence_set_status(sequence=created, status=SequenceStatus.ACTIVE)

    def start(contact: Contact) -> tuple[Message, Message]:
        for created in (sequence(f"A {contact.pk}"), sequence(f"B {contact.pk}")):
            assert enrollment_create(sequence=created, contact=contact) is not None
        engine.tick()
        first, second = Message.objects.filter(contact=contact).order_by(
            "enrollment__sequence__name"
        )
        assert (first.status, second.status) == ("queued", "queued")
        # the ESP accepted the first; the second is still waiting for its turn
        Message.objects.filter(pk=first.pk).update(
            status=MessageStatus.SENT, esp_message_id=str(uuid.uuid4()), sent_at=T0
        )
        first.refresh_from_db()
        return first, second

    return start


def enrollments_of(contact: Contact) -> list[tuple[str, str]]:
    return sorted(Enrollment.objects.filter(contact=contact).values_list("status", "exit_reason"))


def test_a_hard_bounce_suppresses_ends_enrollments_and_cancels_queued_mail(
    client: Client,
    workspace: Workspace,
    running: Callable[[Contact], tuple[Message, Message]],
) -> None:
    contact = subscriber(workspace)
    sent, queued = running(contact)
    bystander = subscriber(workspace)
    _other_sent, other_queued = running(bystander)

    response = post_sendgrid(
        client,
        [
            sendgrid_event(
                "bounce",
                sent,
                T0 + timedelta(minutes=1),
                type="bounce",
                status="5.1.1",
                reason="550 5.1.1 user unknown",
            )
        ],
    )

    assert response.status_code == 200
    assert (status_of(contact), suppressed(contact)) == ("bounced", "bounced")
    assert enrollments_of(contact) == [("exited", "unsubscribed"), ("exited", "unsubscribed")]
    assert Message.objects.get(pk=queued.pk).status == MessageStatus.CANCELLED
    assert Message.objects.get(pk=sent.pk).status == MessageStatus.SENT
    # nobody else is touched
    assert (status_of(bystander), suppressed(bystander)) == ("subscribed", None)
    assert enrollments_of(bystander) == [("active", ""), ("active", "")]
    assert Message.objects.get(pk=other_queued.pk).status == MessageStatus.QUEUED


def test_a_complaint_suppresses_at_once_ends_enrollments_and_cancels_queued_mail(
    client: Client,
    workspace: Workspace,
    running: Callable[[Contact], tuple[Message, Message]],
) -> None:
    contact = subscriber(workspace)
    sent, queued = running(contact)

    response = post_sendgrid(client, [sendgrid_event("spamreport", sent, T0 + timedelta(hours=2))])

    assert response.status_code == 200
    assert (status_of(contact), suppressed(contact)) == ("complained", "complained")
    assert enrollments_of(contact) == [("exited", "unsubscribed"), ("exited", "unsubscribed")]
    assert Message.objects.get(pk=queued.pk).status == MessageStatus.CANCELLED
    assert Message.objects.get(pk=sent.pk).complained_at == T0 + timedelta(hours=2)


def test_the_esps_unsubscribe_link_unsubscribes_from_everything(
    client: Client, workspace: Workspace, running: Callable[[Contact], tuple[Message, Message]]
) -> None:
    contact = subscriber(workspace)
    sent, queued = running(contact)

    post_sendgrid(client, [sendgrid_event("unsubscribe", sent, T0 + timedelta(hours=1))])

    assert (status_of(contact), suppressed(contact)) == ("unsubscribed", "unsubscribed")
    assert list(contact.consent_records.values_list("kind", "source")) == [
        ("unsubscribe", "esp:sendgrid"),
        ("signup", "test"),
    ]
    assert Message.objects.get(pk=sent.pk).unsubscribed_at == T0 + timedelta(hours=1)
    assert Message.objects.get(pk=queued.pk).status == MessageStatus.CANCELLED


def test_three_soft_bounces_in_a_row_suppress(
    client: Client, workspace: Workspace, sns: SnsSigner
) -> None:
    contact = subscriber(workspace)
    messages = [
        sent_message(contact, f"0107018f-soft-{number}", at=T0 + timedelta(days=number))
        for number in range(3)
    ]
    notifications = [
        ses_notification(
            ses_bounce("Transient", "smtp; 452 4.2.2 Mailbox full", message),
            message,
            T0 + timedelta(days=number, hours=1),
        )
        for number, message in enumerate(messages)
    ]

    for notification in notifications[:2]:
        assert post_ses(client, sns, notification).status_code == 200
    after_two = (status_of(contact), suppressed(contact))
    assert post_ses(client, sns, notifications[2]).status_code == 200

    assert after_two == ("subscribed", None)
    assert (status_of(contact), suppressed(contact)) == ("bounced", "bounced")
    assert [kinds(message) for message in messages] == [
        [("soft_bounced", "service", "esp", "amazon_ses")]
    ] * 3
    # every soft-bounced mail bounced, but only a hard bounce writes an error on the message
    assert list(
        Message.objects.filter(contact=contact)
        .order_by("sent_at")
        .values_list("error", "bounced_at")
    ) == [("", T0 + timedelta(days=number, hours=1)) for number in range(3)]


def test_a_delivery_between_soft_bounces_starts_the_count_again(
    client: Client, workspace: Workspace
) -> None:
    contact = subscriber(workspace)
    messages = [
        sent_message(contact, str(uuid.uuid4()), at=T0 + timedelta(days=number))
        for number in range(5)
    ]
    events = []
    for number, message in enumerate(messages):
        at = T0 + timedelta(days=number, hours=1)
        if number == 2:
            events.append(sendgrid_event("delivered", message, at, response="250 OK"))
        else:
            events.append(
                sendgrid_event(
                    "bounce",
                    message,
                    at,
                    type="blocked",
                    status="4.7.1",
                    reason="421 4.7.1 Temporarily deferred",
                )
            )

    # one request per day, as they would arrive
    for event in events:
        assert post_sendgrid(client, [event]).status_code == 200

    assert (status_of(contact), suppressed(contact)) == ("subscribed", None)
    assert Activity.objects.filter(kind="soft_bounced").count() == 4

    # a fifth soft bounce after the delivery makes three in a row
    sixth = sent_message(contact, str(uuid.uuid4()), at=T0 + timedelta(days=6))
    post_sendgrid(
        client,
        [
            sendgrid_event(
                "bounce",
                sixth,
                T0 + timedelta(days=6, hours=1),
                type="blocked",
                reason="421 4.7.1 Temporarily deferred",
            )
        ],
    )
    assert (status_of(contact), suppressed(contact)) == ("bounced", "bounced")


def test_the_soft_bounce_limit_is_the_workspaces(client: Client, workspace: Workspace) -> None:
    Workspace.objects.filter(pk=workspace.pk).update(soft_bounce_limit=1)
    contact = subscriber(workspace)
    message = sent_message(contact, str(uuid.uuid4()))

    post_sendgrid(
        client,
        [sendgrid_event("bounce", message, T0, type="blocked", reason="450 4.2.1 Rate limited")],
    )

    assert (status_of(contact), suppressed(contact)) == ("bounced", "bounced")


def test_a_mail_the_esp_dropped_for_an_earlier_bounce_is_a_hard_bounce(
    client: Client, workspace: Workspace
) -> None:
    message = sent_message(subscriber(workspace), str(uuid.uuid4()))

    post_sendgrid(client, [sendgrid_event("dropped", message, T0, reason="Bounced Address")])

    assert Message.objects.get(pk=message.pk).error == (
        "Hard bounce reported by the mail service: The mail service did not send it (bounced)."
    )
    assert (status_of(message.contact), suppressed(message.contact)) == ("bounced", "bounced")


def test_a_temporary_mailgun_failure_is_deferred_and_suppresses_nothing(
    client: Client, workspace: Workspace
) -> None:
    message = sent_message(subscriber(workspace), "<20260504.4.CD@mg.example.com>")
    temporary = mailgun_event(
        "failed",
        message,
        T0 + timedelta(minutes=1),
        severity="temporary",
        reason="generic",
        **{"delivery-status": {"code": 452, "message": "4.2.2 Mailbox full", "attempt-no": 1}},
    )

    assert post_mailgun(client, mailgun_payload(temporary)).status_code == 200

    assert kinds(message) == [("deferred", "service", "esp", "mailgun")]
    assert Activity.objects.get(message=message).detail == "4.2.2 Mailbox full"
    assert snapshot(message) == [("sent", "", None, None, None, None, None, None)]
    assert (status_of(message.contact), suppressed(message.contact)) == ("subscribed", None)


# --- workspaces and unknown ids -----------------------------------------------------------------


def test_an_esp_id_belongs_to_one_message_of_one_workspace(
    client: Client, workspace: Workspace
) -> None:
    # given the same address in two workspaces, each with a mail of its own
    other = WorkspaceFactory()
    ours = sent_message(subscriber(workspace, "same@example.org"), str(uuid.uuid4()))
    theirs = sent_message(subscriber(other, "same@example.org"), str(uuid.uuid4()))

    # when our mail hard-bounces
    post_sendgrid(
        client,
        [sendgrid_event("bounce", ours, T0, type="bounce", reason="550 5.1.1 user unknown")],
    )

    # then only our workspace knows
    assert (status_of(ours.contact), suppressed(ours.contact)) == ("bounced", "bounced")
    assert (status_of(theirs.contact), suppressed(theirs.contact)) == ("subscribed", None)
    assert snapshot(theirs) == [("sent", "", None, None, None, None, None, None)]
    assert list(Activity.objects.values_list("workspace_id", flat=True)) == [workspace.pk]


def test_an_esp_id_two_messages_claim_is_applied_to_neither(
    client: Client, workspace: Workspace
) -> None:
    shared_id = str(uuid.uuid4())
    ours = sent_message(subscriber(workspace), shared_id)
    theirs = sent_message(subscriber(WorkspaceFactory()), shared_id)

    response = post_sendgrid(client, [sendgrid_event("spamreport", ours, T0)])

    assert response.status_code == 200
    assert Activity.objects.count() == 0
    assert [status_of(message.contact) for message in (ours, theirs)] == ["subscribed"] * 2


def test_events_for_unknown_messages_are_ignored(client: Client, workspace: Workspace) -> None:
    # e.g. the shop's own order mails sent through the same ESP account
    known = sent_message(subscriber(workspace), str(uuid.uuid4()))

    response = post_sendgrid(
        client,
        [
            {**sendgrid_event("spamreport", known, T0), "anymail_id": "order-mail-4711"},
            sendgrid_event("delivered", known, T0 + timedelta(seconds=5)),
        ],
    )

    assert response.status_code == 200
    assert list(Activity.objects.values_list("message_id", "kind")) == [(known.pk, "delivered")]


# --- ESP opens and clicks beside our own ----------------------------------------------------------


def test_esp_and_pixel_opens_and_clicks_count_once(client: Client, workspace: Workspace) -> None:
    # given a mail whose open our pixel recorded first
    message = sent_message(subscriber(workspace), str(uuid.uuid4()))
    pixel_open = T0 + timedelta(minutes=30)
    hits_write(
        [
            Hit(
                key=uuid.uuid4().hex,
                kind="open",
                message_id=message.pk,
                source=None,
                link_index=None,
                url="",
                occurred_at=pixel_open,
                user_agent=BROWSER,
                ip="203.0.113.0",
                method="GET",
                origin="pixel",
            )
        ]
    )

    # when the ESP reports its own open of it and two clicks: one on a link our redirect
    # tracks (the ESP wrapped it once more), one on a link only the ESP tracks
    response = post_sendgrid(
        client,
        [
            sendgrid_event("open", message, T0 + timedelta(minutes=31), useragent=BROWSER),
            sendgrid_event(
                "click",
                message,
                T0 + timedelta(minutes=32),
                url="http://testserver/t/c/c2lnbmVkLXRva2Vu",
                useragent=BROWSER,
            ),
            sendgrid_event(
                "click",
                message,
                T0 + timedelta(minutes=40),
                url="https://shop.example/spring",
                useragent=BROWSER,
            ),
        ],
    )

    # then the first open stays the open, the ESP's click counts, ours is not doubled
    assert response.status_code == 200
    state = snapshot(message)[0]
    assert (state[3], state[4]) == (pixel_open, T0 + timedelta(minutes=40))
    assert list(
        Activity.objects.filter(message=message)
        .order_by("occurred_at")
        .values_list("kind", "origin", "actor", "url")
    ) == [
        ("open", "pixel", "human", ""),
        ("open", "esp", "human", ""),
        ("click", "esp", "human", "https://shop.example/spring"),
    ]


def test_esp_opens_follow_the_workspaces_tracking_mode(
    client: Client, workspace: Workspace, running: Callable[[Contact], tuple[Message, Message]]
) -> None:
    message, _queued = running(subscriber(workspace))
    events = [
        sendgrid_event("open", message, T0 + timedelta(hours=1), useragent=BROWSER),
        sendgrid_event("delivered", message, T0 + timedelta(seconds=3)),
    ]

    # off: the ESP's open is not recorded, the delivery is
    Workspace.objects.filter(pk=workspace.pk).update(tracking_mode=TrackingMode.OFF)
    post_sendgrid(client, events)
    assert list(Activity.objects.values_list("kind", flat=True)) == ["delivered"]
    assert snapshot(message)[0][3] is None

    # anonymous: counted for the mail (its sequence and step), not tied to the message
    Workspace.objects.filter(pk=workspace.pk).update(tracking_mode=TrackingMode.ANONYMOUS)
    post_sendgrid(client, events)
    anonymous_open = Activity.objects.get(kind="open")
    assert (
        anonymous_open.message_id,
        anonymous_open.workspace_id,
        anonymous_open.sequence_id,
        anonymous_open.step_key,
    ) == (None, workspace.pk, message.enrollment.sequence_id, "hello")
    assert snapshot(message)[0][3] is None


def test_the_message_lookup_uses_the_esp_id_index(db):
    """The index on Message.esp_message_id leaves out messages without one; the webhook's
    lookup must say so too, or PostgreSQL scans every message of every workspace per batch."""
    with CaptureQueriesContext(connection) as captured:
        _messages_by_esp_id({"<a@esp.example>", "<b@esp.example>"})
    (query,) = [q["sql"] for q in captured.captured_queries if "esp_message_id" in q["sql"]]
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute("EXPLAIN " + query)
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert "message_esp_id" in plan, plan


def test_a_batch_of_deliveries_reaches_webhooks_in_a_fixed_number_of_queries(
    client: Client, workspace: Workspace, django_assert_max_num_queries: Any
) -> None:
    """message.delivered for every message of a batch: one delivery per message and endpoint,
    created in bulk (the query count does not grow with the batch)."""
    webhook_endpoint_create(
        workspace=workspace, url="https://hooks.example.com/a", events=["message.delivered"]
    )
    webhook_endpoint_create(
        workspace=workspace, url="https://hooks.example.com/b", events=["message.delivered"]
    )
    messages = [sent_message(subscriber(workspace), str(uuid.uuid4())) for _ in range(40)]
    events = [sendgrid_event("delivered", message, T0, response="250 OK") for message in messages]

    with django_assert_max_num_queries(20):
        assert post_sendgrid(client, events).status_code == 200

    payloads = WebhookDelivery.objects.filter(event_type="message.delivered").values_list(
        "endpoint__url", "payload"
    )
    assert sorted((url, payload["data"]["message"]) for url, payload in payloads) == sorted(
        (url, str(message.pk))
        for url in ("https://hooks.example.com/a", "https://hooks.example.com/b")
        for message in messages
    )


def test_a_batch_of_bounces_and_complaints_stops_each_contact_in_a_fixed_number_of_queries(
    client: Client,
    workspace: Workspace,
    running: Callable[[Contact], tuple[Message, Message]],
    django_assert_max_num_queries: Any,
) -> None:
    """Many contacts stopped by one ESP batch: each is suppressed with its status, a complaint
    also ends its subscriptions with a consent record, every run ends, queued mail is
    cancelled, one contact.unsubscribed webhook each — in a number of queries that does not
    grow with the batch."""
    webhook_endpoint_create(
        workspace=workspace, url="https://hooks.example.com/c", events=["contact.unsubscribed"]
    )
    bouncers = [subscriber(workspace) for _ in range(6)]
    complainers = [subscriber(workspace) for _ in range(6)]
    mails = {contact.pk: running(contact) for contact in bouncers + complainers}
    bounce = {"type": "bounce", "status": "5.1.1", "reason": "550 5.1.1 user unknown"}
    events = [
        sendgrid_event("bounce", mails[contact.pk][0], T0 + timedelta(minutes=1), **bounce)
        for contact in bouncers
    ] + [
        sendgrid_event("spamreport", mails[contact.pk][0], T0 + timedelta(hours=1))
        for contact in complainers
    ]

    with django_assert_max_num_queries(60):
        assert post_sendgrid(client, events).status_code == 200

    for contact, status in [(c, "bounced") for c in bouncers] + [
        (c, "complained") for c in complainers
    ]:
        assert (status_of(contact), suppressed(contact)) == (status, status)
        assert enrollments_of(contact) == [("exited", "unsubscribed")] * 2
        assert Message.objects.get(pk=mails[contact.pk][1].pk).status == MessageStatus.CANCELLED
    withdrawn = ConsentRecord.objects.filter(kind=ConsentKind.UNSUBSCRIBE)
    assert sorted(withdrawn.values_list("contact_id", "source")) == sorted(
        (contact.pk, "esp:sendgrid complaint") for contact in complainers
    )
    assert not Subscription.objects.filter(
        contact__in=complainers, status=SubscriptionStatus.SUBSCRIBED
    ).exists()
    announced = WebhookDelivery.objects.filter(event_type="contact.unsubscribed")
    assert sorted(
        payload["data"]["contact"]["email"]
        for payload in announced.values_list("payload", flat=True)
    ) == sorted(contact.email for contact in bouncers + complainers)
