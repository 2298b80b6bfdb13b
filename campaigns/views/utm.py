"""The UTM fields of the sequence and broadcast forms (one place for both)."""

from __future__ import annotations

from typing import Any

from django import forms
from django.utils.translation import gettext_lazy

UTM_FORM_FIELDS = ("utm_source", "utm_medium", "utm_campaign")


class UtmFieldsForm(forms.Form):
    """Base form: utm_source, utm_medium, utm_campaign (campaigns.tracking_links.with_utm adds
    them to every link that lacks them). Render with campaigns/_utm_fields.html."""

    utm_source = forms.CharField(
        label="utm_source",
        required=False,
        max_length=200,
        widget=forms.TextInput(attrs={"placeholder": "funnelwerk"}),
    )
    utm_medium = forms.CharField(
        label="utm_medium",
        required=False,
        max_length=200,
        widget=forms.TextInput(attrs={"placeholder": "email"}),
    )
    utm_campaign = forms.CharField(
        label="utm_campaign",
        required=False,
        max_length=200,
        help_text=gettext_lazy(
            "Added to every link of these mails that does not carry it yet, so your web "
            "analytics can tell where visitors come from."
        ),
    )

    @staticmethod
    def utm_initial(utm: dict[str, str] | None) -> dict[str, Any]:
        """The fields' initial values, and the saved parameters the page does not edit
        (utm_term, utm_content set through the API), which utm_cleaned keeps."""
        return {
            **{name: (utm or {}).get(name, "") for name in UTM_FORM_FIELDS},
            "utm_saved": dict(utm or {}),
        }

    def utm_cleaned(self) -> dict[str, str]:
        data: dict[str, Any] = self.cleaned_data
        saved = self.initial.get("utm_saved") or {}
        kept = {name: value for name, value in saved.items() if name not in UTM_FORM_FIELDS}
        edited = {name: data[name].strip() for name in UTM_FORM_FIELDS if data[name].strip()}
        return {**kept, **edited}
