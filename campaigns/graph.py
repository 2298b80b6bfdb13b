"""Validation of a sequence's steps (the JSON shape of API.md) as a graph.

Errors name the step: "steps[2] (follow_up): unknown next step 'x'".
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from django.core.exceptions import ValidationError
from django.utils.translation import gettext as _

from contacts.segments import segment_filter_validate
from core.durations import parse_duration
from core.exceptions import ApplicationError

STEP_TYPES = (
    "email",
    "wait",
    "wait_for",
    "condition",
    "split",
    "move_stage",
    "add_tag",
    "remove_tag",
    "set_attribute",
    "webhook",
    "exit",
)
WAITING_TYPES = ("wait", "wait_for")
KEY = re.compile(r"^[A-Za-z0-9_-]{1,100}$")
LOCAL_TIME = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")
MAX_STEPS = 200

TemplateCheck = Callable[[str], None]


def _fail(index: int, key: str, message: str) -> ApplicationError:
    where = f"steps[{index}] ({key})" if key else f"steps[{index}]"
    return ApplicationError(f"{where}: {message}", field="steps")


def successors(step: dict[str, Any]) -> list[str]:
    """The keys a step can lead to (None / missing means the sequence ends there)."""
    kind = step["type"]
    if kind in ("wait_for", "condition"):
        return [key for key in (step.get("yes"), step.get("no")) if key]
    if kind == "split":
        return [path["next"] for path in step.get("paths", []) if path.get("next")]
    if kind == "exit":
        return []
    return [step["next"]] if step.get("next") else []


def _duration(value: Any) -> bool:
    try:
        return parse_duration(str(value)).total_seconds() > 0
    except ValueError:
        return False


def validate_steps(
    steps: Any,
    *,
    stage_ids: set[str],
    check_template: TemplateCheck | None = None,
) -> list[dict[str, Any]]:
    """Validate and return the steps; raise ApplicationError naming the faulty step.

    `stage_ids` are the stages of the sequence's funnel; `check_template` compiles subject and
    HTML (raising ApplicationError with the line) so syntax errors show at save time.
    """
    if not isinstance(steps, list) or not steps:
        raise ApplicationError(_("A sequence needs at least one step."), field="steps")
    if len(steps) > MAX_STEPS:
        raise ApplicationError(_("At most %(count)d steps.") % {"count": MAX_STEPS}, field="steps")
    keys: dict[str, int] = {}
    for index, step in enumerate(steps):
        if not isinstance(step, dict):
            raise _fail(index, "", _("a step is a JSON object"))
        key = step.get("key")
        if not isinstance(key, str) or not KEY.match(key):
            raise _fail(index, "", _("give a key of letters, digits, _ and -"))
        if key in keys:
            raise _fail(index, key, _("the key is used twice"))
        keys[key] = index
        if step.get("type") not in STEP_TYPES:
            raise _fail(index, key, _("unknown type %(type)r") % {"type": step.get("type")})

    for index, step in enumerate(steps):
        key = step["key"]
        _validate_step(index, step, stage_ids=stage_ids, check_template=check_template)
        for target in successors(step):
            if target not in keys:
                raise _fail(index, key, _("unknown next step %(key)r") % {"key": target})

    # Every step must be reachable from the first.
    reached = {steps[0]["key"]}
    frontier = [steps[0]["key"]]
    while frontier:
        for target in successors(steps[keys[frontier.pop()]]):
            if target not in reached:
                reached.add(target)
                frontier.append(target)
    for index, step in enumerate(steps):
        if step["key"] not in reached:
            raise _fail(index, step["key"], _("no step leads here (unreachable)"))

    # A cycle must contain a wait, or one tick would loop for ever.
    instant = {step["key"] for step in steps if step["type"] not in WAITING_TYPES}
    state: dict[str, int] = {}

    def visit(key: str) -> None:
        state[key] = 1
        for target in successors(steps[keys[key]]):
            if target not in instant:
                continue
            if state.get(target) == 1:
                raise _fail(keys[target], target, _("a loop without a wait comes back here"))
            if state.get(target) is None:
                visit(target)
        state[key] = 2

    for key in instant:
        if state.get(key) is None:
            visit(key)
    return [dict(step) for step in steps]


def _validate_step(
    index: int,
    step: dict[str, Any],
    *,
    stage_ids: set[str],
    check_template: TemplateCheck | None,
) -> None:
    key, kind = step["key"], step["type"]

    def need(condition: bool, message: str) -> None:
        if not condition:
            raise _fail(index, key, message)

    if kind == "email":
        need(
            isinstance(step.get("subject"), str) and step["subject"].strip() != "",
            _("an email needs a subject"),
        )
        need(
            isinstance(step.get("html"), str) and step["html"].strip() != "",
            _("an email needs HTML content"),
        )
        if step.get("stage") is not None:
            need(str(step["stage"]) in stage_ids, _("the stage is not in this sequence's funnel"))
        variants = step.get("variants") or []
        need(isinstance(variants, list), _("variants must be a list"))
        for variant in variants:
            need(
                isinstance(variant, dict)
                and isinstance(variant.get("subject"), str)
                and isinstance(variant.get("html"), str)
                and isinstance(variant.get("weight", 1), int)
                and variant.get("weight", 1) > 0,
                _("each variant needs subject, html and a positive weight"),
            )
        if check_template is not None:
            for part in [step["subject"], step["html"], step.get("text") or ""] + [
                text for variant in variants for text in (variant["subject"], variant["html"])
            ]:
                try:
                    check_template(part)
                except ApplicationError as exc:
                    raise _fail(index, key, exc.message) from exc
    elif kind == "wait":
        if "duration" in step:
            need(_duration(step["duration"]), _("the duration must be ISO 8601, e.g. P2D"))
        else:
            need(
                isinstance(step.get("until"), str) and bool(LOCAL_TIME.match(step["until"])),
                _('give a duration ("P2D") or a local time ("09:00")'),
            )
    elif kind == "wait_for":
        event = step.get("event")
        need(isinstance(event, dict) and len(event) == 1, _("name what to wait for"))
        assert isinstance(event, dict)
        what = next(iter(event))
        need(
            what in ("opened", "clicked", "clicked_url", "event", "stage"),
            _("wait for opened, clicked, clicked_url, event or stage"),
        )
        if what == "stage":
            need(str(event["stage"]) in stage_ids, _("the stage is not in this sequence's funnel"))
        need(_duration(step.get("timeout")), _("the timeout must be ISO 8601, e.g. P3D"))
        need(bool(step.get("yes")) or bool(step.get("no")), _("give yes and no steps"))
    elif kind == "condition":
        try:
            segment_filter_validate(step.get("if"))
        except ValidationError as exc:
            raise _fail(index, key, _("if: %(error)s") % {"error": exc.messages[0]}) from exc
    elif kind == "split":
        paths = step.get("paths")
        need(isinstance(paths, list) and len(paths) >= 2, _("a split needs two or more paths"))
        assert isinstance(paths, list)
        for path in paths:
            need(
                isinstance(path, dict)
                and isinstance(path.get("weight"), int)
                and path["weight"] > 0,
                _("each path needs a positive whole weight"),
            )
    elif kind == "move_stage":
        need(str(step.get("stage")) in stage_ids, _("the stage is not in this sequence's funnel"))
    elif kind in ("add_tag", "remove_tag"):
        need(
            isinstance(step.get("tag"), str) and 0 < len(step["tag"].strip()) <= 100,
            _("name the tag"),
        )
    elif kind == "set_attribute":
        need(
            isinstance(step.get("name"), str)
            and bool(re.match(r"^[A-Za-z_]\w{0,99}$", step["name"])),
            _("name the attribute (letters, digits, _)"),
        )
        need("value" in step, _("give the value"))
    elif kind == "webhook":
        need(
            isinstance(step.get("url"), str) and step["url"].startswith("https://"),
            _("the webhook URL must start with https://"),
        )


TRIGGER_TYPES = ("list_confirmed", "event", "stage_entered", "stalled", "segment", "manual")


def validate_trigger(
    trigger: Any, *, stage_ids: set[str], list_ids: set[str], segment_ids: set[str]
) -> dict[str, Any]:
    """{"type": "list_confirmed", "list": id} | {"type": "event", "name"} | {"type":
    "stage_entered", "stage": id} | {"type": "stalled", "stage": id, "after": "P7D"} |
    {"type": "segment", "segment": id} | {"type": "manual"}."""

    def fail(message: str) -> ApplicationError:
        return ApplicationError(message, field="trigger")

    if not isinstance(trigger, dict) or trigger.get("type") not in TRIGGER_TYPES:
        raise fail(_("Use one of: %(types)s.") % {"types": ", ".join(TRIGGER_TYPES)})
    kind = trigger["type"]
    if kind == "list_confirmed" and str(trigger.get("list")) not in list_ids:
        raise fail(_("Choose one of this workspace's lists."))
    if kind == "event" and not (isinstance(trigger.get("name"), str) and trigger["name"].strip()):
        raise fail(_("Name the event."))
    if kind in ("stage_entered", "stalled") and str(trigger.get("stage")) not in stage_ids:
        raise fail(_("Choose a stage of this sequence's funnel."))
    if kind == "stalled" and not _duration(trigger.get("after")):
        raise fail(_('Say after how long, e.g. "P7D".'))
    if kind == "segment" and str(trigger.get("segment")) not in segment_ids:
        raise fail(_("Choose one of this workspace's segments."))
    return dict(trigger)


def validate_exit_on(exit_on: Any) -> list[dict[str, Any]]:
    """[{"type": "event", "name": "purchase"}]: reaching one ends the run as converted."""
    if exit_on is None:
        return []
    if not isinstance(exit_on, list) or not all(
        isinstance(goal, dict)
        and goal.get("type") == "event"
        and isinstance(goal.get("name"), str)
        and goal["name"].strip()
        for goal in exit_on
    ):
        raise ApplicationError(
            _('Give goals as [{"type": "event", "name": ...}].'), field="exit_on"
        )
    return [{"type": "event", "name": goal["name"].strip()} for goal in exit_on]


def validate_send_window(window: Any) -> dict[str, Any] | None:
    """null or {"days": [0..6] (Monday = 0), "start": "09:00", "end": "18:00"}, in the
    contact's time zone."""
    if window is None:
        return None
    if (
        not isinstance(window, dict)
        or not isinstance(window.get("days"), list)
        or not window["days"]
        or not all(isinstance(day, int) and 0 <= day <= 6 for day in window["days"])
        or not LOCAL_TIME.match(str(window.get("start", "")))
        or not LOCAL_TIME.match(str(window.get("end", "")))
        or window["start"] >= window["end"]
    ):
        raise ApplicationError(
            _('Give {"days": [0..6], "start": "09:00", "end": "18:00"}, start before end.'),
            field="send_window",
        )
    return {"days": sorted(set(window["days"])), "start": window["start"], "end": window["end"]}
