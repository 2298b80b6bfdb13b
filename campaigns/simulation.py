"""The test drive: run one contact (real or hypothetical) through a sequence on a virtual clock.

simulate() walks the step graph the way campaigns.engine advances an enrollment and returns the
timeline: which mail would leave at which local time, which branch each wait_for, condition and
split takes, and where the send window or the frequency cap would defer a mail. It writes
nothing and sends nothing: tags, attributes and stages that steps would change are changed in
memory only, and reads (the contact's recent mails, suppressions, segment membership) are the
only queries it makes.

Rules shared with the engine are imported from it (zone_of, next_local_time, window_open_at,
cap_free_at, _choice and its seed choice_seed, CAP_COUNTED, MAX_INSTANT_STEPS): a stored
contact takes the split paths and gets the A/B variants here that a real run gives it. Rules
the engine only has in a database-bound form are repeated here in a pure form (see
RULES_DUPLICATED) so that both can be unified later.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any, Final

from django.db.models.functions import Coalesce
from django.utils import timezone
from django.utils.dateparse import parse_date
from django.utils.translation import gettext as _

from campaigns.engine import (
    CAP_COUNTED,
    MAX_INSTANT_STEPS,
    _choice,
    cap_free_at,
    choice_seed,
    next_local_time,
    window_open_at,
    zone_of,
)
from campaigns.models import Message, Sequence
from contacts.models import Contact, ContactStatus, Suppression
from contacts.segments import (
    ATTRIBUTE_PREFIX,
    FIELDS,
    SegmentFilterError,
    segment_filter_validate,
    segment_queryset,
)
from core.durations import parse_duration
from core.exceptions import ApplicationError
from funnel.models import ContactStage, Stage

__all__ = [
    "MAX_ITEMS",
    "MAX_VIRTUAL_DAYS",
    "PROFILE_KEYS",
    "REACTION_EVENTS",
    "RULES_DUPLICATED",
    "Reaction",
    "SimulatedItem",
    "local_label",
    "profile_parse",
    "reactions_parse",
    "simulate",
]

MAX_ITEMS: Final = 100
MAX_VIRTUAL_DAYS: Final = 365
WEEK: Final = dt.timedelta(days=7)
# Reactions on a mail; "event:<name>" and "stage:<id>" are the other two forms.
REACTION_EVENTS: Final = ("opened", "clicked", "clicked_url")
PROFILE_KEYS: Final = (
    "email",
    "first_name",
    "last_name",
    "locale",
    "timezone",
    "source",
    "score",
    "status",
    "tags",
    "attributes",
)
WEEKDAYS: Final = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")

# Where this module repeats a rule of campaigns.engine instead of calling it (the engine's
# version reads or writes rows); unify them by giving the engine pure cores of these.
RULES_DUPLICATED: Final = (
    "mailability (engine._load_mail_facts): status subscribed and the email not suppressed",
    "cap history (engine._load_mail_facts): CAP_COUNTED messages, Coalesce(sent_at, created_at),"
    " of the last 7 days",
    "wait due (engine._wait_due): duration from the step's start, or the next local hh:mm",
    "wait_for matching (engine.messages_opened/messages_clicked/_reaction_happened): a click is"
    " an open too; a reaction before the step began takes yes at once",
    "add_tag/remove_tag/set_attribute/move_stage (engine._instant): applied in memory",
)


@dataclass(frozen=True)
class SimulatedItem:
    """One line of the timeline: at `at` (UTC), `local` in the contact's zone, step `step` of
    kind `kind` did `detail`."""

    at: dt.datetime
    local: str
    step: str
    kind: str
    detail: str


@dataclass(frozen=True)
class Reaction:
    """The contact reacts `after` the mail of email step `step` was (virtually) sent, or,
    for "event:<name>" and "stage:<id>", `after` the start of the simulation."""

    step: str
    event: str
    after: dt.timedelta
    url: str = ""


@dataclass
class _Profile:
    """What conditions look at, held in memory; steps change this copy only."""

    fields: dict[str, Any]
    tags: set[str]
    attributes: dict[str, Any]
    stages: set[str] = field(default_factory=set)
    changed: bool = False


class _NotJudgeable(Exception):
    """A condition that cannot be decided in memory (lists, events, opens, dates, ...)."""


# --- input


def _iso(delta: dt.timedelta) -> str:
    """A timedelta as an ISO 8601 duration ("PT2H", "P1DT30M", "PT0S")."""
    seconds = int(delta.total_seconds())
    days, seconds = divmod(seconds, 86400)
    hours, seconds = divmod(seconds, 3600)
    minutes, seconds = divmod(seconds, 60)
    time = "".join(
        f"{amount}{unit}"
        for amount, unit in ((hours, "H"), (minutes, "M"), (seconds, "S"))
        if amount
    )
    text = f"P{days}D" if days else "P"
    if time:
        text += f"T{time}"
    return text if text != "P" else "PT0S"


def reactions_parse(raw: Any, *, sequence: Sequence) -> list[Reaction]:
    """Validate [{"step", "event", "after"}] against the sequence; ApplicationError naming the
    field ("reactions[1].step") otherwise."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise ApplicationError(_("Give a list of reactions."), field="reactions")
    if len(raw) > MAX_ITEMS:
        raise ApplicationError(
            _("At most %(count)d reactions.") % {"count": MAX_ITEMS}, field="reactions"
        )
    email_keys = {step["key"] for step in sequence.steps if step.get("type") == "email"}
    reactions = []
    for index, item in enumerate(raw):
        where = f"reactions[{index}]"
        if not isinstance(item, dict):
            raise ApplicationError(_("A reaction is a JSON object."), field=where)
        event = item.get("event")
        if not isinstance(event, str) or not (
            event in REACTION_EVENTS
            or (event.startswith("event:") and event.removeprefix("event:").strip())
            or (event.startswith("stage:") and event.removeprefix("stage:").strip())
        ):
            raise ApplicationError(
                _("Use opened, clicked, clicked_url, event:<name> or stage:<id>."),
                field=f"{where}.event",
            )
        step = item.get("step") or ""
        if not isinstance(step, str):
            raise ApplicationError(_("Name an email step by its key."), field=f"{where}.step")
        if event in REACTION_EVENTS and step not in email_keys:
            raise ApplicationError(
                _("Unknown email step %(key)r.") % {"key": step[:100]}, field=f"{where}.step"
            )
        if step and step not in {s["key"] for s in sequence.steps}:
            raise ApplicationError(
                _("Unknown step %(key)r.") % {"key": step[:100]}, field=f"{where}.step"
            )
        try:
            after = parse_duration(str(item.get("after", "PT0S")))
        except ValueError:
            after = None
        if after is None or after > dt.timedelta(days=MAX_VIRTUAL_DAYS):
            raise ApplicationError(
                _('Give an ISO 8601 duration of at most a year, e.g. "PT2H".'),
                field=f"{where}.after",
            )
        url = item.get("url") or ""
        if not isinstance(url, str):
            raise ApplicationError(_("The URL is text."), field=f"{where}.url")
        if event.startswith("stage:"):
            event = "stage:" + event.removeprefix("stage:").strip()
        reactions.append(Reaction(step=step, event=event.strip(), after=after, url=url))
    return reactions


def profile_parse(raw: Any) -> dict[str, Any] | None:
    """Validate a hypothetical contact {first_name, timezone, tags, attributes, status, ...};
    ApplicationError naming the field otherwise."""
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise ApplicationError(_("The profile is a JSON object."), field="profile")
    for key in raw:
        if key not in PROFILE_KEYS:
            raise ApplicationError(
                _("Unknown key %(key)r; use %(keys)s.")
                % {"key": str(key)[:50], "keys": ", ".join(PROFILE_KEYS)},
                field="profile",
            )
    profile = dict(raw)
    tags = profile.get("tags", [])
    if not isinstance(tags, list) or not all(isinstance(tag, str) for tag in tags):
        raise ApplicationError(_("tags is a list of names."), field="profile.tags")
    profile["tags"] = [tag.strip() for tag in tags if tag.strip()]
    if not isinstance(profile.get("attributes", {}), dict):
        raise ApplicationError(_("attributes is a JSON object."), field="profile.attributes")
    if "status" in profile and profile["status"] not in ContactStatus.values:
        raise ApplicationError(
            _("Use one of %(statuses)s.") % {"statuses": ", ".join(ContactStatus.values)},
            field="profile.status",
        )
    for key in ("email", "first_name", "last_name", "locale", "timezone", "source"):
        if key in profile and not isinstance(profile[key], str):
            raise ApplicationError(_("Expected text."), field=f"profile.{key}")
    if "score" in profile and (
        isinstance(profile["score"], bool) or not isinstance(profile["score"], int | float)
    ):
        raise ApplicationError(_("Expected a number."), field="profile.score")
    return profile


# --- time


def local_label(moment: dt.datetime, zone: dt.tzinfo) -> str:
    """ "Mon 2025-03-03 09:00 Europe/Berlin" (weekday names fixed, not from the locale)."""
    local = moment.astimezone(zone)
    return f"{WEEKDAYS[local.weekday()]} {local:%Y-%m-%d %H:%M} {zone}"


# --- conditions in memory (the field, tag and status conditions of contacts.segments)


def _judge(node: dict[str, Any], profile: _Profile) -> bool:
    for group in ("all", "any"):
        if group in node:
            results = [_judge(member, profile) for member in node[group]]
            return all(results) if group == "all" else any(results)
    if "tag" in node:
        return bool(node["tag"] in profile.tags)
    if "status" in node:
        return bool(profile.fields.get("status") == node["status"])
    if "field" in node:
        return _judge_field(node["field"], node["op"], node["value"], profile)
    raise _NotJudgeable(next(iter(node)))


def _judge_field(name: str, op: str, value: Any, profile: _Profile) -> bool:
    if name.startswith(ATTRIBUTE_PREFIX):
        return _judge_attribute(name.removeprefix(ATTRIBUTE_PREFIX), op, value, profile)
    kind = FIELDS[name]
    if kind == "datetime":
        raise _NotJudgeable(name)
    current = profile.fields.get(name)
    if op == "exists":
        present = current not in (None, "") if kind in ("text", "text_ci") else True
        return present if value else not present
    if op == "neq":
        return not _judge_field(name, "eq", value, profile)
    if kind == "text_ci":
        text = str(current or "").lower()
        if op == "in":
            return text in {str(item).lower() for item in value}
        if op == "contains":
            return str(value).lower() in text
        return text == str(value).lower()
    if op == "in":
        return current in value
    if op == "contains":
        return str(value) in str(current or "")
    if op in ("gt", "lt"):
        if not isinstance(current, int | float) or isinstance(current, bool):
            return False
        return current > value if op == "gt" else current < value
    return bool(current == value)


def _judge_attribute(key: str, op: str, value: Any, profile: _Profile) -> bool:
    present = key in profile.attributes
    if op == "exists":
        return present if value else not present
    if op == "neq":
        return not present or not _judge_attribute(key, "eq", value, profile)
    if not present:
        return False
    current = profile.attributes[key]
    if op == "eq":
        return bool(current == value and type(current) is type(value))
    if op == "in":
        return any(current == item and type(current) is type(item) for item in value)
    if op == "contains":
        return str(value).lower() in str(current).lower()
    if isinstance(value, str):
        day = parse_date(value)
        bound = day.isoformat() if day is not None else value
        if not isinstance(current, str):
            return False
        if day is not None and op == "gt":
            return current >= (day + dt.timedelta(days=1)).isoformat()
        return current > bound if op == "gt" else current < bound
    if isinstance(current, bool) or not isinstance(current, int | float):
        return False
    return current > value if op == "gt" else current < value


# --- the walk


@dataclass
class _Run:
    sequence: Sequence
    contact: Contact | None
    profile: _Profile
    use_database: bool
    zone: dt.tzinfo
    mailable: bool
    not_mailable_reason: str
    # The contact's id in engine.choice_seed; "profile" for a hypothetical contact.
    seed_contact: str
    start: dt.datetime
    reactions: list[Reaction]
    sent_times: list[dt.datetime]
    sent_at: dict[str, dt.datetime] = field(default_factory=dict)
    items: list[SimulatedItem] = field(default_factory=list)

    def add(self, at: dt.datetime, step: str, kind: str, detail: str) -> None:
        self.items.append(
            SimulatedItem(
                at=at.astimezone(dt.UTC),
                local=local_label(at, self.zone),
                step=step,
                kind=kind,
                detail=detail,
            )
        )


def _describe(event: dict[str, Any]) -> str:
    ((what, value),) = event.items()
    if what == "clicked_url" and isinstance(value, dict):
        return f"clicked_url({value.get('step')}, {value.get('url')})"
    return f"{what}({value})"


def _reaction_moment(run: _Run, event: dict[str, Any], started: dt.datetime) -> dt.datetime | None:
    """When what the wait_for waits for happens (the earliest such moment), or None."""
    ((what, value),) = event.items()
    moments: list[dt.datetime] = []
    for reaction in run.reactions:
        if what in ("opened", "clicked", "clicked_url"):
            if reaction.event not in REACTION_EVENTS:
                continue
            wanted_step = value.get("step") if isinstance(value, dict) else value
            if reaction.step != wanted_step or wanted_step not in run.sent_at:
                continue
            # A click counts as an open (engine.messages_clicked wakes opened waits too).
            if what == "clicked" and reaction.event == "opened":
                continue
            if what == "clicked_url":
                if reaction.event != "clicked_url":
                    continue
                if reaction.url and isinstance(value, dict) and reaction.url != value.get("url"):
                    continue
            moments.append(run.sent_at[wanted_step] + reaction.after)
        elif what == "event" and reaction.event == f"event:{value}":
            moment = run.start + reaction.after
            # The engine counts events that happen once the run is at this step (or later).
            if moment >= started:
                moments.append(moment)
        elif what == "stage" and reaction.event == f"stage:{value}":
            moments.append(run.start + reaction.after)
    if what == "stage" and str(value) in run.profile.stages:
        moments.append(started)
    return min(moments) if moments else None


def _goal_moment(run: _Run) -> tuple[dt.datetime, str] | None:
    """The first reaction that reaches an exit goal (an event) of the sequence."""
    goals = {
        goal.get("name") for goal in (run.sequence.exit_on or []) if goal.get("type") == "event"
    }
    hits = [
        (run.start + reaction.after, reaction.event.removeprefix("event:"))
        for reaction in run.reactions
        if reaction.event.startswith("event:") and reaction.event.removeprefix("event:") in goals
    ]
    return min(hits) if hits else None


def _condition(run: _Run, step: dict[str, Any]) -> tuple[bool, str]:
    """Whether the condition holds, and a note when it was not judged the usual way."""
    try:
        validated = segment_filter_validate(step["if"])
    except SegmentFilterError as exc:
        return False, _(" (%(error)s: the engine would fail the run here)") % {
            "error": exc.messages[0]
        }
    if run.use_database and not run.profile.changed and run.contact is not None:
        workspace = run.sequence.workspace
        matches = (
            segment_queryset(workspace=workspace, filter=validated)
            .filter(pk=run.contact.pk)
            .exists()
        )
        return matches, ""
    try:
        return _judge(validated, run.profile), ""
    except _NotJudgeable as exc:
        if run.contact is not None:
            workspace = run.sequence.workspace
            matches = (
                segment_queryset(workspace=workspace, filter=validated)
                .filter(pk=run.contact.pk)
                .exists()
            )
            return matches, _(" (judged on the stored contact; earlier simulated changes ignored)")
        return False, _(" (a %(kind)s condition cannot be judged for a hypothetical contact)") % {
            "kind": exc.args[0]
        }


def _seed(run: _Run, step_key: str) -> str:
    return choice_seed(sequence_id=run.sequence.pk, contact_id=run.seed_contact, step_key=step_key)


def _walk(run: _Run) -> None:
    steps = {step["key"]: dict(step) for step in run.sequence.steps}
    horizon = run.start + dt.timedelta(days=MAX_VIRTUAL_DAYS)
    goal = _goal_moment(run)
    now = run.start
    key: str | None = run.sequence.steps[0]["key"] if run.sequence.steps else None
    started = now
    instant = 0

    def goal_before(moment: dt.datetime) -> bool:
        """End the run as converted when a goal is reached before `moment`."""
        if goal is not None and goal[0] < moment:
            run.add(goal[0], key or "", "goal", _("converted (goal: %(goal)s)") % {"goal": goal[1]})
            return True
        return False

    while True:
        if len(run.items) >= MAX_ITEMS or now > horizon:
            run.add(
                min(now, horizon),
                key or "",
                "stop",
                _("simulation stopped after %(items)d items or %(days)d virtual days")
                % {"items": MAX_ITEMS, "days": MAX_VIRTUAL_DAYS},
            )
            return
        if goal_before(now):
            return
        if not key:
            run.add(now, "", "end", "completed")
            return
        step = steps.get(key)
        if step is None:
            run.add(now, key, "end", _("failed: unknown step %(key)s") % {"key": key})
            return
        kind = step["type"]
        if kind == "wait":
            if "duration" in step:
                due = started + parse_duration(step["duration"])
            else:
                due = next_local_time(started, step["until"], run.zone)
            run.add(now, key, kind, _("wait until %(time)s") % {"time": local_label(due, run.zone)})
            if goal_before(due):
                return
            now, key, started, instant = due, step.get("next"), due, 0
            continue
        if kind == "wait_for":
            timeout = started + parse_duration(step["timeout"])
            reacted = _reaction_moment(run, step["event"], started)
            what = _describe(step["event"])
            if reacted is not None and reacted < timeout:
                moment = max(reacted, started)
                if goal_before(moment):
                    return
                run.add(
                    moment,
                    key,
                    kind,
                    _("waited for %(what)s: yes after %(after)s")
                    % {"what": what, "after": _iso(moment - started)},
                )
                now, key = moment, step.get("yes")
            else:
                if goal_before(timeout):
                    return
                run.add(
                    timeout, key, kind, _("waited for %(what)s: no at timeout") % {"what": what}
                )
                now, key = timeout, step.get("no")
            started, instant = now, 0
            continue
        if kind == "email":
            if not run.mailable:
                run.add(
                    now,
                    key,
                    kind,
                    _("exit: contact not mailable (%(reason)s)")
                    % {"reason": run.not_mailable_reason},
                )
                return
            capped = cap_free_at(
                now,
                run.sent_times,
                per_day=run.sequence.workspace.frequency_cap_per_day,
                per_week=run.sequence.workspace.frequency_cap_per_week,
            )
            allowed = window_open_at(capped, run.sequence.send_window, run.zone)
            if allowed > now:
                reasons = []
                if capped > now:
                    reasons.append(_("the frequency cap"))
                if allowed > capped:
                    reasons.append(_("the send window"))
                run.add(
                    now,
                    key,
                    kind,
                    _("deferred by %(reasons)s to %(time)s")
                    % {"reasons": _(" and ").join(reasons), "time": local_label(allowed, run.zone)},
                )
                if goal_before(allowed):
                    return
                now, instant = allowed, 0
                continue
            variants = step.get("variants") or []
            subject, label = step["subject"], ""
            if variants:
                chosen = _choice(_seed(run, key), [int(v.get("weight", 1)) for v in variants])
                subject, label = (
                    variants[chosen]["subject"],
                    _(" (variant %(number)d)") % {"number": chosen + 1},
                )
            run.add(
                now,
                key,
                kind,
                _("email '%(subject)s'%(variant)s") % {"subject": subject, "variant": label},
            )
            run.sent_times.append(now)
            run.sent_at[key] = now
            key, started = step.get("next"), now
            continue
        instant += 1
        if instant > MAX_INSTANT_STEPS:
            run.add(
                now,
                key,
                kind,
                _("failed: more than %(count)d steps without a wait")
                % {"count": MAX_INSTANT_STEPS},
            )
            return
        target = step.get("next")
        if kind == "condition":
            matches, note = _condition(run, step)
            run.add(now, key, kind, (_("condition: yes") if matches else _("condition: no")) + note)
            target = step.get("yes") if matches else step.get("no")
        elif kind == "split":
            paths = step["paths"]
            chosen = _choice(_seed(run, key), [int(p["weight"]) for p in paths])
            run.add(now, key, kind, _("split: path %(number)d") % {"number": chosen + 1})
            target = paths[chosen].get("next")
        elif kind == "move_stage":
            stage = Stage.objects.filter(pk=step["stage"]).values_list("name", flat=True).first()
            if stage is None:
                run.add(now, key, kind, "failed: the stage no longer exists")
                return
            run.profile.stages.add(str(step["stage"]))
            run.profile.changed = True
            run.add(now, key, kind, _("move to stage %(stage)s") % {"stage": stage})
        elif kind in ("add_tag", "remove_tag"):
            tag = step["tag"].strip()
            if kind == "add_tag":
                run.profile.tags.add(tag)
            else:
                run.profile.tags.discard(tag)
            run.profile.changed = True
            run.add(
                now,
                key,
                kind,
                (_("tag added: %(tag)s") if kind == "add_tag" else _("tag removed: %(tag)s"))
                % {"tag": tag},
            )
        elif kind == "set_attribute":
            run.profile.attributes[step["name"]] = step["value"]
            run.profile.changed = True
            run.add(
                now,
                key,
                kind,
                _("attribute %(name)s set to %(value)r")
                % {"name": step["name"], "value": step["value"]},
            )
        elif kind == "webhook":
            run.add(
                now,
                key,
                kind,
                _("webhook to %(url)s (not called in a test drive)") % {"url": step["url"]},
            )
        elif kind == "exit":
            run.add(now, key, kind, "exit")
            return
        key, started = target, now


def _real_history(contact: Contact, start: dt.datetime) -> list[dt.datetime]:
    """The contact's marketing mails of the week before `start`, as the engine counts them."""
    return list(
        Message.objects.filter(contact=contact, status__in=CAP_COUNTED)
        .annotate(counted_at=Coalesce("sent_at", "created_at"))
        .filter(counted_at__gt=start - WEEK, counted_at__lte=start)
        .values_list("counted_at", flat=True)
    )


def simulate(
    *,
    sequence: Sequence,
    contact: Contact | None,
    profile: dict[str, Any] | None,
    reactions: list[dict[str, Any]],
    start: dt.datetime | None = None,
) -> list[SimulatedItem]:
    """The timeline `contact` (or the hypothetical `profile`, or both: the profile overrides
    the stored fields) would get from `sequence`, starting at `start` (default: now) with the
    given reactions. Reads only; writes and sends nothing. Raises ApplicationError naming the
    field for bad reactions or profile."""
    workspace = sequence.workspace
    if contact is not None and contact.workspace_id != sequence.workspace_id:
        raise ApplicationError(_("No such contact."), field="contact")
    start = (start or timezone.now()).astimezone(dt.UTC)
    parsed_reactions = reactions_parse(reactions, sequence=sequence)
    overrides = profile_parse(profile) or {}

    fields: dict[str, Any] = {}
    tags: set[str] = set()
    attributes: dict[str, Any] = {}
    stages: set[str] = set()
    if contact is not None:
        fields = {name: getattr(contact, name) for name in FIELDS}
        tags = set(contact.tags.values_list("name", flat=True))
        attributes = dict(contact.attributes or {})
        stages = {
            str(pk)
            for pk in ContactStage.objects.filter(contact=contact).values_list(
                "stage_id", flat=True
            )
        }
    else:
        fields = {"status": ContactStatus.SUBSCRIBED, "timezone": "", "email": ""}
    for name in FIELDS:
        if name in overrides:
            fields[name] = overrides[name]
    if "tags" in overrides:
        tags = set(overrides["tags"])
    if "attributes" in overrides:
        attributes = dict(overrides["attributes"])

    # An unsaved Contact only carries the time zone into engine.zone_of; it is never saved.
    zone = zone_of(Contact(timezone=fields.get("timezone") or ""), workspace)
    status = str(fields.get("status") or "")
    suppressed = bool(
        fields.get("email")
        and Suppression.objects.filter(
            workspace=workspace, email_hash=Suppression.hash_email(str(fields["email"]))
        ).exists()
    )
    run = _Run(
        sequence=sequence,
        contact=contact,
        profile=_Profile(fields=fields, tags=tags, attributes=attributes, stages=stages),
        use_database=contact is not None and not overrides,
        zone=zone,
        mailable=status == ContactStatus.SUBSCRIBED and not suppressed,
        not_mailable_reason="suppressed" if suppressed else status,
        seed_contact=str(contact.pk) if contact is not None else "profile",
        start=start,
        reactions=parsed_reactions,
        sent_times=_real_history(contact, start) if contact is not None else [],
    )
    _walk(run)
    return run.items
