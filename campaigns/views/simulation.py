"""The "Test drive" page of a sequence: run a real or hypothetical contact through it on a
virtual clock (campaigns.simulation) and show the timeline. It changes nothing, so viewers may
run it (the POST only computes)."""

from __future__ import annotations

import re
import uuid
import zoneinfo
from typing import Any

from django import forms
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from campaigns.models import Sequence
from campaigns.simulation import SimulatedItem, simulate
from contacts.models import Contact, ContactStatus
from core.exceptions import ApplicationError
from core.models import Membership, Role
from core.permissions import workspace_view
from funnel.models import Stage

REACTION_ROWS = 3
REACTION_FIELD = re.compile(r"^reactions\[(\d+)\]\.(step|event|after)$")


def _reaction_events(sequence: Sequence) -> list[tuple[str, str]]:
    """What a reaction can be: a mail's open or click, and the events and stages the
    sequence's wait_for steps wait for."""
    choices: list[tuple[str, str]] = [
        ("opened", _("opened the mail")),
        ("clicked", _("clicked in the mail")),
        ("clicked_url", _("clicked the awaited link")),
    ]
    stage_ids = set()
    for step in sequence.steps:
        if step.get("type") != "wait_for":
            continue
        ((what, value),) = step["event"].items()
        if what == "event" and (f"event:{value}", "") not in choices:
            choices.append((f"event:{value}", _("event “%(name)s”") % {"name": value}))
        elif what == "stage":
            stage_ids.add(str(value))
    for goal in sequence.exit_on or []:
        value = f"event:{goal.get('name')}"
        if all(value != choice for choice, _label in choices):
            choices.append((value, _("goal event “%(name)s”") % {"name": goal.get("name")}))
    if stage_ids:
        for stage_id, name in Stage.objects.filter(pk__in=stage_ids).values_list("pk", "name"):
            choices.append((f"stage:{stage_id}", _("reached stage %(name)s") % {"name": name}))
    return choices


class TestDriveForm(forms.Form):
    contact_email = forms.EmailField(
        label=gettext_lazy("Real contact (email)"),
        required=False,
        help_text=gettext_lazy("Leave empty to drive a hypothetical contact."),
    )
    first_name = forms.CharField(label=gettext_lazy("First name"), required=False, max_length=150)
    timezone = forms.ChoiceField(label=gettext_lazy("Time zone"), required=False)
    status = forms.ChoiceField(
        label=gettext_lazy("Status"),
        choices=ContactStatus.choices,
        initial=ContactStatus.SUBSCRIBED,
    )
    tags = forms.CharField(
        label=gettext_lazy("Tags"),
        required=False,
        help_text=gettext_lazy("Separated by commas."),
    )
    start = forms.DateTimeField(
        label=gettext_lazy("Start (UTC)"),
        required=False,
        widget=forms.DateTimeInput(attrs={"type": "datetime-local"}),
    )

    def __init__(self, *args: Any, sequence: Sequence, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sequence = sequence
        timezone_field = self.fields["timezone"]
        assert isinstance(timezone_field, forms.ChoiceField)
        timezone_field.choices = [("", _("The workspace's time zone"))] + [
            (name, name) for name in sorted(zoneinfo.available_timezones())
        ]
        email_steps = [
            (step["key"], f"{step['key']} — {step.get('subject', '')}")
            for step in sequence.steps
            if step.get("type") == "email"
        ]
        events = _reaction_events(sequence)
        self.reaction_rows: list[tuple[str, str, str]] = []
        for index in range(REACTION_ROWS):
            names = (f"reaction_step_{index}", f"reaction_event_{index}", f"reaction_after_{index}")
            self.fields[names[0]] = forms.ChoiceField(
                label=_("Step"), required=False, choices=[("", "—"), *email_steps]
            )
            self.fields[names[1]] = forms.ChoiceField(
                label=_("Reaction"), required=False, choices=[("", "—"), *events]
            )
            self.fields[names[2]] = forms.CharField(
                label=_("After"),
                required=False,
                max_length=30,
                widget=forms.TextInput(attrs={"placeholder": "PT2H"}),
            )
            self.reaction_rows.append(names)

    def reaction_fields(self) -> list[list[forms.BoundField]]:
        return [[self[name] for name in row] for row in self.reaction_rows]

    def reactions(self) -> tuple[list[dict[str, Any]], list[int]]:
        """The filled rows as API reactions, and the row index of each."""
        reactions, rows = [], []
        for index, (step, event, after) in enumerate(self.reaction_rows):
            if not self.cleaned_data.get(event):
                continue
            reactions.append(
                {
                    "step": self.cleaned_data.get(step) or "",
                    "event": self.cleaned_data[event],
                    "after": self.cleaned_data.get(after) or "PT0S",
                }
            )
            rows.append(index)
        return reactions, rows

    def profile(self) -> dict[str, Any]:
        tags = [tag.strip() for tag in self.cleaned_data.get("tags", "").split(",") if tag.strip()]
        profile: dict[str, Any] = {"status": self.cleaned_data["status"], "tags": tags}
        if self.cleaned_data.get("first_name"):
            profile["first_name"] = self.cleaned_data["first_name"]
        if self.cleaned_data.get("timezone"):
            profile["timezone"] = self.cleaned_data["timezone"]
        return profile


def _form_field(field: str | None, rows: list[int]) -> str | None:
    """The page's field for a service error's field ("reactions[1].after" -> its row)."""
    match = REACTION_FIELD.match(field or "")
    if match and int(match.group(1)) < len(rows):
        return f"reaction_{match.group(2)}_{rows[int(match.group(1))]}"
    if field and field.startswith("profile."):
        name = field.removeprefix("profile.")
        return name if name in ("first_name", "timezone", "status", "tags") else None
    return None


@workspace_view(write=Role.VIEWER)
def sequence_test_drive(
    request: HttpRequest, membership: Membership, pk: uuid.UUID
) -> HttpResponse:
    sequence = get_object_or_404(
        Sequence.objects.select_related("workspace"), pk=pk, workspace=membership.workspace
    )
    form = TestDriveForm(request.POST or None, sequence=sequence)
    timeline: list[SimulatedItem] | None = None
    driven = ""
    if request.method == "POST" and form.is_valid():
        contact = None
        email = form.cleaned_data.get("contact_email")
        if email:
            contact = Contact.objects.filter(
                workspace=membership.workspace, email__iexact=email
            ).first()
            if contact is None:
                form.add_error("contact_email", _("No contact of this workspace has this email."))
        reactions, rows = form.reactions()
        if not form.errors:
            try:
                timeline = simulate(
                    sequence=sequence,
                    contact=contact,
                    profile=None if contact is not None else form.profile(),
                    reactions=reactions,
                    start=form.cleaned_data.get("start"),
                )
            except ApplicationError as exc:
                form.add_error(_form_field(exc.field, rows), exc.message)
            else:
                driven = contact.email if contact is not None else _("a hypothetical contact")
    return render(
        request,
        "campaigns/simulation.html",
        {
            "sequence": sequence,
            "form": form,
            "timeline": timeline,
            "driven": driven,
            "can_edit": membership.allows(Role.EDITOR),
        },
    )
