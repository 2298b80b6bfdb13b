from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand
from django.db import transaction

from campaigns.models import SequenceStatus
from campaigns.services import sequence_create, sequence_set_status
from contacts.models import SignupForm
from contacts.signup_forms import signup_form_create
from contacts.subscriptions import mailing_list_create
from core import services
from core.models import User, Workspace
from funnel.services import funnel_create

DEMO_EMAIL = "demo@funnelwerk.local"
DEMO_WORKSPACE = "Demo Shop"


class Command(BaseCommand):
    help = (
        "Create (once) the demo workspace, its owner, a double opt-in list and a hosted signup "
        "form for the embedded default, and print the login. The password is kept in "
        "var/demo-login.txt so every start can print it. Lives in analytics, the top app, so "
        "that it may seed every app below."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        login_file = Path(settings.VAR_DIR) / "demo-login.txt"
        with transaction.atomic():
            user = User.objects.filter(email=DEMO_EMAIL).first()
            if user is None:
                password = secrets.token_urlsafe(12)
                user = User.objects.create_superuser(
                    email=DEMO_EMAIL, password=password, name="Demo Owner"
                )
                workspace = services.workspace_create(
                    name=DEMO_WORKSPACE,
                    owner=user,
                    sender_name="Demo Shop",
                    sender_email="hello@demo-shop.example",
                    postal_address="Demo Shop GmbH\nMusterstraße 1\n10115 Berlin\nGermany",
                    privacy_policy_url="https://demo-shop.example/privacy",
                    timezone="Europe/Berlin",
                )
                _seed(workspace)
                login_file.parent.mkdir(parents=True, exist_ok=True)
                login_file.write_text(password)
                login_file.chmod(0o600)
        password = (
            login_file.read_text().strip() if login_file.exists() else "(set before; unknown)"
        )
        signup_form = SignupForm.objects.filter(workspace__memberships__user=user).first()
        base = settings.PUBLIC_BASE_URL
        self.stdout.write(
            f"\n  Funnelwerk demo login:  {base}/login/\n"
            f"    email:     {DEMO_EMAIL}\n"
            f"    password:  {password}\n"
        )
        if signup_form is not None:
            self.stdout.write(f"  Demo signup form:       {base}/f/{signup_form.pk}/\n")


WELCOME_STEPS: list[dict[str, Any]] = [
    {
        "key": "welcome",
        "type": "email",
        "subject": "Welcome to the Demo Shop, {{ contact.first_name|default('friend') }}!",
        "html": (
            "<h1>Welcome, {{ contact.first_name|default('friend') }}!</h1>"
            "<p>Thanks for confirming. Over the next days we will show you around the shop.</p>"
            '<p><a href="https://demo-shop.example/new">See what is new</a></p>'
        ),
        "next": "wait",
    },
    {"key": "wait", "type": "wait", "duration": "P2D", "next": "interest"},
    {
        "key": "interest",
        "type": "email",
        "subject": "Three things our customers love",
        "html": "<p>Here are the three products our customers order again and again.</p>",
        "next": None,
    },
]


def _seed(workspace: Workspace) -> None:
    """A double opt-in newsletter list with a hosted form, an AIDA funnel, and an active welcome
    sequence started by the confirmation: sign up, confirm from the outbox, get the welcome."""
    newsletter = mailing_list_create(
        workspace=workspace,
        name="Newsletter",
        description="News, offers and tips from the Demo Shop, about twice a month.",
    )
    signup_form_create(
        workspace=workspace,
        name="Website footer",
        mailing_list=newsletter,
        consent_text=(
            "Yes, I want to receive the Demo Shop newsletter by email. "
            "I can unsubscribe at any time."
        ),
        privacy_policy_url="https://demo-shop.example/privacy",
        fields=[{"name": "first_name", "label": "First name", "required": False}],
    )
    funnel = funnel_create(
        workspace=workspace, name="Newsletter funnel", preset="aida", goal_event="purchase"
    )
    steps = [dict(step) for step in WELCOME_STEPS]
    steps[0]["stage"] = str(funnel.stages.get(key="attention").pk)
    steps[2]["stage"] = str(funnel.stages.get(key="interest").pk)
    sequence = sequence_create(
        workspace=workspace,
        funnel=funnel,
        name="Welcome series",
        trigger={"type": "list_confirmed", "list": str(newsletter.pk)},
        exit_on=[{"type": "event", "name": "purchase"}],
        steps=steps,
    )
    sequence_set_status(sequence=sequence, status=SequenceStatus.ACTIVE)
