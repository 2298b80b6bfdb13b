from __future__ import annotations

import json
from typing import Any

from django import forms
from django.core.exceptions import ValidationError
from django.utils.translation import gettext_lazy as _

from contacts import validators
from contacts.models import Contact, ContactStatus
from contacts.selectors import CONTACT_ORDERINGS, DEFAULT_CONTACT_ORDERING, ContactFilter
from contacts.services import SETTABLE_STATUSES, ConsentProof


class ContactFilterForm(forms.Form):
    search = forms.CharField(label=_("Search"), required=False, max_length=200)
    status = forms.ChoiceField(
        label=_("Status"), required=False, choices=[("", _("Any status")), *ContactStatus.choices]
    )
    tag = forms.CharField(label=_("Tag"), required=False, max_length=100)
    ordering = forms.ChoiceField(required=False, choices=[(key, key) for key in CONTACT_ORDERINGS])

    def to_filter(self) -> ContactFilter:
        if not self.is_valid():
            return ContactFilter()
        data = self.cleaned_data
        return ContactFilter(
            search=data["search"],
            status=data["status"],
            tag=data["tag"],
            ordering=data["ordering"] or DEFAULT_CONTACT_ORDERING,
        )


class ContactForm(forms.Form):
    email = forms.CharField(label=_("Email address"), max_length=320)
    first_name = forms.CharField(label=_("First name"), max_length=150, required=False)
    last_name = forms.CharField(label=_("Last name"), max_length=150, required=False)
    locale = forms.CharField(
        label=_("Language"), max_length=10, required=False, validators=[validators.validate_locale]
    )
    timezone = forms.CharField(
        label=_("Time zone"),
        max_length=64,
        required=False,
        validators=[validators.validate_timezone],
    )
    tags = forms.CharField(
        label=_("Tags"), required=False, help_text=_("Separate tags with commas.")
    )
    attributes = forms.CharField(
        label=_("Attributes"),
        required=False,
        widget=forms.Textarea(attrs={"rows": 4, "spellcheck": "false"}),
        help_text=_('A JSON object, e.g. {"city": "Berlin", "plan": "pro"}.'),
    )
    source = forms.CharField(label=_("Source"), max_length=200, required=False)
    score = forms.IntegerField(label=_("Score"), required=False, initial=0)
    status = forms.ChoiceField(
        label=_("Status"),
        choices=[(value, ContactStatus(value).label) for value in SETTABLE_STATUSES],
        initial=ContactStatus.NOT_SUBSCRIBED,
    )
    consent_text = forms.CharField(
        label=_("Consent text the person agreed to"),
        required=False,
        widget=forms.Textarea(attrs={"rows": 2}),
        help_text=_("Required to mark someone as subscribed: the exact words they agreed to."),
    )
    consent_at = forms.DateTimeField(
        label=_("Consent given at"),
        required=False,
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}),
    )

    def __init__(self, *args: Any, contact: Contact | None = None, **kwargs: Any):
        self.contact = contact
        if contact is not None:
            kwargs.setdefault(
                "initial",
                {
                    "email": contact.email,
                    "first_name": contact.first_name,
                    "last_name": contact.last_name,
                    "locale": contact.locale,
                    "timezone": contact.timezone,
                    "tags": ", ".join(sorted(tag.name for tag in contact.tags.all())),
                    "attributes": json.dumps(contact.attributes, indent=2, ensure_ascii=False)
                    if contact.attributes
                    else "",
                    "source": contact.source,
                    "score": contact.score,
                    "status": contact.status,
                },
            )
        super().__init__(*args, **kwargs)
        if contact is not None:
            self.fields["email"].disabled = True
            if contact.status not in SETTABLE_STATUSES:
                status_field = self.fields["status"]
                assert isinstance(status_field, forms.ChoiceField)
                status_field.choices = [(contact.status, contact.get_status_display())]
                self.fields["status"].disabled = True

    def clean_email(self) -> str:
        return validators.normalize_email(self.cleaned_data["email"])

    def clean_tags(self) -> list[str]:
        return validators.clean_tags(self.cleaned_data["tags"].split(","))

    def clean_attributes(self) -> dict[str, Any]:
        raw = self.cleaned_data["attributes"].strip()
        if not raw:
            return {}
        try:
            value = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ValidationError(
                _("This is not valid JSON (line %(line)d): %(message)s")
                % {"line": exc.lineno, "message": exc.msg}
            ) from exc
        return validators.validate_attributes(value)

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        becomes_subscribed = cleaned.get("status") == ContactStatus.SUBSCRIBED and (
            self.contact is None or self.contact.status != ContactStatus.SUBSCRIBED
        )
        if becomes_subscribed:
            if not cleaned.get("consent_text", "").strip():
                self.add_error("consent_text", _("Give the consent text to mark as subscribed."))
            if not cleaned.get("consent_at"):
                self.add_error("consent_at", _("Give the time consent was given."))
        return cleaned

    def changes(self) -> dict[str, Any]:
        """The validated fields as the contacts services take them."""
        data = self.cleaned_data
        changes: dict[str, Any] = {
            key: data[key] for key in ("first_name", "last_name", "locale", "timezone", "source")
        }
        changes["score"] = data["score"] or 0
        changes["tags"] = data["tags"]
        if self.contact is not None:
            # The form shows the whole object: keys removed in the form are removed.
            removed = {
                key: None for key in self.contact.attributes if key not in data["attributes"]
            }
            changes["attributes"] = {**removed, **data["attributes"]}
        else:
            changes["attributes"] = data["attributes"]
        if "status" not in self.fields or not self.fields["status"].disabled:
            changes["status"] = data["status"]
        return changes

    def consent_proof(self, *, recorded_by: str) -> ConsentProof | None:
        data = self.cleaned_data
        if not data.get("consent_text") or not data.get("consent_at"):
            return None
        return ConsentProof(text=data["consent_text"], at=data["consent_at"], source=recorded_by)
