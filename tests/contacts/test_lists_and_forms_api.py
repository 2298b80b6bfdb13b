"""Lists and signup forms: the REST API (API.md: Lists and double opt-in) and the pages under
/contacts/lists/ and /contacts/forms/."""

from __future__ import annotations

import re
import uuid

import pytest
from django.core import mail
from django.utils import translation
from django.utils.translation import gettext

from contacts.models import (
    ConsentKind,
    ConsentRecord,
    ConsentText,
    Contact,
    ContactStatus,
    MailingList,
    SignupForm,
    Subscription,
    SubscriptionStatus,
)
from contacts.signup_forms import signup_form_create
from contacts.subscriptions import (
    SignupContext,
    contact_confirm,
    list_subscribe,
    mailing_list_create,
)
from core.models import Role

pytestmark = pytest.mark.django_db

LISTS_URL = "/api/v1/lists/"
FORMS_URL = "/api/v1/forms/"
CONSENT_TEXT = "Yes, send me the Acme newsletter by email. I can unsubscribe at any time."
NEW_CONSENT_TEXT = "Yes, send me the Acme newsletter and product news. Unsubscribe any time."
PRIVACY_URL = "https://acme.example/privacy"
CONFIRM_LINK = re.compile(r"http://testserver/confirm/([^/\s\"'<>]+)/")
ENGLISH_SUBJECT = "Please confirm your subscription to Newsletter"
FORM_FIELDS = {
    "id",
    "name",
    "list",
    "fields",
    "consent_text",
    "privacy_policy_url",
    "success_url",
    "confirmed_url",
    "locale",
    "url",
    "embed_html",
}


@pytest.fixture
def newsletter(workspace) -> MailingList:
    return mailing_list_create(workspace=workspace, name="Newsletter")


@pytest.fixture
def signup_form(workspace, newsletter) -> SignupForm:
    return signup_form_create(
        workspace=workspace,
        name="Footer form",
        mailing_list=newsletter,
        consent_text=CONSENT_TEXT,
        privacy_policy_url=PRIVACY_URL,
    )


@pytest.fixture
def foreign_api(other_workspace, api_client_for):
    return api_client_for(other_workspace)


def list_url(mailing_list) -> str:
    return f"{LISTS_URL}{mailing_list.pk}/"


def form_url(signup_form) -> str:
    return f"{FORMS_URL}{signup_form.pk}/"


def subscribe(api, capture, mailing_list, **body):
    with capture(execute=True):
        return api.post(f"{list_url(mailing_list)}subscribe/", body, format="json")


def confirmed_contact(mailing_list, email: str) -> Contact:
    contact = list_subscribe(
        mailing_list=mailing_list,
        email=email,
        context=SignupContext(consent_text=CONSENT_TEXT, source="test"),
    ).contact
    contact_confirm(contact=contact, ip=None, user_agent="")
    return contact


def list_state() -> list[tuple]:
    return list(
        MailingList.objects.order_by("pk").values_list(
            "pk", "workspace_id", "name", "description", "double_opt_in", "confirmation_templates"
        )
    )


def form_state() -> list[tuple]:
    return list(
        SignupForm.objects.order_by("pk").values_list(
            "pk",
            "workspace_id",
            "name",
            "mailing_list_id",
            "fields",
            "consent_text_id",
            "privacy_policy_url",
            "success_url",
            "confirmed_url",
            "locale",
        )
    )


def contact_state() -> tuple[list[tuple], ...]:
    return (
        list(Contact.objects.order_by("pk").values_list("pk", "email", "status", "confirmed_at")),
        list(
            Subscription.objects.order_by("pk").values_list(
                "pk", "contact_id", "mailing_list_id", "status", "confirmed_at"
            )
        ),
        list(ConsentRecord.objects.order_by("pk").values_list("pk", "kind")),
    )


# --- lists: CRUD


def test_a_list_is_created_with_double_opt_in_by_default(workspace, api):
    # when
    response = api.post(LISTS_URL, {"name": "Newsletter"}, format="json")

    # then
    assert response.status_code == 201
    body = response.json()
    mailing_list = MailingList.objects.get()
    assert (mailing_list.workspace_id, mailing_list.name, mailing_list.double_opt_in) == (
        workspace.pk,
        "Newsletter",
        True,
    )
    assert {key: body[key] for key in ("id", "name", "double_opt_in", "subscriber_count")} == {
        "id": str(mailing_list.pk),
        "name": "Newsletter",
        "double_opt_in": True,
        "subscriber_count": 0,
    }


def test_the_list_index_counts_confirmed_subscribers_only(
    workspace, newsletter, api, django_assert_num_queries
):
    # given
    confirmed_contact(newsletter, "one@example.org")
    confirmed_contact(newsletter, "two@example.org")
    list_subscribe(
        mailing_list=newsletter, email="pending@example.org", context=SignupContext(source="t")
    )
    leaving = confirmed_contact(newsletter, "gone@example.org")
    Subscription.objects.filter(contact=leaving).update(status=SubscriptionStatus.UNSUBSCRIBED)
    empty = mailing_list_create(workspace=workspace, name="Events", double_opt_in=False)

    # when
    response = api.get(LISTS_URL)

    # then
    assert response.status_code == 200
    body = response.json()
    assert (body["count"], body["next"], body["previous"]) == (2, None, None)
    assert [
        (item["id"], item["name"], item["double_opt_in"], item["subscriber_count"])
        for item in body["results"]
    ] == [
        (str(empty.pk), "Events", False, 0),
        (str(newsletter.pk), "Newsletter", True, 2),
    ]
    with django_assert_num_queries(3):  # the key, the count, the page with subscriber counts
        api.get(LISTS_URL)


def test_a_list_can_be_read_changed_and_deleted(newsletter, api):
    # when
    shown = api.get(list_url(newsletter))
    changed = api.patch(
        list_url(newsletter),
        {"name": "Weekly letter", "description": "Every Friday", "double_opt_in": False},
        format="json",
    )

    # then
    assert shown.status_code == 200
    assert shown.json()["name"] == "Newsletter"
    assert changed.status_code == 200
    assert {key: changed.json()[key] for key in ("name", "description", "double_opt_in")} == {
        "name": "Weekly letter",
        "description": "Every Friday",
        "double_opt_in": False,
    }
    newsletter.refresh_from_db()
    assert (newsletter.name, newsletter.description, newsletter.double_opt_in) == (
        "Weekly letter",
        "Every Friday",
        False,
    )

    # when
    deleted = api.delete(list_url(newsletter))

    # then
    assert deleted.status_code == 204
    assert not MailingList.objects.exists()
    assert api.get(list_url(newsletter)).status_code == 404


def test_a_list_fed_by_a_form_is_not_deleted(newsletter, signup_form, api):
    # given
    before = list_state()

    # when
    response = api.delete(list_url(newsletter))

    # then
    assert response.status_code == 400
    assert response.json() == {
        "detail": "Signup forms still feed this list; delete or move them first."
    }
    assert list_state() == before


def test_list_names_are_unique_per_workspace(workspace, other_workspace, newsletter, api):
    # given
    mailing_list_create(workspace=other_workspace, name="Product news")
    events = mailing_list_create(workspace=workspace, name="Events")
    before = list_state()

    # when
    duplicate = api.post(LISTS_URL, {"name": "Newsletter"}, format="json")
    renamed = api.patch(list_url(events), {"name": "Newsletter"}, format="json")

    # then
    assert duplicate.status_code == 400
    assert duplicate.json() == {"name": ["A list with this name exists."]}
    assert renamed.status_code == 400
    assert renamed.json() == {"name": ["A list with this name exists."]}
    assert list_state() == before

    # when: a name another workspace uses
    response = api.post(LISTS_URL, {"name": "Product news"}, format="json")

    # then
    assert response.status_code == 201


@pytest.mark.parametrize(
    ("templates", "message"),
    [
        (
            {"en": {"subject": "Confirm", "body": "Click the link in this mail."}},
            "The body must contain {confirm_url}, the link that confirms.",
        ),
        (
            {"en": {"subject": "", "body": "Confirm: {confirm_url}"}},
            "Each language needs both a subject and a body.",
        ),
        (
            {"fr": {"subject": "Confirmez", "body": "Lien : {confirm_url}"}},
            "Unknown language fr.",
        ),
        (["not", "an", "object"], "Give an object keyed by language."),
    ],
    ids=["no-confirm-url", "no-subject", "unknown-language", "not-an-object"],
)
def test_confirmation_templates_are_validated(newsletter, api, templates, message):
    # given
    before = list_state()

    # when
    created = api.post(
        LISTS_URL, {"name": "Events", "confirmation_templates": templates}, format="json"
    )
    changed = api.patch(list_url(newsletter), {"confirmation_templates": templates}, format="json")

    # then
    assert created.status_code == changed.status_code == 400
    assert created.json() == changed.json() == {"confirmation_templates": [message]}
    assert list_state() == before


def test_the_lists_confirmation_template_is_used_for_contacts_of_its_language(
    workspace, api, django_capture_on_commit_callbacks
):
    # given
    templates = {
        "de": {
            "subject": "Bitte bestätigen: Acme-Newsletter",
            "body": "Hallo,\nbitte bestätigen Sie hier: {confirm_url}\nFish & Chips <b>",
        }
    }
    created = api.post(
        LISTS_URL, {"name": "Newsletter", "confirmation_templates": templates}, format="json"
    )
    assert created.status_code == 201
    assert created.json()["confirmation_templates"] == templates
    newsletter = MailingList.objects.get()

    # when
    capture = django_capture_on_commit_callbacks
    subscribe(api, capture, newsletter, email="anna@example.de", locale="de")
    subscribe(api, capture, newsletter, email="ada@example.org", locale="en")

    # then
    german, english = mail.outbox
    assert german.to == ["anna@example.de"]
    assert german.subject == "Bitte bestätigen: Acme-Newsletter"
    [token] = CONFIRM_LINK.findall(german.body)
    confirm_url = f"http://testserver/confirm/{token}/"
    assert german.body.startswith(
        f"Hallo,\nbitte bestätigen Sie hier: {confirm_url}\nFish & Chips <b>\n\n--\n"
    )
    [(html, _mimetype)] = german.alternatives
    assert f'<a href="{confirm_url}">{confirm_url}</a>' in html
    assert "Fish &amp; Chips &lt;b&gt;" in html
    assert "<b>" not in html
    assert english.to == ["ada@example.org"]
    assert english.subject == ENGLISH_SUBJECT


# --- subscribe and unsubscribe


def test_subscribing_answers_202_pending_and_mails_one_confirmation(
    workspace, newsletter, api, django_capture_on_commit_callbacks
):
    # when
    response = subscribe(
        api,
        django_capture_on_commit_callbacks,
        newsletter,
        email="Ada@Example.org",
        first_name="Ada",
        consent_text=CONSENT_TEXT,
        ip="203.0.113.5",
        source="shop-checkout",
    )

    # then
    assert response.status_code == 202
    contact = Contact.objects.get()
    assert response.json() == {"contact": str(contact.pk), "status": "pending"}
    assert (contact.email, contact.first_name, contact.status) == (
        "ada@example.org",
        "Ada",
        ContactStatus.PENDING,
    )
    assert Subscription.objects.get().status == SubscriptionStatus.PENDING
    record = ConsentRecord.objects.get()
    assert (record.kind, record.ip_address, record.consent_text.text, record.source) == (
        ConsentKind.SIGNUP,
        "203.0.113.5",
        CONSENT_TEXT,
        "shop-checkout",
    )
    [message] = mail.outbox
    assert message.to == ["ada@example.org"]
    assert message.subject == ENGLISH_SUBJECT
    assert len(CONFIRM_LINK.findall(message.body)) == 1


def test_subscribing_an_address_to_five_lists_through_the_api_mails_once(
    workspace, api, django_capture_on_commit_callbacks
):
    # given
    lists = [mailing_list_create(workspace=workspace, name=f"List {n}") for n in range(5)]

    # when
    answers = [
        subscribe(api, django_capture_on_commit_callbacks, mailing_list, email="v@example.org")
        for mailing_list in lists
    ]

    # then
    assert [answer.status_code for answer in answers] == [202] * 5
    assert len(mail.outbox) == 1
    assert Subscription.objects.filter(status=SubscriptionStatus.PENDING).count() == 5


def test_subscribing_an_already_subscribed_address_sends_nothing_new(
    newsletter, api, django_capture_on_commit_callbacks
):
    # given
    contact = confirmed_contact(newsletter, "ada@example.org")
    subscription = Subscription.objects.get()

    # when
    response = subscribe(
        api, django_capture_on_commit_callbacks, newsletter, email="ada@example.org"
    )

    # then
    assert response.status_code == 200
    assert response.json() == {"contact": str(contact.pk), "status": "subscribed"}
    assert mail.outbox == []
    contact.refresh_from_db()
    assert (contact.status, contact.confirmation_nonce) == (ContactStatus.SUBSCRIBED, "")
    assert list(Subscription.objects.values_list("pk", "status", "confirmed_at")) == [
        (subscription.pk, SubscriptionStatus.SUBSCRIBED, subscription.confirmed_at)
    ]


def test_a_list_without_double_opt_in_subscribes_at_once_without_mail(
    workspace, api, django_capture_on_commit_callbacks
):
    # given
    customers = mailing_list_create(workspace=workspace, name="Customers", double_opt_in=False)

    # when
    response = subscribe(api, django_capture_on_commit_callbacks, customers, email="c@example.org")

    # then
    assert response.status_code == 200
    contact = Contact.objects.get()
    assert response.json() == {"contact": str(contact.pk), "status": "subscribed"}
    assert contact.status == ContactStatus.SUBSCRIBED
    assert contact.confirmed_at is not None
    assert Subscription.objects.get().status == SubscriptionStatus.SUBSCRIBED
    assert mail.outbox == []


def test_subscribing_a_bad_address_is_refused(newsletter, api, django_capture_on_commit_callbacks):
    # given
    before = contact_state()

    # when
    response = subscribe(api, django_capture_on_commit_callbacks, newsletter, email="ada@@example")

    # then
    assert response.status_code == 400
    assert set(response.json()) == {"email"}
    assert response.json()["email"][0].startswith("Enter a valid email address: ")
    assert contact_state() == before
    assert mail.outbox == []


def test_unsubscribing_answers_alike_for_known_and_unknown_addresses(workspace, newsletter, api):
    # given
    contact = confirmed_contact(newsletter, "ada@example.org")
    url = f"{list_url(newsletter)}unsubscribe/"

    # when
    known = api.post(url, {"email": "ADA@example.org"}, format="json")

    # then
    assert known.status_code == 200
    assert Subscription.objects.get().status == SubscriptionStatus.UNSUBSCRIBED
    contact.refresh_from_db()
    assert contact.status == ContactStatus.UNSUBSCRIBED
    before = contact_state()

    # when
    unknown = api.post(url, {"email": "nobody@example.org"}, format="json")

    # then
    assert unknown.status_code == 200
    assert unknown.json() == known.json() == {"status": "unsubscribed"}
    assert contact_state() == before


# --- forms: CRUD


def test_a_form_is_created_with_its_hosted_url_and_embeddable_snippet(workspace, newsletter, api):
    # when
    response = api.post(
        FORMS_URL,
        {
            "name": "Footer form",
            "list": str(newsletter.pk),
            "fields": [
                {"name": "first_name", "label": "First name", "required": True},
                {"name": "attributes.company", "label": "Company"},
            ],
            "consent_text": CONSENT_TEXT,
            "privacy_policy_url": PRIVACY_URL,
            "success_url": "https://acme.example/thanks",
            "confirmed_url": "https://acme.example/welcome",
            "locale": "en",
        },
        format="json",
    )

    # then
    assert response.status_code == 201
    body = response.json()
    signup_form = SignupForm.objects.get()
    assert set(body) == FORM_FIELDS
    hosted = f"http://testserver/f/{signup_form.pk}/"
    assert {key: value for key, value in body.items() if key != "embed_html"} == {
        "id": str(signup_form.pk),
        "name": "Footer form",
        "list": str(newsletter.pk),
        "fields": [
            {"name": "email", "label": "Email", "required": True},
            {"name": "first_name", "label": "First name", "required": True},
            {"name": "attributes.company", "label": "Company", "required": False},
        ],
        "consent_text": CONSENT_TEXT,
        "privacy_policy_url": PRIVACY_URL,
        "success_url": "https://acme.example/thanks",
        "confirmed_url": "https://acme.example/welcome",
        "locale": "en",
        "url": hosted,
    }
    embed = body["embed_html"]
    assert embed.startswith(f'<form action="{hosted}" method="post"')
    assert embed.endswith("</form>")
    assert CONSENT_TEXT in embed
    assert f'href="{PRIVACY_URL}"' in embed
    assert 'name="email"' in embed
    assert 'name="first_name" required' in embed
    assert 'name="attributes.company"' in embed
    assert 'name="consent" value="yes" required' in embed
    assert "<script" not in embed.lower()
    assert (signup_form.workspace_id, signup_form.consent_text.text) == (
        workspace.pk,
        CONSENT_TEXT,
    )


def test_the_embed_snippet_escapes_what_the_marketer_typed(newsletter, api):
    # when
    response = api.post(
        FORMS_URL,
        {
            "name": "Form",
            "list": str(newsletter.pk),
            "fields": [{"name": "last_name", "label": "<script>alert(1)</script>"}],
            "consent_text": "I agree <script>alert(2)</script>",
            "privacy_policy_url": PRIVACY_URL,
        },
        format="json",
    )

    # then
    assert response.status_code == 201
    embed = response.json()["embed_html"]
    assert "<script" not in embed.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in embed
    assert "I agree &lt;script&gt;alert(2)&lt;/script&gt;" in embed


def test_forms_are_listed_read_changed_and_deleted(workspace, newsletter, signup_form, api):
    # given
    events = mailing_list_create(workspace=workspace, name="Events")

    # when
    listed = api.get(FORMS_URL)
    shown = api.get(form_url(signup_form))
    changed = api.patch(
        form_url(signup_form),
        {"name": "Sidebar form", "list": str(events.pk), "locale": "de"},
        format="json",
    )

    # then
    assert listed.status_code == 200
    assert listed.json()["count"] == 1
    assert [item["id"] for item in listed.json()["results"]] == [str(signup_form.pk)]
    assert shown.status_code == 200
    assert shown.json()["name"] == "Footer form"
    assert changed.status_code == 200
    assert (changed.json()["name"], changed.json()["list"], changed.json()["locale"]) == (
        "Sidebar form",
        str(events.pk),
        "de",
    )
    signup_form.refresh_from_db()
    assert (signup_form.name, signup_form.mailing_list_id, signup_form.locale) == (
        "Sidebar form",
        events.pk,
        "de",
    )

    # when
    deleted = api.delete(form_url(signup_form))

    # then
    assert deleted.status_code == 204
    assert not SignupForm.objects.exists()


def test_changing_the_consent_text_makes_a_new_version_and_keeps_earlier_proofs(
    client, signup_form, api, django_capture_on_commit_callbacks
):
    # given: someone signed up under the first text
    old_version = signup_form.consent_text
    with django_capture_on_commit_callbacks(execute=True):
        client.post(f"/f/{signup_form.pk}/", {"email": "early@example.org", "consent": "yes"})
    early_proof = ConsentRecord.objects.get()

    # when
    response = api.patch(form_url(signup_form), {"consent_text": NEW_CONSENT_TEXT}, format="json")

    # then
    assert response.status_code == 200
    assert response.json()["consent_text"] == NEW_CONSENT_TEXT
    signup_form.refresh_from_db()
    assert signup_form.consent_text_id != old_version.pk
    assert sorted(ConsentText.objects.values_list("text", flat=True)) == sorted(
        [CONSENT_TEXT, NEW_CONSENT_TEXT]
    )
    old_version.refresh_from_db()
    assert old_version.text == CONSENT_TEXT
    early_proof.refresh_from_db()
    assert early_proof.consent_text_id == old_version.pk

    # when: someone signs up under the new text
    with django_capture_on_commit_callbacks(execute=True):
        client.post(f"/f/{signup_form.pk}/", {"email": "late@example.org", "consent": "yes"})

    # then
    late_proof = ConsentRecord.objects.get(contact__email="late@example.org")
    assert late_proof.consent_text.text == NEW_CONSENT_TEXT
    assert early_proof.consent_text.text == CONSENT_TEXT


def test_a_form_cannot_feed_another_workspaces_list(other_workspace, newsletter, signup_form, api):
    # given
    foreign_list = mailing_list_create(workspace=other_workspace, name="Their list")
    before = form_state()
    body = {
        "name": "Sneaky",
        "list": str(foreign_list.pk),
        "consent_text": CONSENT_TEXT,
        "privacy_policy_url": PRIVACY_URL,
    }

    # when
    created = api.post(FORMS_URL, body, format="json")
    moved = api.patch(form_url(signup_form), {"list": str(foreign_list.pk)}, format="json")
    unknown = api.post(FORMS_URL, {**body, "list": str(uuid.uuid4())}, format="json")

    # then
    assert (created.status_code, moved.status_code, unknown.status_code) == (404, 404, 404)
    assert "Their list" not in created.content.decode() + moved.content.decode()
    assert form_state() == before


def test_another_workspaces_key_gets_404_for_lists_and_forms(
    newsletter, signup_form, foreign_api, django_capture_on_commit_callbacks
):
    # given
    lists_before, forms_before, contacts_before = list_state(), form_state(), contact_state()

    # when
    answers = [
        foreign_api.get(list_url(newsletter)),
        foreign_api.patch(list_url(newsletter), {"name": "Mine now"}, format="json"),
        foreign_api.delete(list_url(newsletter)),
        subscribe(
            foreign_api, django_capture_on_commit_callbacks, newsletter, email="x@example.org"
        ),
        foreign_api.post(
            f"{list_url(newsletter)}unsubscribe/", {"email": "x@example.org"}, format="json"
        ),
        foreign_api.get(form_url(signup_form)),
        foreign_api.patch(form_url(signup_form), {"name": "Mine now"}, format="json"),
        foreign_api.delete(form_url(signup_form)),
    ]
    listed_lists = foreign_api.get(LISTS_URL)
    listed_forms = foreign_api.get(FORMS_URL)

    # then
    assert [answer.status_code for answer in answers] == [404] * len(answers)
    assert {answer.json()["detail"] for answer in answers} == {"Not found."}
    assert (listed_lists.json()["count"], listed_forms.json()["count"]) == (0, 0)
    assert (list_state(), form_state(), contact_state()) == (
        lists_before,
        forms_before,
        contacts_before,
    )
    assert mail.outbox == []


# --- German


def test_a_german_form_sends_a_german_confirmation_mail(
    client, workspace, newsletter, django_capture_on_commit_callbacks
):
    # given
    german_form = signup_form_create(
        workspace=workspace,
        name="Formular",
        mailing_list=newsletter,
        consent_text="Ja, ich möchte den Newsletter erhalten.",
        privacy_policy_url=PRIVACY_URL,
        locale="de",
    )
    with translation.override("de"):
        german_subject = gettext("Please confirm your subscription to %(list)s") % {
            "list": "Newsletter"
        }

    # when
    with django_capture_on_commit_callbacks(execute=True):
        client.post(f"/f/{german_form.pk}/", {"email": "anna@example.de", "consent": "yes"})

    # then
    [message] = mail.outbox
    assert Contact.objects.get().locale == "de"
    assert german_subject != ENGLISH_SUBJECT
    assert message.subject == german_subject


# --- pages


def test_the_lists_page_shows_the_workspaces_lists_with_counts(
    workspace, other_workspace, newsletter, member_of, logged_in
):
    # given
    confirmed_contact(newsletter, "one@example.org")
    mailing_list_create(workspace=other_workspace, name="Their secret list")
    viewer = member_of(workspace, Role.VIEWER)

    # when
    response = logged_in(viewer).get("/contacts/lists/")

    # then
    assert response.status_code == 200
    assert [(item.name, item.subscriber_count) for item in response.context["mailing_lists"]] == [
        ("Newsletter", 1)
    ]
    assert "Their secret list" not in response.content.decode()


def test_an_editor_creates_a_list_on_the_page(workspace, member_of, logged_in):
    # given
    editor = member_of(workspace, Role.EDITOR)

    # when
    response = logged_in(editor).post(
        "/contacts/lists/new/",
        {
            "name": "Newsletter",
            "description": "Every Friday",
            "double_opt_in": "on",
            "subject_en": "Confirm Acme news",
            "body_en": "Click: {confirm_url}",
            "subject_de": "",
            "body_de": "",
        },
    )

    # then
    assert response.status_code == 302
    assert response["Location"] == "/contacts/lists/"
    mailing_list = MailingList.objects.get()
    assert (
        mailing_list.workspace_id,
        mailing_list.name,
        mailing_list.description,
        mailing_list.double_opt_in,
        mailing_list.confirmation_templates,
    ) == (
        workspace.pk,
        "Newsletter",
        "Every Friday",
        True,
        {"en": {"subject": "Confirm Acme news", "body": "Click: {confirm_url}"}},
    )


def test_the_list_page_shows_service_errors_and_saves_nothing(
    workspace, newsletter, member_of, logged_in
):
    # given
    editor = member_of(workspace, Role.EDITOR)
    before = list_state()

    # when
    response = logged_in(editor).post(
        "/contacts/lists/new/",
        {"name": "Events", "subject_en": "Confirm", "body_en": "No link here"},
    )

    # then
    assert response.status_code == 200
    assert "The body must contain {confirm_url}, the link that confirms." in (
        response.content.decode()
    )
    assert list_state() == before


def test_a_viewer_cannot_create_lists_or_forms(workspace, newsletter, member_of, logged_in):
    # given
    viewer = member_of(workspace, Role.VIEWER)
    client = logged_in(viewer)
    lists_before, forms_before = list_state(), form_state()

    # when
    list_page = client.get("/contacts/lists/new/")
    list_post = client.post("/contacts/lists/new/", {"name": "Sneaky", "double_opt_in": "on"})
    form_post = client.post(
        "/contacts/forms/new/",
        {
            "name": "Sneaky",
            "mailing_list": str(newsletter.pk),
            "consent_text": CONSENT_TEXT,
            "privacy_policy_url": PRIVACY_URL,
            "locale": "en",
        },
    )

    # then
    assert (list_page.status_code, list_post.status_code, form_post.status_code) == (
        403,
        403,
        403,
    )
    assert (list_state(), form_state()) == (lists_before, forms_before)


def test_an_editor_creates_a_form_on_the_page(workspace, newsletter, member_of, logged_in):
    # given
    editor = member_of(workspace, Role.EDITOR)

    # when
    response = logged_in(editor).post(
        "/contacts/forms/new/",
        {
            "name": "Footer form",
            "mailing_list": str(newsletter.pk),
            "ask_first_name": "on",
            "custom_fields": "company | Company | required",
            "consent_text": CONSENT_TEXT,
            "privacy_policy_url": PRIVACY_URL,
            "success_url": "",
            "confirmed_url": "https://acme.example/welcome",
            "locale": "en",
        },
    )

    # then
    signup_form = SignupForm.objects.get()
    assert response.status_code == 302
    assert response["Location"] == f"/contacts/forms/{signup_form.pk}/"
    assert (
        signup_form.workspace_id,
        signup_form.name,
        signup_form.mailing_list_id,
        signup_form.consent_text.text,
        signup_form.privacy_policy_url,
        signup_form.confirmed_url,
        signup_form.locale,
    ) == (
        workspace.pk,
        "Footer form",
        newsletter.pk,
        CONSENT_TEXT,
        PRIVACY_URL,
        "https://acme.example/welcome",
        "en",
    )
    assert signup_form.fields == [
        {"name": "first_name", "label": "First name", "required": False},
        {"name": "attributes.company", "label": "Company", "required": True},
    ]

    # when
    index = logged_in(editor).get("/contacts/forms/")
    detail = logged_in(editor).get(f"/contacts/forms/{signup_form.pk}/")

    # then
    assert index.status_code == detail.status_code == 200
    assert [item.pk for item in index.context["signup_forms"]] == [signup_form.pk]
    assert f"http://testserver/f/{signup_form.pk}/" in detail.content.decode()


def test_the_form_page_offers_only_the_workspaces_lists(
    workspace, other_workspace, newsletter, member_of, logged_in
):
    # given
    foreign_list = mailing_list_create(workspace=other_workspace, name="Their list")
    editor = member_of(workspace, Role.EDITOR)
    before = form_state()

    # when
    response = logged_in(editor).post(
        "/contacts/forms/new/",
        {
            "name": "Sneaky",
            "mailing_list": str(foreign_list.pk),
            "consent_text": CONSENT_TEXT,
            "privacy_policy_url": PRIVACY_URL,
            "locale": "en",
        },
    )

    # then
    assert response.status_code == 200
    assert "mailing_list" in response.context["form"].errors
    assert "Their list" not in response.content.decode()
    assert form_state() == before


def test_another_workspaces_form_page_is_404(other_workspace, signup_form, member_of, logged_in):
    # given
    stranger = member_of(other_workspace, Role.OWNER)
    before = form_state()

    # when
    client = logged_in(stranger)
    answers = [
        client.get(f"/contacts/forms/{signup_form.pk}/"),
        client.post(f"/contacts/forms/{signup_form.pk}/edit/", {"name": "Mine"}),
        client.post(f"/contacts/forms/{signup_form.pk}/delete/"),
        client.post(f"/contacts/lists/{signup_form.mailing_list_id}/delete/"),
    ]

    # then
    assert [answer.status_code for answer in answers] == [404] * 4
    assert form_state() == before
    assert MailingList.objects.filter(pk=signup_form.mailing_list_id).exists()
