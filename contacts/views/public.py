"""Public pages, no login: the hosted signup form, the confirmation link, and the unsubscribe
and preference page. Link scanners fetch every link in a mail, so GET and HEAD never change
anything here; only POST does."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import URLPattern, URLResolver, path
from django.utils import translation
from django.utils.translation import gettext as _
from django.views.decorators.cache import never_cache
from django.views.decorators.clickjacking import xframe_options_exempt
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods

from contacts.gdpr import contact_export
from contacts.mails import contact_language
from contacts.models import SignupForm
from contacts.services import contact_erase
from contacts.signup_forms import HONEYPOT_FIELD, UTM_KEYS, signup_form_submit
from contacts.subscriptions import (
    confirmed_redirect_url,
    contact_active_subscriptions,
    contact_confirm,
    contact_from_confirmation_token,
    contact_from_unsubscribe_token,
    contact_leave_lists,
    contact_unsubscribe_all,
)
from core.http import client_ip
from core.ratelimit import Rate, rate_limit_hit

ONE_CLICK_BODY = "List-Unsubscribe=One-Click"


def _user_agent(request: HttpRequest) -> str:
    return request.META.get("HTTP_USER_AGENT", "")[:1000]


def _invalid_link(request: HttpRequest) -> HttpResponse:
    # One answer for tampered, foreign, expired and used links: it reveals nothing.
    return render(request, "contacts/public/invalid_link.html", status=404)


def _fields(
    signup_form: SignupForm, values: Mapping[str, str], errors: Mapping[str, str]
) -> list[dict[str, object]]:
    return [
        {"spec": spec, "value": values.get(spec["name"], ""), "error": errors.get(spec["name"], "")}
        for spec in signup_form.fields
    ]


@csrf_exempt  # posted from any site by the embeddable snippet; double opt-in is the guard
@xframe_options_exempt  # marketers may frame the hosted form
@never_cache
@require_http_methods(["GET", "HEAD", "POST"])
def signup_form_page(request: HttpRequest, pk: str) -> HttpResponse:
    signup_form = (
        SignupForm.objects.select_related("workspace", "mailing_list", "consent_text")
        .filter(pk=pk)
        .first()
    )
    if signup_form is None:
        raise Http404
    with translation.override(signup_form.locale):
        context = {
            "signup_form": signup_form,
            "workspace": signup_form.workspace,
            "honeypot": HONEYPOT_FIELD,
            "values": {},
            "errors": {},
            "fields": _fields(signup_form, {}, {}),
            "utm": {key: request.GET[key] for key in UTM_KEYS if request.GET.get(key)},
            "page_url": request.GET.get("page_url", ""),
        }
        if request.method != "POST":
            return render(request, "contacts/public/signup_form.html", context)

        ip = client_ip(request)
        rate = Rate.parse(settings.SIGNUP_RATE_LIMIT_PER_IP)
        if rate_limit_hit(scope="signup", key=ip or "unknown", rate=rate):
            response = render(request, "contacts/public/rate_limited.html", status=429)
            response["Retry-After"] = str(rate.seconds)
            return response
        submission = signup_form_submit(
            signup_form=signup_form,
            data=request.POST,
            ip=ip,
            user_agent=_user_agent(request),
            referrer=request.META.get("HTTP_REFERER", ""),
        )
        if submission.errors:
            context.update(
                values=request.POST,
                errors=submission.errors,
                fields=_fields(signup_form, request.POST, submission.errors),
                page_url=request.POST.get("page_url", ""),
            )
            return render(request, "contacts/public/signup_form.html", context, status=400)
        if signup_form.success_url:
            return HttpResponseRedirect(signup_form.success_url)
        return render(request, "contacts/public/signup_thanks.html", context)


@csrf_exempt  # the token in the URL is the secret; the page's own button posts here
@never_cache
@require_http_methods(["GET", "HEAD", "POST"])
def confirm(request: HttpRequest, token: str) -> HttpResponse:
    """GET shows a page with one button; only the POST of that button confirms."""
    contact = contact_from_confirmation_token(token)
    if contact is None:
        return _invalid_link(request)
    with translation.override(contact_language(contact)):
        context: dict[str, Any] = {"workspace": contact.workspace}
        if request.method != "POST":
            return render(request, "contacts/public/confirm.html", context)
        lists = contact_confirm(
            contact=contact, ip=client_ip(request), user_agent=_user_agent(request)
        )
        redirect_to = confirmed_redirect_url(contact)
        if redirect_to:
            return HttpResponseRedirect(redirect_to)
        context["lists"] = lists
        return render(request, "contacts/public/confirmed.html", context)


@csrf_exempt  # RFC 8058: the one-click POST carries no cookie and no CSRF token
@never_cache
@require_http_methods(["GET", "HEAD", "POST"])
def unsubscribe(request: HttpRequest, token: str) -> HttpResponse:
    """GET shows the preference page. POST with List-Unsubscribe=One-Click (RFC 8058)
    unsubscribes at once and answers 200; the page's buttons post an `action`."""
    contact = contact_from_unsubscribe_token(token)
    if contact is None:
        return _invalid_link(request)
    ip, user_agent = client_ip(request), _user_agent(request)
    if request.method == "POST" and request.POST.get("List-Unsubscribe") == "One-Click":
        contact_unsubscribe_all(contact=contact, ip=ip, user_agent=user_agent, source="one_click")
        return HttpResponse(_("You are unsubscribed."), content_type="text/plain; charset=utf-8")

    with translation.override(contact_language(contact)):
        action = request.POST.get("action", "") if request.method == "POST" else ""
        context = {"contact": contact, "workspace": contact.workspace, "token": token}
        if action == "unsubscribe_all":
            contact_unsubscribe_all(
                contact=contact, ip=ip, user_agent=user_agent, source="preference_page"
            )
            return render(request, "contacts/public/unsubscribed.html", context)
        if action == "preferences":
            keep = set(request.POST.getlist("lists"))
            leaving = [
                subscription.mailing_list
                for subscription in contact_active_subscriptions(contact)
                if str(subscription.mailing_list_id) not in keep
            ]
            contact_leave_lists(
                contact=contact,
                mailing_lists=leaving,
                ip=ip,
                user_agent=user_agent,
                source="preference_page",
            )
            contact.refresh_from_db()
            context["saved"] = True
        if action == "export":
            response = HttpResponse(
                json.dumps(contact_export(contact), indent=2, ensure_ascii=False),
                content_type="application/json; charset=utf-8",
            )
            response["Content-Disposition"] = 'attachment; filename="my-data.json"'
            return response
        if action == "erase":
            if request.POST.get("confirm") != "yes":
                context["erase_unconfirmed"] = True
            else:
                contact_erase(contact=contact)
                return render(request, "contacts/public/erased.html", context)
        context["subscriptions"] = contact_active_subscriptions(contact)
        return render(request, "contacts/public/preferences.html", context)


urlpatterns: list[URLPattern | URLResolver] = [
    path("f/<uuid:pk>/", signup_form_page, name="signup-form-page"),
    path("confirm/<str:token>/", confirm, name="confirm"),
    path("u/<str:token>/", unsubscribe, name="unsubscribe"),
]
