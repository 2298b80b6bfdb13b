"""The embedded default (SQLite, outbox) runs the whole journey: the tests otherwise run on
PostgreSQL, so this one drives config.settings.local in a subprocess with its own SQLite file —
what `./dev up` runs — through signup, confirmation, the welcome sequence and sending."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

JOURNEY = r"""
import django
django.setup()
from django.core.management import call_command
from config.celery import app

# Run the tasks scheduled after commit in this process (no worker needed for the test).
app.conf.task_always_eager = True

call_command("migrate", verbosity=0)
call_command("createcachetable", verbosity=0)
call_command("demo_setup", verbosity=0)

from campaigns.engine import tick
from campaigns.sending import messages_send
from campaigns.models import Message
from contacts.models import SignupForm
from contacts.signup_forms import signup_form_submit
from contacts.subscriptions import contact_confirm
from core.models import OutboxMessage

form = SignupForm.objects.get()
submission = signup_form_submit(
    signup_form=form,
    data={"email": "nina@example.com", "first_name": "Nina", "consent": "yes"},
    ip="127.0.0.1", user_agent="test", referrer="",
)
contact = submission.result.contact
contact_confirm(contact=contact, ip="127.0.0.1", user_agent="test")
tick()
messages_send(message_ids=[str(m.pk) for m in Message.objects.all()])
for mail in OutboxMessage.objects.order_by("created_at"):
    print("OUTBOX:", mail.subject)
"""


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX only")
def test_signup_confirm_and_welcome_mail_on_sqlite(tmp_path: Path) -> None:
    environment = {
        key: value
        for key, value in os.environ.items()
        if key not in {"DATABASE_URL", "REDIS_URL", "CELERY_BROKER_URL", "EMAIL_URL"}
    }
    environment.update(
        DJANGO_SETTINGS_MODULE="config.settings.local",
        FUNNELWERK_VAR_DIR=str(tmp_path),
        EMAIL_URL="outbox://",
    )
    result = subprocess.run(
        [sys.executable, "-c", JOURNEY],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    outbox = [
        line.removeprefix("OUTBOX: ")
        for line in result.stdout.splitlines()
        if line.startswith("OUTBOX: ")
    ]
    assert outbox == [
        "Please confirm your subscription to Newsletter",
        "Welcome to the Demo Shop, Nina!",
    ]
