"""Broadcast pages under /sequences/broadcasts/: the list, create and edit (audience, content,
when, local time, A/B test), and the detail page with its live progress bar (an htmx fragment
polled every 2 seconds until nothing is queued) and the send, pause and resume buttons.

Every change goes through campaigns.broadcasts, so the page and the API validate alike.
"""

from __future__ import annotations

import datetime as dt
import uuid
import zoneinfo
from typing import Any

from django import forms
from django.contrib import messages
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from django.views.decorators.http import require_POST

from campaigns import broadcasts
from campaigns.models import Broadcast, BroadcastStatus
from campaigns.views.utm import UtmFieldsForm
from contacts.models import MailingList, Segment
from core.durations import parse_duration
from core.exceptions import ApplicationError
from core.models import Membership, Role, Workspace
from core.permissions import workspace_view

DEFAULT_HTML = "<h1>Hello {{ contact.first_name | default('there') }}!</h1>\n<p></p>\n"
WHEN_CHOICES = [("now", gettext_lazy("Now")), ("at", gettext_lazy("At a time"))]
METRIC_CHOICES = [
    ("open_rate", gettext_lazy("Open rate (human opens)")),
    ("click_rate", gettext_lazy("Click rate (human clicks)")),
]
FORM_FIELDS = {
    "name": "name",
    "list": "audience",
    "segment": "audience",
    "subject": "subject",
    "html": "html",
    "variants": "variant_subject",
    "ab_test": "sample_percent",
    "send_at": "send_at",
    "utm": "utm_campaign",
}


def _zone(workspace: Workspace) -> dt.tzinfo:
    try:
        return zoneinfo.ZoneInfo(workspace.timezone or "UTC")
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return dt.UTC


class BroadcastForm(UtmFieldsForm):
    name = forms.CharField(label=gettext_lazy("Name"), max_length=150)
    audience = forms.ChoiceField(label=gettext_lazy("To"))
    subject = forms.CharField(label=gettext_lazy("Subject"), max_length=300)
    html = forms.CharField(
        label=gettext_lazy("HTML"), widget=forms.Textarea(attrs={"rows": 12, "class": "code"})
    )
    when = forms.ChoiceField(
        label=gettext_lazy("Send"), choices=WHEN_CHOICES, initial="now", widget=forms.RadioSelect
    )
    send_at = forms.DateTimeField(
        label=gettext_lazy("Send at"),
        required=False,
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}, format="%Y-%m-%dT%H:%M"),
        help_text=gettext_lazy("In the workspace's time zone."),
    )
    local_time = forms.BooleanField(
        label=gettext_lazy("At this time in each contact's own time zone"), required=False
    )
    ab_enabled = forms.BooleanField(label=gettext_lazy("A/B test a second version"), required=False)
    variant_subject = forms.CharField(
        label=gettext_lazy("Subject of version B"), max_length=300, required=False
    )
    variant_html = forms.CharField(
        label=gettext_lazy("HTML of version B"),
        required=False,
        widget=forms.Textarea(attrs={"rows": 8, "class": "code"}),
        help_text=gettext_lazy("Leave empty to test the subject only."),
    )
    sample_percent = forms.IntegerField(
        label=gettext_lazy("Sample size (% of the audience)"),
        min_value=1,
        max_value=50,
        initial=20,
        required=False,
    )
    metric = forms.ChoiceField(
        label=gettext_lazy("Winner by"), choices=METRIC_CHOICES, required=False
    )
    wait_hours = forms.IntegerField(
        label=gettext_lazy("Wait before choosing the winner (hours)"),
        min_value=1,
        max_value=168,
        initial=4,
        required=False,
    )

    def __init__(self, *args: Any, workspace: Workspace, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.workspace = workspace
        lists = [
            (f"list:{item.pk}", _("List: %(name)s") % {"name": item.name})
            for item in MailingList.objects.filter(workspace=workspace).order_by("name")
        ]
        segments = [
            (f"segment:{item.pk}", _("Segment: %(name)s") % {"name": item.name})
            for item in Segment.objects.filter(workspace=workspace).order_by("name")
        ]
        audience = self.fields["audience"]
        assert isinstance(audience, forms.ChoiceField)
        audience.choices = [("", "—"), *lists, *segments]

    @staticmethod
    def initial_for(broadcast: Broadcast) -> dict[str, Any]:
        zone = _zone(broadcast.workspace)
        audience = (
            f"list:{broadcast.mailing_list_id}"
            if broadcast.mailing_list_id
            else f"segment:{broadcast.segment_id}"
        )
        variant = (broadcast.variants or [{}])[0]
        ab_test = broadcast.ab_test or {}
        wait = ab_test.get("wait", "PT4H")
        return {
            "name": broadcast.name,
            "audience": audience,
            "subject": broadcast.subject,
            "html": broadcast.html,
            "when": "at" if broadcast.send_at else "now",
            "send_at": broadcast.send_at.astimezone(zone).replace(tzinfo=None)
            if broadcast.send_at
            else None,
            "local_time": broadcast.local_time,
            "ab_enabled": bool(broadcast.ab_test),
            "variant_subject": variant.get("subject", ""),
            "variant_html": variant.get("html", ""),
            "sample_percent": ab_test.get("sample_percent", 20),
            "metric": ab_test.get("metric", "open_rate"),
            "wait_hours": _hours(wait),
            **UtmFieldsForm.utm_initial(broadcast.utm),
        }

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if data.get("when") == "at" and not data.get("send_at"):
            self.add_error("send_at", _("Choose when to send."))
        if data.get("ab_enabled"):
            if not data.get("variant_subject"):
                self.add_error("variant_subject", _("This field is required."))
            for field in ("sample_percent", "wait_hours"):
                if data.get(field) is None:
                    self.add_error(field, _("This field is required."))
        return data

    def service_arguments(self) -> dict[str, Any]:
        data = self.cleaned_data
        kind, _sep, pk = str(data["audience"]).partition(":")
        mailing_list = (
            MailingList.objects.filter(workspace=self.workspace, pk=pk).first()
            if kind == "list"
            else None
        )
        segment = (
            Segment.objects.filter(workspace=self.workspace, pk=pk).first()
            if kind == "segment"
            else None
        )
        send_at = None
        if data["when"] == "at" and data["send_at"]:
            moment = data["send_at"]
            naive = moment.replace(tzinfo=None) if timezone.is_aware(moment) else moment
            send_at = naive.replace(tzinfo=_zone(self.workspace)).astimezone(dt.UTC)
        variants: list[dict[str, str]] = []
        ab_test = None
        if data["ab_enabled"]:
            variants = [
                {
                    "subject": data["variant_subject"],
                    "html": data["variant_html"] or data["html"],
                }
            ]
            ab_test = {
                "sample_percent": data["sample_percent"],
                "metric": data["metric"] or "open_rate",
                "wait": f"PT{data['wait_hours']}H",
            }
        return {
            "name": data["name"],
            "mailing_list": mailing_list,
            "segment": segment,
            "subject": data["subject"],
            "html": data["html"],
            "variants": variants,
            "send_at": send_at,
            "local_time": bool(data["local_time"]) and send_at is not None,
            "utm": self.utm_cleaned(),
            "ab_test": ab_test,
        }


def _hours(wait: str) -> int:
    try:
        return max(1, int(parse_duration(wait).total_seconds() // 3600))
    except ValueError:
        return 4


def _broadcast_or_404(membership: Membership, pk: uuid.UUID) -> Broadcast:
    return get_object_or_404(
        Broadcast.objects.select_related("workspace", "mailing_list", "segment__workspace"),
        workspace=membership.workspace,
        pk=pk,
    )


@workspace_view()
def broadcast_index(request: HttpRequest, membership: Membership) -> HttpResponse:
    rows = list(
        Broadcast.objects.filter(workspace=membership.workspace)
        .select_related("mailing_list", "segment")
        .order_by("-created_at")
    )
    return render(
        request,
        "campaigns/broadcasts/list.html",
        {"broadcasts": rows, "can_edit": membership.allows(Role.EDITOR)},
    )


def _save(
    request: HttpRequest, membership: Membership, broadcast: Broadcast | None
) -> HttpResponse:
    initial = BroadcastForm.initial_for(broadcast) if broadcast else {"html": DEFAULT_HTML}
    form = BroadcastForm(request.POST or None, workspace=membership.workspace, initial=initial)
    if request.method == "POST" and form.is_valid():
        try:
            if broadcast is None:
                broadcast = broadcasts.broadcast_create(
                    workspace=membership.workspace, **form.service_arguments()
                )
            else:
                broadcast = broadcasts.broadcast_update(
                    broadcast=broadcast, **form.service_arguments()
                )
        except ApplicationError as exc:
            form.add_error(FORM_FIELDS.get(exc.field or ""), exc.message)
        else:
            messages.success(request, _("Broadcast saved. Send it when you are ready."))
            return redirect("broadcast-detail", pk=broadcast.pk)
    return render(request, "campaigns/broadcasts/form.html", {"form": form, "broadcast": broadcast})


@workspace_view(read=Role.EDITOR)
def broadcast_create(request: HttpRequest, membership: Membership) -> HttpResponse:
    return _save(request, membership, None)


@workspace_view(read=Role.EDITOR)
def broadcast_edit(request: HttpRequest, membership: Membership, pk: uuid.UUID) -> HttpResponse:
    broadcast = _broadcast_or_404(membership, pk)
    if broadcast.status != BroadcastStatus.DRAFT:
        messages.error(request, _("Only a draft broadcast can be changed."))
        return redirect("broadcast-detail", pk=broadcast.pk)
    return _save(request, membership, broadcast)


def _progress_context(broadcast: Broadcast) -> dict[str, Any]:
    report = broadcasts.broadcast_report(broadcast)
    return {
        "broadcast": broadcast,
        "report": report,
        # Polling stops once nothing more will happen without a click (sent, paused, draft).
        "running": broadcast.status in (BroadcastStatus.SCHEDULED, BroadcastStatus.SENDING),
    }


@workspace_view()
def broadcast_detail(request: HttpRequest, membership: Membership, pk: uuid.UUID) -> HttpResponse:
    broadcast = _broadcast_or_404(membership, pk)
    context = _progress_context(broadcast)
    context["can_edit"] = membership.allows(Role.EDITOR)
    return render(request, "campaigns/broadcasts/detail.html", context)


@workspace_view()
def broadcast_progress(request: HttpRequest, membership: Membership, pk: uuid.UUID) -> HttpResponse:
    broadcast = _broadcast_or_404(membership, pk)
    return render(request, "campaigns/broadcasts/_progress.html", _progress_context(broadcast))


def _action(request: HttpRequest, broadcast: Broadcast, action: str) -> HttpResponse:
    try:
        if action == "send":
            broadcasts.broadcast_start(broadcast=broadcast, now=timezone.now())
            messages.success(request, _("The broadcast is on its way."))
        elif action == "pause":
            broadcasts.broadcast_pause(broadcast=broadcast)
            messages.success(request, _("Paused. Nothing more goes out until you resume."))
        else:
            broadcasts.broadcast_resume(broadcast=broadcast)
            messages.success(request, _("Resumed."))
    except ApplicationError as exc:
        messages.error(request, exc.message)
    return redirect("broadcast-detail", pk=broadcast.pk)


@require_POST
@workspace_view()
def broadcast_send(request: HttpRequest, membership: Membership, pk: uuid.UUID) -> HttpResponse:
    return _action(request, _broadcast_or_404(membership, pk), "send")


@require_POST
@workspace_view()
def broadcast_pause(request: HttpRequest, membership: Membership, pk: uuid.UUID) -> HttpResponse:
    return _action(request, _broadcast_or_404(membership, pk), "pause")


@require_POST
@workspace_view()
def broadcast_resume(request: HttpRequest, membership: Membership, pk: uuid.UUID) -> HttpResponse:
    return _action(request, _broadcast_or_404(membership, pk), "resume")
