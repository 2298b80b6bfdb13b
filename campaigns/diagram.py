"""The flow diagram of a sequence's steps, drawn on the server as SVG.

Layout: the row of a step is its breadth-first depth from the first step (the entry); the
steps of one row are spread in columns in the order the search met them. Edges that go down
are S-curves from the bottom of a box to the top of the next; edges that go back up (loops) or
sideways curve around the right-hand side. The output depends only on the input, so tests can
compare its structure.

Every text from outside (keys, subjects, tags, URLs, stage names) passes through
django.utils.html.escape before it is put into the SVG; the SVG is built with format strings
over escaped values and numbers only. That is what makes it safe for a view to mark the whole
string safe.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from django.utils.html import escape
from django.utils.translation import gettext as _

from campaigns.graph import successors
from core.durations import parse_duration

BOX_WIDTH = 232
BOX_HEIGHT = 78
COLUMN_GAP = 44
ROW_GAP = 64
MARGIN = 24
LANE_GAP = 18
SUBJECT_CHARS = 30
# Optional lines under a box's own content (e.g. a report's rates per step): each line adds this
# much height to every box, so rows stay aligned.
ANNOTATION_LINE = 17
ANNOTATION_CHARS = 36

# (symbol, fill colour of the icon) per step type; symbols are in the fonts every system has.
ICONS: dict[str, tuple[str, str]] = {
    "email": ("✉", "#4f46e5"),
    "wait": ("◷", "#b45309"),
    "wait_for": ("?", "#0e7490"),
    "condition": ("◆", "#7c3aed"),
    "split": ("⇉", "#be185d"),
    "move_stage": ("→", "#047857"),
    "add_tag": ("+", "#2563eb"),
    "remove_tag": ("\u2212", "#2563eb"),
    "set_attribute": ("=", "#2563eb"),
    "webhook": ("↗", "#475569"),
    "exit": ("■", "#b91c1c"),
}


def step_type_label(kind: str) -> str:
    """The name of a step type for people."""
    labels = {
        "email": _("Email"),
        "wait": _("Wait"),
        "wait_for": _("Wait for reaction"),
        "condition": _("Condition"),
        "split": _("Split"),
        "move_stage": _("Move to stage"),
        "add_tag": _("Add tag"),
        "remove_tag": _("Remove tag"),
        "set_attribute": _("Set attribute"),
        "webhook": _("Webhook"),
        "exit": _("Exit"),
    }
    return labels.get(kind, kind)


def duration_words(text: Any) -> str:
    """ "P2D" -> "2 days", "PT1H30M" -> "1 h 30 min"; the text itself if it does not parse."""
    try:
        delta = parse_duration(str(text))
    except ValueError:
        return str(text)
    return timedelta_words(delta)


def timedelta_words(delta: dt.timedelta) -> str:
    days, seconds = delta.days, delta.seconds
    parts: list[str] = []
    if days:
        if days % 7 == 0:
            weeks = days // 7
            parts.append(
                _("%(n)d week") % {"n": weeks} if weeks == 1 else _("%(n)d weeks") % {"n": weeks}
            )
        else:
            parts.append(
                _("%(n)d day") % {"n": days} if days == 1 else _("%(n)d days") % {"n": days}
            )
    if seconds // 3600:
        parts.append(_("%(n)d h") % {"n": seconds // 3600})
    if seconds % 3600 // 60:
        parts.append(_("%(n)d min") % {"n": seconds % 3600 // 60})
    if seconds % 60:
        parts.append(_("%(n)d s") % {"n": seconds % 60})
    return " ".join(parts) or _("no time")


def _clip(text: str, limit: int = SUBJECT_CHARS) -> str:
    # Clipped before escaping, so an entity is never cut in half.
    return text if len(text) <= limit else text[: limit - 1] + "…"


def step_summary(step: dict[str, Any], *, stage_names: dict[str, str]) -> str:
    """One line saying what a step does (plain text, not escaped)."""
    kind = step.get("type", "")
    if kind == "email":
        return str(step.get("subject") or _("(no subject)"))
    if kind == "wait":
        if "duration" in step:
            return _("wait %(duration)s") % {"duration": duration_words(step["duration"])}
        return _("until %(time)s local time") % {"time": step.get("until", "")}
    if kind == "wait_for":
        event = step.get("event") or {}
        what, value = next(iter(event.items())) if isinstance(event, dict) and event else ("", "")
        if what == "opened":
            reaction = _("opened %(step)s") % {"step": value}
        elif what == "clicked":
            reaction = _("clicked in %(step)s") % {"step": value}
        elif what == "clicked_url":
            url = value.get("url", "") if isinstance(value, dict) else ""
            reaction = _("clicked %(url)s") % {"url": url}
        elif what == "event":
            reaction = _("event %(name)s") % {"name": value}
        elif what == "stage":
            reaction = _("reached %(stage)s") % {"stage": stage_names.get(str(value), value)}
        else:
            reaction = _("a reaction")
        return _("%(reaction)s, up to %(timeout)s") % {
            "reaction": reaction,
            "timeout": duration_words(step.get("timeout", "")),
        }
    if kind == "condition":
        return _("if %(rule)s") % {"rule": _condition_words(step.get("if"))}
    if kind == "split":
        return _("%(n)d random paths") % {"n": len(step.get("paths") or [])}
    if kind == "move_stage":
        stage = str(step.get("stage", ""))
        return _("to %(stage)s") % {"stage": stage_names.get(stage, stage)}
    if kind in ("add_tag", "remove_tag"):
        return str(step.get("tag", ""))
    if kind == "set_attribute":
        return f"{step.get('name', '')} = {step.get('value', '')}"
    if kind == "webhook":
        return str(step.get("url", ""))
    if kind == "exit":
        return _("end of the sequence")
    return ""


def _condition_words(rule: Any) -> str:
    if not isinstance(rule, dict) or not rule:
        return "…"
    if "all" in rule or "any" in rule:
        group = "all" if "all" in rule else "any"
        return _("%(count)d conditions (%(group)s)") % {
            "count": len(rule[group] or []),
            "group": group,
        }
    field = rule.get("field") or rule.get("attribute") or rule.get("tag") or next(iter(rule))
    return str(field)


@dataclass(frozen=True)
class _Box:
    index: int
    key: str
    row: int
    column: int
    x: int
    y: int


@dataclass(frozen=True)
class _Edge:
    source: str
    target: str
    kind: str  # next | yes | no | path
    label: str


def _layout(steps: list[dict[str, Any]]) -> dict[str, tuple[int, int]]:
    """key -> (row, column): BFS depth from the first step, columns in discovery order."""
    keys = [step["key"] for step in steps]
    by_key = {step["key"]: step for step in steps}
    depth: dict[str, int] = {}
    order: list[str] = []
    if keys:
        depth[keys[0]] = 0
        order.append(keys[0])
        position = 0
        while position < len(order):
            current = order[position]
            position += 1
            for target in successors(by_key[current]):
                if target in by_key and target not in depth:
                    depth[target] = depth[current] + 1
                    order.append(target)
    # Steps no path reaches (a draft being edited) go below everything, in list order.
    bottom = max(depth.values(), default=-1) + 1
    for key in keys:
        if key not in depth:
            depth[key] = bottom
            order.append(key)
    columns: dict[int, int] = {}
    placed: dict[str, tuple[int, int]] = {}
    for key in order:
        row = depth[key]
        placed[key] = (row, columns.get(row, 0))
        columns[row] = columns.get(row, 0) + 1
    return placed


def _edges(steps: list[dict[str, Any]], known: set[str]) -> list[_Edge]:
    edges: list[_Edge] = []
    for step in steps:
        kind = step.get("type")
        if kind in ("wait_for", "condition"):
            for branch in ("yes", "no"):
                target = step.get(branch)
                if target in known:
                    label = _("yes") if branch == "yes" else _("no")
                    edges.append(_Edge(step["key"], target, branch, label))
        elif kind == "split":
            paths = [path for path in step.get("paths") or [] if isinstance(path, dict)]
            total = sum(p.get("weight", 0) for p in paths if isinstance(p.get("weight"), int))
            for path in paths:
                target = path.get("next")
                if target not in known:
                    continue
                raw_weight = path.get("weight")
                weight = raw_weight if isinstance(raw_weight, int) else 0
                label = f"{round(100 * weight / total)} %" if total else "?"
                edges.append(_Edge(step["key"], target, "path", label))
        elif kind != "exit" and step.get("next") in known:
            edges.append(_Edge(step["key"], step["next"], "next", ""))
    return edges


def sequence_svg(
    steps: list[dict[str, Any]],
    *,
    stage_names: dict[str, str],
    annotations: Mapping[str, list[str]] | None = None,
) -> str:
    """The SVG flow diagram of `steps` (the JSON shape of API.md).

    `stage_names` maps a stage id (as a string) to its name, for the email stage badges and
    move_stage steps. `annotations` (optional) maps a step key to plain-text lines drawn at the
    bottom of its box; the analytics report uses it for each step's rates, so the builder's
    diagram and the report's are one drawing. Every text that comes from the steps, the names
    or the annotations is escaped.
    """
    steps = [step for step in steps if isinstance(step, dict) and isinstance(step.get("key"), str)]
    if not steps:
        return (
            '<svg xmlns="http://www.w3.org/2000/svg" class="sequence-diagram" role="img" '
            'viewBox="0 0 320 60" width="320" height="60">'
            '<text x="160" y="34" text-anchor="middle" class="empty">{}</text></svg>'
        ).format(escape(_("No steps yet.")))
    annotations = annotations or {}
    lines = max((len(annotations.get(step["key"], [])) for step in steps), default=0)
    box_height = BOX_HEIGHT + (lines * ANNOTATION_LINE + 6 if lines else 0)
    placed = _layout(steps)
    rows: dict[int, int] = {}
    for row, _column in placed.values():
        rows[row] = rows.get(row, 0) + 1
    widest = max(rows.values())
    row_count = max(rows) + 1
    edges = _edges(steps, set(placed))
    back_edges = [
        edge
        for edge in edges
        if placed[edge.target][0] < placed[edge.source][0] or edge.target == edge.source
    ]
    content_width = widest * BOX_WIDTH + (widest - 1) * COLUMN_GAP
    lanes = len(back_edges) * LANE_GAP + (24 if back_edges else 0)
    width = 2 * MARGIN + content_width + lanes
    height = 2 * MARGIN + row_count * box_height + (row_count - 1) * ROW_GAP

    boxes: dict[str, _Box] = {}
    for index, step in enumerate(steps):
        row, column = placed[step["key"]]
        in_row = rows[row]
        row_width = in_row * BOX_WIDTH + (in_row - 1) * COLUMN_GAP
        x = MARGIN + (content_width - row_width) // 2 + column * (BOX_WIDTH + COLUMN_GAP)
        y = MARGIN + row * (box_height + ROW_GAP)
        boxes[step["key"]] = _Box(index, step["key"], row, column, x, y)

    parts: list[str] = [
        '<svg xmlns="http://www.w3.org/2000/svg" class="sequence-diagram" role="img" '
        'viewBox="0 0 {w} {h}" width="{w}" height="{h}" aria-label="{label}">'.format(
            w=width, h=height, label=escape(_("Flow diagram of the sequence"))
        ),
        "<defs>"
        '<marker id="seq-arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" '
        'markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" '
        'class="arrowhead"/></marker>'
        "</defs>",
    ]
    parts.extend(_edge_paths(edges, boxes, back_edges, content_width, box_height))
    for step in steps:
        parts.append(
            _box(
                step,
                boxes[step["key"]],
                stage_names=stage_names,
                box_height=box_height,
                annotation=annotations.get(step["key"], []),
            )
        )
    parts.append("</svg>")
    return "".join(parts)


def _edge_paths(
    edges: list[_Edge],
    boxes: dict[str, _Box],
    back_edges: list[_Edge],
    content_width: int,
    box_height: int = BOX_HEIGHT,
) -> list[str]:
    drawn: list[str] = []
    seen_pairs: dict[tuple[str, str], int] = {}
    for edge in edges:
        source, target = boxes[edge.source], boxes[edge.target]
        repeat = seen_pairs.get((edge.source, edge.target), 0)
        seen_pairs[(edge.source, edge.target)] = repeat + 1
        if edge in back_edges:
            lane = MARGIN + content_width + 24 + back_edges.index(edge) * LANE_GAP
            x1, y1 = source.x + BOX_WIDTH, source.y + box_height // 2 + 8 * repeat
            x2, y2 = target.x + BOX_WIDTH, target.y + box_height // 2 - 8 * repeat
            path = f"M{x1},{y1} C{lane},{y1} {lane},{y2} {x2 + 2},{y2}"
            label_x, label_y = lane - 4, (y1 + y2) // 2
            css = f"edge edge-{edge.kind} edge-back"
        elif source.row == target.row:
            # Sideways within a row: from the facing sides, bowing below the boxes.
            right = target.x > source.x
            x1 = source.x + (BOX_WIDTH if right else 0)
            x2 = target.x + (0 if right else BOX_WIDTH)
            y1 = y2 = source.y + box_height // 2 + 8 * repeat
            bow = source.y + box_height + ROW_GAP // 2
            path = f"M{x1},{y1} C{x1},{bow} {x2},{bow} {x2 + (-2 if right else 2)},{y2}"
            label_x, label_y = (x1 + x2) // 2, (y1 + bow) // 2 + 8
            css = f"edge edge-{edge.kind} edge-side"
        else:
            spread = 0
            outgoing = [e for e in edges if e.source == edge.source]
            if len(outgoing) > 1:
                position = outgoing.index(edge)
                spread = int((position - (len(outgoing) - 1) / 2) * 48)
            x1, y1 = source.x + BOX_WIDTH // 2 + spread, source.y + box_height
            x2, y2 = target.x + BOX_WIDTH // 2, target.y - 2
            middle = (y1 + y2) // 2
            path = f"M{x1},{y1} C{x1},{middle} {x2},{middle} {x2},{y2}"
            label_x, label_y = (x1 + x2) // 2, middle + 10 * repeat
            css = f"edge edge-{edge.kind}"
        source_key, target_key = escape(edge.source), escape(edge.target)
        ends = f'data-from="{source_key}" data-to="{target_key}"'
        drawn.append(
            f'<path class="{css}" {ends} data-kind="{edge.kind}" d="{path}" fill="none" '
            'marker-end="url(#seq-arrow)"/>'
        )
        if edge.label:
            width = 10 + 7 * len(edge.label)
            left, top = label_x - width // 2, label_y - 9
            drawn.append(
                f'<g class="edge-label edge-label-{edge.kind}" {ends}>'
                f'<rect x="{left}" y="{top}" width="{width}" height="18" rx="9"/>'
                f'<text x="{label_x}" y="{label_y + 4}" text-anchor="middle">'
                f"{escape(edge.label)}</text></g>"
            )
    return drawn


def _box(
    step: dict[str, Any],
    box: _Box,
    *,
    stage_names: dict[str, str],
    box_height: int = BOX_HEIGHT,
    annotation: list[str] | None = None,
) -> str:
    kind = str(step.get("type", ""))
    symbol, colour = ICONS.get(kind, ("•", "#6b7280"))
    summary = step_summary(step, stage_names=stage_names)
    badge = ""
    if kind == "email" and step.get("stage") is not None:
        stage_name = stage_names.get(str(step["stage"]), str(step["stage"]))
        clipped = _clip(stage_name, 22)
        badge_width = 14 + 7 * len(clipped)
        left, top = box.x + 12, box.y + BOX_HEIGHT - 26
        badge = (
            f'<g class="stage-badge"><rect x="{left}" y="{top}" width="{badge_width}" '
            f'height="18" rx="9"/><text x="{left + 7}" y="{top + 13}">{escape(clipped)}</text></g>'
        )
    elif kind == "email":
        badge = '<text class="no-stage" x="{x}" y="{y}">{text}</text>'.format(
            x=box.x + 12, y=box.y + BOX_HEIGHT - 13, text=escape(_("no stage"))
        )
    entry = ' data-entry="true"' if box.index == 0 else ""
    notes = ""
    if annotation:
        top = box.y + BOX_HEIGHT
        left, right = box.x + 8, box.x + BOX_WIDTH - 8
        notes = f'<g class="step-annotation"><line x1="{left}" y1="{top}" x2="{right}" y2="{top}"/>'
        for number, line in enumerate(annotation):
            baseline = top + (number + 1) * ANNOTATION_LINE
            text = escape(_clip(line, ANNOTATION_CHARS))
            notes += f'<text x="{box.x + 12}" y="{baseline}">{text}</text>'
        notes += "</g>"
    return (
        '<g class="step step-{kind}" data-key="{key}" data-type="{kind}" data-row="{row}" '
        'data-column="{column}"{entry}>'
        "<title>{title}</title>"
        '<rect class="step-box" x="{x}" y="{y}" width="{w}" height="{h}" rx="10"/>'
        '<circle class="step-icon" cx="{icx}" cy="{icy}" r="11" fill="{colour}"/>'
        '<text class="step-symbol" x="{icx}" y="{isy}" text-anchor="middle">{symbol}</text>'
        '<text class="step-type" x="{tx}" y="{ty}">{type_label}</text>'
        '<text class="step-key" x="{kx}" y="{ty}" text-anchor="end">{key_clipped}</text>'
        '<text class="step-summary" x="{sx}" y="{sy}">{summary}</text>'
        "{badge}{notes}</g>"
    ).format(
        kind=escape(kind),
        key=escape(step["key"]),
        row=box.row,
        column=box.column,
        entry=entry,
        title=escape(" · ".join([f"{step['key']}: {summary}", *(annotation or [])])),
        x=box.x,
        y=box.y,
        w=BOX_WIDTH,
        h=box_height,
        icx=box.x + 22,
        icy=box.y + 22,
        isy=box.y + 27,
        colour=colour,
        symbol=escape(symbol),
        tx=box.x + 40,
        ty=box.y + 27,
        type_label=escape(step_type_label(kind)),
        kx=box.x + BOX_WIDTH - 10,
        key_clipped=escape(_clip(step["key"], 14)),
        sx=box.x + 12,
        sy=box.y + 50,
        summary=escape(_clip(summary)),
        badge=badge,
        notes=notes,
    )
