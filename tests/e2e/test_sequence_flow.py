"""Acceptance of the sequence builder, end to end in headless Chromium: the owner builds a
sequence triggered by a list confirmation, activates it, a visitor signs up on the hosted form
and confirms, the engine runs, and the first mail ("Welcome Ada") is in the outbox."""

from __future__ import annotations

import re

import pytest
from django.urls import URLPattern, URLResolver, include, path

import config.urls
from campaigns.models import Enrollment, Message, Sequence, SequenceStatus
from contacts.models import Contact, ContactStatus
from contacts.signup_forms import signup_form_create
from contacts.subscriptions import mailing_list_create
from core.models import OutboxMessage, Role
from tests.factories import TEST_PASSWORD, MembershipFactory, UserFactory, WorkspaceFactory

# The pages are mounted here until config/urls.py includes campaigns.urls (see the lead's note).
urlpatterns: list[URLPattern | URLResolver] = list(config.urls.urlpatterns)
if not any(str(pattern.pattern) == "sequences/" for pattern in urlpatterns):
    urlpatterns.append(path("sequences/", include("campaigns.urls")))
handler404 = config.urls.handler404
handler500 = config.urls.handler500
handler403 = config.urls.handler403

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.django_db(transaction=True),
    pytest.mark.urls(__name__),
]

CONSENT = "Yes, send me the Acme newsletter. I can unsubscribe at any time."


def test_build_activate_subscribe_and_see_the_first_mail(
    live_server, browser, page, screenshot, settings
) -> None:
    from campaigns.engine import tick
    from campaigns.sending import messages_send

    settings.PUBLIC_BASE_URL = live_server.url
    settings.EMAIL_BACKEND = "core.mail.OutboxEmailBackend"
    # given a workspace with an owner, a double opt-in list and its hosted form
    workspace = WorkspaceFactory(name="Acme Shop", sender_email="news@acme.example")
    owner = MembershipFactory(workspace=workspace, role=Role.OWNER, user=UserFactory())
    newsletter = mailing_list_create(workspace=workspace, name="Acme Newsletter")
    form = signup_form_create(
        workspace=workspace,
        name="Footer form",
        mailing_list=newsletter,
        consent_text=CONSENT,
        privacy_policy_url="https://acme.example/privacy",
        fields=[{"name": "first_name", "label": "First name", "required": False}],
    )

    # when the owner logs in and creates a sequence started by a confirmation of that list
    page.goto(f"{live_server.url}/login/")
    page.fill("#id_username", owner.user.email)
    page.fill("#id_password", TEST_PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{live_server.url}/")
    page.goto(f"{live_server.url}/sequences/")
    page.click("text=New sequence")
    page.fill("#id_name", "Welcome series")
    page.select_option("#id_trigger_type", "list_confirmed")
    page.select_option("#id_trigger_list", str(newsletter.pk))
    assert page.is_hidden("#id_trigger_event")  # only the chosen trigger's parameter shows
    page.select_option("#id_reentry", "always")
    screenshot("sequence-form")
    page.click("button:has-text('Create and open the builder')")
    page.wait_for_url(re.compile(r"/sequences/[0-9a-f-]{36}/$"))
    sequence = Sequence.objects.get(workspace=workspace)
    assert sequence.trigger == {"type": "list_confirmed", "list": str(newsletter.pk)}
    assert sequence.reentry == "always"

    # and writes the one email in the editor, watching the live preview
    page.click("[data-key=welcome] >> text=Edit")
    page.fill("#id_subject", "Welcome {{ contact.first_name }}")
    page.fill(
        "#id_html",
        "<h1>Hello {{ contact.first_name }}!</h1>\n<p>Thanks for joining the Acme newsletter.</p>",
    )
    page.wait_for_function(
        "() => { const s = document.querySelector('[data-testid=preview-subject]');"
        " return s && s.textContent.startsWith('Welcome ') && s.textContent !== 'Welcome'; }"
    )
    frame = page.frame_locator("[data-testid=preview-mobile]")
    assert "Thanks for joining" in frame.locator("body").inner_text()
    screenshot("email-editor")

    # and tries an A/B variant: it starts as a copy, previews on its own, and is removed again
    page.click("[data-testid=add-variant]")
    page.wait_for_selector("[data-testid=variant]")
    assert page.input_value("#id_variants-0-subject") == "Welcome {{ contact.first_name }}"
    page.fill("#id_variants-0-subject", "Ada, your welcome gift")
    page.click("[data-testid=preview-variant-1]")
    page.wait_for_selector("[data-testid=preview-variant]")
    assert page.inner_text("[data-testid=preview-subject]") == "Ada, your welcome gift"
    desktop = page.frame_locator("[data-testid=preview-desktop]")
    assert "Thanks for joining" in desktop.locator("body").inner_text()
    page.evaluate("window.scrollTo(0, 0)")
    screenshot("email-editor-variant")
    page.click("[data-testid=remove-variant-1]")
    page.wait_for_selector("[data-testid=add-variant]")
    assert page.locator("[data-testid=variant]").count() == 0
    page.click("button:has-text('Save step')")
    page.wait_for_url(re.compile(r"/sequences/[0-9a-f-]{36}/$"))
    assert page.locator("[data-testid=diagram] svg g.step").count() == 1
    assert "Welcome {{ contact.first_na" in page.inner_text("[data-testid=diagram]")

    # and activates it
    page.click("button:has-text('Activate')")
    page.wait_for_selector("[data-testid=status]:has-text('Active')")
    screenshot("builder")
    sequence.refresh_from_db()
    assert sequence.status == SequenceStatus.ACTIVE

    # when a visitor signs up on the hosted form and confirms from the confirmation mail
    visitor = browser.new_context().new_page()
    visitor.goto(f"{live_server.url}/f/{form.pk}/")
    visitor.fill("input[name=email]", "ada@example.org")
    visitor.fill("input[name=first_name]", "Ada")
    visitor.check("input[name=consent]")
    visitor.click("button[type=submit]")
    visitor.wait_for_selector("h1")
    confirmation = OutboxMessage.objects.get(to=["ada@example.org"])
    link = re.search(r"https?://\S+/confirm/\S+/", confirmation.text_body)
    assert link is not None
    visitor.goto(link.group(0))
    visitor.click("button[type=submit]")
    visitor.wait_for_selector("text=confirmed")
    visitor.context.close()
    contact = Contact.objects.get(workspace=workspace, email="ada@example.org")
    assert contact.status == ContactStatus.SUBSCRIBED

    # and the engine runs (eager Celery may already have done it on commit; both are safe twice)
    tick()
    queued = [
        str(pk) for pk in Message.objects.filter(contact=contact).values_list("pk", flat=True)
    ]
    if queued:
        messages_send(message_ids=queued)

    # then the contact was enrolled and the welcome mail is in the outbox, personalised
    enrollment = Enrollment.objects.get(sequence=sequence, contact=contact)
    assert enrollment.contact_id == contact.pk
    welcome = OutboxMessage.objects.get(to=["ada@example.org"], subject="Welcome Ada")
    assert "Hello Ada!" in welcome.html_body
    page.goto(f"{live_server.url}/outbox/")
    page.wait_for_selector("text=Welcome Ada")
    screenshot("outbox")
    assert page.locator("tr:has-text('Welcome Ada') >> text=ada@example.org").count() == 1
