"""Double opt-in end to end: the hosted form, the confirmation link, list bombing, reminders and
expiry, suppression, the unsubscribe and preference page, erasure and the GDPR export.

Everything goes through the real services and public views (DESIGN.md: Security and compliance
rules; API.md: Lists and double opt-in, Public endpoints).
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.core import mail
from django.db import connection
from django.test import Client, override_settings

from contacts import signals
from contacts.models import (
    ConsentKind,
    ConsentRecord,
    Contact,
    ContactStatus,
    MailingList,
    SignupForm,
    Subscription,
    SubscriptionStatus,
    Suppression,
    SuppressionReason,
)
from contacts.signup_forms import signup_form_create
from contacts.subscriptions import (
    SignupContext,
    contact_confirm,
    list_subscribe,
    mailing_list_create,
    unsubscribe_token,
)
from contacts.tasks.confirmation import confirmations_maintain
from core.models import OutboxMessage

pytestmark = pytest.mark.django_db

CONSENT_TEXT = (
    "Ja, ich möchte den Newsletter der Acme GmbH per E-Mail erhalten. "
    "Ich kann mich jederzeit über den Link in jeder Mail abmelden."
)
PRIVACY_URL = "https://acme.example/datenschutz"
SIGNUP_IP = "198.51.100.23"
BROWSER = "Mozilla/5.0 (X11; Linux x86_64; rv:130.0) Gecko/20100101 Firefox/130.0"
CONFIRM_IP = "203.0.113.9"
PHONE = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) Mobile/15E148"
SENDER = '"Acme News" <news@acme.example>'
POSTAL_ADDRESS = "Musterstraße 1, 10115 Berlin"
SIGNUP_AT = datetime(2025, 3, 3, 9, 5, tzinfo=UTC)
CONFIRM_LINK = re.compile(r"http://testserver/confirm/([^/\s\"'<>]+)/")
# Django masks the CSRF token afresh for every response; the public base template renders it
# into the <body> tag. It says nothing about the address, so it is blanked before comparing.
MASKED_CSRF_TOKEN = re.compile(r'"X-CSRFToken": "[^"]*"')
INVALID_LINK_TEXT = "This link is not valid"


# --- helpers


@pytest.fixture
def sender(workspace):
    workspace.sender_name = "Acme News"
    workspace.sender_email = "news@acme.example"
    workspace.save(update_fields=["sender_name", "sender_email"])
    return workspace


@pytest.fixture
def newsletter(sender) -> MailingList:
    return mailing_list_create(workspace=sender, name="Newsletter")


@pytest.fixture
def signup_form(sender, newsletter) -> SignupForm:
    return make_form(sender, newsletter)


@pytest.fixture
def two_lists(sender, newsletter) -> tuple[MailingList, MailingList]:
    return newsletter, mailing_list_create(workspace=sender, name="Product news")


def make_form(workspace, mailing_list, **overrides) -> SignupForm:
    arguments = {
        "workspace": workspace,
        "name": f"Form for {mailing_list.name}",
        "mailing_list": mailing_list,
        "consent_text": CONSENT_TEXT,
        "privacy_policy_url": PRIVACY_URL,
        "fields": [
            {"name": "first_name", "label": "First name", "required": False},
            {"name": "last_name", "label": "Last name", "required": False},
        ],
    }
    arguments.update(overrides)
    return signup_form_create(**arguments)


def form_url(signup_form: SignupForm) -> str:
    return f"/f/{signup_form.pk}/"


def submit(client, capture, signup_form, data, **meta):
    """POST the hosted form like a browser; the confirmation mail goes out on commit."""
    meta.setdefault("REMOTE_ADDR", SIGNUP_IP)
    meta.setdefault("HTTP_USER_AGENT", BROWSER)
    with capture(execute=True):
        return client.post(form_url(signup_form), data, **meta)


def sign_up(client, capture, signup_form, email="ada@example.org", **fields):
    return submit(client, capture, signup_form, {"email": email, "consent": "yes", **fields})


def token_in(message) -> str:
    tokens = CONFIRM_LINK.findall(message.body)
    assert len(tokens) == 1
    return tokens[0]


def page(response) -> str:
    return MASKED_CSRF_TOKEN.sub('"X-CSRFToken": ""', response.content.decode())


def db_state() -> tuple[list[tuple], ...]:
    """Everything the consent lifecycle writes, to assert that nothing happened."""
    return (
        list(
            Contact.objects.order_by("pk").values_list(
                "pk",
                "email",
                "first_name",
                "last_name",
                "status",
                "confirmed_at",
                "unsubscribed_at",
                "confirmation_nonce",
                "confirmation_requested_at",
                "confirmation_sent_at",
                "confirmation_reminded_at",
            )
        ),
        list(
            Subscription.objects.order_by("pk").values_list(
                "pk", "contact_id", "mailing_list_id", "status", "confirmed_at", "unsubscribed_at"
            )
        ),
        list(ConsentRecord.objects.order_by("pk").values_list("pk", "kind", "contact_id")),
        list(Suppression.objects.order_by("pk").values_list("pk", "email_hash", "reason")),
    )


def subscribed_contact(workspace, mailing_lists, email="grace@example.org") -> Contact:
    """A contact that signed up to these lists through the API and confirmed."""
    contact = None
    for mailing_list in mailing_lists:
        contact = list_subscribe(
            mailing_list=mailing_list,
            email=email,
            profile={"first_name": "Grace"},
            context=SignupContext(ip=SIGNUP_IP, consent_text=CONSENT_TEXT, source="api"),
        ).contact
    assert contact is not None
    contact_confirm(contact=contact, ip=SIGNUP_IP, user_agent=BROWSER)
    contact.refresh_from_db()
    return contact


# --- the hosted form: showing


def test_the_hosted_form_shows_the_consent_text_and_the_privacy_link(client, signup_form):
    # when
    response = client.get(form_url(signup_form))

    # then
    assert response.status_code == 200
    html = response.content.decode()
    assert CONSENT_TEXT in html
    assert f'<a href="{PRIVACY_URL}" target="_blank" rel="noopener">Privacy policy</a>' in html
    assert '<input type="checkbox" id="fw-consent" name="consent" value="yes" required>' in html
    assert 'name="first_name"' in html
    assert Contact.objects.count() == 0


def test_the_hosted_form_carries_utm_parameters_of_its_own_url_into_hidden_fields(
    client, signup_form
):
    # when
    response = client.get(form_url(signup_form) + "?utm_source=instagram&utm_medium=bio")

    # then
    html = response.content.decode()
    assert '<input type="hidden" name="utm_source" value="instagram">' in html
    assert '<input type="hidden" name="utm_medium" value="bio">' in html


def test_values_reflected_into_the_hosted_form_are_escaped(
    client, signup_form, django_capture_on_commit_callbacks
):
    # given
    script = '"><script>alert(1)</script>'

    # when
    shown = client.get(form_url(signup_form), {"utm_source": script, "page_url": script})
    refused = submit(
        client,
        django_capture_on_commit_callbacks,
        signup_form,
        {"email": "ada@example.org", "first_name": script, "page_url": script},
    )

    # then
    for response in (shown, refused):
        html = response.content.decode()
        assert "<script>alert(1)</script>" not in html
        assert "&quot;&gt;&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert refused.status_code == 400
    assert Contact.objects.count() == 0


# --- the hosted form: submitting


def test_a_signup_stores_a_pending_contact_and_the_proof_of_consent(
    client, sender, newsletter, signup_form, django_capture_on_commit_callbacks
):
    # given
    referer = (
        "https://acme.example/blog/post?utm_source=blog&utm_medium=referral&utm_campaign=spring"
    )

    # when
    with time_machine.travel(SIGNUP_AT, tick=False):
        response = submit(
            client,
            django_capture_on_commit_callbacks,
            signup_form,
            {"email": " Ada@Example.ORG ", "first_name": "Ada", "consent": "yes"},
            HTTP_REFERER=referer,
        )

    # then
    assert response.status_code == 200
    contact = Contact.objects.get()
    assert (contact.workspace_id, contact.email, contact.first_name, contact.status) == (
        sender.pk,
        "ada@example.org",
        "Ada",
        ContactStatus.PENDING,
    )
    assert contact.confirmed_at is None
    subscription = Subscription.objects.get()
    assert (subscription.contact_id, subscription.mailing_list_id, subscription.status) == (
        contact.pk,
        newsletter.pk,
        SubscriptionStatus.PENDING,
    )
    assert subscription.confirmed_at is None
    record = ConsentRecord.objects.get()
    assert record.kind == ConsentKind.SIGNUP
    assert record.contact_id == contact.pk
    assert record.workspace_id == sender.pk
    assert record.occurred_at == SIGNUP_AT
    assert record.ip_address == SIGNUP_IP
    assert record.user_agent == BROWSER
    assert record.signup_form_id == signup_form.pk
    assert record.mailing_list_id == newsletter.pk
    assert record.consent_text_id == signup_form.consent_text_id
    assert record.consent_text.text == CONSENT_TEXT
    assert record.privacy_policy_url == PRIVACY_URL
    assert record.page_url == referer
    assert record.utm == {
        "utm_source": "blog",
        "utm_medium": "referral",
        "utm_campaign": "spring",
    }


def test_the_hidden_page_url_and_utm_fields_of_an_embedded_form_are_recorded(
    client, signup_form, django_capture_on_commit_callbacks
):
    # given: the snippet sits on a landing page; the browser sends the landing page as Referer
    page_url = "https://shop.example/landing?utm_campaign=easter&utm_content=hero"

    # when
    submit(
        client,
        django_capture_on_commit_callbacks,
        signup_form,
        {
            "email": "ada@example.org",
            "consent": "yes",
            "page_url": page_url,
            "utm_source": "newsletter-partner",
        },
        HTTP_REFERER="https://shop.example/other-page?utm_source=ignored",
    )

    # then
    record = ConsentRecord.objects.get()
    assert record.page_url == page_url
    assert record.utm == {
        "utm_campaign": "easter",
        "utm_content": "hero",
        "utm_source": "newsletter-partner",
    }


def test_a_signup_sends_one_confirmation_mail_from_the_workspace_with_its_postal_address(
    client, signup_form, django_capture_on_commit_callbacks
):
    # when
    sign_up(client, django_capture_on_commit_callbacks, signup_form, first_name="Ada")

    # then
    assert len(mail.outbox) == 1
    message = mail.outbox[0]
    assert message.to == ["ada@example.org"]
    assert message.from_email == SENDER
    assert message.subject == "Please confirm your subscription to Newsletter"
    assert message.extra_headers["Auto-Submitted"] == "auto-generated"
    token = token_in(message)
    assert f"http://testserver/confirm/{token}/" in message.body
    assert POSTAL_ADDRESS in message.body
    [(html, mimetype)] = message.alternatives
    assert mimetype == "text/html"
    assert f'href="http://testserver/confirm/{token}/"' in html
    assert POSTAL_ADDRESS in html


def test_the_page_answer_is_the_same_for_new_pending_and_subscribed_addresses(
    client, sender, newsletter, signup_form, django_capture_on_commit_callbacks
):
    # given: an address that signed up earlier and confirmed
    subscribed_contact(sender, [newsletter], email="known@example.org")
    capture = django_capture_on_commit_callbacks

    # when
    new = sign_up(client, capture, signup_form, email="new@example.org")
    pending_again = sign_up(client, capture, signup_form, email="new@example.org")
    subscribed_again = sign_up(client, capture, signup_form, email="known@example.org")

    # then
    assert new.status_code == pending_again.status_code == subscribed_again.status_code == 200
    assert page(new) == page(pending_again) == page(subscribed_again)
    assert "Almost done: please check your inbox" in page(new)
    assert [message.to for message in mail.outbox] == [["new@example.org"]]
    assert Contact.objects.get(email="known@example.org").status == ContactStatus.SUBSCRIBED


def test_a_signup_without_the_consent_checkbox_is_refused_and_stores_nothing(
    client, signup_form, django_capture_on_commit_callbacks
):
    # given
    before = db_state()

    # when
    response = submit(
        client,
        django_capture_on_commit_callbacks,
        signup_form,
        {"email": "ada@example.org", "first_name": "Ada"},
    )

    # then
    assert response.status_code == 400
    html = response.content.decode()
    assert '<small class="error">Please agree to receive our mails.</small>' in html
    assert 'value="ada@example.org"' in html
    assert db_state() == before
    assert mail.outbox == []


def test_a_signup_with_a_bad_address_is_refused_and_stores_nothing(
    client, signup_form, django_capture_on_commit_callbacks
):
    # given
    before = db_state()

    # when
    response = submit(
        client,
        django_capture_on_commit_callbacks,
        signup_form,
        {"email": "ada@@example", "consent": "yes"},
    )

    # then
    assert response.status_code == 400
    assert '<small class="error">Enter a valid email address: ' in response.content.decode()
    assert db_state() == before
    assert mail.outbox == []


def test_a_filled_honeypot_gets_the_success_answer_and_nothing_is_stored(
    client, signup_form, django_capture_on_commit_callbacks
):
    # given
    before = db_state()

    # when
    bot = submit(
        client,
        django_capture_on_commit_callbacks,
        signup_form,
        {"email": "victim@example.org", "consent": "yes", "website": "https://spam.example"},
    )

    # then
    assert db_state() == before
    assert mail.outbox == []
    person = sign_up(client, django_capture_on_commit_callbacks, signup_form)
    assert bot.status_code == person.status_code == 200
    assert page(bot) == page(person)


def test_too_many_signups_from_one_ip_get_429_with_retry_after(
    client, signup_form, settings, django_capture_on_commit_callbacks
):
    # given
    settings.SIGNUP_RATE_LIMIT_PER_IP = "3/h"
    capture = django_capture_on_commit_callbacks

    with time_machine.travel(SIGNUP_AT, tick=False):
        answers = [
            sign_up(client, capture, signup_form, email=f"person{n}@example.org").status_code
            for n in range(3)
        ]
        before = db_state()

        # when
        response = sign_up(client, capture, signup_form, email="person3@example.org")

        # then
        assert answers == [200, 200, 200]
        assert response.status_code == 429
        assert response["Retry-After"] == "3600"
        assert "Too many requests" in response.content.decode()
        assert db_state() == before
        assert len(mail.outbox) == 3
        other_ip = submit(
            client,
            capture,
            signup_form,
            {"email": "person4@example.org", "consent": "yes"},
            REMOTE_ADDR="192.0.2.77",
        )
        assert other_ip.status_code == 200


def test_a_form_with_a_success_url_redirects_there_after_signing_up(
    client, sender, newsletter, django_capture_on_commit_callbacks
):
    # given
    signup_form = make_form(sender, newsletter, success_url="https://acme.example/thanks")

    # when
    response = sign_up(client, django_capture_on_commit_callbacks, signup_form)

    # then
    assert response.status_code == 302
    assert response["Location"] == "https://acme.example/thanks"
    assert Contact.objects.get().status == ContactStatus.PENDING
    assert len(mail.outbox) == 1


def test_the_confirmation_mail_contains_nothing_the_subscriber_typed(
    client, signup_form, django_capture_on_commit_callbacks
):
    # given: a spammer uses the name fields to carry a message to the victim's inbox
    spam = "Buy cheap pills at spam.example"

    # when
    sign_up(
        client,
        django_capture_on_commit_callbacks,
        signup_form,
        email="victim@example.org",
        first_name=spam,
        last_name="Visit spam.example now",
    )

    # then
    assert Contact.objects.get().first_name == spam
    [message] = mail.outbox
    [(html, _mimetype)] = message.alternatives
    for part in (message.subject, message.body, html):
        assert "spam.example" not in part
        assert "cheap pills" not in part.lower()


# --- confirming


def test_opening_the_confirmation_link_changes_nothing_and_shows_a_button(
    client, signup_form, django_capture_on_commit_callbacks
):
    # given
    sign_up(client, django_capture_on_commit_callbacks, signup_form)
    token = token_in(mail.outbox[0])
    before = db_state()

    # when: a mail scanner fetches the link
    shown = client.get(f"/confirm/{token}/", REMOTE_ADDR=CONFIRM_IP)
    head = client.head(f"/confirm/{token}/", REMOTE_ADDR=CONFIRM_IP)

    # then
    assert shown.status_code == 200
    assert head.status_code == 200
    html = shown.content.decode()
    assert '<form method="post" class="stack">' in html
    assert "Yes, confirm my subscription</button>" in html
    assert db_state() == before


def test_posting_the_confirmation_confirms_and_records_proof(
    client, sender, newsletter, signup_form, django_capture_on_commit_callbacks
):
    # given
    with time_machine.travel(SIGNUP_AT, tick=False):
        sign_up(client, django_capture_on_commit_callbacks, signup_form)
    token = token_in(mail.outbox[0])
    confirmed_at = SIGNUP_AT + timedelta(hours=2)

    # when
    with time_machine.travel(confirmed_at, tick=False):
        response = client.post(f"/confirm/{token}/", REMOTE_ADDR=CONFIRM_IP, HTTP_USER_AGENT=PHONE)

    # then
    assert response.status_code == 200
    html = response.content.decode()
    assert "Thank you, your subscription is confirmed." in html
    assert "<li>Newsletter</li>" in html
    contact = Contact.objects.get()
    assert (contact.status, contact.confirmed_at, contact.confirmation_nonce) == (
        ContactStatus.SUBSCRIBED,
        confirmed_at,
        "",
    )
    subscription = Subscription.objects.get()
    assert (subscription.status, subscription.confirmed_at) == (
        SubscriptionStatus.SUBSCRIBED,
        confirmed_at,
    )
    signup = ConsentRecord.objects.get(kind=ConsentKind.SIGNUP)
    confirmation = ConsentRecord.objects.get(kind=ConsentKind.CONFIRMATION)
    assert confirmation.contact_id == contact.pk
    assert confirmation.occurred_at == confirmed_at
    assert confirmation.ip_address == CONFIRM_IP
    assert confirmation.user_agent == PHONE
    assert confirmation.consent_text_id == signup.consent_text_id == signup_form.consent_text_id
    assert confirmation.privacy_policy_url == PRIVACY_URL
    assert confirmation.mailing_list_id == newsletter.pk
    assert confirmation.signup_form_id == signup_form.pk
    assert len(mail.outbox) == 1


def test_confirming_redirects_to_the_forms_confirmed_url(
    client, sender, newsletter, django_capture_on_commit_callbacks
):
    # given
    signup_form = make_form(sender, newsletter, confirmed_url="https://acme.example/welcome")
    sign_up(client, django_capture_on_commit_callbacks, signup_form)
    token = token_in(mail.outbox[0])

    # when
    response = client.post(f"/confirm/{token}/", REMOTE_ADDR=CONFIRM_IP)

    # then
    assert response.status_code == 302
    assert response["Location"] == "https://acme.example/welcome"
    assert Contact.objects.get().status == ContactStatus.SUBSCRIBED


def test_used_tampered_foreign_and_expired_links_all_get_the_same_404(
    client, sender, newsletter, signup_form, django_capture_on_commit_callbacks
):
    # given: one confirmed contact and one whose request is older than the lifetime
    capture = django_capture_on_commit_callbacks
    with time_machine.travel(SIGNUP_AT, tick=False) as traveller:
        sign_up(client, capture, signup_form, email="used@example.org")
        sign_up(client, capture, signup_form, email="late@example.org")
        used_token, late_token = token_in(mail.outbox[0]), token_in(mail.outbox[1])
        tampered_token = used_token[:-1] + ("x" if used_token[-1] != "x" else "y")
        assert client.post(f"/confirm/{used_token}/").status_code == 200
        used = Contact.objects.get(email="used@example.org")
        late = Contact.objects.get(email="late@example.org")
        traveller.move_to(SIGNUP_AT + timedelta(days=7, minutes=1))
        before = db_state()

        # when
        answers = {
            "reused": client.get(f"/confirm/{used_token}/"),
            "reused_post": client.post(f"/confirm/{used_token}/"),
            "tampered": client.get(f"/confirm/{tampered_token}/"),
            "tampered_post": client.post(f"/confirm/{tampered_token}/"),
            "unsubscribe_token": client.get(f"/confirm/{unsubscribe_token(late)}/"),
            "unsubscribe_token_post": client.post(f"/confirm/{unsubscribe_token(late)}/"),
            "expired": client.get(f"/confirm/{late_token}/"),
            "expired_post": client.post(f"/confirm/{late_token}/"),
            "garbage": client.get("/confirm/not-a-token/"),
        }

    # then
    assert {name: answer.status_code for name, answer in answers.items()} == dict.fromkeys(
        answers, 404
    )
    bodies = {page(answer) for answer in answers.values()}
    assert len(bodies) == 1
    assert INVALID_LINK_TEXT in bodies.pop()
    assert db_state() == before
    assert Contact.objects.get(pk=late.pk).status == ContactStatus.PENDING
    assert Contact.objects.get(pk=used.pk).status == ContactStatus.SUBSCRIBED


def test_a_confirmation_token_is_useless_at_the_unsubscribe_page(
    client, signup_form, django_capture_on_commit_callbacks
):
    # given
    sign_up(client, django_capture_on_commit_callbacks, signup_form)
    token = token_in(mail.outbox[0])
    before = db_state()

    # when
    shown = client.get(f"/u/{token}/")
    one_click = client.post(
        f"/u/{token}/",
        "List-Unsubscribe=One-Click",
        content_type="application/x-www-form-urlencoded",
    )

    # then
    assert (shown.status_code, one_click.status_code) == (404, 404)
    assert page(shown) == page(one_click)
    assert INVALID_LINK_TEXT in page(shown)
    assert db_state() == before


# --- list bombing


def test_signing_one_address_up_to_five_lists_sends_one_mail_and_one_click_confirms_all(
    client, sender, django_capture_on_commit_callbacks
):
    # given
    capture = django_capture_on_commit_callbacks
    forms = [
        make_form(sender, mailing_list_create(workspace=sender, name=f"List {n}")) for n in range(6)
    ]

    with time_machine.travel(SIGNUP_AT, tick=False) as traveller:
        # when: five lists within ten minutes
        for minute, signup_form in zip((0, 2, 4, 7, 9), forms[:5], strict=True):
            traveller.move_to(SIGNUP_AT + timedelta(minutes=minute))
            assert (
                sign_up(client, capture, signup_form, email="victim@example.org").status_code == 200
            )

        # then
        assert len(mail.outbox) == 1
        assert Subscription.objects.filter(status=SubscriptionStatus.PENDING).count() == 5

        # when: eleven minutes after the mail, one more signup
        traveller.move_to(SIGNUP_AT + timedelta(minutes=11))
        sign_up(client, capture, forms[5], email="victim@example.org")

        # then
        assert len(mail.outbox) == 2
        assert [message.to for message in mail.outbox] == [["victim@example.org"]] * 2

        # when: the person confirms with the first mail's link
        response = client.post(f"/confirm/{token_in(mail.outbox[0])}/", REMOTE_ADDR=CONFIRM_IP)

    # then: every pending list is confirmed at once
    assert response.status_code == 200
    assert sorted(Subscription.objects.values_list("mailing_list__name", "status")) == [
        (f"List {n}", SubscriptionStatus.SUBSCRIBED) for n in range(6)
    ]
    assert ConsentRecord.objects.filter(kind=ConsentKind.CONFIRMATION).count() == 6
    assert Contact.objects.get().status == ContactStatus.SUBSCRIBED


def test_signing_one_address_up_five_times_to_one_list_sends_one_mail(
    client, signup_form, django_capture_on_commit_callbacks
):
    # given
    capture = django_capture_on_commit_callbacks

    with time_machine.travel(SIGNUP_AT, tick=False) as traveller:
        # when
        for minute in (0, 1, 3, 6, 9):
            traveller.move_to(SIGNUP_AT + timedelta(minutes=minute))
            sign_up(client, capture, signup_form, email="victim@example.org")

        # then
        assert len(mail.outbox) == 1
        assert Subscription.objects.get().status == SubscriptionStatus.PENDING
        assert ConsentRecord.objects.filter(kind=ConsentKind.SIGNUP).count() == 5

        # when
        traveller.move_to(SIGNUP_AT + timedelta(minutes=11))
        sign_up(client, capture, signup_form, email="victim@example.org")

    # then
    assert len(mail.outbox) == 2


# --- reminder and expiry


def test_one_reminder_after_the_reminder_delay_then_expiry_after_the_lifetime(
    client, settings, newsletter, signup_form, django_capture_on_commit_callbacks
):
    # given
    assert (settings.DOUBLE_OPT_IN_REMINDER_AFTER_HOURS, settings.DOUBLE_OPT_IN_LIFETIME_DAYS) == (
        48,
        7,
    )
    with time_machine.travel(SIGNUP_AT, tick=False) as traveller:
        sign_up(client, django_capture_on_commit_callbacks, signup_form)
        old_token = token_in(mail.outbox[0])

        # when: before the reminder delay
        traveller.move_to(SIGNUP_AT + timedelta(hours=47, minutes=59))
        confirmations_maintain.delay()

        # then
        assert len(mail.outbox) == 1

        # when: after it
        traveller.move_to(SIGNUP_AT + timedelta(hours=48, minutes=1))
        confirmations_maintain.delay()

        # then
        assert len(mail.outbox) == 2
        reminder = mail.outbox[1]
        assert reminder.subject == "Reminder: Please confirm your subscription to Newsletter"
        assert reminder.to == ["ada@example.org"]
        assert POSTAL_ADDRESS in reminder.body
        assert (
            "A friendly reminder: your subscription is not confirmed yet."
            in (reminder.alternatives[0][0])
        )
        reminder_token = token_in(reminder)

        # when: the beat runs again, and again a day later
        confirmations_maintain.delay()
        traveller.move_to(SIGNUP_AT + timedelta(days=3))
        confirmations_maintain.delay()

        # then
        assert len(mail.outbox) == 2
        assert Contact.objects.get().status == ContactStatus.PENDING

        # when: after the lifetime
        traveller.move_to(SIGNUP_AT + timedelta(days=7, minutes=1))
        confirmations_maintain.delay()

        # then
        contact = Contact.objects.get()
        assert contact.status == ContactStatus.NOT_SUBSCRIBED
        assert contact.confirmation_nonce == ""
        assert Subscription.objects.get().status == SubscriptionStatus.EXPIRED
        assert len(mail.outbox) == 2
        before = db_state()
        for token in (old_token, reminder_token):
            assert client.get(f"/confirm/{token}/").status_code == 404
            assert client.post(f"/confirm/{token}/").status_code == 404
        assert db_state() == before


def test_the_reminder_link_confirms_within_the_lifetime(
    client, signup_form, django_capture_on_commit_callbacks
):
    # given
    with time_machine.travel(SIGNUP_AT, tick=False) as traveller:
        sign_up(client, django_capture_on_commit_callbacks, signup_form)
        traveller.move_to(SIGNUP_AT + timedelta(hours=50))
        confirmations_maintain.delay()
        [_first, reminder] = mail.outbox

        # when
        traveller.move_to(SIGNUP_AT + timedelta(days=6))
        response = client.post(f"/confirm/{token_in(reminder)}/")

    # then
    assert response.status_code == 200
    assert Contact.objects.get().status == ContactStatus.SUBSCRIBED
    assert Subscription.objects.get().status == SubscriptionStatus.SUBSCRIBED


def test_a_subscribers_unconfirmed_request_for_another_list_expires_after_the_lifetime(
    client, sender, two_lists, django_capture_on_commit_callbacks
):
    # given: a subscriber of the newsletter asks for product news too and never confirms
    newsletter, product_news = two_lists
    with time_machine.travel(SIGNUP_AT - timedelta(days=1), tick=False) as traveller:
        contact = subscribed_contact(sender, [newsletter], email="grace@example.org")
        traveller.move_to(SIGNUP_AT)
        sign_up(
            client,
            django_capture_on_commit_callbacks,
            make_form(sender, product_news),
            email="grace@example.org",
        )
        assert [message.to for message in mail.outbox] == [["grace@example.org"]]
        old_token = token_in(mail.outbox[0])

        # when
        traveller.move_to(SIGNUP_AT + timedelta(days=7, minutes=1))
        confirmations_maintain.delay()

    # then: the request is over, the newsletter subscription untouched
    assert dict(Subscription.objects.values_list("mailing_list__name", "status")) == {
        "Newsletter": SubscriptionStatus.SUBSCRIBED,
        "Product news": SubscriptionStatus.EXPIRED,
    }
    contact.refresh_from_db()
    assert contact.status == ContactStatus.SUBSCRIBED
    assert client.get(f"/confirm/{old_token}/").status_code == 404


def test_a_subscribers_expired_request_is_not_confirmed_by_a_later_confirmation(
    client, sender, two_lists, django_capture_on_commit_callbacks
):
    # given: an unconfirmed request for product news, and a month later one for a third list
    newsletter, product_news = two_lists
    events = mailing_list_create(workspace=sender, name="Events")
    capture = django_capture_on_commit_callbacks
    with time_machine.travel(SIGNUP_AT - timedelta(days=1), tick=False) as traveller:
        subscribed_contact(sender, [newsletter], email="grace@example.org")
        traveller.move_to(SIGNUP_AT)
        sign_up(client, capture, make_form(sender, product_news), email="grace@example.org")
        traveller.move_to(SIGNUP_AT + timedelta(days=30))
        confirmations_maintain.delay()
        sign_up(client, capture, make_form(sender, events), email="grace@example.org")
        assert len(mail.outbox) == 2

        # when: the person confirms the events list
        response = client.post(f"/confirm/{token_in(mail.outbox[1])}/", REMOTE_ADDR=CONFIRM_IP)

    # then: only what was asked for within the lifetime is confirmed
    assert response.status_code == 200
    assert dict(Subscription.objects.values_list("mailing_list__name", "status")) == {
        "Newsletter": SubscriptionStatus.SUBSCRIBED,
        "Product news": SubscriptionStatus.EXPIRED,
        "Events": SubscriptionStatus.SUBSCRIBED,
    }
    assert list(
        ConsentRecord.objects.filter(
            kind=ConsentKind.CONFIRMATION, occurred_at__gt=SIGNUP_AT
        ).values_list("mailing_list__name", flat=True)
    ) == ["Events"]


# --- suppression


def test_a_suppressed_address_signing_up_through_the_form_is_mailed_and_confirming_lifts_it(
    client, sender, newsletter, signup_form, django_capture_on_commit_callbacks
):
    # given: a subscriber who unsubscribed from everything
    with time_machine.travel(SIGNUP_AT, tick=False) as traveller:
        contact = subscribed_contact(sender, [newsletter], email="back@example.org")
        one_click = client.post(
            f"/u/{unsubscribe_token(contact)}/",
            "List-Unsubscribe=One-Click",
            content_type="application/x-www-form-urlencoded",
        )
        assert one_click.status_code == 200
        email_hash = Suppression.hash_email("back@example.org")
        assert Suppression.objects.filter(workspace=sender, email_hash=email_hash).exists()

        # when: the person signs up again on the form a week later
        traveller.move_to(SIGNUP_AT + timedelta(days=7))
        sign_up(client, django_capture_on_commit_callbacks, signup_form, email="back@example.org")

        # then
        assert [message.to for message in mail.outbox] == [["back@example.org"]]
        contact.refresh_from_db()
        assert contact.status == ContactStatus.PENDING
        assert Suppression.objects.filter(workspace=sender, email_hash=email_hash).exists()

        # when
        response = client.post(f"/confirm/{token_in(mail.outbox[0])}/", REMOTE_ADDR=CONFIRM_IP)

    # then
    assert response.status_code == 200
    contact.refresh_from_db()
    assert contact.status == ContactStatus.SUBSCRIBED
    assert contact.unsubscribed_at is None
    assert Subscription.objects.get().status == SubscriptionStatus.SUBSCRIBED
    assert not Suppression.objects.filter(email_hash=email_hash).exists()


def test_a_suppressed_address_subscribed_through_the_api_gets_no_mail(
    sender, newsletter, api, django_capture_on_commit_callbacks
):
    # given
    contact = subscribed_contact(sender, [newsletter], email="gone@example.org")
    Client().post(
        f"/u/{unsubscribe_token(contact)}/",
        "List-Unsubscribe=One-Click",
        content_type="application/x-www-form-urlencoded",
    )
    email_hash = Suppression.hash_email("gone@example.org")

    # when
    with django_capture_on_commit_callbacks(execute=True):
        response = api.post(
            f"/api/v1/lists/{newsletter.pk}/subscribe/",
            {"email": "gone@example.org", "consent_text": CONSENT_TEXT},
            format="json",
        )

    # then
    assert response.status_code == 202
    assert response.json()["contact"] == str(contact.pk)
    assert mail.outbox == []
    contact.refresh_from_db()
    assert contact.status == ContactStatus.UNSUBSCRIBED
    assert contact.confirmation_nonce == ""
    assert Subscription.objects.get().status == SubscriptionStatus.UNSUBSCRIBED
    assert Suppression.objects.get(email_hash=email_hash).reason == SuppressionReason.UNSUBSCRIBED


# --- the unsubscribe and preference page


def test_opening_the_unsubscribe_link_changes_nothing_and_shows_the_preferences(
    client, sender, two_lists
):
    # given
    contact = subscribed_contact(sender, two_lists)
    before = db_state()

    # when
    shown = client.get(f"/u/{unsubscribe_token(contact)}/")
    head = client.head(f"/u/{unsubscribe_token(contact)}/")

    # then
    assert (shown.status_code, head.status_code) == (200, 200)
    html = shown.content.decode()
    assert "grace@example.org" in html
    assert "Newsletter" in html
    assert "Product news" in html
    assert 'value="unsubscribe_all"' in html
    assert db_state() == before


def test_the_one_click_post_unsubscribes_at_once_without_cookie_or_csrf_token(sender, two_lists):
    # given
    contact = subscribed_contact(sender, two_lists)
    mail_client = Client(enforce_csrf_checks=True)
    url = f"/u/{unsubscribe_token(contact)}/"
    unsubscribed = []

    def on_unsubscribed(sender, workspace_id, contact_ids, **kwargs):
        unsubscribed.extend((workspace_id, contact_id) for contact_id in contact_ids)

    signals.contact_unsubscribed.connect(on_unsubscribed)
    try:
        # when: the mailbox provider posts RFC 8058's body, twice
        first = mail_client.post(
            url,
            "List-Unsubscribe=One-Click",
            content_type="application/x-www-form-urlencoded",
            REMOTE_ADDR=CONFIRM_IP,
            HTTP_USER_AGENT="GoogleOneClickUnsubscribe/1.0",
        )
        second = mail_client.post(
            url,
            "List-Unsubscribe=One-Click",
            content_type="application/x-www-form-urlencoded",
            REMOTE_ADDR=CONFIRM_IP,
        )
    finally:
        signals.contact_unsubscribed.disconnect(on_unsubscribed)

    # then
    for response in (first, second):
        assert response.status_code == 200
        assert response["Content-Type"] == "text/plain; charset=utf-8"
        assert response.content == b"You are unsubscribed."
    contact.refresh_from_db()
    assert contact.status == ContactStatus.UNSUBSCRIBED
    assert contact.unsubscribed_at is not None
    assert sorted(Subscription.objects.values_list("status", flat=True)) == [
        SubscriptionStatus.UNSUBSCRIBED,
        SubscriptionStatus.UNSUBSCRIBED,
    ]
    suppression = Suppression.objects.get()
    assert (suppression.workspace_id, suppression.email_hash, suppression.reason) == (
        sender.pk,
        Suppression.hash_email("grace@example.org"),
        SuppressionReason.UNSUBSCRIBED,
    )
    record = ConsentRecord.objects.get(kind=ConsentKind.UNSUBSCRIBE)
    assert (record.contact_id, record.ip_address, record.user_agent, record.source) == (
        contact.pk,
        CONFIRM_IP,
        "GoogleOneClickUnsubscribe/1.0",
        "one_click",
    )
    assert unsubscribed == [(str(sender.pk), str(contact.pk))]


def test_leaving_one_of_two_lists_keeps_the_other_and_records_the_change(client, sender, two_lists):
    # given
    newsletter, product_news = two_lists
    contact = subscribed_contact(sender, two_lists)

    # when
    response = client.post(
        f"/u/{unsubscribe_token(contact)}/",
        {"action": "preferences", "lists": [str(product_news.pk)]},
        REMOTE_ADDR=CONFIRM_IP,
        HTTP_USER_AGENT=PHONE,
    )

    # then
    assert response.status_code == 200
    assert "Your preferences are saved." in response.content.decode()
    assert dict(Subscription.objects.values_list("mailing_list__name", "status")) == {
        "Newsletter": SubscriptionStatus.UNSUBSCRIBED,
        "Product news": SubscriptionStatus.SUBSCRIBED,
    }
    contact.refresh_from_db()
    assert contact.status == ContactStatus.SUBSCRIBED
    record = ConsentRecord.objects.get(kind=ConsentKind.PREFERENCE_CHANGE)
    assert (record.mailing_list_id, record.ip_address, record.user_agent) == (
        newsletter.pk,
        CONFIRM_IP,
        PHONE,
    )
    assert not ConsentRecord.objects.filter(kind=ConsentKind.UNSUBSCRIBE).exists()
    assert not Suppression.objects.exists()


def test_leaving_the_last_list_on_the_preference_page_unsubscribes_from_everything(
    client, sender, two_lists
):
    # given
    contact = subscribed_contact(sender, two_lists)

    # when
    response = client.post(
        f"/u/{unsubscribe_token(contact)}/", {"action": "preferences"}, REMOTE_ADDR=CONFIRM_IP
    )

    # then
    assert response.status_code == 200
    assert "You are unsubscribed from everything." in response.content.decode()
    contact.refresh_from_db()
    assert contact.status == ContactStatus.UNSUBSCRIBED
    assert set(Subscription.objects.values_list("status", flat=True)) == {
        SubscriptionStatus.UNSUBSCRIBED
    }
    assert ConsentRecord.objects.get(kind=ConsentKind.UNSUBSCRIBE).ip_address == CONFIRM_IP
    assert Suppression.objects.get().reason == SuppressionReason.UNSUBSCRIBED


def test_download_my_data_returns_the_contacts_record_as_json(client, sender, two_lists):
    # given
    contact = subscribed_contact(sender, two_lists)
    before = db_state()

    # when
    response = client.post(f"/u/{unsubscribe_token(contact)}/", {"action": "export"})

    # then
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json; charset=utf-8"
    assert response["Content-Disposition"] == 'attachment; filename="my-data.json"'
    export = json.loads(response.content)
    assert export["profile"]["email"] == "grace@example.org"
    assert export["profile"]["first_name"] == "Grace"
    assert export["profile"]["status"] == ContactStatus.SUBSCRIBED
    assert sorted(consent["kind"] for consent in export["consents"]) == [
        ConsentKind.CONFIRMATION,
        ConsentKind.CONFIRMATION,
        ConsentKind.SIGNUP,
        ConsentKind.SIGNUP,
    ]
    assert sorted((item["list"], item["status"]) for item in export["subscriptions"]) == [
        ("Newsletter", SubscriptionStatus.SUBSCRIBED),
        ("Product news", SubscriptionStatus.SUBSCRIBED),
    ]
    assert db_state() == before


def test_delete_my_data_needs_a_second_click_then_erases(client, sender, two_lists):
    # given
    contact = subscribed_contact(sender, two_lists)
    url = f"/u/{unsubscribe_token(contact)}/"
    before = db_state()

    # when
    first_click = client.post(url, {"action": "erase"})

    # then
    assert first_click.status_code == 200
    html = first_click.content.decode()
    assert "Click again to delete all your data for good." in html
    assert '<input type="hidden" name="confirm" value="yes">' in html
    assert db_state() == before

    # when
    second_click = client.post(url, {"action": "erase", "confirm": "yes"})

    # then
    assert second_click.status_code == 200
    assert "Your data is deleted." in second_click.content.decode()
    assert not Contact.objects.exists()
    assert not Subscription.objects.exists()
    assert not ConsentRecord.objects.exists()
    suppression = Suppression.objects.get()
    assert (suppression.email_hash, suppression.reason) == (
        Suppression.hash_email("grace@example.org"),
        SuppressionReason.ERASED,
    )
    assert client.get(url).status_code == 404


# --- erasure leaves nothing behind

ERASED_FIRST_NAME = "Zebulonia"
ERASED_LAST_NAME = "Quartermaine"


def tables_containing(needle: str) -> dict[str, int]:
    """Every table of the database whose rows, as text, contain `needle` (case-insensitive)."""
    found = {}
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names():
            # Table names come from the database's own catalogue, not from any request.
            cursor.execute(
                f"SELECT count(*) FROM {connection.ops.quote_name(table)} t "  # noqa: S608
                "WHERE t::text ILIKE %s",
                [f"%{needle}%"],
            )
            count = cursor.fetchone()[0]
            if count:
                found[table] = count
    return found


def spellings_of(address: str) -> set[str]:
    """The address as stored and as it travels in mail headers (IDNA-encoded domain)."""
    local, _at, domain = address.partition("@")
    return {address, f"{local}@{domain.encode('idna').decode('ascii')}"}


@pytest.mark.parametrize("erased_through", ["api", "preference_page"])
@pytest.mark.parametrize(
    "address",
    [
        "zebulon.quartermaine@erasure-probe.example",
        "zebulon.quartermaine@bücher-probe.example",
        "zoë.quartermaine@erasure-probe.example",
    ],
    ids=["ascii", "idn-domain", "unicode-local-part"],
)
def test_erasure_leaves_no_personal_data_in_any_table(
    address, erased_through, client, sender, signup_form, api, django_capture_on_commit_callbacks
):
    # given: a person who signed up on the form, confirmed, got mail into the local outbox,
    # and whom the shop also sent through the API with an Idempotency-Key
    with override_settings(EMAIL_BACKEND="core.mail.OutboxEmailBackend"):
        sign_up(
            client,
            django_capture_on_commit_callbacks,
            signup_form,
            email=address,
            first_name=ERASED_FIRST_NAME,
        )
    outbox_message = OutboxMessage.objects.get()
    confirmed = client.post(
        f"/confirm/{CONFIRM_LINK.findall(outbox_message.text_body)[0]}/", REMOTE_ADDR=CONFIRM_IP
    )
    assert confirmed.status_code == 200
    upsert = api.post(
        "/api/v1/contacts/",
        {
            "email": address,
            "first_name": ERASED_FIRST_NAME,
            "last_name": ERASED_LAST_NAME,
            "attributes": {"customer_number": "K-4711"},
        },
        format="json",
        HTTP_IDEMPOTENCY_KEY="order-4711",
    )
    assert upsert.status_code == 200
    contact = Contact.objects.get(email=address)
    assert set(tables_containing(address)) == {
        "contacts_contact",
        "core_outboxmessage",
        "core_idempotencyrecord",
    }
    assert set(tables_containing(ERASED_FIRST_NAME)) == {
        "contacts_contact",
        "core_idempotencyrecord",
    }

    # when
    if erased_through == "api":
        response = api.delete(f"/api/v1/contacts/{contact.pk}/")
        assert response.status_code == 204
    else:
        url = f"/u/{unsubscribe_token(contact)}/"
        assert client.post(url, {"action": "erase"}).status_code == 200
        assert client.post(url, {"action": "erase", "confirm": "yes"}).status_code == 200

    # then
    for needle in (*spellings_of(address), ERASED_FIRST_NAME, ERASED_LAST_NAME, "K-4711"):
        assert (needle, tables_containing(needle)) == (needle, {})
    suppression = Suppression.objects.get()
    assert (suppression.workspace_id, suppression.email_hash, suppression.reason) == (
        sender.pk,
        Suppression.hash_email(address),
        SuppressionReason.ERASED,
    )


def test_erasing_one_address_keeps_the_outbox_mails_of_other_people(
    client, api, signup_form, django_capture_on_commit_callbacks
):
    # given: two people whose addresses contain one another
    with override_settings(EMAIL_BACKEND="core.mail.OutboxEmailBackend"):
        for address in ("ann@example.org", "joann@example.org"):
            sign_up(client, django_capture_on_commit_callbacks, signup_form, email=address)
    assert sorted(to for (to,) in OutboxMessage.objects.values_list("to")) == [
        ["ann@example.org"],
        ["joann@example.org"],
    ]
    ann = Contact.objects.get(email="ann@example.org")

    # when
    response = api.delete(f"/api/v1/contacts/{ann.pk}/")

    # then
    assert response.status_code == 204
    assert list(OutboxMessage.objects.values_list("to", flat=True)) == [["joann@example.org"]]
    assert Contact.objects.get().email == "joann@example.org"


# --- GDPR export API


def test_the_export_api_returns_everything_held_on_the_contact(
    client, sender, newsletter, signup_form, api, django_capture_on_commit_callbacks
):
    # given
    with time_machine.travel(SIGNUP_AT, tick=False):
        sign_up(
            client,
            django_capture_on_commit_callbacks,
            signup_form,
            first_name="Ada",
            page_url="https://acme.example/?utm_source=blog",
        )
        client.post(
            f"/confirm/{token_in(mail.outbox[0])}/", REMOTE_ADDR=CONFIRM_IP, HTTP_USER_AGENT=PHONE
        )
    contact = Contact.objects.get()

    # when
    with time_machine.travel(SIGNUP_AT + timedelta(days=1), tick=False):
        response = api.get(f"/api/v1/contacts/{contact.pk}/export/")

    # then
    assert response.status_code == 200
    export = response.json()
    assert {"profile", "consents", "subscriptions"} <= set(export)
    assert export["exported_at"] == "2025-03-04T09:05:00+00:00"
    assert export["workspace"] == {
        "name": sender.name,
        "postal_address": POSTAL_ADDRESS,
        "privacy_policy_url": "https://example.com/privacy",
    }
    assert export["profile"] == {
        "id": str(contact.pk),
        "email": "ada@example.org",
        "first_name": "Ada",
        "last_name": "",
        "locale": "en",
        "timezone": "",
        "attributes": {},
        "tags": [],
        "status": "subscribed",
        "source": f"form:{signup_form.name}",
        "score": 0,
        "created_at": "2025-03-03T09:05:00+00:00",
        "confirmed_at": "2025-03-03T09:05:00+00:00",
        "unsubscribed_at": None,
    }
    common = {
        "occurred_at": "2025-03-03T09:05:00+00:00",
        "consent_text": CONSENT_TEXT,
        "privacy_policy_url": PRIVACY_URL,
        "list": "Newsletter",
        "form": signup_form.name,
    }
    assert sorted(export["consents"], key=lambda consent: consent["kind"]) == [
        {
            **common,
            "kind": "confirmation",
            "ip": CONFIRM_IP,
            "user_agent": PHONE,
            "page_url": "",
            "utm": {},
            "source": "double_opt_in",
        },
        {
            **common,
            "kind": "signup",
            "ip": SIGNUP_IP,
            "user_agent": BROWSER,
            "page_url": "https://acme.example/?utm_source=blog",
            "utm": {"utm_source": "blog"},
            "source": f"form:{signup_form.pk}",
        },
    ]
    assert export["subscriptions"] == [
        {
            "list": "Newsletter",
            "status": "subscribed",
            "created_at": "2025-03-03T09:05:00+00:00",
            "confirmed_at": "2025-03-03T09:05:00+00:00",
            "unsubscribed_at": None,
        }
    ]


def test_the_export_api_answers_404_to_another_workspaces_key(
    sender, newsletter, other_workspace, api_client_for
):
    # given
    contact = subscribed_contact(sender, [newsletter])
    foreign_api = api_client_for(other_workspace)

    # when
    response = foreign_api.get(f"/api/v1/contacts/{contact.pk}/export/")

    # then
    assert response.status_code == 404
    assert response.json() == {"detail": "Not found."}
    assert "grace@example.org" not in response.content.decode()
