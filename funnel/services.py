"""Writes of the funnel app: funnels and stages, moving contacts, recording events, applying
stage rules and recording conversions."""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from django.db import IntegrityError, connection, transaction
from django.db.models import ProtectedError, RestrictedError
from django.utils import timezone
from django.utils.text import slugify
from django.utils.translation import gettext as _
from psycopg2.extras import Json, execute_values

from contacts.models import Contact, ContactStatus
from core.exceptions import ApplicationError, ConflictError
from core.models import Workspace
from funnel import signals
from funnel.conditions import validate_where, where_matches
from funnel.models import (
    ContactStage,
    Conversion,
    Event,
    Funnel,
    Stage,
    StageRule,
    StageTransition,
    TransitionCause,
)
from funnel.presets import PRESET_STAGES

MAX_BATCH = 1000

# --- funnels and stages


def _unique_key(funnel: Funnel, name: str, taken: set[str]) -> str:
    base = slugify(name).replace("-", "_")[:50] or "stage"
    key, number = base, 2
    while key in taken:
        key, number = f"{base}_{number}", number + 1
    return key


@transaction.atomic
def funnel_create(
    *,
    workspace: Workspace,
    name: str,
    preset: str | None = None,
    goal_event: str = "",
    stages: Sequence[dict[str, Any]] = (),
) -> Funnel:
    """Create a funnel from a preset (aida, journey) or with the given stages
    [{"name", "key"?}] in order; keys are made from the names where not given."""
    name = name.strip()
    if not name:
        raise ApplicationError(_("A funnel needs a name."), field="name")
    if preset and preset not in PRESET_STAGES:
        raise ApplicationError(_("Use the preset aida or journey."), field="preset")
    funnel = Funnel.objects.create(
        workspace=workspace, name=name, preset=preset or None, goal_event=goal_event.strip()
    )
    if preset:
        Stage.objects.bulk_create(
            Stage(funnel=funnel, key=key, name=stage_name, position=position)
            for position, (key, stage_name) in enumerate(PRESET_STAGES[preset])
        )
    else:
        funnel_set_stages(funnel=funnel, stages=[spec for spec in stages if spec.get("name")])
    return funnel


@transaction.atomic
def funnel_update(
    *,
    funnel: Funnel,
    name: str | None = None,
    goal_event: str | None = None,
    stages: Sequence[dict[str, Any]] | None = None,
) -> Funnel:
    """Change name, goal and (when given) the stages, all or nothing."""
    if name is not None:
        if not name.strip():
            raise ApplicationError(_("A funnel needs a name."), field="name")
        funnel.name = name.strip()
    if goal_event is not None:
        funnel.goal_event = goal_event.strip()
    funnel.save()
    if stages is not None:
        funnel_set_stages(funnel=funnel, stages=stages)
    return funnel


@transaction.atomic
def funnel_set_stages(*, funnel: Funnel, stages: Sequence[dict[str, Any]]) -> list[Stage]:
    """Make the funnel's stages these, in this order: [{"id"?, "name", "key"?}].

    Existing stages (by id) are renamed and moved, keeping their history; stages without an id
    are added; stages left out are deleted, which is refused for a stage that contacts are in
    or have passed through (its history would go): rename it instead.
    """
    existing = {
        str(stage.pk): stage for stage in Stage.objects.select_for_update().filter(funnel=funnel)
    }
    keep_ids = {str(spec["id"]) for spec in stages if spec.get("id")}
    unknown = keep_ids - set(existing)
    if unknown:
        raise ApplicationError(
            _("Unknown stage %(id)s.") % {"id": sorted(unknown)[0]}, field="stages"
        )
    for stage_id in set(existing) - keep_ids:
        stage_delete(stage=existing[stage_id])
    taken = {stage.key for stage_id, stage in existing.items() if stage_id in keep_ids}
    result = []
    for position, spec in enumerate(stages):
        name = str(spec.get("name", "")).strip()
        if not name:
            raise ApplicationError(_("Every stage needs a name."), field="stages")
        if spec.get("id"):
            stage = existing[str(spec["id"])]
            stage.name, stage.position = name, position
            stage.save(update_fields=["name", "position"])
        else:
            key = slugify(str(spec.get("key") or "")).replace("-", "_") or _unique_key(
                funnel, name, taken
            )
            if key in taken:
                raise ApplicationError(
                    _("Stage key %(key)s is taken.") % {"key": key}, field="stages"
                )
            taken.add(key)
            stage = Stage.objects.create(funnel=funnel, name=name, key=key, position=position)
        result.append(stage)
    return result


@transaction.atomic
def stage_add(*, funnel: Funnel, name: str) -> Stage:
    """Add a stage at the end."""
    stages = list(Stage.objects.select_for_update().filter(funnel=funnel))
    specs = [{"id": stage.pk, "name": stage.name} for stage in stages] + [{"name": name}]
    return funnel_set_stages(funnel=funnel, stages=specs)[-1]


@transaction.atomic
def stage_delete(*, stage: Stage) -> None:
    """Delete a stage nobody is in and nobody has passed through."""
    if ContactStage.objects.filter(stage=stage).exists():
        raise ConflictError(_("Contacts are in this stage; move them first."), field="stages")
    try:
        stage.delete()
    except (ProtectedError, RestrictedError) as exc:
        raise ConflictError(
            _("This stage has history; rename it instead of deleting it."), field="stages"
        ) from exc


# --- moving contacts


@transaction.atomic
def contact_move(
    *,
    funnel: Funnel,
    contact: Contact,
    stage: Stage,
    cause: str,
    cause_detail: str = "",
    reason: str = "",
    occurred_at: datetime | None = None,
) -> StageTransition | None:
    """Put the contact into `stage`: forward, backward, skipping, or entering the funnel.

    Returns the transition, or None when nothing moved: the contact is there already, or the
    move comes from a late event older than the contact's current place (history is not
    rewritten by events that arrive out of order).
    """
    if stage.funnel_id != funnel.pk or contact.workspace_id != funnel.workspace_id:
        raise ApplicationError(_("That stage is not in this funnel."), field="stage")
    occurred_at = occurred_at or timezone.now()
    current = (
        ContactStage.objects.select_for_update().filter(contact=contact, funnel=funnel).first()
    )
    if current is not None and (current.stage_id == stage.pk or occurred_at < current.entered_at):
        return None
    transition = StageTransition.objects.create(
        workspace_id=funnel.workspace_id,
        funnel=funnel,
        contact=contact,
        from_stage_id=current.stage_id if current else None,
        to_stage=stage,
        occurred_at=occurred_at,
        cause=cause,
        cause_detail=cause_detail[:200],
        reason=reason[:500],
    )
    if current is None:
        try:
            with transaction.atomic():
                ContactStage.objects.create(
                    contact=contact, funnel=funnel, stage=stage, entered_at=occurred_at
                )
        except IntegrityError:
            ContactStage.objects.filter(contact=contact, funnel=funnel).update(
                stage=stage, entered_at=occurred_at
            )
    else:
        current.stage, current.entered_at = stage, occurred_at
        current.save(update_fields=["stage", "entered_at"])
    signals.stage_changed.send(
        sender=StageTransition,
        workspace_id=str(funnel.workspace_id),
        funnel_id=str(funnel.pk),
        contact_id=str(contact.pk),
        from_stage_id=str(transition.from_stage_id) if transition.from_stage_id else None,
        to_stage_id=str(stage.pk),
        cause=cause,
        transition_id=str(transition.pk),
    )
    return transition


# --- stage rules


def validate_rule_when(*, funnel: Funnel, when: Any) -> dict[str, Any]:
    if not isinstance(when, dict) or len({"event", "clicked_step"} & set(when)) != 1:
        raise ApplicationError(
            _('Give {"event": name, "where"?: {...}} or {"clicked_step": step id}.'), field="when"
        )
    if "event" in when:
        name = str(when["event"]).strip()
        if not name:
            raise ApplicationError(_("Name the event."), field="when")
        return {"event": name, "where": validate_where(when.get("where"))}
    return {"clicked_step": str(when["clicked_step"])}


@transaction.atomic
def rule_create(*, funnel: Funnel, when: Any, move_to: Stage) -> StageRule:
    if move_to.funnel_id != funnel.pk:
        raise ApplicationError(_("That stage is not in this funnel."), field="move_to")
    position = StageRule.objects.filter(funnel=funnel).count()
    return StageRule.objects.create(
        funnel=funnel,
        when=validate_rule_when(funnel=funnel, when=when),
        move_to=move_to,
        position=position,
    )


@transaction.atomic
def rule_update(*, rule: StageRule, when: Any = None, move_to: Stage | None = None) -> StageRule:
    if when is not None:
        rule.when = validate_rule_when(funnel=rule.funnel, when=when)
    if move_to is not None:
        if move_to.funnel_id != rule.funnel_id:
            raise ApplicationError(_("That stage is not in this funnel."), field="move_to")
        rule.move_to = move_to
    rule.save()
    return rule


def rules_apply_click(
    *, contact: Contact, step_id: str, occurred_at: datetime | None = None
) -> int:
    """A person (not a scanner) clicked a link in the mail of sequence step `step_id`: apply
    the clicked_step rules. Returns how many contacts moves happened."""
    return rules_apply_clicks([(contact, step_id, occurred_at)])


def rules_apply_clicks(clicks: Sequence[tuple[Contact, str, datetime | None]]) -> int:
    """rules_apply_click for the first clicks of a batch, each (contact, step id, when): one
    query finds the clicked_step rules of all of them (most clicks have none), then each
    matching rule moves its contact. Returns how many moves happened."""
    if not clicks:
        return 0
    rules: dict[tuple[Any, str], list[StageRule]] = defaultdict(list)
    for rule in StageRule.objects.filter(
        funnel__workspace_id__in={contact.workspace_id for contact, _step, _at in clicks},
        when__clicked_step__in=sorted({step_id for _contact, step_id, _at in clicks}),
    ).select_related("funnel", "move_to"):
        rules[(rule.funnel.workspace_id, rule.when.get("clicked_step"))].append(rule)
    moved = 0
    for contact, step_id, occurred_at in clicks:
        for rule in rules.get((contact.workspace_id, step_id), ()):
            if contact_move(
                funnel=rule.funnel,
                contact=contact,
                stage=rule.move_to,
                cause=TransitionCause.RULE,
                cause_detail=f"rule:{rule.pk}",
                occurred_at=occurred_at,
            ):
                moved += 1
    return moved


# --- events


@dataclass(frozen=True)
class EventInput:
    """One event as the API or an integration hands it over (already validated in shape)."""

    name: str
    contact_id: uuid.UUID | None = None
    email: str = ""
    properties: dict[str, Any] = field(default_factory=dict)
    value: Decimal | None = None
    currency: str = ""
    occurred_at: datetime | None = None
    external_id: str | None = None
    source: str = ""
    channel: str = ""


@dataclass
class BatchResult:
    created: int = 0
    duplicates: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)
    event_ids: list[uuid.UUID] = field(default_factory=list)


def _resolve_contacts(
    *, workspace: Workspace, inputs: Sequence[EventInput]
) -> tuple[dict[int, uuid.UUID], list[dict[str, Any]]]:
    """The contact id for each input index; unknown emails become not_subscribed contacts.
    Ids only, no model instances: a batch names up to a thousand contacts."""
    contacts = Contact.objects.filter(workspace=workspace)
    ids = {item.contact_id for item in inputs if item.contact_id}
    known_ids = set(contacts.filter(pk__in=ids).values_list("pk", flat=True))
    emails = {item.email for item in inputs if not item.contact_id and item.email}
    by_email = dict(contacts.filter(email__in=emails).values_list("email", "pk"))
    missing = emails - set(by_email)
    if missing:
        Contact.objects.bulk_create(
            [
                Contact(
                    workspace=workspace,
                    email=email,
                    status=ContactStatus.NOT_SUBSCRIBED,
                    source="event",
                )
                for email in sorted(missing)
            ],
            ignore_conflicts=True,
        )
        by_email.update(contacts.filter(email__in=missing).values_list("email", "pk"))
    resolved: dict[int, uuid.UUID] = {}
    errors: list[dict[str, Any]] = []
    for index, item in enumerate(inputs):
        contact_id = (
            (item.contact_id if item.contact_id in known_ids else None)
            if item.contact_id
            else by_email.get(item.email)
        )
        if contact_id is None:
            errors.append({"index": index, "errors": {"contact": [_("No such contact.")]}})
        else:
            resolved[index] = contact_id
    return resolved, errors


def _insert_events(rows: list[Event]) -> set[uuid.UUID]:
    """Insert, skipping rows whose external_id is stored already; returns the inserted ids.

    On PostgreSQL one INSERT ... ON CONFLICT DO NOTHING RETURNING id per batch: Django's
    bulk_create compiles its SQL value by value and cannot say which rows it skipped, which
    made it most of the cost of /events/batch/ (bench/events.py).
    """
    if not rows:
        return set()
    if connection.vendor != "postgresql":
        Event.objects.bulk_create(rows, ignore_conflicts=True, batch_size=MAX_BATCH)
        return set(
            Event.objects.filter(pk__in=[row.pk for row in rows]).values_list("pk", flat=True)
        )
    columns = [
        "id", "workspace_id", "contact_id", "name", "properties", "value", "currency",
        "occurred_at", "received_at", "source", "channel", "external_id",
    ]  # fmt: skip
    values = [
        (
            row.pk, row.workspace_id, row.contact_id, row.name, Json(row.properties), row.value,
            row.currency, row.occurred_at, row.received_at, row.source, row.channel,
            row.external_id,
        )
        for row in rows
    ]  # fmt: skip
    # Built from the model's table and the fixed column list above, never from input.
    sql = (
        f'INSERT INTO "{Event._meta.db_table}" ({", ".join(columns)}) VALUES %s '  # noqa: S608
        "ON CONFLICT DO NOTHING RETURNING id"
    )
    with connection.cursor() as cursor:
        inserted = execute_values(cursor.cursor, sql, values, page_size=MAX_BATCH, fetch=True)
    return {
        row_id if isinstance(row_id, uuid.UUID) else uuid.UUID(row_id) for (row_id,) in inserted
    }


@transaction.atomic
def events_record(*, workspace: Workspace, inputs: Sequence[EventInput]) -> BatchResult:
    """Store events, idempotent by external_id (a repeated one is a duplicate, also when two
    requests race: the unique constraint decides). Items naming an unknown contact are errors
    by index; the others are stored. Rules and goals are applied after commit, in one task
    for the batch (funnel.events_process). `result.event_ids` lists the stored events."""
    from funnel.tasks import events_process

    if len(inputs) > MAX_BATCH:
        raise ApplicationError(
            _("At most %(count)d events per batch.") % {"count": MAX_BATCH}, field="events"
        )
    result = BatchResult()
    contacts, result.errors = _resolve_contacts(workspace=workspace, inputs=inputs)
    now = timezone.now()
    candidates: list[Event] = []
    seen_external: set[str] = set()
    for index, item in enumerate(inputs):
        contact_id = contacts.get(index)
        if contact_id is None:
            continue
        if item.external_id:
            if item.external_id in seen_external:
                result.duplicates += 1
                continue
            seen_external.add(item.external_id)
        candidates.append(
            Event(
                id=uuid.uuid4(),
                workspace_id=workspace.pk,
                contact_id=contact_id,
                name=item.name,
                properties=item.properties,
                value=item.value,
                currency=item.currency.upper(),
                occurred_at=item.occurred_at or now,
                received_at=now,
                source=item.source,
                channel=item.channel,
                external_id=item.external_id or None,
            )
        )
    stored = _insert_events(candidates)
    result.event_ids = [event.pk for event in candidates if event.pk in stored]
    result.created = len(result.event_ids)
    result.duplicates += len(candidates) - result.created
    if result.event_ids:
        event_ids = [str(event_id) for event_id in result.event_ids]
        transaction.on_commit(lambda: events_process.delay(event_ids))
    return result


def event_by_external_id(*, workspace: Workspace, external_id: str) -> Event | None:
    return Event.objects.filter(workspace=workspace, external_id=external_id).first()


def events_process(*, event_ids: Iterable[str]) -> int:
    """Apply stage rules and funnel goals to newly stored events, in time order, and announce
    them. Each event is claimed once (processed_at), so running it twice does nothing more.
    Returns how many events were processed."""
    processed = 0
    events = (
        Event.objects.filter(pk__in=list(event_ids), processed_at__isnull=True)
        .select_related("contact")
        .order_by("occurred_at")
    )
    rules_by_workspace: dict[uuid.UUID, list[StageRule]] = {}
    goals_by_workspace: dict[uuid.UUID, list[Funnel]] = {}
    for event in events:
        with transaction.atomic():
            if not Event.objects.filter(pk=event.pk, processed_at__isnull=True).update(
                processed_at=timezone.now()
            ):
                continue
            workspace_id = event.workspace_id
            if workspace_id not in rules_by_workspace:
                rules_by_workspace[workspace_id] = list(
                    StageRule.objects.filter(
                        funnel__workspace_id=workspace_id, when__has_key="event"
                    ).select_related("funnel", "move_to")
                )
                goals_by_workspace[workspace_id] = list(
                    Funnel.objects.filter(workspace_id=workspace_id).exclude(goal_event="")
                )
            _apply_rules(event, rules_by_workspace[workspace_id])
            _record_conversions(event, goals_by_workspace[workspace_id])
            signals.event_recorded.send(
                sender=Event,
                workspace_id=str(workspace_id),
                event_id=str(event.pk),
                contact_id=str(event.contact_id),
                name=event.name,
            )
            processed += 1
    return processed


def _apply_rules(event: Event, rules: list[StageRule]) -> None:
    moved_funnels: set[uuid.UUID] = set()
    for rule in rules:
        if rule.when.get("event") != event.name or rule.funnel_id in moved_funnels:
            continue
        if not where_matches(rule.when.get("where") or {}, event.properties):
            continue
        # The first matching rule of a funnel wins (rules are ordered by position).
        moved_funnels.add(rule.funnel_id)
        contact_move(
            funnel=rule.funnel,
            contact=event.contact,
            stage=rule.move_to,
            cause=TransitionCause.RULE,
            cause_detail=f"rule:{rule.pk} event:{event.pk}",
            occurred_at=event.occurred_at,
        )


def _stage_at(*, funnel: Funnel, contact_id: uuid.UUID, at: datetime) -> uuid.UUID | None:
    """The stage the contact was in just before `at` (a late event is credited to the stage
    of its own time, and not to a move the same event caused)."""
    return (
        StageTransition.objects.filter(funnel=funnel, contact_id=contact_id, occurred_at__lt=at)
        .order_by("-occurred_at")
        .values_list("to_stage_id", flat=True)
        .first()
    )


def _record_conversions(event: Event, funnels: list[Funnel]) -> None:
    for funnel in funnels:
        if funnel.goal_event != event.name:
            continue
        conversion, created = Conversion.objects.get_or_create(
            funnel=funnel,
            event=event,
            defaults={
                "contact": event.contact,
                "stage_id": _stage_at(
                    funnel=funnel, contact_id=event.contact_id, at=event.occurred_at
                ),
                "value": event.value,
                "currency": event.currency,
                "occurred_at": event.occurred_at,
            },
        )
        if created:
            signals.contact_converted.send(
                sender=Conversion,
                workspace_id=str(event.workspace_id),
                funnel_id=str(funnel.pk),
                contact_id=str(event.contact_id),
                conversion_id=str(conversion.pk),
                event_id=str(event.pk),
            )
