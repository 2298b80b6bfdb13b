"""The demo of the embedded default: created once, and the signup flow works end to end."""

from __future__ import annotations

from io import StringIO

import pytest
from django.core.management import call_command

from campaigns.engine import tick
from campaigns.models import Message, Sequence, SequenceStatus
from contacts.models import SignupForm
from contacts.signup_forms import signup_form_submit
from contacts.subscriptions import contact_confirm
from core.models import User, Workspace

pytestmark = pytest.mark.django_db


def test_demo_setup_creates_a_working_demo_once(
    settings, tmp_path, django_capture_on_commit_callbacks
):
    settings.VAR_DIR = tmp_path
    settings.EMAIL_BACKEND = "core.mail.OutboxEmailBackend"

    # when it runs twice
    first, second = StringIO(), StringIO()
    call_command("demo_setup", stdout=first)
    call_command("demo_setup", stdout=second)

    # then there is one demo workspace with its owner, form and an active welcome sequence
    assert Workspace.objects.count() == 1
    assert User.objects.get().email == "demo@funnelwerk.local"
    form = SignupForm.objects.get()
    assert f"/f/{form.pk}/" in first.getvalue()
    assert first.getvalue().splitlines()[3] == second.getvalue().splitlines()[3]  # same password
    sequence = Sequence.objects.get()
    assert sequence.status == SequenceStatus.ACTIVE

    # and a visitor who signs up and confirms gets the welcome mail
    with django_capture_on_commit_callbacks(execute=True):
        submission = signup_form_submit(
            signup_form=form,
            data={"email": "visitor@example.com", "first_name": "Ada", "consent": "yes"},
            ip="127.0.0.1",
            user_agent="test",
            referrer="",
        )
    assert submission.result is not None
    with django_capture_on_commit_callbacks(execute=True):
        contact_confirm(contact=submission.result.contact, ip="127.0.0.1", user_agent="test")
    with django_capture_on_commit_callbacks(execute=True):
        tick()
    welcome = Message.objects.get(contact=submission.result.contact)
    assert welcome.subject == "Welcome to the Demo Shop, Ada!"
    assert welcome.status == "sent"
