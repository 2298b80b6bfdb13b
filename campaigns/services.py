"""Writes of the campaigns app: sequences and enrollments. (Sending: campaigns/engine.py.)"""

from __future__ import annotations

from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import F, QuerySet
from django.utils import timezone
from django.utils.translation import gettext as _

from campaigns.graph import validate_exit_on, validate_send_window, validate_steps, validate_trigger
from campaigns.models import (
    Enrollment,
    EnrollmentStatus,
    Message,
    MessageStatus,
    Reentry,
    Sequence,
    SequenceStatus,
)
from campaigns.rendering import check_template
from campaigns.tracking_links import validate_utm
from contacts.models import Contact, MailingList, Segment
from core.exceptions import ApplicationError, ConflictError
from core.models import Workspace
from funnel.models import Funnel, Stage

EDITABLE = ("name", "funnel", "trigger", "exit_on", "reentry", "send_window", "steps")


def _validated(
    *, workspace: Workspace, data: dict[str, Any], funnel: Funnel | None
) -> dict[str, Any]:
    stage_ids = (
        {str(pk) for pk in Stage.objects.filter(funnel=funnel).values_list("pk", flat=True)}
        if funnel
        else set()
    )
    cleaned: dict[str, Any] = {}
    if "name" in data:
        name = str(data["name"]).strip()
        if not name:
            raise ApplicationError(_("A sequence needs a name."), field="name")
        cleaned["name"] = name[:150]
    if "steps" in data:
        cleaned["steps"] = validate_steps(
            data["steps"], stage_ids=stage_ids, check_template=check_template
        )
    if "trigger" in data:
        cleaned["trigger"] = validate_trigger(
            data["trigger"],
            stage_ids=stage_ids,
            list_ids={
                str(pk)
                for pk in MailingList.objects.filter(workspace=workspace).values_list(
                    "pk", flat=True
                )
            },
            segment_ids={
                str(pk)
                for pk in Segment.objects.filter(workspace=workspace).values_list("pk", flat=True)
            },
        )
    if "utm" in data:
        cleaned["utm"] = validate_utm(data["utm"])
    if "exit_on" in data:
        cleaned["exit_on"] = validate_exit_on(data["exit_on"])
    if "send_window" in data:
        cleaned["send_window"] = validate_send_window(data["send_window"])
    if "reentry" in data:
        if data["reentry"] not in Reentry.values:
            raise ApplicationError(_("Use never, after_exit or always."), field="reentry")
        cleaned["reentry"] = data["reentry"]
    return cleaned


def _funnel_of(workspace: Workspace, funnel: Funnel | None) -> Funnel | None:
    if funnel is not None and funnel.workspace_id != workspace.pk:
        raise ApplicationError(_("Choose one of this workspace's funnels."), field="funnel")
    return funnel


@transaction.atomic
def sequence_create(*, workspace: Workspace, funnel: Funnel | None = None, **data: Any) -> Sequence:
    """Create a draft sequence. Steps and trigger are validated (errors name the step)."""
    funnel = _funnel_of(workspace, funnel)
    data.setdefault("trigger", {"type": "manual"})
    cleaned = _validated(workspace=workspace, data=data, funnel=funnel)
    if "name" not in cleaned:
        raise ApplicationError(_("A sequence needs a name."), field="name")
    if "steps" not in cleaned:
        raise ApplicationError(_("A sequence needs at least one step."), field="steps")
    return Sequence.objects.create(workspace=workspace, funnel=funnel, **cleaned)


@transaction.atomic
def sequence_update(*, sequence: Sequence, **data: Any) -> Sequence:
    """Change a sequence; each change makes a new version.

    Editing an active sequence never strands an enrollment: one that waits at a step that is
    kept continues there; one at a removed step continues at the first step after it (in the
    old graph) that still exists, or completes when none does.
    """
    sequence = Sequence.objects.select_for_update().get(pk=sequence.pk)
    funnel = _funnel_of(sequence.workspace, data.pop("funnel", sequence.funnel))
    cleaned = _validated(workspace=sequence.workspace, data=data, funnel=funnel)
    if "steps" in cleaned:
        _relocate_enrollments(sequence=sequence, new_steps=cleaned["steps"])
    for name, value in cleaned.items():
        setattr(sequence, name, value)
    sequence.funnel = funnel
    sequence.version = F("version") + 1
    sequence.save()
    sequence.refresh_from_db()
    return sequence


def _relocate_enrollments(*, sequence: Sequence, new_steps: list[dict[str, Any]]) -> None:
    from campaigns.graph import successors

    old = {step["key"]: step for step in sequence.steps}
    kept = {step["key"] for step in new_steps}
    removed = set(old) - kept
    if not removed:
        return
    for key in removed:
        target, seen, frontier = None, set(), list(successors(old[key]))
        while frontier and target is None:
            candidate = frontier.pop(0)
            if candidate in seen:
                continue
            seen.add(candidate)
            if candidate in kept:
                target = candidate
            elif candidate in old:
                frontier.extend(successors(old[candidate]))
        active = Enrollment.objects.filter(
            sequence=sequence, status=EnrollmentStatus.ACTIVE, current_step=key
        )
        if target is None:
            active.update(
                status=EnrollmentStatus.COMPLETED,
                finished_at=timezone.now(),
                exit_reason=f"step {key} removed",
                next_run_at=None,
            )
        else:
            active.update(
                current_step=target, next_run_at=timezone.now(), step_started_at=timezone.now()
            )


@transaction.atomic
def sequence_set_status(*, sequence: Sequence, status: str) -> Sequence:
    """Activate, pause or archive. Pausing keeps every enrollment where it is; activating
    again lets them go on (waits that passed meanwhile fire at once)."""
    if status not in SequenceStatus.values:
        raise ApplicationError(_("Unknown status."), field="status")
    if status == SequenceStatus.ACTIVE and not sequence.steps:
        raise ConflictError(_("A sequence without steps cannot run."))
    Sequence.objects.filter(pk=sequence.pk).update(status=status, updated_at=timezone.now())
    sequence.refresh_from_db()
    return sequence


UNSENT = (MessageStatus.QUEUED, MessageStatus.RETRYING)
"""Messages not yet handed to the mail service: they can still be cancelled."""


def messages_cancel_unsent(messages: QuerySet[Message], reason: str) -> int:
    """Cancel those of `messages` not yet handed to the mail service, with `reason`."""
    return int(
        messages.filter(status__in=UNSENT).update(status=MessageStatus.CANCELLED, error=reason)
    )


def enrollments_end(enrollments: QuerySet[Enrollment], *, status: str, reason: str) -> int:
    """End those of `enrollments` still active with `status` ("exited", "converted") and
    `reason`; returns how many. Their mails are the caller's to cancel (messages_cancel_unsent):
    which ones differs (a run's, or all of a contact's)."""
    return int(
        enrollments.filter(status=EnrollmentStatus.ACTIVE).update(
            status=status, exit_reason=reason[:200], finished_at=timezone.now(), next_run_at=None
        )
    )


@transaction.atomic
def enrollment_create(
    *, sequence: Sequence, contact: Contact, reason: str = "manual"
) -> Enrollment | None:
    """Start the contact on the sequence's first step, due now.

    Honours the re-entry policy (`never`: once per contact; `after_exit`: again once the
    previous run has ended; `always`: at every entry, a run still active is ended as "exited"
    with the reason "restarted" and its unsent mails cancelled, in the same transaction) and
    the rule of one active run per contact and sequence; returns None when the contact may not
    (or already does) run through it.
    """
    if contact.workspace_id != sequence.workspace_id:
        raise ApplicationError(_("That contact is not in this workspace."), field="contact")
    if sequence.status != SequenceStatus.ACTIVE:
        raise ConflictError(_("The sequence is not active."))
    previous = Enrollment.objects.filter(sequence=sequence, contact=contact)
    if sequence.reentry == Reentry.NEVER and previous.exists():
        return None
    active = previous.filter(status=EnrollmentStatus.ACTIVE)
    restart = sequence.reentry == Reentry.ALWAYS
    if not restart and active.exists():
        return None
    now = timezone.now()
    try:
        with transaction.atomic():
            if restart:
                _runs_restart(list(active.values_list("pk", flat=True)))
            return Enrollment.objects.create(
                workspace_id=sequence.workspace_id,
                sequence=sequence,
                contact=contact,
                current_step=sequence.steps[0]["key"],
                next_run_at=now,
                step_started_at=now,
                exit_reason="",
            )
    except IntegrityError:  # a concurrent trigger won the race; one active run is enough
        return None


def _runs_restart(enrollment_ids: list[Any]) -> None:
    """End the runs a new entry restarts (re-entry `always`) and cancel their unsent mails."""
    if not enrollment_ids:
        return
    enrollments_end(
        Enrollment.objects.filter(pk__in=enrollment_ids),
        status=EnrollmentStatus.EXITED,
        reason="restarted",
    )
    messages_cancel_unsent(
        Message.objects.filter(enrollment_id__in=enrollment_ids), "cancelled: the run restarted"
    )
