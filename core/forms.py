from __future__ import annotations

from typing import Any

from django import forms
from django.contrib.auth import password_validation
from django.utils.translation import gettext_lazy as _

from core.models import ApiKeyAccess, Role, Workspace
from core.validators import validate_timezone


class SignupForm(forms.Form):
    name = forms.CharField(label=_("Your name"), max_length=150)
    email = forms.EmailField(label=_("Email address"))
    password = forms.CharField(
        label=_("Password"),
        widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}),
        help_text=password_validation.password_validators_help_text_html(),
    )
    workspace_name = forms.CharField(label=_("Workspace name"), max_length=120)

    def clean_password(self) -> str:
        password: str = self.cleaned_data["password"]
        password_validation.validate_password(password)
        return password


class InvitationSignupForm(forms.Form):
    """Sign-up of an invited person: the address is the invited one."""

    name = forms.CharField(label=_("Your name"), max_length=150)
    password = forms.CharField(
        label=_("Password"), widget=forms.PasswordInput(attrs={"autocomplete": "new-password"})
    )

    def clean_password(self) -> str:
        password: str = self.cleaned_data["password"]
        password_validation.validate_password(password)
        return password


class WorkspaceCreateForm(forms.Form):
    name = forms.CharField(label=_("Workspace name"), max_length=120)


class WorkspaceSettingsForm(forms.ModelForm[Workspace]):
    privacy_policy_url = forms.URLField(
        label=_("Privacy policy URL"), required=False, assume_scheme="https"
    )

    class Meta:
        model = Workspace
        fields = [
            "name",
            "sender_name",
            "sender_email",
            "postal_address",
            "privacy_policy_url",
            "timezone",
            "locale",
            "frequency_cap_per_day",
            "frequency_cap_per_week",
            "send_rate_per_second",
            "tracking_mode",
            "track_opens",
            "track_clicks",
            "soft_bounce_limit",
        ]
        widgets = {
            "postal_address": forms.Textarea(attrs={"rows": 3}),
            "tracking_mode": forms.RadioSelect,
        }

    def clean_timezone(self) -> str:
        timezone = str(self.cleaned_data["timezone"])
        validate_timezone(timezone)
        return timezone

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        daily, weekly = cleaned.get("frequency_cap_per_day"), cleaned.get("frequency_cap_per_week")
        if daily is not None and weekly is not None and weekly < daily:
            self.add_error(
                "frequency_cap_per_week", _("The weekly cap must be at least the daily cap.")
            )
        return cleaned


class InvitationForm(forms.Form):
    email = forms.EmailField(label=_("Email address"))
    role = forms.ChoiceField(label=_("Role"), choices=Role.choices, initial=Role.EDITOR)


class MembershipRoleForm(forms.Form):
    role = forms.ChoiceField(label=_("Role"), choices=Role.choices)


class ApiKeyForm(forms.Form):
    name = forms.CharField(
        label=_("Name"), max_length=100, help_text=_("Where the key is used, e.g. Shopify shop.")
    )
    access = forms.ChoiceField(label=_("Access"), choices=ApiKeyAccess.choices)
