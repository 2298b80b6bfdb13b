"""Signup forms: their definition, the hosted page and embeddable snippet, and submissions."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction
from django.template.loader import render_to_string
from django.utils.translation import gettext as _

from contacts.models import MailingList, SignupForm
from contacts.services import consent_text_version
from contacts.subscriptions import SignupContext, SignupResult, list_subscribe
from contacts.validators import normalize_email
from core.exceptions import ApplicationError
from core.models import Workspace

FIELD_NAME = re.compile(r"^(first_name|last_name|attributes\.[A-Za-z_][A-Za-z0-9_]{0,60})$")
MAX_FIELDS = 20
HONEYPOT_FIELD = "website"
UTM_KEYS = ("utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content")


def validate_form_fields(fields: Any) -> list[dict[str, Any]]:
    """[{"name": "first_name" | "last_name" | "attributes.<key>", "label", "required"}].

    The email field is always there and is not listed.
    """
    if not isinstance(fields, list) or len(fields) > MAX_FIELDS:
        raise ApplicationError(
            _("Give a list of at most %(count)d fields.") % {"count": MAX_FIELDS}, field="fields"
        )
    cleaned: list[dict[str, Any]] = []
    for position, spec in enumerate(fields):
        if not isinstance(spec, dict):
            raise ApplicationError(
                _("Field %(n)d must be an object.") % {"n": position}, field="fields"
            )
        name = str(spec.get("name", "")).strip()
        if name == "email":
            continue
        if not FIELD_NAME.match(name):
            raise ApplicationError(
                _("Field %(n)d: use first_name, last_name or attributes.<key>, not %(name)s.")
                % {"n": position, "name": name},
                field="fields",
            )
        if any(existing["name"] == name for existing in cleaned):
            raise ApplicationError(
                _("Field %(name)s appears twice.") % {"name": name}, field="fields"
            )
        label = str(spec.get("label") or name.removeprefix("attributes.")).strip()[:100]
        cleaned.append({"name": name, "label": label, "required": bool(spec.get("required"))})
    return cleaned


def _check_list(*, workspace: Workspace, mailing_list: MailingList) -> None:
    if mailing_list.workspace_id != workspace.pk:
        raise ApplicationError(_("Choose one of this workspace's lists."), field="list")


@transaction.atomic
def signup_form_create(
    *,
    workspace: Workspace,
    name: str,
    mailing_list: MailingList,
    consent_text: str,
    privacy_policy_url: str,
    fields: Any = (),
    success_url: str = "",
    confirmed_url: str = "",
    locale: str = "",
) -> SignupForm:
    """Create a signup form; its consent text is stored as an immutable version."""
    _check_list(workspace=workspace, mailing_list=mailing_list)
    if not name.strip():
        raise ApplicationError(_("A form needs a name."), field="name")
    if not consent_text.strip():
        raise ApplicationError(_("Say what people agree to."), field="consent_text")
    if not privacy_policy_url.strip():
        raise ApplicationError(_("Link your privacy policy."), field="privacy_policy_url")
    return SignupForm.objects.create(
        workspace=workspace,
        name=name.strip(),
        mailing_list=mailing_list,
        fields=validate_form_fields(list(fields)),
        consent_text=consent_text_version(workspace=workspace, text=consent_text.strip()),
        privacy_policy_url=privacy_policy_url.strip(),
        success_url=success_url.strip(),
        confirmed_url=confirmed_url.strip(),
        locale=locale or workspace.locale,
    )


@transaction.atomic
def signup_form_update(*, signup_form: SignupForm, **changes: Any) -> SignupForm:
    """Change a form. A changed consent text becomes a new version: consents given earlier
    keep pointing at the words they were given under."""
    workspace = signup_form.workspace
    if "mailing_list" in changes:
        _check_list(workspace=workspace, mailing_list=changes["mailing_list"])
        signup_form.mailing_list = changes["mailing_list"]
    if "fields" in changes:
        signup_form.fields = validate_form_fields(changes["fields"])
    if "consent_text" in changes:
        text = str(changes["consent_text"]).strip()
        if not text:
            raise ApplicationError(_("Say what people agree to."), field="consent_text")
        signup_form.consent_text = consent_text_version(workspace=workspace, text=text)
    for name in ("name", "privacy_policy_url", "success_url", "confirmed_url", "locale"):
        if name in changes:
            setattr(signup_form, name, str(changes[name]).strip())
    if not signup_form.name:
        raise ApplicationError(_("A form needs a name."), field="name")
    if not signup_form.privacy_policy_url:
        raise ApplicationError(_("Link your privacy policy."), field="privacy_policy_url")
    signup_form.save()
    return signup_form


def hosted_url(signup_form: SignupForm) -> str:
    return f"{settings.PUBLIC_BASE_URL}/f/{signup_form.pk}/"


def embed_html(signup_form: SignupForm) -> str:
    """A plain HTML form to paste into any site: it works without JavaScript."""
    from django.utils import translation

    with translation.override(signup_form.locale):
        return render_to_string(
            "contacts/public/embed_snippet.html",
            {
                "signup_form": signup_form,
                "action": hosted_url(signup_form),
                "honeypot": HONEYPOT_FIELD,
            },
        ).strip()


@dataclass
class Submission:
    """The outcome of a form submission: errors per field, or the signup result."""

    errors: dict[str, str] = field(default_factory=dict)
    result: SignupResult | None = None
    ignored: bool = False  # a bot filled the honeypot: answered like a success, nothing done


def utm_from(*urls: str, params: Mapping[str, str] | None = None) -> dict[str, str]:
    utm: dict[str, str] = {}
    for url in urls:
        for key, value in parse_qsl(urlsplit(url).query):
            if key in UTM_KEYS and value:
                utm.setdefault(key, value[:200])
    for key in UTM_KEYS:
        if params and params.get(key):
            utm.setdefault(key, str(params[key])[:200])
    return utm


def signup_form_submit(
    *,
    signup_form: SignupForm,
    data: Mapping[str, Any],
    ip: str | None,
    user_agent: str,
    referrer: str,
) -> Submission:
    """Validate a submission of the hosted or embedded form and sign the person up.

    The answer never reveals whether the address was known: callers show the same page for
    every valid submission.
    """
    if str(data.get(HONEYPOT_FIELD, "")).strip():
        return Submission(ignored=True)
    errors: dict[str, str] = {}
    try:
        email = normalize_email(str(data.get("email", "")))
    except ValidationError as exc:
        errors["email"] = exc.messages[0]
        email = ""
    profile: dict[str, Any] = {"attributes": {}, "locale": signup_form.locale}
    for spec in signup_form.fields:
        value = str(data.get(spec["name"], "")).strip()[:500]
        if spec["required"] and not value:
            errors[spec["name"]] = _("Please fill this in.")
        if not value:
            continue
        if spec["name"].startswith("attributes."):
            profile["attributes"][spec["name"].removeprefix("attributes.")] = value
        else:
            profile[spec["name"]] = value[:150]
    if not data.get("consent"):
        errors["consent"] = _("Please agree to receive our mails.")
    if errors:
        return Submission(errors=errors)
    page_url = str(data.get("page_url") or referrer)[:2000]
    context = SignupContext(
        ip=ip,
        user_agent=user_agent,
        consent_text=signup_form.consent_text.text,
        privacy_policy_url=signup_form.privacy_policy_url,
        page_url=page_url,
        utm=utm_from(page_url, params=data),
        source=f"form:{signup_form.pk}",
        signup_form=signup_form,
        started_by_person=True,
    )
    profile["source"] = f"form:{signup_form.name}"
    result = list_subscribe(
        mailing_list=signup_form.mailing_list, email=email, profile=profile, context=context
    )
    return Submission(result=result)
