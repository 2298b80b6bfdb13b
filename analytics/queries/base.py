"""What every report shares: the period it covers, the mail figures and rates of DESIGN.md
("Semantics everyone relies on") and money.

Rates are plain ratios (0.25 = 25 %), 0.0 when the denominator is 0; definitions in
docs/analytics.md.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from decimal import Decimal
from typing import Any

from django.db.models import QuerySet, Sum
from django.utils.translation import gettext as _

from analytics.models import MessageDaily
from core.exceptions import ApplicationError

DEFAULT_DAYS = 30
# Two years of days: enough for a year-over-year look, small enough for a daily series.
MAX_DAYS = 731


def ratio(part: float | int | Decimal, whole: float | int | Decimal) -> float:
    """part / whole as a float, 0.0 for an empty whole."""
    return float(part) / float(whole) if whole else 0.0


def _parse_day(value: object, field: str) -> dt.date | None:
    if value in (None, ""):
        return None
    try:
        return dt.date.fromisoformat(str(value))
    except ValueError:
        raise ApplicationError(_("Enter a date as YYYY-MM-DD."), field=field) from None


@dataclass(frozen=True)
class Period:
    """Whole UTC days from `start` to `end`, both included (the rollups' days)."""

    start: dt.date
    end: dt.date

    @classmethod
    def parse(
        cls,
        *,
        start: object = None,
        end: object = None,
        today: dt.date,
        default_days: int = DEFAULT_DAYS,
    ) -> Period:
        """The period of ?from=&to= (ISO dates); without them the last `default_days` days up
        to today. ApplicationError naming the field for a malformed date, a start after the
        end, or more than MAX_DAYS days."""
        start_day = _parse_day(start, "from")
        end_day = _parse_day(end, "to") or (today if start_day is None else max(today, start_day))
        if start_day is None:
            start_day = end_day - dt.timedelta(days=default_days - 1)
        if start_day > end_day:
            raise ApplicationError(_("The end must not be before the start."), field="to")
        if (end_day - start_day).days + 1 > MAX_DAYS:
            raise ApplicationError(
                _("Choose at most %(days)d days.") % {"days": MAX_DAYS}, field="from"
            )
        return cls(start=start_day, end=end_day)

    @property
    def days(self) -> int:
        return (self.end - self.start).days + 1

    @property
    def starts_at(self) -> dt.datetime:
        return dt.datetime.combine(self.start, dt.time(0), tzinfo=dt.UTC)

    @property
    def ends_at(self) -> dt.datetime:
        """The first moment after the period."""
        return dt.datetime.combine(self.end + dt.timedelta(days=1), dt.time(0), tzinfo=dt.UTC)

    def previous(self) -> Period:
        """The period of the same length right before this one (for comparisons)."""
        length = dt.timedelta(days=self.days)
        return Period(start=self.start - length, end=self.end - length)


@dataclass(frozen=True)
class Money:
    value: Decimal
    currency: str


@dataclass(frozen=True)
class MailFigures:
    """Counts of sent mails (cohort by send day) and the rates DESIGN.md defines over them.

    opened and clicked are unique human openers and clickers (a click counts as an open);
    machine_opened and bot_clicked count mails a privacy proxy opened or a scanner clicked;
    converted counts mails whose recipient reached a funnel goal within the conversion window
    after clicking.

    anonymous_*: opens and clicks of mails tracked anonymously (no message, so no unique
    openers or clickers), counted as events on the day they happened. Where people's ones
    are counted, the rates built on unique openers or clickers are unknown: the *_or_none
    properties (what the API shows) are None then; the plain rates count personal tracking
    only (docs/analytics.md, "Anonymous tracking mode").
    """

    sent: int = 0
    bounced: int = 0
    opened: int = 0
    clicked: int = 0
    machine_opened: int = 0
    bot_clicked: int = 0
    complained: int = 0
    unsubscribed: int = 0
    converted: int = 0
    anonymous_opens: int = 0
    anonymous_clicks: int = 0
    anonymous_machine_opens: int = 0
    anonymous_bot_clicks: int = 0

    @property
    def delivered(self) -> int:
        return self.sent - self.bounced

    @property
    def delivery_rate(self) -> float:
        return ratio(self.delivered, self.sent)

    @property
    def open_rate(self) -> float:
        return ratio(self.opened, self.delivered)

    @property
    def click_rate(self) -> float:
        return ratio(self.clicked, self.delivered)

    @property
    def click_to_open_rate(self) -> float:
        return ratio(self.clicked, self.opened)

    @property
    def bounce_rate(self) -> float:
        return ratio(self.bounced, self.sent)

    @property
    def unsubscribe_rate(self) -> float:
        return ratio(self.unsubscribed, self.delivered)

    @property
    def complaint_rate(self) -> float:
        return ratio(self.complained, self.delivered)

    @property
    def conversion_rate(self) -> float:
        return ratio(self.converted, self.delivered)

    # Unique openers are unknown once a person opened or clicked an anonymously tracked mail
    # (a click counts as an open); unique clickers (and the mails converted after a click)
    # once a person clicked one. Machines' events change no unique count.

    @property
    def open_rate_or_none(self) -> float | None:
        return None if self.anonymous_opens or self.anonymous_clicks else self.open_rate

    @property
    def click_rate_or_none(self) -> float | None:
        return None if self.anonymous_clicks else self.click_rate

    @property
    def click_to_open_rate_or_none(self) -> float | None:
        return None if self.anonymous_opens or self.anonymous_clicks else self.click_to_open_rate

    @property
    def conversion_rate_or_none(self) -> float | None:
        return None if self.anonymous_clicks else self.conversion_rate

    def __add__(self, other: MailFigures) -> MailFigures:
        return MailFigures(
            **{
                field.name: getattr(self, field.name) + getattr(other, field.name)
                for field in fields(self)
            }
        )

    @classmethod
    def of(cls, row: Mapping[str, Any]) -> MailFigures:
        return cls(**{field.name: int(row.get(field.name) or 0) for field in fields(cls)})

    @classmethod
    def total(cls, figures: Iterable[MailFigures]) -> MailFigures:
        result = cls()
        for figure in figures:
            result = result + figure
        return result


MAIL_COUNTS = tuple(field.name for field in fields(MailFigures))
# The rates over unique openers or clickers (None with anonymous activity: *_or_none).
UNIQUE_RATES = ("open_rate", "click_rate", "click_to_open_rate", "conversion_rate")
RATES = (
    "delivery_rate",
    "open_rate",
    "click_rate",
    "click_to_open_rate",
    "bounce_rate",
    "unsubscribe_rate",
    "complaint_rate",
    "conversion_rate",
)


def mail_sums(
    rollups: QuerySet[MessageDaily], *group_by: str
) -> dict[tuple[Any, ...], MailFigures]:
    """The MessageDaily rows summed per `group_by` values (one query)."""
    rows = (
        rollups.order_by()
        .values(*group_by)
        .annotate(**{count: Sum(count) for count in MAIL_COUNTS})
    )
    return {tuple(row[name] for name in group_by): MailFigures.of(row) for row in rows}


def mail_total(rollups: QuerySet[MessageDaily]) -> MailFigures:
    """The MessageDaily rows summed into one figure (one query)."""
    return MailFigures.of(rollups.aggregate(**{count: Sum(count) for count in MAIL_COUNTS}))
