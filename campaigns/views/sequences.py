"""Sequence pages under /sequences/: the list, "new sequence", settings, and the builder (the
flow diagram, the ordered steps with their connections, a form per step type, the email editor
with its live preview and the test mail to oneself).

Every change of the steps goes through campaigns.services.sequence_update, so the page and
the API validate alike; a refused change shows the service's message (naming the step) next to
the user's input, which is kept.
"""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

from django import forms
from django.contrib import messages
from django.core.exceptions import ValidationError
from django.core.mail import EmailMultiAlternatives
from django.db.models import Count, Q
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.safestring import mark_safe
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from django.views.decorators.http import require_POST

from campaigns import services
from campaigns.diagram import duration_words, sequence_svg, step_summary, step_type_label
from campaigns.graph import KEY, STEP_TYPES, TRIGGER_TYPES
from campaigns.models import EnrollmentStatus, Reentry, Sequence, SequenceStatus
from campaigns.step_webhooks import step_webhook_summaries
from campaigns.views.utm import UtmFieldsForm
from contacts.mails import sender_of
from contacts.models import Contact, MailingList, Segment
from core.durations import parse_duration
from core.exceptions import ApplicationError
from core.mail import tag_workspace
from core.models import Membership, Role
from core.permissions import workspace_view
from funnel.models import Funnel, Stage

NEXT_TYPES = ("email", "wait", "move_stage", "add_tag", "remove_tag", "set_attribute", "webhook")
BRANCH_TYPES = ("wait_for", "condition")
SPLIT_PATHS = 4
# A/B variants per email step: enough for an A/B/C/... test, few enough to read the results.
MAX_VARIANTS = 10
VARIANTS_PREFIX = "variants"
START = "__start__"
DEFAULT_HTML = (
    "<h1>Hello {{ contact.first_name | default('there') }}!</h1>\n"
    "<p>Thanks for signing up. Here is what comes next.</p>\n"
)
UNITS = [
    ("minutes", gettext_lazy("minutes")),
    ("hours", gettext_lazy("hours")),
    ("days", gettext_lazy("days")),
    ("weeks", gettext_lazy("weeks")),
]
WEEKDAYS = [
    (0, gettext_lazy("Mon")),
    (1, gettext_lazy("Tue")),
    (2, gettext_lazy("Wed")),
    (3, gettext_lazy("Thu")),
    (4, gettext_lazy("Fri")),
    (5, gettext_lazy("Sat")),
    (6, gettext_lazy("Sun")),
]
TRIGGER_LABELS = {
    "list_confirmed": gettext_lazy("Someone confirms a list"),
    "event": gettext_lazy("An event happens"),
    "stage_entered": gettext_lazy("A contact enters a stage"),
    "stalled": gettext_lazy("A contact stays in a stage too long"),
    "segment": gettext_lazy("A contact enters a segment"),
    "manual": gettext_lazy("Manually or through the API"),
}
WAIT_FOR_WHAT = [
    ("opened", gettext_lazy("opened an email")),
    ("clicked", gettext_lazy("clicked in an email")),
    ("clicked_url", gettext_lazy("clicked a given link")),
    ("event", gettext_lazy("an event")),
    ("stage", gettext_lazy("reached a stage")),
]


# --- small helpers


def _sequence_or_404(membership: Membership, pk: uuid.UUID) -> Sequence:
    return get_object_or_404(
        Sequence.objects.select_related("funnel"), pk=pk, workspace=membership.workspace
    )


def _stages_of(sequence: Sequence) -> list[Stage]:
    return list(Stage.objects.filter(funnel_id=sequence.funnel_id)) if sequence.funnel_id else []


def _stage_names(stages: list[Stage]) -> dict[str, str]:
    return {str(stage.pk): stage.name for stage in stages}


def _iso_duration(amount: int, unit: str) -> str:
    if unit == "weeks":
        return f"P{amount}W"
    if unit == "days":
        return f"P{amount}D"
    if unit == "hours":
        return f"PT{amount}H"
    return f"PT{amount}M"


def _amount_and_unit(text: Any) -> tuple[int | None, str]:
    """ "P2D" -> (2, "days"): how a stored duration shows in the amount + unit fields."""
    try:
        delta = parse_duration(str(text))
    except ValueError:
        return None, "days"
    seconds = int(delta.total_seconds())
    if seconds and seconds % (7 * 86400) == 0:
        return seconds // (7 * 86400), "weeks"
    if seconds and seconds % 86400 == 0:
        return seconds // 86400, "days"
    if seconds and seconds % 3600 == 0:
        return seconds // 3600, "hours"
    return max(seconds // 60, 1), "minutes"


def _fresh_key(steps: list[dict[str, Any]], kind: str) -> str:
    taken = {step.get("key") for step in steps}
    number = 1
    while f"{kind}_{number}" in taken:
        number += 1
    return f"{kind}_{number}"


def trigger_words(sequence: Sequence, names: dict[str, str]) -> str:
    """ "When someone confirms the list “Newsletter”" and the like."""
    trigger = sequence.trigger or {}
    kind = trigger.get("type")
    if kind == "list_confirmed":
        return _("When someone confirms the list “%(name)s”") % {
            "name": names.get(str(trigger.get("list")), "?")
        }
    if kind == "event":
        return _("When the event “%(name)s” happens") % {"name": trigger.get("name", "")}
    if kind == "stage_entered":
        return _("When a contact enters the stage “%(name)s”") % {
            "name": names.get(str(trigger.get("stage")), "?")
        }
    if kind == "stalled":
        return _("When a contact stays in “%(name)s” for %(duration)s") % {
            "name": names.get(str(trigger.get("stage")), "?"),
            "duration": duration_words(trigger.get("after", "")),
        }
    if kind == "segment":
        return _("When a contact enters the segment “%(name)s”") % {
            "name": names.get(str(trigger.get("segment")), "?")
        }
    return _("Manually or through the API")


def _trigger_names(workspace_id: Any) -> dict[str, str]:
    names = {
        str(pk): name
        for pk, name in MailingList.objects.filter(workspace_id=workspace_id).values_list(
            "pk", "name"
        )
    }
    names.update(
        (str(pk), name)
        for pk, name in Segment.objects.filter(workspace_id=workspace_id).values_list("pk", "name")
    )
    names.update(
        (str(pk), name)
        for pk, name in Stage.objects.filter(funnel__workspace_id=workspace_id).values_list(
            "pk", "name"
        )
    )
    return names


# --- the sequence form (create and settings)


class SequenceForm(UtmFieldsForm):
    name = forms.CharField(label=gettext_lazy("Name"), max_length=150)
    funnel = forms.ChoiceField(
        label=gettext_lazy("Funnel"),
        required=False,
        help_text=gettext_lazy("Emails can be tagged with its stages; steps can move contacts."),
    )
    trigger_type = forms.ChoiceField(
        label=gettext_lazy("Starts when"),
        choices=[(kind, TRIGGER_LABELS[kind]) for kind in TRIGGER_TYPES],
        initial="manual",
    )
    trigger_list = forms.ChoiceField(label=gettext_lazy("List"), required=False)
    trigger_event = forms.CharField(
        label=gettext_lazy("Event name"),
        required=False,
        max_length=100,
        widget=forms.TextInput(attrs={"placeholder": "demo_booked"}),
    )
    trigger_stage = forms.ChoiceField(
        label=gettext_lazy("Stage"),
        required=False,
        help_text=gettext_lazy("A stage of the sequence's funnel."),
    )
    trigger_after_days = forms.IntegerField(
        label=gettext_lazy("Stalled after (days)"), required=False, min_value=1, max_value=3650
    )
    trigger_segment = forms.ChoiceField(label=gettext_lazy("Segment"), required=False)
    reentry = forms.ChoiceField(
        label=gettext_lazy("Re-entry"), choices=Reentry.choices, initial=Reentry.NEVER
    )
    window_days = forms.TypedMultipleChoiceField(
        label=gettext_lazy("Send on"),
        choices=WEEKDAYS,
        coerce=int,
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text=gettext_lazy("No day ticked: mails go out at any time."),
    )
    window_start = forms.CharField(
        label=gettext_lazy("from"),
        required=False,
        initial="09:00",
        widget=forms.TimeInput(attrs={"type": "time"}),
    )
    window_end = forms.CharField(
        label=gettext_lazy("until"),
        required=False,
        initial="18:00",
        widget=forms.TimeInput(attrs={"type": "time"}),
        help_text=gettext_lazy("In each contact's own time zone."),
    )
    exit_event = forms.CharField(
        label=gettext_lazy("Goal (event name)"),
        required=False,
        max_length=500,
        help_text=gettext_lazy(
            "When the contact does this (e.g. purchase), the run ends as converted. "
            "Separate several with commas."
        ),
    )

    def __init__(self, *args: Any, membership: Membership, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        workspace = membership.workspace
        funnels = list(Funnel.objects.filter(workspace=workspace).prefetch_related("stages"))
        self.funnels = {str(funnel.pk): funnel for funnel in funnels}
        none: list[tuple[str, str]] = [("", "—")]
        self._set_choices("funnel", none + [(str(f.pk), f.name) for f in funnels])
        self._set_choices(
            "trigger_list",
            none
            + [
                (str(pk), name)
                for pk, name in MailingList.objects.filter(workspace=workspace)
                .order_by("name")
                .values_list("pk", "name")
            ],
        )
        self._set_choices(
            "trigger_segment",
            none
            + [
                (str(pk), name)
                for pk, name in Segment.objects.filter(workspace=workspace)
                .order_by("name")
                .values_list("pk", "name")
            ],
        )
        grouped: list[Any] = [("", "—")]
        for funnel in funnels:
            grouped.append((funnel.name, [(str(s.pk), s.name) for s in funnel.stages.all()]))
        self._set_choices("trigger_stage", grouped)

    def _set_choices(self, name: str, choices: list[Any]) -> None:
        field = self.fields[name]
        assert isinstance(field, forms.ChoiceField)
        field.choices = choices

    @staticmethod
    def initial_for(sequence: Sequence) -> dict[str, Any]:
        trigger = sequence.trigger or {}
        window = sequence.send_window or {}
        after, _unit = _amount_and_unit(trigger.get("after", ""))
        return {
            "name": sequence.name,
            "funnel": str(sequence.funnel_id or ""),
            "trigger_type": trigger.get("type", "manual"),
            "trigger_list": str(trigger.get("list", "")),
            "trigger_event": trigger.get("name", ""),
            "trigger_stage": str(trigger.get("stage", "")),
            "trigger_after_days": int(parse_duration(trigger["after"]).days)
            if trigger.get("after") and after
            else None,
            "trigger_segment": str(trigger.get("segment", "")),
            "reentry": sequence.reentry,
            "window_days": window.get("days", []),
            "window_start": window.get("start", "09:00"),
            "window_end": window.get("end", "18:00"),
            "exit_event": ", ".join(goal["name"] for goal in sequence.exit_on or []),
            **UtmFieldsForm.utm_initial(sequence.utm),
        }

    def service_arguments(self) -> dict[str, Any]:
        data = self.cleaned_data
        kind = data["trigger_type"]
        trigger: dict[str, Any] = {"type": kind}
        if kind == "list_confirmed":
            trigger["list"] = data["trigger_list"]
        elif kind == "event":
            trigger["name"] = data["trigger_event"].strip()
        elif kind in ("stage_entered", "stalled"):
            trigger["stage"] = data["trigger_stage"]
            if kind == "stalled":
                trigger["after"] = f"P{data['trigger_after_days'] or 0}D"
        elif kind == "segment":
            trigger["segment"] = data["trigger_segment"]
        window = None
        if data["window_days"]:
            window = {
                "days": data["window_days"],
                "start": data["window_start"][:5],
                "end": data["window_end"][:5],
            }
        goals = [name.strip() for name in data["exit_event"].split(",") if name.strip()]
        return {
            "name": data["name"],
            "funnel": self.funnels.get(data["funnel"]),
            "trigger": trigger,
            "reentry": data["reentry"],
            "send_window": window,
            "exit_on": [{"type": "event", "name": name} for name in goals],
            "utm": self.utm_cleaned(),
        }


# --- the step form: one form, the fields of the step's type


TYPE_FIELDS: dict[str, tuple[str, ...]] = {
    "email": ("subject", "html", "text", "from_name", "stage", "next"),
    "wait": ("wait_amount", "wait_unit", "until", "next"),
    "wait_for": (
        "what",
        "about_step",
        "url",
        "event_name",
        "stage",
        "timeout_amount",
        "timeout_unit",
        "yes",
        "no",
    ),
    "condition": ("rule", "yes", "no"),
    "split": tuple(
        f"path_{n}_{part}" for n in range(1, SPLIT_PATHS + 1) for part in ("weight", "next")
    ),
    "move_stage": ("stage", "next"),
    "add_tag": ("tag", "next"),
    "remove_tag": ("tag", "next"),
    "set_attribute": ("attribute", "value", "next"),
    "webhook": ("url", "next"),
    "exit": (),
}
CONNECTION_FIELDS = (
    "next",
    "yes",
    "no",
    *tuple(f"path_{n}_next" for n in range(1, SPLIT_PATHS + 1)),
)


def _connection_field(label: Any) -> forms.CharField:
    # A select of the step keys, but a CharField: a key that does not exist is handed to the
    # service (whose message names the step) and shown again, not silently dropped.
    return forms.CharField(label=label, required=False, max_length=100, widget=forms.Select)


class StepForm(forms.Form):
    key = forms.CharField(
        label=gettext_lazy("Key"),
        required=False,
        max_length=100,
        help_text=gettext_lazy("Letters, digits, _ and -. Left empty, one is made up."),
    )
    after = forms.CharField(label=gettext_lazy("Place"), required=False, widget=forms.Select)
    subject = forms.CharField(label=gettext_lazy("Subject"), required=False, max_length=500)
    html = forms.CharField(
        label=gettext_lazy("HTML"),
        required=False,
        widget=forms.Textarea(attrs={"rows": 14, "spellcheck": "false", "class": "code"}),
        help_text=gettext_lazy(
            "Jinja2 template: {{ contact.first_name }}, {{ contact.email }}, "
            "{{ contact.attributes.plan }}, {{ workspace.name }}. The footer with your postal "
            "address and the unsubscribe link is added to every mail."
        ),
    )
    text = forms.CharField(
        label=gettext_lazy("Plain text (optional)"),
        required=False,
        widget=forms.Textarea(attrs={"rows": 4, "spellcheck": "false", "class": "code"}),
        help_text=gettext_lazy("Left empty, it is made from the HTML."),
    )
    from_name = forms.CharField(label=gettext_lazy("From name"), required=False, max_length=120)
    stage = forms.ChoiceField(label=gettext_lazy("Funnel stage"), required=False)
    wait_amount = forms.IntegerField(
        label=gettext_lazy("Wait"), required=False, min_value=1, max_value=100_000
    )
    wait_unit = forms.ChoiceField(
        label=gettext_lazy("Unit"), choices=UNITS, initial="days", required=False
    )
    until = forms.CharField(
        label=gettext_lazy("or until (local time)"),
        required=False,
        widget=forms.TimeInput(attrs={"type": "time"}),
    )
    what = forms.ChoiceField(label=gettext_lazy("Wait until the contact"), choices=WAIT_FOR_WHAT)
    about_step = forms.ChoiceField(
        label=gettext_lazy("Email"), required=False, help_text=gettext_lazy("For opened/clicked.")
    )
    url = forms.URLField(
        label=gettext_lazy("URL"),
        required=False,
        max_length=2000,
        assume_scheme="https",
    )
    event_name = forms.CharField(label=gettext_lazy("Event name"), required=False, max_length=100)
    timeout_amount = forms.IntegerField(
        label=gettext_lazy("Give up after"), required=False, min_value=1, max_value=100_000
    )
    timeout_unit = forms.ChoiceField(
        label=gettext_lazy("Unit"), choices=UNITS, initial="days", required=False
    )
    rule = forms.CharField(
        label=gettext_lazy("If (segment condition as JSON)"),
        required=False,
        max_length=20_000,
        widget=forms.Textarea(
            attrs={
                "rows": 5,
                "spellcheck": "false",
                "class": "code",
                "placeholder": '{"field": "tag", "op": "eq", "value": "vip"}',
            }
        ),
    )
    tag = forms.CharField(label=gettext_lazy("Tag"), required=False, max_length=100)
    attribute = forms.CharField(label=gettext_lazy("Attribute"), required=False, max_length=100)
    value = forms.CharField(label=gettext_lazy("Value"), required=False, max_length=1000)
    next = _connection_field(gettext_lazy("Then"))
    yes = _connection_field(gettext_lazy("Yes →"))
    no = _connection_field(gettext_lazy("No →"))

    def __init__(
        self,
        *args: Any,
        kind: str,
        steps: list[dict[str, Any]],
        stages: list[Stage],
        own_key: str | None,
        adding: bool,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.kind = kind
        for number in range(1, SPLIT_PATHS + 1):
            self.fields[f"path_{number}_weight"] = forms.IntegerField(
                label=_("Path %(n)d weight") % {"n": number},
                required=False,
                min_value=1,
                max_value=1000,
            )
            self.fields[f"path_{number}_next"] = _connection_field(
                _("Path %(n)d leads to") % {"n": number}
            )
        keep = set(TYPE_FIELDS[kind]) | {"key"} | ({"after"} if adding else set())
        for name in list(self.fields):
            if name not in keep:
                del self.fields[name]
        if not adding:
            self.fields["key"].disabled = True
            self.fields["key"].help_text = ""
        keys = [step["key"] for step in steps if step.get("key") != own_key]
        for name in CONNECTION_FIELDS:
            if name in self.fields:
                choices = [("", _("— end here —"))] + [(key, key) for key in keys]
                posted = self.data.get(name) if self.is_bound else None
                if posted and posted not in keys:
                    choices.append((posted, posted))
                self.fields[name].widget.choices = choices
        if "stage" in self.fields:
            stage_field = self.fields["stage"]
            assert isinstance(stage_field, forms.ChoiceField)
            stage_field.choices = [("", _("— no stage —"))] + [
                (str(stage.pk), stage.name) for stage in stages
            ]
            if kind == "move_stage":
                stage_field.required = True
        if "about_step" in self.fields:
            about = self.fields["about_step"]
            assert isinstance(about, forms.ChoiceField)
            about.choices = [("", "—")] + [
                (step["key"], step["key"]) for step in steps if step.get("type") == "email"
            ]
        if "after" in self.fields:
            places = [(START, _("At the start (becomes the entry step)"))]
            places += [
                (step["key"], _("After %(key)s") % {"key": step["key"]})
                for step in steps
                if step.get("type") in NEXT_TYPES
            ]
            places.append(("", _("At the end, not connected (connect it yourself)")))
            self.fields["after"].widget.choices = places
        if kind == "email":
            self.fields["subject"].required = True
            self.fields["html"].required = True

    @staticmethod
    def initial_for(step: dict[str, Any]) -> dict[str, Any]:
        initial: dict[str, Any] = {"key": step.get("key", "")}
        kind = step.get("type")
        for name in ("subject", "html", "text", "from_name", "next", "yes", "no", "tag", "url"):
            if step.get(name) is not None:
                initial[name] = step[name]
        if step.get("stage") is not None:
            initial["stage"] = str(step["stage"])
        if kind == "wait":
            if "duration" in step:
                initial["wait_amount"], initial["wait_unit"] = _amount_and_unit(step["duration"])
            else:
                initial["until"] = step.get("until", "")
        elif kind == "wait_for":
            event = step.get("event") or {}
            what, value = next(iter(event.items())) if event else ("opened", "")
            initial["what"] = what
            if what in ("opened", "clicked"):
                initial["about_step"] = value
            elif what == "clicked_url" and isinstance(value, dict):
                initial["about_step"], initial["url"] = value.get("step", ""), value.get("url", "")
            elif what == "event":
                initial["event_name"] = value
            elif what == "stage":
                initial["stage"] = str(value)
            initial["timeout_amount"], initial["timeout_unit"] = _amount_and_unit(
                step.get("timeout", "")
            )
        elif kind == "condition":
            initial["rule"] = json.dumps(step.get("if", {}), indent=2, ensure_ascii=False)
        elif kind == "split":
            for number, path in enumerate(step.get("paths") or [], start=1):
                initial[f"path_{number}_weight"] = path.get("weight")
                initial[f"path_{number}_next"] = path.get("next") or ""
        elif kind == "set_attribute":
            initial["attribute"] = step.get("name", "")
            value = step.get("value", "")
            initial["value"] = value if isinstance(value, str) else json.dumps(value)
        return initial

    def clean_key(self) -> str:
        key = self.cleaned_data.get("key") or ""
        key = key.strip()
        if key and not KEY.match(key):
            raise ValidationError(_("Letters, digits, _ and - only (at most 100)."))
        return key

    def clean_rule(self) -> Any:
        text = self.cleaned_data.get("rule", "").strip()
        if not text:
            return None
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValidationError(
                _("Not valid JSON (line %(line)d, column %(column)d): %(reason)s")
                % {"line": exc.lineno, "column": exc.colno, "reason": exc.msg}
            ) from exc

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        if self.kind == "wait" and not cleaned.get("wait_amount") and not cleaned.get("until"):
            self.add_error("wait_amount", _("Give a duration or a local time."))
        if self.kind == "wait_for" and not cleaned.get("timeout_amount"):
            self.add_error("timeout_amount", _("Say how long to wait at most."))
        return cleaned

    def to_step(
        self, original: dict[str, Any], *, variants: list[dict[str, Any]] | None = None
    ) -> dict[str, Any]:
        """The step as the JSON of API.md (what the service validates); an email step's
        A/B variants are `variants` (none: the step has no variants)."""
        data = self.cleaned_data
        kind = self.kind
        step: dict[str, Any] = {"key": original.get("key") or data.get("key"), "type": kind}
        if kind == "email":
            step.update(subject=data["subject"], html=data["html"], stage=data["stage"] or None)
            if data["text"].strip():
                step["text"] = data["text"]
            if data["from_name"].strip():
                step["from_name"] = data["from_name"].strip()
            if variants:
                step["variants"] = variants
        elif kind == "wait":
            if data.get("wait_amount"):
                step["duration"] = _iso_duration(data["wait_amount"], data["wait_unit"] or "days")
            else:
                step["until"] = (data.get("until") or "")[:5]
        elif kind == "wait_for":
            what = data["what"]
            event: dict[str, Any]
            if what in ("opened", "clicked"):
                event = {what: data["about_step"]}
            elif what == "clicked_url":
                event = {"clicked_url": {"step": data["about_step"], "url": data["url"]}}
            elif what == "event":
                event = {"event": data["event_name"].strip()}
            else:
                event = {"stage": data["stage"]}
            step["event"] = event
            step["timeout"] = _iso_duration(
                data["timeout_amount"] or 0, data["timeout_unit"] or "days"
            )
        elif kind == "condition":
            step["if"] = data["rule"]
        elif kind == "split":
            step["paths"] = [
                {"weight": data[f"path_{n}_weight"], "next": data[f"path_{n}_next"] or None}
                for n in range(1, SPLIT_PATHS + 1)
                if data.get(f"path_{n}_weight") or data.get(f"path_{n}_next")
            ]
        elif kind == "move_stage":
            step["stage"] = data["stage"]
        elif kind in ("add_tag", "remove_tag"):
            step["tag"] = data["tag"].strip()
        elif kind == "set_attribute":
            step["name"] = data["attribute"].strip()
            step["value"] = data["value"]
        elif kind == "webhook":
            step["url"] = data["url"]
        if kind in NEXT_TYPES:
            step["next"] = data.get("next") or None
        if kind in BRANCH_TYPES:
            step["yes"] = data.get("yes") or None
            step["no"] = data.get("no") or None
        return step


# --- A/B variants of an email step


class VariantForm(forms.Form):
    """One A/B variant of an email step: a subject, HTML and a weight (API.md's shape).

    `origin` is the variant's position in the saved step, so keys the page does not edit
    (e.g. a "text" given through the API) survive a save from the builder.
    """

    subject = forms.CharField(label=gettext_lazy("Subject"), max_length=500)
    html = forms.CharField(
        label=gettext_lazy("HTML"),
        widget=forms.Textarea(attrs={"rows": 10, "spellcheck": "false", "class": "code"}),
    )
    weight = forms.IntegerField(
        label=gettext_lazy("Weight"),
        min_value=1,
        max_value=1000,
        initial=1,
        help_text=gettext_lazy("Its share is its weight over the sum of all weights."),
    )
    origin = forms.IntegerField(required=False, min_value=0, widget=forms.HiddenInput)

    def _template(self, name: str) -> str:
        from campaigns.rendering import check_template

        source = str(self.cleaned_data.get(name) or "")
        # Checked here, not only by the service, so the error sits at the variant it is in.
        try:
            check_template(source)
        except ApplicationError as exc:
            raise ValidationError(exc.message) from exc
        return source

    def clean_subject(self) -> str:
        return self._template("subject")

    def clean_html(self) -> str:
        return self._template("html")


VariantFormSet = forms.formset_factory(
    VariantForm,
    extra=0,
    max_num=MAX_VARIANTS,
    absolute_max=MAX_VARIANTS,
    validate_max=True,
)


def _variant_formset(
    *, data: Any = None, initial: list[dict[str, Any]] | None = None, preview_url: str
) -> Any:
    """The variants' forms; each field previews its own variant live (preview_variant = n)."""
    formset = VariantFormSet(data, initial=initial, prefix=VARIANTS_PREFIX)
    for number, form in enumerate(formset.forms, start=1):
        for name in ("subject", "html"):
            form.fields[name].widget.attrs.update(
                {
                    "hx-post": preview_url,
                    "hx-trigger": "input changed delay:500ms",
                    "hx-target": "#email-preview",
                    "hx-vals": json.dumps({"preview_variant": number}),
                }
            )
    return formset


def _saved_variants(step: dict[str, Any] | None) -> list[dict[str, Any]]:
    return [
        {
            "subject": variant.get("subject", ""),
            "html": variant.get("html", ""),
            "weight": variant.get("weight", 1),
            "origin": origin,
        }
        for origin, variant in enumerate((step or {}).get("variants") or [])
    ]


def _typed_variants(formset: Any) -> list[dict[str, Any]]:
    """What the variant forms hold as typed, valid or not (to show the page again)."""
    return [
        {name: form[name].value() for name in ("subject", "html", "weight", "origin")}
        for form in formset.forms
    ]


def _variants_of(formset: Any, original: dict[str, Any]) -> list[dict[str, Any]]:
    """The variants of a valid formset as the step JSON holds them, in the page's order."""
    saved = original.get("variants") or []
    variants = []
    for form in formset.forms:
        data = form.cleaned_data
        origin = data.get("origin")
        variant = dict(saved[origin]) if origin is not None and origin < len(saved) else {}
        variant.update(subject=data["subject"], html=data["html"], weight=data["weight"])
        variants.append(variant)
    return variants


def _posted_variants(post: Any) -> list[dict[str, Any]]:
    """The variants as posted to the preview (no validation: the renderer reports errors)."""
    try:
        total = int(post.get(f"{VARIANTS_PREFIX}-TOTAL_FORMS") or 0)
    except ValueError:
        total = 0
    return [
        {
            "subject": post.get(f"{VARIANTS_PREFIX}-{index}-subject", ""),
            "html": post.get(f"{VARIANTS_PREFIX}-{index}-html", ""),
            "weight": 1,
        }
        for index in range(max(0, min(total, MAX_VARIANTS)))
    ]


def _variant_shares(variants: list[dict[str, Any]]) -> list[int | None]:
    """Each variant's share of the mails in whole percent (None while a weight is not valid)."""
    weights = []
    for variant in variants:
        try:
            weights.append(max(int(variant.get("weight") or 0), 0))
        except (TypeError, ValueError):
            weights.append(0)
    total = sum(weights)
    return [round(100 * weight / total) if total and weight else None for weight in weights]


# --- builder rows


def _connections(step: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(field name, label, current key) of each outgoing connection of a step."""
    kind = step.get("type")
    if kind in BRANCH_TYPES:
        return [("yes", _("yes"), step.get("yes") or ""), ("no", _("no"), step.get("no") or "")]
    if kind == "split":
        return [
            (
                f"path_{number}_next",
                _("path %(n)d (weight %(w)s)") % {"n": number, "w": path.get("weight")},
                path.get("next") or "",
            )
            for number, path in enumerate(step.get("paths") or [], start=1)
        ]
    if kind == "exit":
        return []
    return [("next", _("then"), step.get("next") or "")]


def _builder_context(
    request: HttpRequest,
    sequence: Sequence,
    *,
    pending: dict[str, dict[str, Any]] | None = None,
    error: str = "",
    error_key: str = "",
) -> dict[str, Any]:
    stages = _stages_of(sequence)
    names = _stage_names(stages)
    saved = list(sequence.steps or [])
    keys = [step["key"] for step in saved]
    webhooks = (
        step_webhook_summaries(sequence=sequence)
        if any(step.get("type") == "webhook" for step in saved)
        else {}
    )
    rows = []
    for index, saved_step in enumerate(saved):
        step = (pending or {}).get(saved_step["key"], saved_step)
        connections = []
        for field, label, value in _connections(step):
            options = [(key, key) for key in keys if key != step["key"]]
            if value and value not in keys:
                options.append((value, value))
            connections.append({"field": field, "label": label, "value": value, "options": options})
        rows.append(
            {
                "index": index,
                "number": index + 1,
                "key": step["key"],
                "type": step.get("type"),
                "type_label": step_type_label(str(step.get("type"))),
                "summary": step_summary(step, stage_names=names),
                "stage": names.get(str(step.get("stage")), "")
                if step.get("type") == "email"
                else "",
                "connections": connections,
                "variants": len(step.get("variants") or []) if step.get("type") == "email" else 0,
                "webhook": webhooks.get(step["key"]) if step.get("type") == "webhook" else None,
                "first": index == 0,
                "last": index == len(saved) - 1,
                "has_error": step["key"] == error_key,
            }
        )
    # Safe: sequence_svg escapes every text from the steps and the stage names and builds the
    # SVG from those escaped parts and numbers only (see campaigns/diagram.py).
    diagram = mark_safe(sequence_svg(saved, stage_names=names))  # noqa: S308
    active = sequence.enrollments.filter(status=EnrollmentStatus.ACTIVE).count()
    return {
        "sequence": sequence,
        "diagram": diagram,
        "rows": rows,
        "error": error,
        "step_types": [(kind, step_type_label(kind)) for kind in STEP_TYPES],
        "trigger_words": trigger_words(sequence, _trigger_names(sequence.workspace_id)),
        "active_enrollments": active,
    }


def _error_key(message: str) -> str:
    match = re.match(r"^steps\[\d+\] \(([^)]*)\)", message)
    return match.group(1) if match else ""


def _save_steps(sequence: Sequence, steps: list[dict[str, Any]]) -> Sequence:
    return services.sequence_update(sequence=sequence, steps=steps)


# --- pages


@workspace_view()
def sequence_index(request: HttpRequest, membership: Membership) -> HttpResponse:
    sequences = list(
        Sequence.objects.filter(workspace=membership.workspace)
        .select_related("funnel")
        .annotate(
            active_count=Count("enrollments", filter=Q(enrollments__status=EnrollmentStatus.ACTIVE))
        )
        .order_by("name")
    )
    names = _trigger_names(membership.workspace.pk) if sequences else {}
    rows = [{"sequence": s, "trigger": trigger_words(s, names)} for s in sequences]
    return render(request, "campaigns/sequence_list.html", {"rows": rows})


@workspace_view(read=Role.EDITOR)
def sequence_create(request: HttpRequest, membership: Membership) -> HttpResponse:
    form = SequenceForm(request.POST or None, membership=membership)
    if request.method == "POST" and form.is_valid():
        try:
            sequence = services.sequence_create(
                workspace=membership.workspace,
                steps=[
                    {
                        "key": "welcome",
                        "type": "email",
                        "subject": _("Welcome"),
                        "html": DEFAULT_HTML,
                        "stage": None,
                        "next": None,
                    }
                ],
                **form.service_arguments(),
            )
        except ApplicationError as exc:
            form.add_error(_form_field(exc.field), exc.message)
        else:
            messages.success(
                request,
                _("Sequence %(name)s created with a first email. Build it here.")
                % {"name": sequence.name},
            )
            return redirect("sequence-builder", pk=sequence.pk)
    return render(request, "campaigns/sequence_form.html", {"form": form, "sequence": None})


def _form_field(service_field: str | None) -> str | None:
    return {
        "name": "name",
        "funnel": "funnel",
        "trigger": "trigger_type",
        "reentry": "reentry",
        "send_window": "window_days",
        "exit_on": "exit_event",
        "utm": "utm_campaign",
    }.get(service_field or "")


@workspace_view(read=Role.EDITOR)
def sequence_settings(request: HttpRequest, membership: Membership, pk: uuid.UUID) -> HttpResponse:
    sequence = _sequence_or_404(membership, pk)
    form = SequenceForm(
        request.POST or None, membership=membership, initial=SequenceForm.initial_for(sequence)
    )
    if request.method == "POST" and form.is_valid():
        try:
            services.sequence_update(sequence=sequence, **form.service_arguments())
        except ApplicationError as exc:
            form.add_error(_form_field(exc.field), exc.message)
        else:
            messages.success(request, _("Settings saved."))
            return redirect("sequence-builder", pk=sequence.pk)
    return render(request, "campaigns/sequence_form.html", {"form": form, "sequence": sequence})


@workspace_view()
def sequence_builder(request: HttpRequest, membership: Membership, pk: uuid.UUID) -> HttpResponse:
    sequence = _sequence_or_404(membership, pk)
    return render(request, "campaigns/builder.html", _builder_context(request, sequence))


@require_POST
@workspace_view()
def sequence_status(request: HttpRequest, membership: Membership, pk: uuid.UUID) -> HttpResponse:
    sequence = _sequence_or_404(membership, pk)
    wanted = {"activate": SequenceStatus.ACTIVE, "pause": SequenceStatus.PAUSED}.get(
        request.POST.get("action", "")
    )
    if wanted is None:
        messages.error(request, _("Unknown action."))
    else:
        try:
            services.sequence_set_status(sequence=sequence, status=wanted)
        except ApplicationError as exc:
            messages.error(request, exc.message)
        else:
            messages.success(
                request,
                _("Sequence activated.")
                if wanted == SequenceStatus.ACTIVE
                else _("Sequence paused."),
            )
    return redirect("sequence-builder", pk=sequence.pk)


def _step_index(sequence: Sequence, key: str) -> int:
    for index, step in enumerate(sequence.steps or []):
        if step.get("key") == key:
            return index
    raise Http404


@require_POST
@workspace_view()
def step_move(
    request: HttpRequest, membership: Membership, pk: uuid.UUID, key: str
) -> HttpResponse:
    """Up or down in the JSON order; the first step is the entry."""
    sequence = _sequence_or_404(membership, pk)
    index = _step_index(sequence, key)
    steps = list(sequence.steps)
    other = index - 1 if request.POST.get("direction") == "up" else index + 1
    if 0 <= other < len(steps):
        steps[index], steps[other] = steps[other], steps[index]
        try:
            _save_steps(sequence, steps)
        except ApplicationError as exc:
            messages.error(request, exc.message)
        else:
            messages.success(request, _("Step %(key)s moved.") % {"key": key})
    return redirect("sequence-builder", pk=sequence.pk)


@require_POST
@workspace_view()
def step_delete(
    request: HttpRequest, membership: Membership, pk: uuid.UUID, key: str
) -> HttpResponse:
    """Remove a step; whatever led to it now leads to where it led (its `next`), or ends."""
    sequence = _sequence_or_404(membership, pk)
    index = _step_index(sequence, key)
    removed = sequence.steps[index]
    onward = removed.get("next") if removed.get("type") in NEXT_TYPES else None
    steps = []
    for step in sequence.steps:
        if step["key"] == key:
            continue
        step = dict(step)
        for name in ("next", "yes", "no"):
            if step.get(name) == key:
                step[name] = onward
        if step.get("paths"):
            step["paths"] = [
                {**path, "next": onward if path.get("next") == key else path.get("next")}
                for path in step["paths"]
            ]
        steps.append(step)
    try:
        _save_steps(sequence, steps)
    except ApplicationError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, _("Step %(key)s deleted.") % {"key": key})
    return redirect("sequence-builder", pk=sequence.pk)


@require_POST
@workspace_view()
def step_connect(
    request: HttpRequest, membership: Membership, pk: uuid.UUID, key: str
) -> HttpResponse:
    """Set where a step leads (next, yes/no, split paths) from the selects of the step list."""
    sequence = _sequence_or_404(membership, pk)
    index = _step_index(sequence, key)
    step = dict(sequence.steps[index])
    for field, _label, _value in _connections(step):
        posted = request.POST.get(field, "").strip() or None
        if field.startswith("path_"):
            number = int(field.split("_")[1]) - 1
            paths = [dict(path) for path in step["paths"]]
            paths[number]["next"] = posted
            step["paths"] = paths
        else:
            step[field] = posted
    steps = list(sequence.steps)
    steps[index] = step
    try:
        _save_steps(sequence, steps)
    except ApplicationError as exc:
        context = _builder_context(
            request,
            sequence,
            pending={key: step},
            error=exc.message,
            error_key=_error_key(exc.message) or key,
        )
        return render(request, "campaigns/builder.html", context)
    messages.success(request, _("Step %(key)s connected.") % {"key": key})
    return redirect("sequence-builder", pk=sequence.pk)


def _place(
    steps: list[dict[str, Any]], new_step: dict[str, Any], after: str
) -> list[dict[str, Any]]:
    """Insert the new step: at the start, after a step (taking over its `next`), or at the end."""
    steps = [dict(step) for step in steps]
    chains = new_step.get("type") in NEXT_TYPES and not new_step.get("next")
    if after == START:
        if chains and steps:
            new_step["next"] = steps[0]["key"]
        return [new_step, *steps]
    for index, step in enumerate(steps):
        if step["key"] == after and step.get("type") in NEXT_TYPES:
            if chains:
                new_step["next"] = step.get("next")
            step["next"] = new_step["key"]
            return [*steps[: index + 1], new_step, *steps[index + 1 :]]
    return [*steps, new_step]


def _default_after(steps: list[dict[str, Any]]) -> str:
    """The last step that leads nowhere yet: where a new step most likely goes."""
    for step in reversed(steps):
        if step.get("type") in NEXT_TYPES and not step.get("next"):
            return str(step["key"])
    return ""


def _step_page(
    request: HttpRequest,
    sequence: Sequence,
    *,
    kind: str,
    original: dict[str, Any] | None,
) -> HttpResponse:
    adding = original is None
    steps = list(sequence.steps or [])
    stages = _stages_of(sequence)
    initial = (
        StepForm.initial_for(original)
        if original is not None
        else {"after": _default_after(steps), "html": DEFAULT_HTML if kind == "email" else ""}
    )

    def step_form(data: Any, initial: dict[str, Any]) -> StepForm:
        return StepForm(
            data,
            kind=kind,
            steps=steps,
            stages=stages,
            own_key=original["key"] if original else None,
            adding=adding,
            initial=initial,
        )

    form = step_form(request.POST or None, initial)
    preview_url = reverse("sequence-preview", args=[sequence.pk])
    variants = None
    if kind == "email":
        variants = _variant_formset(
            data=request.POST or None, initial=_saved_variants(original), preview_url=preview_url
        )
        action = request.POST.get("variant_action", "") if request.method == "POST" else ""
        if action:
            # Adding or removing a variant shows the page again with what was typed, saves
            # nothing and judges nothing yet (an empty new variant is no error).
            typed = _typed_variants(variants)
            if action == "add" and len(typed) < MAX_VARIANTS:
                # A new variant starts as a copy of the content above, to be changed.
                typed.append(
                    {
                        "subject": form["subject"].value() or "",
                        "html": form["html"].value() or "",
                        "weight": 1,
                        "origin": None,
                    }
                )
            elif action.startswith("remove:") and action[7:].isdigit():
                removed = int(action[7:])
                typed = [variant for index, variant in enumerate(typed) if index != removed]
            form = step_form(None, {name: form[name].value() for name in form.fields})
            variants = _variant_formset(initial=typed, preview_url=preview_url)
        for name in ("subject", "html", "text", "from_name"):
            form.fields[name].widget.attrs.update(
                {
                    "hx-post": preview_url,
                    "hx-trigger": "input changed delay:500ms",
                    "hx-target": "#email-preview",
                }
            )
    # A POST without the variants' forms (a page from before they were editable, a script)
    # leaves the saved variants as they are.
    edits_variants = variants is not None and f"{VARIANTS_PREFIX}-TOTAL_FORMS" in request.POST
    if (
        request.method == "POST"
        and form.is_bound
        and form.is_valid()
        and (not edits_variants or (variants is not None and variants.is_valid()))
    ):
        chosen = (
            _variants_of(variants, original or {})
            if edits_variants
            else (original or {}).get("variants")
        )
        if original is None:
            key = form.cleaned_data["key"] or _fresh_key(steps, kind)
            new_step = form.to_step({"key": key}, variants=chosen)
            new_steps = _place(steps, new_step, form.cleaned_data.get("after") or "")
        else:
            new_steps = [
                form.to_step(original, variants=chosen) if step["key"] == original["key"] else step
                for step in steps
            ]
            key = original["key"]
        try:
            _save_steps(sequence, new_steps)
        except ApplicationError as exc:
            form.add_error(None, exc.message)
        else:
            if adding:
                messages.success(request, _("Step %(key)s added.") % {"key": key})
            else:
                messages.success(request, _("Step %(key)s saved.") % {"key": key})
            return redirect("sequence-builder", pk=sequence.pk)
    variant_rows = []
    if variants is not None:
        shares = _variant_shares(_typed_variants(variants))
        variant_rows = [
            {"number": number, "index": number - 1, "form": variant_form, "share": share}
            for number, (variant_form, share) in enumerate(
                zip(variants.forms, shares, strict=True), start=1
            )
        ]
    return render(
        request,
        "campaigns/step_form.html",
        {
            "sequence": sequence,
            "form": form,
            "variants": variants,
            "variant_rows": variant_rows,
            "can_add_variant": variants is not None and len(variant_rows) < MAX_VARIANTS,
            "kind": kind,
            "kind_label": step_type_label(kind),
            "step": original,
            "adding": adding,
            "preview_url": preview_url,
            "test_mail_url": reverse("sequence-test-mail", args=[sequence.pk]),
        },
    )


@workspace_view(read=Role.EDITOR)
def step_add(request: HttpRequest, membership: Membership, pk: uuid.UUID) -> HttpResponse:
    sequence = _sequence_or_404(membership, pk)
    kind = request.GET.get("type") or request.POST.get("type") or ""
    if kind not in STEP_TYPES:
        raise Http404
    return _step_page(request, sequence, kind=kind, original=None)


@workspace_view(read=Role.EDITOR)
def step_edit(
    request: HttpRequest, membership: Membership, pk: uuid.UUID, key: str
) -> HttpResponse:
    sequence = _sequence_or_404(membership, pk)
    original = sequence.steps[_step_index(sequence, key)]
    return _step_page(request, sequence, kind=original["type"], original=original)


# --- email editor: live preview and test mail


def _preview_step(request: HttpRequest) -> dict[str, Any]:
    post = request.POST
    step: dict[str, Any] = {
        "key": post.get("key") or post.get("step_key") or "preview",
        "type": "email",
        "subject": post.get("subject", ""),
        "html": post.get("html", ""),
        "stage": post.get("stage") or None,
        "next": None,
    }
    if post.get("text", "").strip():
        step["text"] = post["text"]
    if post.get("from_name", "").strip():
        step["from_name"] = post["from_name"].strip()
    variants = _posted_variants(post)
    if variants:
        step["variants"] = variants
    return step


def _preview_variant(request: HttpRequest) -> int:
    """Which content to show: 0 the step's own, n its n-th variant (Message.variant)."""
    try:
        return max(int(request.POST.get("preview_variant") or 0), 0)
    except ValueError:
        return 0


def _preview_contact(membership: Membership, request: HttpRequest) -> tuple[Contact | None, str]:
    """The contact chosen by email, or None for the sample contact (with a note why)."""
    email = request.POST.get("preview_contact", "").strip()
    if not email:
        return None, ""
    contact = (
        Contact.objects.for_workspace(membership.workspace).filter(email__iexact=email).first()
    )
    if contact is None:
        return None, _("No contact with that address here; showing the sample contact.")
    return contact, ""


def _render(membership: Membership, request: HttpRequest) -> tuple[Any, Contact | None, str, str]:
    """(rendered email or None, contact, note, error) of the content preview_variant names."""
    from campaigns.rendering import render_preview

    contact, note = _preview_contact(membership, request)
    try:
        rendered = render_preview(
            step=_preview_step(request),
            variant=_preview_variant(request),
            contact=contact,
            workspace=membership.workspace,
        )
    except ApplicationError as exc:
        return None, contact, note, exc.message
    return rendered, contact, note, ""


@require_POST
@workspace_view()
def email_preview(request: HttpRequest, membership: Membership, pk: uuid.UUID) -> HttpResponse:
    """The htmx fragment of the live preview: the mail rendered at desktop and mobile width."""
    _sequence_or_404(membership, pk)
    rendered, contact, note, error = _render(membership, request)
    return render(
        request,
        "campaigns/_preview.html",
        {
            "rendered": rendered,
            "contact": contact,
            "note": note,
            "error": error,
            "variant": _preview_variant(request),
        },
    )


@require_POST
@workspace_view()
def email_test_mail(request: HttpRequest, membership: Membership, pk: uuid.UUID) -> HttpResponse:
    """Send the mail as rendered for the chosen (or sample) contact to the logged-in user.

    A transactional mail through Django's mail: no Message row, no frequency cap, no tracking.
    """
    _sequence_or_404(membership, pk)
    rendered, _contact, _note, error = _render(membership, request)
    user_email = getattr(request.user, "email", "")
    if error or rendered is None:
        return render(request, "campaigns/_test_mail.html", {"error": error}, status=200)
    from_name = request.POST.get("from_name", "").strip()
    sender = sender_of(membership.workspace)
    if from_name and membership.workspace.sender_email:
        sender = f'"{from_name}" <{membership.workspace.sender_email}>'
    message = EmailMultiAlternatives(
        subject=_("[Test] %(subject)s") % {"subject": rendered.subject},
        body=rendered.text,
        from_email=sender,
        to=[user_email],
        headers={"Auto-Submitted": "auto-generated"},
    )
    message.attach_alternative(rendered.html, "text/html")
    tag_workspace(message, membership.workspace.pk)
    message.send()
    return render(request, "campaigns/_test_mail.html", {"sent_to": user_email})
