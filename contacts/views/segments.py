"""Segment pages under /contacts/segments/: list, create, edit with a live count, members."""

from __future__ import annotations

import json
from typing import Any

from django import forms
from django.contrib import messages
from django.core.exceptions import ValidationError
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import URLPattern, URLResolver, path, reverse
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from django.views.decorators.http import require_POST

from contacts import segments
from contacts.models import Contact, Segment
from core.exceptions import ApplicationError
from core.models import Membership
from core.permissions import workspace_view

MEMBERS_PER_PAGE = 25
MAX_FILTER_LENGTH = 100_000
EXAMPLE_FILTER: dict[str, Any] = {
    "all": [
        {"status": "subscribed"},
        {"field": "attributes.city", "op": "eq", "value": "Berlin"},
    ]
}


def _filter_text(value: dict[str, Any]) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False)


class SegmentFilterForm(forms.Form):
    """The filter as JSON text, as the edit page and its live count send it."""

    filter = forms.CharField(
        label=gettext_lazy("Filter"),
        max_length=MAX_FILTER_LENGTH,
        strip=False,
        error_messages={"required": gettext_lazy("Enter a filter.")},
        widget=forms.Textarea(
            attrs={
                "rows": 16,
                "spellcheck": "false",
                "autocomplete": "off",
                "style": "font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace;"
                " font-size: .85rem",
            }
        ),
        help_text=gettext_lazy(
            "JSON, as in the API. The reference beside the editor lists it all."
        ),
    )

    def clean_filter(self) -> dict[str, Any]:
        text = self.cleaned_data["filter"]
        try:
            parsed = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValidationError(
                _("Not valid JSON (line %(line)d, column %(column)d): %(reason)s")
                % {"line": exc.lineno, "column": exc.colno, "reason": exc.msg}
            ) from exc
        return segments.segment_filter_validate(parsed)


class SegmentForm(SegmentFilterForm):
    name = forms.CharField(label=gettext_lazy("Name"), max_length=150)

    field_order = ["name", "filter"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # Typing in the editor asks for the live count; htmx sends the whole form along.
        self.fields["filter"].widget.attrs.update(
            {
                "hx-post": reverse("segment-count"),
                "hx-trigger": "input changed delay:400ms",
                "hx-target": "#segment-count",
                "hx-swap": "innerHTML",
                "aria-describedby": "segment-count",
            }
        )


def _segment_or_404(membership: Membership, pk: str) -> Segment:
    try:
        return segments.segment_get(workspace=membership.workspace, segment_id=pk)
    except Segment.DoesNotExist as exc:
        raise Http404 from exc


def _count_context(membership: Membership, form: SegmentFilterForm) -> dict[str, Any]:
    """The live count fragment's context: a number, or the first error of the filter."""
    if form.is_valid():
        count = segments.segment_count(
            workspace=membership.workspace, filter=form.cleaned_data["filter"]
        )
        return {"count": count, "count_error": None}
    errors = form.errors.get("filter") or [_("Enter a filter.")]
    return {"count": None, "count_error": errors[0]}


@workspace_view()
def segment_index(request: HttpRequest, membership: Membership) -> HttpResponse:
    page = Paginator(segments.segment_list(workspace=membership.workspace), 50).get_page(
        request.GET.get("page")
    )
    counts = segments.segment_counts(workspace=membership.workspace, segments=list(page))
    rows = [(segment, counts.get(segment.pk)) for segment in page]
    return render(
        request, "contacts/segments/segment_list.html", {"page": page, "rows": rows, "query": ""}
    )


@workspace_view()
def segment_detail(request: HttpRequest, membership: Membership, pk: str) -> HttpResponse:
    segment = _segment_or_404(membership, pk)
    filter_error = None
    try:
        members = segments.segment_members(segment).prefetch_related("tags")
    except ValidationError as exc:
        # a stored filter can stop validating when the app providing a condition goes away
        members = Contact.objects.none()
        filter_error = exc.messages[0]
    page = Paginator(members, MEMBERS_PER_PAGE).get_page(request.GET.get("page"))
    return render(
        request,
        "contacts/segments/segment_detail.html",
        {
            "segment": segment,
            "page": page,
            "query": "",
            "filter_text": _filter_text(segment.filter),
            "filter_error": filter_error,
        },
    )


def _save(request: HttpRequest, membership: Membership, segment: Segment | None) -> HttpResponse:
    initial = (
        {"name": segment.name, "filter": _filter_text(segment.filter)}
        if segment
        else {"filter": _filter_text(EXAMPLE_FILTER)}
    )
    form = SegmentForm(request.POST or None, initial=initial)
    if request.method == "POST" and form.is_valid():
        try:
            if segment is None:
                segment = segments.segment_create(
                    workspace=membership.workspace,
                    name=form.cleaned_data["name"],
                    filter=form.cleaned_data["filter"],
                )
                messages.success(request, _("Segment %(name)s created.") % {"name": segment.name})
            else:
                segments.segment_update(
                    segment=segment,
                    name=form.cleaned_data["name"],
                    filter=form.cleaned_data["filter"],
                )
                messages.success(request, _("Segment saved."))
        except ValidationError as exc:
            form.add_error(None, exc)
        except ApplicationError as exc:
            form.add_error(None, exc.message)
        else:
            return redirect("segment-detail", pk=segment.pk)
    if request.method == "POST":
        count_form = SegmentFilterForm({"filter": request.POST.get("filter", "")})
    else:
        count_form = SegmentFilterForm({"filter": initial["filter"]})
    context = {"form": form, "segment": segment, **_count_context(membership, count_form)}
    return render(request, "contacts/segments/segment_form.html", context)


@workspace_view(read="editor")
def segment_create(request: HttpRequest, membership: Membership) -> HttpResponse:
    return _save(request, membership, None)


@workspace_view(read="editor")
def segment_edit(request: HttpRequest, membership: Membership, pk: str) -> HttpResponse:
    return _save(request, membership, _segment_or_404(membership, pk))


@workspace_view(read="editor")
def segment_delete(request: HttpRequest, membership: Membership, pk: str) -> HttpResponse:
    segment = _segment_or_404(membership, pk)
    if request.method == "POST":
        name = segment.name
        try:
            segments.segment_delete(segment=segment)
        except ApplicationError as exc:
            messages.error(request, exc.message)
            return redirect("segment-detail", pk=segment.pk)
        messages.success(request, _("Segment %(name)s deleted.") % {"name": name})
        return redirect("segment-list")
    return render(request, "contacts/segments/segment_confirm_delete.html", {"segment": segment})


# A POST that changes nothing: whoever may read contacts may count them.
@require_POST
@workspace_view(write="viewer")
def segment_count(request: HttpRequest, membership: Membership) -> HttpResponse:
    form = SegmentFilterForm({"filter": request.POST.get("filter", "")})
    return render(
        request, "contacts/segments/_segment_count.html", _count_context(membership, form)
    )


urlpatterns: list[URLPattern | URLResolver] = [
    path("", segment_index, name="segment-list"),
    path("new/", segment_create, name="segment-create"),
    path("count/", segment_count, name="segment-count"),
    path("<uuid:pk>/", segment_detail, name="segment-detail"),
    path("<uuid:pk>/edit/", segment_edit, name="segment-edit"),
    path("<uuid:pk>/delete/", segment_delete, name="segment-delete"),
]
