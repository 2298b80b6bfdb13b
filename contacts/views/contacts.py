"""Contact pages: list (search, filters, pages), detail, create, edit, erase."""

from __future__ import annotations

import json

from django.contrib import messages
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils.translation import gettext as _

from contacts import services
from contacts.forms import ContactFilterForm, ContactForm
from contacts.gdpr import contact_export
from contacts.models import Contact
from contacts.selectors import contact_get, contact_list, contact_stages, tag_names
from contacts.timeline import contact_timeline
from core.exceptions import ApplicationError
from core.models import Membership
from core.permissions import workspace_view

CONTACTS_PER_PAGE = 25


def _recorded_by(request: HttpRequest) -> str:
    return f"user:{request.user.pk}"


def _contact_or_404(membership: Membership, pk: str) -> Contact:
    try:
        return contact_get(workspace=membership.workspace, contact_id=pk)
    except Contact.DoesNotExist as exc:
        raise Http404 from exc


@workspace_view()
def contact_index(request: HttpRequest, membership: Membership) -> HttpResponse:
    filter_form = ContactFilterForm(request.GET or None)
    contacts = contact_list(workspace=membership.workspace, filters=filter_form.to_filter())
    page = Paginator(contacts, CONTACTS_PER_PAGE).get_page(request.GET.get("page"))
    query = request.GET.copy()
    query.pop("page", None)
    context = {
        "filter_form": filter_form,
        "page": page,
        "query": query.urlencode(),
        "tags": tag_names(workspace=membership.workspace),
    }
    template = "contacts/_contact_table.html" if request.htmx else "contacts/contact_list.html"  # type: ignore[attr-defined]
    return render(request, template, context)


@workspace_view()
def contact_detail(request: HttpRequest, membership: Membership, pk: str) -> HttpResponse:
    contact = _contact_or_404(membership, pk)
    consent_records = contact.consent_records.select_related(
        "consent_text", "mailing_list", "signup_form"
    ).all()
    subscriptions = contact.subscriptions.select_related("mailing_list").order_by(
        "mailing_list__name"
    )
    timeline = contact_timeline(contact, limit=100)
    # Who moved a contact by hand ("user:<id>"): only members of this workspace are named.
    mover_ids = {
        item.detail["cause_detail"].removeprefix("user:")
        for item in timeline
        if str(item.detail.get("cause_detail", "")).startswith("user:")
    }
    movers = {
        f"user:{user_id}": email
        for user_id, email in Membership.objects.filter(
            workspace=membership.workspace, user_id__in=[m for m in mover_ids if m.isdigit()]
        ).values_list("user_id", "user__email")
    }
    timeline_rows = [
        {
            "item": item,
            "moved_by": movers.get(str(item.detail.get("cause_detail", ""))),
            # Pairs, not the dict: a property named "items" would shadow dict.items in a template.
            "properties": list((item.detail.get("properties") or {}).items())[:6]
            if isinstance(item.detail.get("properties"), dict)
            else [],
        }
        for item in timeline
    ]
    # Contacts knows no funnel names: the current stage per funnel is shown by the newest
    # stage move into it that the timeline holds; older ones are only counted.
    current_stages, stages_not_shown = [], 0
    for funnel_id, stage_id in contact_stages([contact.pk]).get(contact.pk, {}).items():
        move = next(
            (
                item
                for item in timeline
                if item.kind == "stage_change"
                and item.detail.get("funnel") == funnel_id
                and item.detail.get("to_stage") == stage_id
            ),
            None,
        )
        if move is None:
            stages_not_shown += 1
        else:
            current_stages.append(move)
    return render(
        request,
        "contacts/contact_detail.html",
        {
            "contact": contact,
            "consent_records": consent_records,
            "subscriptions": subscriptions,
            "timeline": timeline,
            "timeline_rows": timeline_rows,
            "current_stages": current_stages,
            "stages_not_shown": stages_not_shown,
        },
    )


@workspace_view()
def contact_export_json(request: HttpRequest, membership: Membership, pk: str) -> HttpResponse:
    """Everything held on the contact (GDPR art. 15), as a JSON download."""
    contact = _contact_or_404(membership, pk)
    response = HttpResponse(
        json.dumps(contact_export(contact), indent=2, ensure_ascii=False),
        content_type="application/json; charset=utf-8",
    )
    response["Content-Disposition"] = f'attachment; filename="contact-{contact.pk}.json"'
    return response


@workspace_view(read="editor")
def contact_create(request: HttpRequest, membership: Membership) -> HttpResponse:
    form = ContactForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        try:
            contact, created = services.contact_upsert(
                workspace=membership.workspace,
                email=form.cleaned_data["email"],
                changes=form.changes(),
                consent=form.consent_proof(recorded_by=_recorded_by(request)),
                recorded_by=_recorded_by(request),
            )
        except ApplicationError as exc:
            form.add_error(exc.field if exc.field in form.fields else None, exc.message)
        else:
            if created:
                messages.success(
                    request, _("Contact %(email)s created.") % {"email": contact.email}
                )
            else:
                messages.info(
                    request,
                    _("%(email)s already existed; it was updated.") % {"email": contact.email},
                )
            return redirect("contact-detail", pk=contact.pk)
    return render(request, "contacts/contact_form.html", {"form": form, "contact": None})


@workspace_view(read="editor")
def contact_edit(request: HttpRequest, membership: Membership, pk: str) -> HttpResponse:
    contact = _contact_or_404(membership, pk)
    form = ContactForm(request.POST or None, contact=contact)
    if request.method == "POST" and form.is_valid():
        try:
            services.contact_update(
                contact=contact,
                changes=form.changes(),
                consent=form.consent_proof(recorded_by=_recorded_by(request)),
                recorded_by=_recorded_by(request),
            )
        except ApplicationError as exc:
            form.add_error(exc.field if exc.field in form.fields else None, exc.message)
        else:
            messages.success(request, _("Contact saved."))
            return redirect("contact-detail", pk=contact.pk)
    return render(request, "contacts/contact_form.html", {"form": form, "contact": contact})


@workspace_view(read="editor")
def contact_delete(request: HttpRequest, membership: Membership, pk: str) -> HttpResponse:
    contact = _contact_or_404(membership, pk)
    if request.method == "POST":
        email = contact.email
        services.contact_erase(contact=contact)
        messages.success(
            request,
            _("%(email)s was erased. The address stays suppressed and will not be mailed again.")
            % {"email": email},
        )
        return redirect("contact-list")
    return render(request, "contacts/contact_confirm_delete.html", {"contact": contact})
