"""The sequence report (API.md: GET /sequences/{id}/report/): per email step and variant, the
mail counts and rates of DESIGN.md, machine opens and bot clicks apart, and the totals.

Read from the daily message rollups (cohort by send day). Steps come in the order of the
sequence's graph; a step that was removed from the graph but has sent mails in the period
still shows, after the others, so the totals add up.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from analytics.models import MessageDaily
from analytics.queries.base import MailFigures, Period, mail_sums
from analytics.rollups import rollups_refresh_pending
from campaigns.models import Sequence
from core.models import Workspace


@dataclass(frozen=True)
class StepVariantFigures:
    """One email step's variant (0 for a step without variants, else k for variants[k - 1])
    with its mail figures."""

    step_key: str
    variant: int
    subject: str
    stage_id: str | None
    in_graph: bool
    mail: MailFigures


@dataclass(frozen=True)
class SequenceReport:
    sequence_id: uuid.UUID
    name: str
    period: Period
    steps: list[StepVariantFigures]
    totals: MailFigures
    previous: SequenceReport | None = None


def _email_steps(sequence: Sequence) -> list[dict[str, Any]]:
    return [step for step in sequence.steps or [] if step.get("type") == "email"]


class SequenceReportQuery:
    """Build the report of one of the workspace's sequences (Sequence.DoesNotExist for another
    workspace's: 404). With compare=True it carries the period right before, too."""

    def __init__(
        self,
        *,
        workspace: Workspace,
        sequence_id: uuid.UUID | str,
        period: Period,
        compare: bool = False,
    ) -> None:
        self.workspace = workspace
        self.sequence = Sequence.objects.get(workspace=workspace, pk=sequence_id)
        self.period = period
        self.compare = compare

    def run(self) -> SequenceReport:
        rollups_refresh_pending(workspace_id=str(self.workspace.pk))
        report = self._report(self.period)
        if self.compare:
            report = SequenceReport(
                **{**report.__dict__, "previous": self._report(self.period.previous())}
            )
        return report

    def _report(self, period: Period) -> SequenceReport:
        sums = mail_sums(
            MessageDaily.objects.filter(
                sequence=self.sequence, day__gte=period.start, day__lte=period.end
            ),
            "step_key",
            "variant",
        )
        steps: list[StepVariantFigures] = []
        for step in _email_steps(self.sequence):
            # The engine's convention: with variants, mail k >= 1 is variants[k - 1] and the
            # step's own content is not sent; without, every mail is variant 0.
            variants = step.get("variants") or []
            contents = list(enumerate(variants, start=1)) if variants else [(0, step)]
            for number, content in contents:
                steps.append(
                    StepVariantFigures(
                        step_key=str(step["key"]),
                        variant=number,
                        subject=str(content.get("subject", "")),
                        stage_id=str(step["stage"]) if step.get("stage") else None,
                        in_graph=True,
                        mail=sums.pop((str(step["key"]), number), MailFigures()),
                    )
                )
        for (step_key, variant), figures in sorted(sums.items()):
            steps.append(
                StepVariantFigures(
                    step_key=step_key,
                    variant=variant,
                    subject="",
                    stage_id=None,
                    in_graph=False,
                    mail=figures,
                )
            )
        return SequenceReport(
            sequence_id=self.sequence.pk,
            name=self.sequence.name,
            period=period,
            steps=steps,
            totals=MailFigures.total(step.mail for step in steps),
        )
