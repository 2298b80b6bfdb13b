from __future__ import annotations

import json
import re
from typing import Any

from django import forms
from django.conf import settings
from django.core.exceptions import ValidationError
from django.utils.translation import gettext_lazy as _

from contacts import validators
from contacts.models import Contact, ContactStatus, MailingList, SignupForm
from contacts.selectors import CONTACT_ORDERINGS, DEFAULT_CONTACT_ORDERING, ContactFilter
from contacts.services import SETTABLE_STATUSES, ConsentProof
from core.models import Workspace


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


class MailingListForm(forms.Form):
    name = forms.CharField(label=_("Name"), max_length=150)
    description = forms.CharField(
        label=_("Description"),
        required=False,
        widget=forms.Textarea(attrs={"rows": 2}),
        help_text=_("Shown to subscribers on their preference page."),
    )
    double_opt_in = forms.BooleanField(
        label=_("Double opt-in"),
        required=False,
        initial=True,
        help_text=_("Strongly recommended, and required in Germany: people confirm by mail."),
    )
    subject_en = forms.CharField(label=_("Confirmation subject (English)"), required=False)
    body_en = forms.CharField(
        label=_("Confirmation text (English)"),
        required=False,
        widget=forms.Textarea(attrs={"rows": 4}),
        help_text=_("Leave empty for the built-in text. Must contain {confirm_url}."),
    )
    subject_de = forms.CharField(label=_("Confirmation subject (German)"), required=False)
    body_de = forms.CharField(
        label=_("Confirmation text (German)"),
        required=False,
        widget=forms.Textarea(attrs={"rows": 4}),
        help_text=_("Leave empty for the built-in text. Must contain {confirm_url}."),
    )

    @classmethod
    def initial_for(cls, mailing_list: MailingList) -> dict[str, Any]:
        templates = mailing_list.confirmation_templates
        return {
            "name": mailing_list.name,
            "description": mailing_list.description,
            "double_opt_in": mailing_list.double_opt_in,
            **{
                f"{part}_{language}": templates.get(language, {}).get(part, "")
                for language in ("en", "de")
                for part in ("subject", "body")
            },
        }

    def service_arguments(self) -> dict[str, Any]:
        data = self.cleaned_data
        return {
            "name": data["name"],
            "description": data["description"],
            "double_opt_in": data["double_opt_in"],
            "confirmation_templates": {
                language: {"subject": data[f"subject_{language}"], "body": data[f"body_{language}"]}
                for language in ("en", "de")
            },
        }


class SignupFormForm(forms.Form):
    name = forms.CharField(label=_("Name"), max_length=150)
    mailing_list = forms.ModelChoiceField(label=_("List"), queryset=MailingList.objects.none())
    ask_first_name = forms.BooleanField(label=_("Ask for the first name"), required=False)
    ask_last_name = forms.BooleanField(label=_("Ask for the last name"), required=False)
    names_required = forms.BooleanField(label=_("Names are required"), required=False)
    custom_fields = forms.CharField(
        label=_("More fields"),
        required=False,
        widget=forms.Textarea(attrs={"rows": 3, "spellcheck": "false"}),
        help_text=_(
            "One per line: attribute key | label | required, e.g. company | Company | required"
        ),
    )
    consent_text = forms.CharField(
        label=_("Consent text"),
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text=_(
            "Exactly what people agree to. Changing it later keeps the old version for "
            "everyone who agreed to it."
        ),
    )
    privacy_policy_url = forms.URLField(label=_("Privacy policy URL"), assume_scheme="https")
    success_url = forms.URLField(
        label=_("After signing up, go to"),
        required=False,
        assume_scheme="https",
        help_text=_("Optional: your own thank-you page."),
    )
    confirmed_url = forms.URLField(
        label=_("After confirming, go to"), required=False, assume_scheme="https"
    )
    locale = forms.ChoiceField(label=_("Language of the form"), choices=settings.LANGUAGES)

    def __init__(self, *args: Any, workspace: Workspace, **kwargs: Any):
        super().__init__(*args, **kwargs)
        list_field = self.fields["mailing_list"]
        assert isinstance(list_field, forms.ModelChoiceField)
        list_field.queryset = MailingList.objects.filter(workspace=workspace)

    @classmethod
    def initial_for(cls, signup_form: SignupForm) -> dict[str, Any]:
        names = {spec["name"]: spec for spec in signup_form.fields}
        custom = [
            " | ".join(
                [spec["name"].removeprefix("attributes."), spec["label"]]
                + (["required"] if spec["required"] else [])
            )
            for spec in signup_form.fields
            if spec["name"].startswith("attributes.")
        ]
        return {
            "name": signup_form.name,
            "mailing_list": signup_form.mailing_list_id,
            "ask_first_name": "first_name" in names,
            "ask_last_name": "last_name" in names,
            "names_required": any(
                names.get(key, {}).get("required") for key in ("first_name", "last_name")
            ),
            "custom_fields": "\n".join(custom),
            "consent_text": signup_form.consent_text.text,
            "privacy_policy_url": signup_form.privacy_policy_url,
            "success_url": signup_form.success_url,
            "confirmed_url": signup_form.confirmed_url,
            "locale": signup_form.locale,
        }

    def clean_custom_fields(self) -> list[dict[str, Any]]:
        specs = []
        for number, line in enumerate(self.cleaned_data["custom_fields"].splitlines(), start=1):
            if not line.strip():
                continue
            parts = [part.strip() for part in line.split("|")]
            key = parts[0]
            label = parts[1] if len(parts) > 1 and parts[1] else key
            required = len(parts) > 2 and parts[2].lower() in {"required", "yes", "true", "1"}
            if not re.match(r"^[A-Za-z_][A-Za-z0-9_]{0,60}$", key):
                raise ValidationError(
                    _("Line %(line)d: the key uses letters, digits and _ only.") % {"line": number}
                )
            specs.append({"name": f"attributes.{key}", "label": label, "required": required})
        return specs

    def service_arguments(self) -> dict[str, Any]:
        data = self.cleaned_data
        fields = [
            {"name": name, "label": str(label), "required": data["names_required"]}
            for name, label, asked in (
                ("first_name", _("First name"), data["ask_first_name"]),
                ("last_name", _("Last name"), data["ask_last_name"]),
            )
            if asked
        ]
        return {
            "name": data["name"],
            "mailing_list": data["mailing_list"],
            "fields": fields + data["custom_fields"],
            "consent_text": data["consent_text"],
            "privacy_policy_url": data["privacy_policy_url"],
            "success_url": data["success_url"],
            "confirmed_url": data["confirmed_url"],
            "locale": data["locale"],
        }
