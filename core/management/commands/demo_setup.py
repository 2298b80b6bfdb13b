from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand
from django.db import transaction

from core import services
from core.models import User

DEMO_EMAIL = "demo@funnelwerk.local"
DEMO_WORKSPACE = "Demo Shop"


class Command(BaseCommand):
    help = (
        "Create (once) the demo workspace and its owner for the embedded default, and print the "
        "login. The password is kept in var/demo-login.txt so every start can print it."
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
                services.workspace_create(
                    name=DEMO_WORKSPACE,
                    owner=user,
                    sender_name="Demo Shop",
                    sender_email="hello@demo-shop.example",
                    postal_address="Demo Shop GmbH\nMusterstraße 1\n10115 Berlin\nGermany",
                    privacy_policy_url="https://demo-shop.example/privacy",
                    timezone="Europe/Berlin",
                )
                login_file.parent.mkdir(parents=True, exist_ok=True)
                login_file.write_text(password)
                login_file.chmod(0o600)
        password = (
            login_file.read_text().strip() if login_file.exists() else "(set before; unknown)"
        )
        base = settings.PUBLIC_BASE_URL
        self.stdout.write(
            f"\n  Funnelwerk demo login:  {base}/login/\n"
            f"    email:     {DEMO_EMAIL}\n"
            f"    password:  {password}\n"
        )
