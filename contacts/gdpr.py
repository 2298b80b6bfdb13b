"""Everything held on a contact, for the GDPR art. 15 export (API, contact page, preference page).

Apps above contacts (funnel, campaigns) add their sections (stage history, events, messages)
with register_export_section from their AppConfig.ready(); contacts never imports them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.utils import timezone

from contacts.models import ConsentRecord, Contact, Subscription

ExportSection = Callable[[Contact], Any]
_sections: dict[str, ExportSection] = {}


def register_export_section(name: str, section: ExportSection) -> None:
    """Let a higher app add a section (a JSON-serialisable value) to every export."""
    _sections[name] = section


def _iso(value: Any) -> str | None:
    return value.isoformat() if value else None


def contact_export(contact: Contact) -> dict[str, Any]:
    """The whole record of one contact as plain JSON-serialisable data."""
    consents = ConsentRecord.objects.filter(contact=contact).select_related(
        "consent_text", "mailing_list", "signup_form"
    )
    subscriptions = Subscription.objects.filter(contact=contact).select_related("mailing_list")
    export: dict[str, Any] = {
        "exported_at": timezone.now().isoformat(),
        "workspace": {
            "name": contact.workspace.name,
            "postal_address": contact.workspace.postal_address,
            "privacy_policy_url": contact.workspace.privacy_policy_url,
        },
        "profile": {
            "id": str(contact.pk),
            "email": contact.email,
            "first_name": contact.first_name,
            "last_name": contact.last_name,
            "locale": contact.locale,
            "timezone": contact.timezone,
            "attributes": contact.attributes,
            "tags": sorted(tag.name for tag in contact.tags.all()),
            "status": contact.status,
            "source": contact.source,
            "score": contact.score,
            "created_at": _iso(contact.created_at),
            "confirmed_at": _iso(contact.confirmed_at),
            "unsubscribed_at": _iso(contact.unsubscribed_at),
        },
        "consents": [
            {
                "kind": record.kind,
                "occurred_at": _iso(record.occurred_at),
                "ip": record.ip_address,
                "user_agent": record.user_agent,
                "consent_text": record.consent_text.text if record.consent_text else None,
                "privacy_policy_url": record.privacy_policy_url,
                "list": record.mailing_list.name if record.mailing_list else None,
                "form": record.signup_form.name if record.signup_form else None,
                "page_url": record.page_url,
                "utm": record.utm,
                "source": record.source,
            }
            for record in consents
        ],
        "subscriptions": [
            {
                "list": subscription.mailing_list.name,
                "status": subscription.status,
                "created_at": _iso(subscription.created_at),
                "confirmed_at": _iso(subscription.confirmed_at),
                "unsubscribed_at": _iso(subscription.unsubscribed_at),
            }
            for subscription in subscriptions
        ],
    }
    for name, section in _sections.items():
        export[name] = section(contact)
    return export
