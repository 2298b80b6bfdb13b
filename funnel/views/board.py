"""Funnel pages under /funnels/: the index, "new funnel", the board (move contacts by menu or
drag-and-drop), the stage editor and the rules editor."""

from __future__ import annotations

import json
import uuid
from typing import Any

from django import forms
from django.contrib import messages
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import URLPattern, URLResolver, path
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from django.views.decorators.http import require_POST

from contacts.models import Contact
from contacts.selectors import ContactFilter, contact_list
from core.exceptions import ApplicationError
from core.models import Membership, Role
from core.permissions import workspace_view
from funnel import selectors, services
from funnel.conditions import OPERATORS
from funnel.models import Funnel, FunnelPreset, Stage, StageRule, TransitionCause

EVENT_NAME_PATTERN = r"^[A-Za-z0-9_.:-]{1,100}$"
CUSTOM_PRESET = "custom"

# How a rule's property condition reads in a sentence ("plan = pro").
OPERATOR_LABELS = {
    "eq": "=",
    "neq": "≠",
    "gt": ">",
    "gte": "≥",
    "lt": "<",
    "lte": "≤",
    "in": gettext_lazy("is one of"),
    "contains": gettext_lazy("contains"),
    "exists": gettext_lazy("exists"),
}


def _funnel_or_404(membership: Membership, pk: uuid.UUID) -> Funnel:
    try:
        return selectors.funnel_get(workspace=membership.workspace, funnel_id=pk)
    except Funnel.DoesNotExist as exc:
        raise Http404 from exc


def _stage_or_none(funnel: Funnel, stage_id: str) -> Stage | None:
    try:
        wanted = uuid.UUID(stage_id)
    except ValueError:
        return None
    return next((stage for stage in funnel.stages.all() if stage.pk == wanted), None)


def _rule_sentence_parts(rule: StageRule) -> dict[str, Any]:
    """What the rules page says of a rule: the event (or clicked step) and its conditions."""
    when = rule.when or {}
    conditions = []
    for name, condition in (when.get("where") or {}).items():
        op, expected = (
            next(iter(condition.items())) if isinstance(condition, dict) else ("eq", condition)
        )
        if op == "exists":
            conditions.append(
                f"{name} {OPERATOR_LABELS['exists']}"
                if expected
                else _("no %(name)s") % {"name": name}
            )
            continue
        if isinstance(expected, list):
            shown = ", ".join(str(value) for value in expected)
        elif isinstance(expected, str):
            shown = expected
        else:
            shown = json.dumps(expected, ensure_ascii=False)
        conditions.append(f"{name} {OPERATOR_LABELS.get(op, op)} {shown}")
    return {
        "rule": rule,
        "event": when.get("event", ""),
        "clicked_step": when.get("clicked_step", ""),
        "conditions": conditions,
    }


# --- forms


class FunnelCreateForm(forms.Form):
    name = forms.CharField(label=gettext_lazy("Name"), max_length=150)
    preset = forms.ChoiceField(
        label=gettext_lazy("Stages"),
        choices=[*FunnelPreset.choices, (CUSTOM_PRESET, gettext_lazy("Custom stages"))],
        initial=FunnelPreset.AIDA,
        widget=forms.RadioSelect,
    )
    stage_names = forms.CharField(
        label=gettext_lazy("Custom stage names"),
        required=False,
        widget=forms.Textarea(attrs={"rows": 5, "placeholder": "Lead\nTrial\nCustomer"}),
        help_text=gettext_lazy("One stage per line, in order. Only used for custom stages."),
    )
    goal_event = forms.RegexField(
        label=gettext_lazy("Conversion goal (event name)"),
        regex=EVENT_NAME_PATTERN,
        max_length=100,
        required=False,
        help_text=gettext_lazy(
            "An event with this name counts as a conversion, e.g. purchase. Optional."
        ),
        error_messages={
            "invalid": gettext_lazy("Letters, digits and _ . : - only, as in the events API.")
        },
    )

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        names = [line.strip() for line in cleaned.get("stage_names", "").splitlines()]
        cleaned["stage_names"] = [name for name in names if name]
        if cleaned.get("preset") == CUSTOM_PRESET and not cleaned["stage_names"]:
            self.add_error("stage_names", _("Name at least one stage, one per line."))
        return cleaned


class FunnelSettingsForm(forms.Form):
    name = forms.CharField(label=gettext_lazy("Name"), max_length=150)
    goal_event = forms.RegexField(
        label=gettext_lazy("Conversion goal (event name)"),
        regex=EVENT_NAME_PATTERN,
        max_length=100,
        required=False,
        error_messages={
            "invalid": gettext_lazy("Letters, digits and _ . : - only, as in the events API.")
        },
    )


class RuleForm(forms.Form):
    event = forms.RegexField(
        label=gettext_lazy("When event"),
        regex=EVENT_NAME_PATTERN,
        max_length=100,
        error_messages={
            "invalid": gettext_lazy("Letters, digits and _ . : - only, as in the events API.")
        },
        widget=forms.TextInput(attrs={"placeholder": "demo_booked"}),
    )
    property = forms.CharField(
        label=gettext_lazy("with property"),
        max_length=100,
        required=False,
        widget=forms.TextInput(attrs={"placeholder": "plan"}),
    )
    operator = forms.ChoiceField(
        label=gettext_lazy("Operator"),
        choices=[(op, OPERATOR_LABELS[op]) for op in OPERATORS],
        initial="eq",
        required=False,
    )
    value = forms.CharField(
        label=gettext_lazy("Value"),
        max_length=500,
        required=False,
        widget=forms.TextInput(attrs={"placeholder": "pro"}),
        help_text=gettext_lazy("For “is one of”, separate values with commas."),
    )
    where = forms.CharField(
        label=gettext_lazy("Or conditions as JSON"),
        required=False,
        max_length=10_000,
        widget=forms.Textarea(
            attrs={"rows": 3, "spellcheck": "false", "placeholder": '{"total": {"gte": 100}}'}
        ),
    )
    move_to = forms.ChoiceField(label=gettext_lazy("Move to stage"))

    def __init__(self, *args: Any, stages: list[Stage], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        move_to = self.fields["move_to"]
        assert isinstance(move_to, forms.ChoiceField)
        move_to.choices = [(str(stage.pk), stage.name) for stage in stages]

    def clean_where(self) -> dict[str, Any] | None:
        text = self.cleaned_data["where"].strip()
        if not text:
            return None
        try:
            where = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValidationError(
                _("Not valid JSON (line %(line)d, column %(column)d): %(reason)s")
                % {"line": exc.lineno, "column": exc.colno, "reason": exc.msg}
            ) from exc
        if not isinstance(where, dict):
            raise ValidationError(_('Give an object, e.g. {"plan": "pro"}.'))
        return where

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean() or {}
        name = cleaned.get("property", "").strip()
        if name and cleaned.get("where"):
            self.add_error("where", _("Give one property condition or JSON, not both."))
        elif name:
            cleaned["where"] = {name: self._condition(cleaned.get("operator") or "eq")}
        return cleaned

    def _condition(self, op: str) -> Any:
        value = self.cleaned_data.get("value", "").strip()
        if op == "exists":
            return {"exists": value.lower() not in {"false", "no", "0"}}
        if op == "in":
            return {"in": [part.strip() for part in value.split(",") if part.strip()]}
        return value if op == "eq" else {op: value}

    def when(self) -> dict[str, Any]:
        when: dict[str, Any] = {"event": self.cleaned_data["event"]}
        if self.cleaned_data.get("where"):
            when["where"] = self.cleaned_data["where"]
        return when


# --- pages


@workspace_view()
def funnel_index(request: HttpRequest, membership: Membership) -> HttpResponse:
    summaries = selectors.funnel_summaries(workspace=membership.workspace)
    return render(request, "funnel/funnel_index.html", {"summaries": summaries})


@workspace_view(read=Role.EDITOR)
def funnel_create(request: HttpRequest, membership: Membership) -> HttpResponse:
    form = FunnelCreateForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        preset = None if data["preset"] == CUSTOM_PRESET else data["preset"]
        try:
            funnel = services.funnel_create(
                workspace=membership.workspace,
                name=data["name"],
                preset=preset,
                goal_event=data["goal_event"],
                stages=[{"name": name} for name in data["stage_names"]] if preset is None else (),
            )
        except ApplicationError as exc:
            form.add_error(exc.field if exc.field in form.fields else None, exc.message)
        else:
            messages.success(request, _("Funnel %(name)s created.") % {"name": funnel.name})
            return redirect("funnel-board", pk=funnel.pk)
    return render(request, "funnel/funnel_form.html", {"form": form})


def _board_context(funnel: Funnel) -> dict[str, Any]:
    return {
        "funnel": funnel,
        "stages": list(funnel.stages.all()),
        "columns": selectors.board_columns(funnel=funnel),
    }


@workspace_view()
def funnel_board(request: HttpRequest, membership: Membership, pk: uuid.UUID) -> HttpResponse:
    funnel = _funnel_or_404(membership, pk)
    context = _board_context(funnel)
    if request.htmx:  # type: ignore[attr-defined]
        return render(request, "funnel/_board.html", context)
    return render(request, "funnel/board.html", context)


def _contact_from_post(membership: Membership, request: HttpRequest) -> Contact | None:
    """The contact named by id (a card) or by email address (the "add a contact" form)."""
    contacts = Contact.objects.for_workspace(membership.workspace)
    contact_id = request.POST.get("contact", "").strip()
    if contact_id:
        try:
            return contacts.filter(pk=uuid.UUID(contact_id)).first()
        except ValueError:
            return None
    email = request.POST.get("email", "").strip()
    if email:
        return contact_list(
            workspace=membership.workspace, filters=ContactFilter(email=email)
        ).first()
    return None


@require_POST
@workspace_view(read=Role.EDITOR)
def funnel_move(request: HttpRequest, membership: Membership, pk: uuid.UUID) -> HttpResponse:
    """Move one contact by hand. The card menu posts a form and gets the board again; the
    drag-and-drop script posts with HX-Request and gets the refreshed board fragment."""
    funnel = _funnel_or_404(membership, pk)
    is_htmx = bool(request.htmx)  # type: ignore[attr-defined]
    contact = _contact_from_post(membership, request)
    stage = _stage_or_none(funnel, request.POST.get("stage", ""))
    error = ""
    if contact is None:
        error = _("No such contact in this workspace.")
    elif stage is None:
        error = _("Choose a stage of this funnel.")
    else:
        try:
            transition = services.contact_move(
                funnel=funnel,
                contact=contact,
                stage=stage,
                cause=TransitionCause.MANUAL,
                cause_detail=f"user:{request.user.pk}",
            )
        except ApplicationError as exc:
            error = exc.message
        else:
            if not is_htmx:
                if transition is None:
                    messages.info(
                        request,
                        _("%(contact)s is in %(stage)s already.")
                        % {"contact": contact.email, "stage": stage.name},
                    )
                else:
                    messages.success(
                        request,
                        _("%(contact)s moved to %(stage)s.")
                        % {"contact": contact.email, "stage": stage.name},
                    )
    if is_htmx:
        if error:
            return HttpResponse(error, status=400, content_type="text/plain; charset=utf-8")
        return render(request, "funnel/_board.html", _board_context(funnel))
    if error:
        messages.error(request, error)
    return redirect("funnel-board", pk=funnel.pk)


def _stage_specs(stages: list[Stage]) -> list[dict[str, Any]]:
    return [{"id": stage.pk, "name": stage.name} for stage in stages]


def _apply_stage_action(funnel: Funnel, request: HttpRequest) -> str:
    """Carry out one stage editor button; returns the success message."""
    action = request.POST.get("action", "")
    stages = list(funnel.stages.all())
    if action == "add":
        added = services.stage_add(funnel=funnel, name=request.POST.get("name", ""))
        return _("Stage %(name)s added.") % {"name": added.name}
    stage = _stage_or_none(funnel, request.POST.get("stage", ""))
    if stage is None:
        raise ApplicationError(_("Choose a stage of this funnel."), field="stage")
    index = stages.index(stage)
    specs = _stage_specs(stages)
    if action == "rename":
        specs[index]["name"] = request.POST.get("name", "")
        services.funnel_set_stages(funnel=funnel, stages=specs)
        return _("Stage renamed.")
    if action in {"up", "down"}:
        other = index - 1 if action == "up" else index + 1
        if 0 <= other < len(specs):
            specs[index], specs[other] = specs[other], specs[index]
            services.funnel_set_stages(funnel=funnel, stages=specs)
        return _("Stage %(name)s moved.") % {"name": stage.name}
    if action == "delete":
        name = stage.name
        services.stage_delete(stage=stage)
        return _("Stage %(name)s deleted.") % {"name": name}
    raise ApplicationError(_("Unknown action."), field="action")


@workspace_view(read=Role.EDITOR)
def funnel_stages(request: HttpRequest, membership: Membership, pk: uuid.UUID) -> HttpResponse:
    funnel = _funnel_or_404(membership, pk)
    settings_form = FunnelSettingsForm(
        request.POST if request.POST.get("action") == "settings" else None,
        initial={"name": funnel.name, "goal_event": funnel.goal_event},
    )
    if request.method == "POST":
        if request.POST.get("action") == "settings":
            if settings_form.is_valid():
                try:
                    services.funnel_update(
                        funnel=funnel,
                        name=settings_form.cleaned_data["name"],
                        goal_event=settings_form.cleaned_data["goal_event"],
                    )
                except ApplicationError as exc:
                    settings_form.add_error(None, exc.message)
                else:
                    messages.success(request, _("Funnel saved."))
                    return redirect("funnel-stages", pk=funnel.pk)
        else:
            try:
                message = _apply_stage_action(funnel, request)
            except ApplicationError as exc:
                messages.error(request, exc.message)
            else:
                messages.success(request, message)
            return redirect("funnel-stages", pk=funnel.pk)
    counts = selectors.stage_counts(funnel=funnel)
    stages = [(stage, counts.get(stage.pk, 0)) for stage in funnel.stages.all()]
    return render(
        request,
        "funnel/stages.html",
        {"funnel": funnel, "stages": stages, "settings_form": settings_form},
    )


def _rules(funnel: Funnel) -> QuerySet[StageRule]:
    return selectors.funnel_rules(funnel=funnel)


@workspace_view()
def funnel_rules(request: HttpRequest, membership: Membership, pk: uuid.UUID) -> HttpResponse:
    funnel = _funnel_or_404(membership, pk)
    stages = list(funnel.stages.all())
    form = RuleForm(request.POST or None, stages=stages)
    if request.method == "POST" and form.is_valid():
        move_to = _stage_or_none(funnel, form.cleaned_data["move_to"])
        try:
            if move_to is None:
                raise ApplicationError(_("Choose a stage of this funnel."), field="move_to")
            services.rule_create(funnel=funnel, when=form.when(), move_to=move_to)
        except ApplicationError as exc:
            form.add_error("where" if exc.field == "when" else None, exc.message)
        else:
            messages.success(request, _("Rule added."))
            return redirect("funnel-rules", pk=funnel.pk)
    rules = [_rule_sentence_parts(rule) for rule in _rules(funnel)]
    return render(
        request,
        "funnel/rules.html",
        {"funnel": funnel, "rules": rules, "form": form, "has_stages": bool(stages)},
    )


@require_POST
@workspace_view(read=Role.EDITOR)
def funnel_rule_delete(
    request: HttpRequest, membership: Membership, pk: uuid.UUID, rule_id: uuid.UUID
) -> HttpResponse:
    funnel = _funnel_or_404(membership, pk)
    deleted, _by_model = StageRule.objects.filter(funnel=funnel, pk=rule_id).delete()
    if not deleted:
        raise Http404
    messages.success(request, _("Rule deleted."))
    return redirect("funnel-rules", pk=funnel.pk)


@workspace_view(read=Role.EDITOR)
def funnel_delete(request: HttpRequest, membership: Membership, pk: uuid.UUID) -> HttpResponse:
    funnel = _funnel_or_404(membership, pk)
    if request.method == "POST":
        name = funnel.name
        # The whole funnel goes, with its stages, memberships, history and rules (as in the API).
        funnel.delete()
        messages.success(request, _("Funnel %(name)s deleted.") % {"name": name})
        return redirect("funnel-list")
    return render(request, "funnel/funnel_confirm_delete.html", {"funnel": funnel})


urlpatterns: list[URLPattern | URLResolver] = [
    path("", funnel_index, name="funnel-list"),
    path("new/", funnel_create, name="funnel-create"),
    path("<uuid:pk>/", funnel_board, name="funnel-board"),
    path("<uuid:pk>/move/", funnel_move, name="funnel-move"),
    path("<uuid:pk>/stages/", funnel_stages, name="funnel-stages"),
    path("<uuid:pk>/rules/", funnel_rules, name="funnel-rules"),
    path("<uuid:pk>/rules/<uuid:rule_id>/delete/", funnel_rule_delete, name="funnel-rule-delete"),
    path("<uuid:pk>/delete/", funnel_delete, name="funnel-delete"),
]
