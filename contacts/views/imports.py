"""CSV import pages (upload, column mapping, progress, bad rows) and CSV exports.

Imports and exports carry personal data, so every page here needs the editor role, for reading
as well. Mounted under /contacts/imports/.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable
from typing import cast

from django import forms
from django.contrib import messages
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import redirect, render
from django.urls import URLPattern, URLResolver, path
from django.utils.text import slugify
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from contacts import importing
from contacts.exporting import contacts_csv_rows, csv_lines, import_errors_csv_rows
from contacts.models import (
    Contact,
    ContactImport,
    ContactStatus,
    ImportStatus,
    MailingList,
    Segment,
    SubscriptionStatus,
)
from contacts.segments import segment_members
from core.exceptions import ApplicationError
from core.models import Membership, Role
from core.permissions import workspace_view

ERRORS_SHOWN = 100
RECENT_IMPORTS = 10
TARGET_LABELS = {
    "email": gettext_lazy("Email address"),
    "first_name": gettext_lazy("First name"),
    "last_name": gettext_lazy("Last name"),
    "locale": gettext_lazy("Language"),
    "timezone": gettext_lazy("Time zone"),
    "source": gettext_lazy("Source"),
    "score": gettext_lazy("Score"),
    "status": gettext_lazy("Status"),
    "consent_at": gettext_lazy("Consent date"),
    "consent_source": gettext_lazy("Consent source"),
    "consent_text": gettext_lazy("Consent text"),
    "tags": gettext_lazy("Tags"),
}

editor_view = workspace_view(read=Role.EDITOR, write=Role.EDITOR)


class ImportUploadForm(forms.Form):
    file = forms.FileField(
        label=gettext_lazy("CSV file"),
        help_text=gettext_lazy(
            "UTF-8 or Latin-1, separated by commas or semicolons (Excel). The first row names "
            "the columns."
        ),
        widget=forms.ClearableFileInput(attrs={"accept": ".csv,text/csv"}),
    )


def _recorded_by(request: HttpRequest) -> str:
    return f"user:{request.user.pk}"


def _import_or_404(membership: Membership, pk: str) -> ContactImport:
    try:
        return importing.contact_import_get(workspace=membership.workspace, import_id=pk)
    except ContactImport.DoesNotExist as exc:
        raise Http404 from exc


def _attribute_key(header: str) -> str:
    key = re.sub(r"[^a-z0-9_]+", "_", slugify(header).replace("-", "_")).strip("_")[:100]
    if not key or not key[0].isalpha():
        key = f"column_{key}".rstrip("_")
    return key


def _mailing_list_or_none(mailing_lists: QuerySet[MailingList], list_id: str) -> MailingList | None:
    if not list_id:
        return None
    try:
        mailing_list = mailing_lists.filter(pk=uuid.UUID(list_id)).first()
    except ValueError:
        mailing_list = None
    if mailing_list is None:
        raise ApplicationError(_("Choose one of this workspace's lists."), field="list")
    return mailing_list


def _csv_response(lines: Iterable[str], *, filename: str) -> HttpResponse:
    response = StreamingHttpResponse(lines, content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    response["Cache-Control"] = "no-store"
    # workspace_view is typed for HttpResponse; a streamed one is served the same way.
    return cast(HttpResponse, response)


@editor_view
def import_upload(request: HttpRequest, membership: Membership) -> HttpResponse:
    form = ImportUploadForm(request.POST or None, request.FILES or None)
    if request.method == "POST" and form.is_valid():
        try:
            contact_import = importing.contact_import_create(
                workspace=membership.workspace,
                uploaded_file=form.cleaned_data["file"],
                created_by=_recorded_by(request),
            )
        except ApplicationError as exc:
            form.add_error("file", exc.message)
        else:
            return redirect("import-mapping", pk=contact_import.pk)
    recent = ContactImport.objects.filter(workspace=membership.workspace).order_by("-created_at")[
        :RECENT_IMPORTS
    ]
    return render(request, "contacts/imports/upload.html", {"form": form, "imports": recent})


@editor_view
def import_mapping(request: HttpRequest, membership: Membership, pk: str) -> HttpResponse:
    contact_import = _import_or_404(membership, pk)
    if contact_import.status != ImportStatus.UPLOADED:
        return redirect("import-detail", pk=contact_import.pk)
    headers: list[str] = contact_import.headers
    mailing_lists = MailingList.objects.filter(workspace=membership.workspace).order_by("name")
    error = ""
    if request.method == "POST":
        mapping = {
            header: request.POST.get(f"column-{index}", "") for index, header in enumerate(headers)
        }
        tags = [tag for tag in request.POST.get("tags", "").split(",") if tag.strip()]
        list_id = request.POST.get("list", "")
        try:
            mailing_list = _mailing_list_or_none(mailing_lists, list_id)
            importing.contact_import_configure(
                contact_import=contact_import,
                mapping=mapping,
                tags=tags,
                mailing_list=mailing_list,
            )
        except ApplicationError as exc:
            error = exc.message
        else:
            messages.success(request, _("The import has started."))
            return redirect("import-detail", pk=contact_import.pk)
        selected = mapping
    else:
        selected = importing.suggest_mapping(headers)
    samples = importing.contact_import_samples(contact_import)
    columns = [
        {
            "index": index,
            "header": header,
            "samples": samples.get(header, []),
            "selected": selected.get(header, ""),
            "attribute": f"{importing.ATTRIBUTE_PREFIX}{_attribute_key(header)}",
        }
        for index, header in enumerate(headers)
    ]
    return render(
        request,
        "contacts/imports/mapping.html",
        {
            "contact_import": contact_import,
            "columns": columns,
            "targets": list(TARGET_LABELS.items()),
            "mailing_lists": mailing_lists,
            "error": error,
            "tags": request.POST.get("tags", ""),
            "selected_list": request.POST.get("list", ""),
        },
    )


def _progress_context(contact_import: ContactImport) -> dict[str, object]:
    finished = importing.contact_import_is_finished(contact_import)
    percent = (
        min(100, contact_import.processed * 100 // contact_import.total)
        if contact_import.total
        else (100 if finished else 0)
    )
    return {"contact_import": contact_import, "finished": finished, "percent": percent}


@editor_view
def import_detail(request: HttpRequest, membership: Membership, pk: str) -> HttpResponse:
    contact_import = _import_or_404(membership, pk)
    if contact_import.status == ImportStatus.UPLOADED:
        return redirect("import-mapping", pk=contact_import.pk)
    errors, truncated = importing.contact_import_errors(contact_import, limit=ERRORS_SHOWN)
    context = {**_progress_context(contact_import), "errors": errors, "truncated": truncated}
    return render(request, "contacts/imports/detail.html", context)


@editor_view
def import_progress(request: HttpRequest, membership: Membership, pk: str) -> HttpResponse:
    """The progress fragment htmx polls every second; once finished, the page reloads once to
    show the bad rows, and the reloaded page no longer polls."""
    contact_import = _import_or_404(membership, pk)
    context = _progress_context(contact_import)
    response = render(request, "contacts/imports/_progress.html", context)
    if context["finished"] and request.headers.get("HX-Request"):
        response["HX-Refresh"] = "true"
    return response


@editor_view
def import_errors_csv(request: HttpRequest, membership: Membership, pk: str) -> HttpResponse:
    contact_import = _import_or_404(membership, pk)
    return _csv_response(
        csv_lines(import_errors_csv_rows(contact_import)),
        filename=f"import-errors-{contact_import.pk}.csv",
    )


@editor_view
def export_list_csv(request: HttpRequest, membership: Membership, pk: str) -> HttpResponse:
    """The list's subscribers (subscribed to the list and still subscribed) as CSV."""
    mailing_list = MailingList.objects.filter(workspace=membership.workspace, pk=pk).first()
    if mailing_list is None:
        raise Http404
    contacts = (
        Contact.objects.for_workspace(membership.workspace)
        .filter(
            status=ContactStatus.SUBSCRIBED,
            subscriptions__mailing_list=mailing_list,
            subscriptions__status=SubscriptionStatus.SUBSCRIBED,
        )
        .order_by("email", "pk")
    )
    filename = f"list-{slugify(mailing_list.name) or mailing_list.pk}.csv"
    return _csv_response(csv_lines(contacts_csv_rows(contacts)), filename=filename)


@editor_view
def export_segment_csv(request: HttpRequest, membership: Membership, pk: str) -> HttpResponse:
    """The segment's members now, as CSV."""
    segment = Segment.objects.filter(workspace=membership.workspace, pk=pk).first()
    if segment is None:
        raise Http404
    contacts = (
        segment_members(segment).filter(workspace=membership.workspace).order_by("email", "pk")
    )
    filename = f"segment-{slugify(segment.name) or segment.pk}.csv"
    return _csv_response(csv_lines(contacts_csv_rows(contacts)), filename=filename)


urlpatterns: list[URLPattern | URLResolver] = [
    path("", import_upload, name="import-upload"),
    path("<uuid:pk>/", import_detail, name="import-detail"),
    path("<uuid:pk>/mapping/", import_mapping, name="import-mapping"),
    path("<uuid:pk>/progress/", import_progress, name="import-progress"),
    path("<uuid:pk>/errors.csv", import_errors_csv, name="import-errors-csv"),
    path("export/list/<uuid:pk>/", export_list_csv, name="export-list-csv"),
    path("export/segment/<uuid:pk>/", export_segment_csv, name="export-segment-csv"),
]
