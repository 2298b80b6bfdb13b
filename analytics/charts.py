"""The charts of the analytics pages, drawn on the server as SVG, and the number formats the
pages and the charts share.

Every function here is pure: it takes a typed result of analytics.queries and returns markup,
so a chart can never show a figure the report (and so the API) does not have.

Safety: markup is only ever built with format_html / format_html_join, or joined with
`_markup`, which escapes whatever is not already safe markup. Names of funnels, stages, steps
and subjects are typed by people (DESIGN.md: escape everything from outside), so they always go
in as arguments, never into a format string.

Readability at any width: the charts have no viewBox. Horizontal positions are percentages of
the width the page gives the chart and every text is in pixels, so bars and axes stretch from a
phone to a 1280 px screen while the labels keep their size. Groups that need pixel offsets next
to a percentage position sit in a nested <svg x="..%"> whose children are placed in pixels.
Lines of the rate chart live in a nested <svg preserveAspectRatio="none"> stretched over the
plot, with non-scaling strokes, so they stay thin and their dashes even.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable, Sequence
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from django.utils.dateformat import format as date_format
from django.utils.formats import number_format
from django.utils.html import conditional_escape, format_html
from django.utils.safestring import SafeString
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy, ngettext, pgettext

from analytics.queries.base import UNIQUE_RATES, MailFigures, Money
from analytics.queries.broadcast import AbTest
from analytics.queries.funnel import FunnelReport, StageFigures
from analytics.queries.sequence import SequenceReport
from analytics.queries.timeseries import Point, TimeSeries
from campaigns.diagram import sequence_svg, timedelta_words

# The rates of DESIGN.md as the pages name them, in the order the pages list them.
RATE_LABELS = {
    "delivery_rate": gettext_lazy("Delivery rate"),
    "open_rate": gettext_lazy("Open rate"),
    "click_rate": gettext_lazy("Click rate"),
    "click_to_open_rate": gettext_lazy("Click-to-open rate"),
    "bounce_rate": gettext_lazy("Bounce rate"),
    "unsubscribe_rate": gettext_lazy("Unsubscribe rate"),
    "complaint_rate": gettext_lazy("Complaint rate"),
    "conversion_rate": gettext_lazy("Conversion rate"),
}
# What each rate is a share of: a bucket where that is 0 has no rate at all (the reports say
# 0.0 there, which a line would draw as a collapse), so the chart leaves a gap instead.
RATE_BASES = {
    "delivery_rate": "sent",
    "bounce_rate": "sent",
    "open_rate": "delivered",
    "click_rate": "delivered",
    "unsubscribe_rate": "delivered",
    "complaint_rate": "delivered",
    "conversion_rate": "delivered",
    "click_to_open_rate": "opened",
}
DEFAULT_RATES = ("open_rate", "click_rate", "bounce_rate")
# Distinct at a glance and for the common colour-vision deficiencies (no red/green pairs).
SERIES_COLOURS = ("#4f46e5", "#0e7490", "#b45309", "#be185d", "#475569", "#7c3aed", "#0f766e")

FUNNEL_LABEL = 24
FUNNEL_BAR = 34
FUNNEL_GAP = 30
NAME_CHARS = 30
PLOT_HEIGHT = 220
LEGEND_ROW = 22
AXIS_HEIGHT = 26
MAX_MARKERS = 62
# Space left and right of the plot, in percent of the width, for the markers at the ends.
INSET = 2.0
AB_ROW = 56


# --- numbers as people read them (the active language's separators)


def _rounded(value: float | int | Decimal, places: int) -> Decimal:
    """The value rounded half up to `places` decimals. number_format cuts digits off instead
    of rounding (1/6 would read 16.6 %), so every format rounds here first."""
    exact = value if isinstance(value, Decimal) else Decimal(repr(value))
    return exact.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP)


def format_count(value: int | Decimal) -> str:
    """20000 -> "20,000" (German: "20.000")."""
    return number_format(_rounded(value, 0), decimal_pos=0, force_grouping=True)


def format_rate(rate: float | None) -> str:
    """A rate as a percentage with one decimal: 0.25 -> "25.0%" (German: "25,0 %"); an em
    dash for an unknown one (the API's null)."""
    if rate is None:
        return "—"
    value = number_format(_rounded(rate * 100, 1), decimal_pos=1, force_grouping=True)
    return _("%(value)s%%") % {"value": value}


def mail_rate(mail: MailFigures, rate: str) -> float | None:
    """A rate of the mail figures as the API reports it: one over unique openers or clickers
    is None where anonymous tracking leaves it unknown (MailFigures.*_or_none)."""
    value: float | None = getattr(mail, f"{rate}_or_none" if rate in UNIQUE_RATES else rate)
    return value


def format_decimal(value: Decimal | float | None, places: int = 2) -> str:
    if value is None:
        return "—"
    return number_format(_rounded(value, places), decimal_pos=places, force_grouping=True)


def format_money(money: Money | None) -> str:
    """150 EUR -> "150.00 EUR"; an em dash when there is none."""
    if money is None:
        return "—"
    return f"{format_decimal(money.value, 2)} {money.currency}"


def format_duration(seconds: int | None) -> str:
    """A median time in a stage: 10800 -> "3 h"; an em dash when no stay has ended."""
    if seconds is None:
        return "—"
    return timedelta_words(dt.timedelta(seconds=seconds))


def format_p_value(p_value: float | None) -> str:
    if p_value is None:
        return "—"
    if p_value < 0.0001:
        return "< " + format_decimal(0.0001, 4)
    return format_decimal(p_value, 4)


def variant_letter(variant: int) -> str:
    """A broadcast's variant as people name it: 0 (its own content) is version A, 1 is B, ..."""
    return chr(ord("A") + variant) if 0 <= variant < 26 else str(variant)


def step_version_letter(variant: int) -> str:
    """A sequence step's variant as people name it. The engine numbers a step's variants from 1
    (variant k is variants[k - 1]; the step's own content is not sent), so 1 is version A; a
    step without variants (0) has no letter."""
    return variant_letter(variant - 1) if variant > 0 else ""


def axis_date(day: dt.date) -> str:
    """A short day for an axis: "Jan 6" (German: "6. Jan")."""
    return date_format(day, pgettext("chart axis date (PHP date format)", "M j"))


# --- markup helpers


def _markup(parts: Iterable[Any]) -> SafeString:
    """Join parts into markup: safe markup stays as it is, anything else is escaped."""
    return SafeString("".join(str(conditional_escape(part)) for part in parts))


def _clip(text: str, limit: int = NAME_CHARS) -> str:
    # Clipped before escaping, so an entity is never cut in half.
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _pct(value: float) -> str:
    """A coordinate in percent of the chart's width (enough digits for a 4K screen)."""
    return f"{value:.3f}%"


def _open_svg(*, css: str, height: int, label: str, description: str) -> SafeString:
    return format_html(
        '<svg xmlns="http://www.w3.org/2000/svg" class="chart {}" width="100%" height="{}" '
        'role="img" aria-label="{}"><title>{}</title><desc>{}</desc>',
        css,
        height,
        label,
        label,
        description,
    )


# --- the funnel


def _stage_sentence(stage: StageFigures) -> str:
    return _("%(stage)s: %(entered)s entered, %(advance)s moved on, %(lost)s lost") % {
        "stage": stage.name,
        "entered": format_count(stage.entered),
        "advance": format_rate(stage.advance_rate),
        "lost": format_count(stage.drop_off),
    }


def funnel_chart(report: FunnelReport) -> SafeString:
    """The funnel as narrowing horizontal bars, one per stage, as wide as the stays that began
    in the stage in the period (relative to the widest). Between two stages: the share of the
    upper stage's stays that moved on to a later stage. The stage that loses the most people
    is drawn in the warning colour and says so. With a previous period, its bars are dashed
    outlines on the same scale, and the counts name it."""
    stages = report.stages
    previous = (
        {stage.stage_id: stage for stage in report.previous.stages} if report.previous else {}
    )
    label = _("Funnel %(name)s") % {"name": report.name}
    if not stages:
        return _markup(
            [
                _open_svg(css="funnel-chart", height=40, label=label, description=""),
                format_html(
                    '<text x="50%" y="24" text-anchor="middle" class="chart-empty">{}</text>',
                    _("This funnel has no stages yet."),
                ),
                SafeString("</svg>"),
            ]
        )
    widest = max(
        [stage.entered for stage in stages] + [stage.entered for stage in previous.values()]
    )
    row = FUNNEL_LABEL + FUNNEL_BAR + FUNNEL_GAP
    height = len(stages) * row - FUNNEL_GAP + 4
    worst = report.loses_most
    description = "; ".join(_stage_sentence(stage) for stage in stages)
    if worst is not None:
        description += ". " + _("%(stage)s loses the most people.") % {"stage": worst.name}
    parts: list[Any] = [
        _open_svg(css="funnel-chart", height=height, label=label, description=description)
    ]
    for index, stage in enumerate(stages):
        top = index * row
        bar_top = top + FUNNEL_LABEL
        width = 100 * stage.entered / widest if widest else 0
        shown = max(width, 0.8)
        counts = _("%(count)s entered") % {"count": format_count(stage.entered)}
        before = previous.get(stage.stage_id)
        if before is not None:
            counts += " " + _("(previous: %(count)s)") % {"count": format_count(before.entered)}
        css = "funnel-stage loses-most" if stage.loses_most else "funnel-stage"
        parts.append(
            format_html(
                '<g class="{}" data-stage="{}" data-entered="{}"><title>{}</title>'
                '<text class="stage-name" x="0" y="{}">{}</text>'
                '<text class="stage-count" x="100%" y="{}" text-anchor="end">{}</text>'
                '<rect class="track" x="0" y="{}" width="100%" height="{}" rx="6"/>'
                '<rect class="bar" x="{}" y="{}" width="{}" height="{}" rx="6"/>',
                css,
                stage.key,
                stage.entered,
                _stage_sentence(stage),
                top + 16,
                _clip(stage.name),
                top + 16,
                counts,
                bar_top,
                FUNNEL_BAR,
                _pct((100 - shown) / 2),
                bar_top,
                _pct(shown),
                FUNNEL_BAR,
            )
        )
        if before is not None and before.entered:
            previous_width = max(100 * before.entered / widest, 0.8)
            parts.append(
                format_html(
                    '<rect class="previous-bar" x="{}" y="{}" width="{}" height="{}" rx="6"/>',
                    _pct((100 - previous_width) / 2),
                    bar_top + 3,
                    _pct(previous_width),
                    FUNNEL_BAR - 6,
                )
            )
        if stage.loses_most:
            parts.append(
                format_html(
                    '<text class="loses-most-note" x="50%" y="{}" text-anchor="middle">{}</text>',
                    bar_top + FUNNEL_BAR / 2 + 5,
                    _("Loses the most: %(count)s (%(rate)s)")
                    % {
                        "count": format_count(stage.drop_off),
                        "rate": format_rate(stage.drop_off_rate),
                    },
                )
            )
        parts.append(SafeString("</g>"))
        if index < len(stages) - 1:
            parts.append(
                format_html(
                    '<text class="stage-rate" x="50%" y="{}" text-anchor="middle" '
                    'data-rate="{}">{}</text>',
                    bar_top + FUNNEL_BAR + 20,
                    f"{stage.advance_rate:.6f}",
                    _("↓ %(rate)s moved on") % {"rate": format_rate(stage.advance_rate)},
                )
            )
    parts.append(SafeString("</svg>"))
    return _markup(parts)


# --- rates over time


def _rate_of(mail: MailFigures, rate: str) -> float | None:
    """The bucket's rate, or None where it is undefined (nothing to take a share of) or
    unknown (anonymous tracking: the API's null)."""
    base = RATE_BASES.get(rate, "sent")
    value = mail_rate(mail, rate)
    if not getattr(mail, base) or value is None:
        return None
    return float(value)


def _y_max(values: Iterable[float]) -> float:
    """A round top for the axis, at least the largest value."""
    largest = max(values, default=0.0)
    for top in (0.01, 0.02, 0.05, 0.1, 0.2, 0.25, 0.5, 0.75, 1.0):
        if largest <= top:
            return top
    return math.ceil(largest * 4) / 4


def _segments(values: Sequence[float | None]) -> list[list[tuple[int, float]]]:
    """Runs of defined values (index, value), split where a value is undefined."""
    runs: list[list[tuple[int, float]]] = []
    current: list[tuple[int, float]] = []
    for index, value in enumerate(values):
        if value is None:
            if current:
                runs.append(current)
            current = []
        else:
            current.append((index, value))
    if current:
        runs.append(current)
    return runs


def _x(index: int, count: int) -> float:
    """The position of bucket `index` of `count` in percent of the plot's width."""
    return 50.0 if count <= 1 else 100 * index / (count - 1)


def _plot_x(index: int, count: int) -> float:
    """The position of bucket `index` in percent of the whole chart's width (plot inset)."""
    return INSET + (100 - 2 * INSET) * _x(index, count) / 100


def _tick_indexes(count: int, most: int = 5) -> list[int]:
    """At most `most` buckets to label, evenly spread, always the first and the last."""
    if count <= most:
        return list(range(count))
    return sorted({round(number * (count - 1) / (most - 1)) for number in range(most)})


def rate_chart(series: TimeSeries, rates: Sequence[str] = DEFAULT_RATES) -> SafeString:
    """The chosen rates per day or week as lines, with a legend; with a previous period, each
    rate's previous values as a dashed line over the same buckets (bucket 1 against bucket 1).
    Buckets whose rate is undefined (no mail to take a share of) or unknown (anonymous
    tracking) leave a gap in the line."""
    rates = [rate for rate in rates if rate in RATE_LABELS] or list(DEFAULT_RATES)
    points = series.points
    previous_points = series.previous.points if series.previous else []
    count = len(points)
    values = {rate: [_rate_of(point.mail, rate) for point in points] for rate in rates}
    previous_values = {
        rate: [_rate_of(point.mail, rate) for point in previous_points[:count]] for rate in rates
    }
    top_value = _y_max(
        value
        for table in (values, previous_values)
        for row in table.values()
        for value in row
        if value is not None
    )
    legend_items: list[tuple[str, str, bool]] = [
        (str(RATE_LABELS[rate]), SERIES_COLOURS[number % len(SERIES_COLOURS)], False)
        for number, rate in enumerate(rates)
    ]
    if series.previous is not None:
        legend_items.append((_("Previous period"), "#6b7280", True))
    legend_rows = math.ceil(len(legend_items) / 2)
    plot_top = legend_rows * LEGEND_ROW + 18
    height = plot_top + PLOT_HEIGHT + AXIS_HEIGHT
    interval_word = _("week") if series.interval == "week" else _("day")
    label = _("%(rates)s per %(interval)s, %(start)s to %(end)s") % {
        "rates": ", ".join(str(RATE_LABELS[rate]) for rate in rates),
        "interval": interval_word,
        "start": series.period.start.isoformat(),
        "end": series.period.end.isoformat(),
    }
    described = []
    for rate in rates:
        shown = [value for value in values[rate] if value is not None]
        if shown:
            described.append(
                _("%(rate)s from %(low)s to %(high)s")
                % {
                    "rate": RATE_LABELS[rate],
                    "low": format_rate(min(shown)),
                    "high": format_rate(max(shown)),
                }
            )
    if not described:
        described.append(_("No mail was sent in this period."))
    parts: list[Any] = [
        _open_svg(css="rate-chart", height=height, label=label, description="; ".join(described))
    ]
    for number, (name, colour, dashed) in enumerate(legend_items):
        parts.append(
            format_html(
                '<svg class="legend-item" x="{}" y="{}" overflow="visible">'
                '<line x1="0" y1="8" x2="22" y2="8" stroke="{}" stroke-width="{}"{}/>'
                '<text x="30" y="12">{}</text></svg>',
                _pct(50 * (number % 2)),
                (number // 2) * LEGEND_ROW,
                colour,
                2 if dashed else 3,
                SafeString(' stroke-dasharray="5 4"') if dashed else "",
                name,
            )
        )
    for step in range(5):
        value = top_value * step / 4
        y = plot_top + PLOT_HEIGHT - PLOT_HEIGHT * step / 4
        parts.append(
            format_html(
                '<line class="grid" x1="0" x2="100%" y1="{}" y2="{}"/>'
                '<text class="axis-label y-label" x="0" y="{}">{}</text>',
                y,
                y,
                y - 6,
                format_rate(value),
            )
        )
    # The plot is inset so the first and last markers are not cut in half.
    parts.append(
        format_html(
            '<svg class="plot" x="{}" y="{}" width="{}" height="{}" viewBox="0 0 1000 {}" '
            'preserveAspectRatio="none" overflow="visible">',
            _pct(INSET),
            plot_top,
            _pct(100 - 2 * INSET),
            PLOT_HEIGHT,
            PLOT_HEIGHT,
        )
    )

    def y_of(value: float) -> float:
        return PLOT_HEIGHT - PLOT_HEIGHT * value / top_value

    for number, rate in enumerate(rates):
        colour = SERIES_COLOURS[number % len(SERIES_COLOURS)]
        for table, css in ((previous_values, "line previous"), (values, "line")):
            for run in _segments(table[rate]):
                if len(run) < 2:
                    continue  # a line of one point draws nothing: its marker shows it
                coordinates = " ".join(
                    f"{10 * _x(index, count):.2f},{y_of(value):.2f}" for index, value in run
                )
                parts.append(
                    format_html(
                        '<polyline class="{}" data-rate="{}" points="{}" stroke="{}" fill="none" '
                        'vector-effect="non-scaling-stroke"/>',
                        css,
                        rate,
                        coordinates,
                        colour,
                    )
                )
    parts.append(SafeString("</svg>"))
    # Markers carry each value's tooltip; above MAX_MARKERS buckets they would crowd the line,
    # so only points without a neighbour (a polyline of one point draws nothing) keep one.
    for number, rate in enumerate(rates):
        colour = SERIES_COLOURS[number % len(SERIES_COLOURS)]
        for table, chosen_points, previous in (
            (previous_values, previous_points, True),
            (values, points, False),
        ):
            for run in _segments(table[rate]):
                if len(run) > 1 and (previous or count > MAX_MARKERS):
                    continue
                for index, value in run:
                    parts.append(
                        _marker(
                            point=chosen_points[index],
                            rate=rate,
                            value=value,
                            x=_pct(_plot_x(index, count)),
                            y=f"{plot_top + y_of(value):.2f}",
                            colour=colour,
                            previous=previous,
                        )
                    )
    for index in _tick_indexes(count):
        position = _x(index, count)
        anchor = "start" if index == 0 and count > 1 else "end" if index == count - 1 else "middle"
        parts.append(
            format_html(
                '<text class="axis-label" x="{}" y="{}" text-anchor="{}">{}</text>',
                _pct(INSET + (100 - 2 * INSET) * position / 100),
                plot_top + PLOT_HEIGHT + 18,
                anchor if count > 1 else "middle",
                axis_date(points[index].start),
            )
        )
    parts.append(SafeString("</svg>"))
    return _markup(parts)


def _marker(
    *, point: Point, rate: str, value: float, x: str, y: str, colour: str, previous: bool
) -> SafeString:
    when = (
        axis_date(point.start)
        if point.start == point.end
        else f"{axis_date(point.start)} \u2013 {axis_date(point.end)}"
    )
    title = f"{when}: {RATE_LABELS[rate]} {format_rate(value)}"
    if previous:
        title = _("Previous period, %(point)s") % {"point": title}
    return format_html(
        '<circle class="{}" cx="{}" cy="{}" r="3.5" fill="{}" stroke="{}" data-rate="{}" '
        'data-day="{}" data-value="{}"><title>{}</title></circle>',
        "marker previous" if previous else "marker",
        x,
        y,
        "#fff" if previous else colour,
        colour if previous else "#fff",
        rate,
        point.start.isoformat(),
        f"{value:.6f}",
        title,
    )


# --- A/B test


def ab_chart(ab_test: AbTest) -> SafeString:
    """One bar per variant of the A/B sample: the test's metric, successes of
    delivered, the leader (or decided winner) drawn in the brand colour; under them the metric
    and the p-value. The subjects are in each bar's tooltip (the page's table lists them: on a
    phone they would not fit next to the figures)."""
    metric = str(RATE_LABELS.get(ab_test.metric, ab_test.metric))
    variants = ab_test.variants
    # Rates of a few percent would be slivers on a 0 to 100 % scale: the bars share a round
    # top just above the best rate, and the note says which.
    scale = _y_max(variant.rate for variant in variants)
    notes = ab_note(ab_test)
    height = len(variants) * AB_ROW + 30
    label = _("A/B test: %(metric)s per version") % {"metric": metric}
    description = "; ".join(
        _("Version %(letter)s: %(rate)s (%(successes)s of %(delivered)s)")
        % {
            "letter": variant_letter(variant.variant),
            "rate": format_rate(variant.rate),
            "successes": format_count(variant.successes),
            "delivered": format_count(variant.delivered),
        }
        for variant in variants
    )
    parts: list[Any] = [
        _open_svg(css="ab-chart", height=height, label=label, description=f"{description}. {notes}")
    ]
    for index, variant in enumerate(variants):
        top = index * AB_ROW
        css = "ab-variant leader" if variant.variant == ab_test.leader else "ab-variant"
        name = _("Version %(letter)s") % {"letter": variant_letter(variant.variant)}
        if variant.variant == ab_test.winner:
            name += " · " + _("winner")
        figures = _("%(rate)s · %(successes)s of %(delivered)s") % {
            "rate": format_rate(variant.rate),
            "successes": format_count(variant.successes),
            "delivered": format_count(variant.delivered),
        }
        parts.append(
            format_html(
                '<g class="{}" data-variant="{}" data-rate="{}"><title>{}</title>'
                '<text class="variant-name" x="0" y="{}">{}</text>'
                '<text class="variant-figures" x="100%" y="{}" text-anchor="end">{}</text>'
                '<rect class="track" x="0" y="{}" width="100%" height="22" rx="5"/>'
                '<rect class="bar" x="0" y="{}" width="{}" height="22" rx="5"/></g>',
                css,
                variant.variant,
                f"{variant.rate:.6f}",
                f"{name}: {variant.subject}",
                top + 16,
                name,
                top + 16,
                figures,
                top + 24,
                top + 24,
                _pct(max(100 * variant.rate / scale, 0.5)),
            )
        )
    parts.append(
        format_html(
            '<text class="ab-note" x="0" y="{}">{}</text></svg>',
            len(variants) * AB_ROW + 14,
            _("%(metric)s, bars from 0 to %(top)s · p = %(p)s")
            % {
                "metric": metric,
                "top": format_rate(scale),
                "p": format_p_value(ab_test.p_value),
            },
        )
    )
    return _markup(parts)


def ab_note(ab_test: AbTest) -> str:
    """What the A/B test says, in one sentence for people."""
    if ab_test.p_value is None:
        return _("There is only one version: nothing to compare.")
    if ab_test.decided and ab_test.winner_by_chance:
        return _("No opens or clicks told the versions apart: the winner was chosen by chance.")
    if ab_test.significant:
        return _("Version %(letter)s leads beyond chance (p = %(p)s, below 5%%).") % {
            "letter": variant_letter(ab_test.leader),
            "p": format_p_value(ab_test.p_value),
        }
    return _(
        "Version %(letter)s leads, but the difference could be chance (p = %(p)s, not below 5%%)."
    ) % {"letter": variant_letter(ab_test.leader), "p": format_p_value(ab_test.p_value)}


# --- the sequence diagram with each step's rates


def step_annotations(report: SequenceReport, *, most_variants: int = 3) -> dict[str, list[str]]:
    """Lines under each email step of the diagram: for a step without variants, its sent and
    delivered mails and open and click rates; for one with variants, a line per version (at
    most `most_variants`, then how many more)."""
    by_step: dict[str, list[Any]] = {}
    for figures in report.steps:
        by_step.setdefault(figures.step_key, []).append(figures)
    annotations: dict[str, list[str]] = {}
    for key, rows in by_step.items():
        if len(rows) == 1 and rows[0].variant == 0:
            mail = rows[0].mail
            annotations[key] = [
                _("%(sent)s sent · %(delivery)s delivered")
                % {"sent": format_count(mail.sent), "delivery": format_rate(mail.delivery_rate)},
                _("%(open)s opened · %(click)s clicked")
                % {
                    "open": format_rate(mail_rate(mail, "open_rate")),
                    "click": format_rate(mail_rate(mail, "click_rate")),
                },
            ]
            continue
        lines = [
            _("%(letter)s: %(sent)s sent · %(open)s opened · %(click)s clicked")
            % {
                "letter": step_version_letter(row.variant),
                "sent": format_count(row.mail.sent),
                "open": format_rate(mail_rate(row.mail, "open_rate")),
                "click": format_rate(mail_rate(row.mail, "click_rate")),
            }
            for row in rows[:most_variants]
        ]
        if len(rows) > most_variants:
            hidden = len(rows) - most_variants
            lines.append(
                ngettext("%(count)d more version", "%(count)d more versions", hidden)
                % {"count": hidden}
            )
        annotations[key] = lines
    return annotations


def sequence_chart(
    steps: list[dict[str, Any]], *, stage_names: dict[str, str], report: SequenceReport
) -> SafeString:
    """The builder's flow diagram of the sequence with each email step's rates in its box.

    campaigns.diagram escapes every text it draws (its docstring's promise, tested there and
    in tests/analytics/test_charts.py), which is what makes its output safe markup here."""
    svg = sequence_svg(steps, stage_names=stage_names, annotations=step_annotations(report))
    return SafeString(svg)
