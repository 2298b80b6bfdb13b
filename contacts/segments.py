"""Segments: the filter grammar of API.md, compiled into a Q over Contact, and its services.

A filter is {"all": [...]} or {"any": [...]} (groups nest up to MAX_DEPTH deep, with at most
MAX_CONDITIONS conditions in all) of conditions:

    {"field": "email" | ... | "attributes.<key>", "op": "eq|neq|contains|in|gt|lt|exists", "value"}
    {"tag": name} · {"status": s} · {"list": id}
    {"stage": id} · {"event": name, "within": "P30D"} · {"opened": "P30D"} · {"clicked": "P30D"}

The last four belong to apps above contacts (funnel, campaigns), which contacts never imports:
those apps call register_condition() from their AppConfig.ready(). Until they do, a filter using
such a condition is refused with "... is not available yet".

Every field name, operator and attribute key is checked against an allow-list; lookups are built
from those names only, and attribute keys go through KeyTransform (never through a "__" path), so
no text of a request ever becomes a lookup. Relations are expressed as `pk IN (subquery)`, never
as joins, so two conditions on tags each get their own tag and a negation means "has none".
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
import zoneinfo
from collections.abc import Callable, Sequence
from typing import Any, Final

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Count, ExpressionWrapper, F, JSONField, ProtectedError, Q, QuerySet
from django.db.models.fields.json import HasKey, KeyTransform
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime
from django.utils.translation import gettext as _

from contacts.models import (
    Contact,
    ContactQuerySet,
    ContactStatus,
    Segment,
    Subscription,
    SubscriptionStatus,
)
from core.durations import ISO_DURATION, parse_duration
from core.exceptions import ConflictError
from core.models import Workspace

__all__ = [
    "MAX_CONDITIONS",
    "MAX_DEPTH",
    "SegmentFilterError",
    "register_condition",
    "segment_count",
    "segment_counts",
    "segment_create",
    "segment_delete",
    "segment_duration",
    "segment_filter_validate",
    "segment_get",
    "segment_list",
    "segment_members",
    "segment_queryset",
    "segment_update",
    "unregister_condition",
]

MAX_DEPTH: Final = 5
MAX_CONDITIONS: Final = 100
MAX_IN_VALUES: Final = 500
MAX_TEXT_LENGTH: Final = 1000
MAX_DURATION: Final = dt.timedelta(days=3650)
NAME_MAX_LENGTH: Final = 150

GROUP_KEYS: Final = ("all", "any")
OPERATORS: Final = ("eq", "neq", "contains", "in", "gt", "lt", "exists")
ATTRIBUTE_PREFIX: Final = "attributes."
ATTRIBUTE_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# ISO 8601 durations without years and months (their length depends on the calendar).

# Field kinds decide the operators a field takes and how its value is read.
TEXT_CI = "text_ci"  # compared case-insensitively
TEXT = "text"
NUMBER = "number"
CHOICE = "choice"
DATETIME = "datetime"
KIND_OPERATORS: Final[dict[str, frozenset[str]]] = {
    TEXT_CI: frozenset({"eq", "neq", "contains", "in", "exists"}),
    TEXT: frozenset({"eq", "neq", "contains", "in", "exists"}),
    NUMBER: frozenset({"eq", "neq", "in", "gt", "lt", "exists"}),
    CHOICE: frozenset({"eq", "neq", "in", "exists"}),
    DATETIME: frozenset({"eq", "neq", "gt", "lt", "exists"}),
    "attribute": frozenset(OPERATORS),
}
# The only contact fields a filter may name: field -> kind.
FIELDS: Final[dict[str, str]] = {
    "email": TEXT_CI,
    "first_name": TEXT_CI,
    "last_name": TEXT_CI,
    "locale": TEXT,
    "timezone": TEXT,
    "source": TEXT,
    "score": NUMBER,
    "status": CHOICE,
    "created_at": DATETIME,
    "confirmed_at": DATETIME,
}
NULLABLE_FIELDS: Final = frozenset({"confirmed_at"})

# Conditions that apps above contacts compile (see register_condition).
REGISTRABLE_CONDITIONS: Final = ("stage", "event", "opened", "clicked")
BUILT_IN_CONDITIONS: Final = ("tag", "status", "list")
CONDITION_KEYS: Final = (*BUILT_IN_CONDITIONS, *REGISTRABLE_CONDITIONS)

# A Q that is always true / never true and that stays so inside any combination (an empty Q()
# would simply vanish from an OR).
MATCH_ALL: Final = Q(pk__isnull=False)
MATCH_NONE: Final = Q(pk__isnull=True)

ConditionCompiler = Callable[[Workspace, dict[str, Any]], Q]
_registry: dict[str, ConditionCompiler] = {}


class SegmentFilterError(ValidationError):
    """A filter broke the grammar; `path` says where (e.g. "all[2].op"), `reason` says why."""

    def __init__(self, message: str, path: str = "") -> None:
        self.path = path
        self.reason = message
        super().__init__(f"{path}: {message}" if path else message, code="invalid_segment_filter")


# --- The registry of conditions compiled by higher apps ----------------------------------


def register_condition(key: str, compiler: ConditionCompiler) -> None:
    """Let an app above contacts compile one of "stage", "event", "opened", "clicked".

    Call it from AppConfig.ready(). `compiler(workspace, condition)` receives the validated,
    normalised condition (e.g. {"event": "purchase", "within": "P30D"}; segment_duration()
    reads the durations) and returns a Q over Contact scoped to that workspace. Express
    relations as `Q(pk__in=<subquery of contact ids>)`, not as joins, so that conditions combine
    and negate correctly. Registering a key again replaces its compiler.
    """
    if key not in REGISTRABLE_CONDITIONS:
        raise ValueError(
            f"{key!r} is not a condition of the segment grammar; "
            f"one of {', '.join(REGISTRABLE_CONDITIONS)} can be registered."
        )
    _registry[key] = compiler


def unregister_condition(key: str) -> None:
    """Forget the compiler of `key` (tests, or an app that is switched off)."""
    _registry.pop(key, None)


# --- Validation ----------------------------------------------------------------------------


def segment_filter_validate(filter: object) -> dict[str, Any]:
    """The filter in its normal form, or SegmentFilterError naming where it breaks the grammar.

    Normal form: every condition has exactly its keys, "exists" has a boolean value, emails
    are lower-cased, ids are canonical UUID strings and durations are upper-case.
    """
    if not isinstance(filter, dict):
        raise SegmentFilterError(_('A filter is a JSON object: {"all": [...]} or {"any": [...]}.'))
    counter = [0]
    return _validate_group(filter, path="", depth=1, counter=counter)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _validate_group(
    group: dict[str, Any], *, path: str, depth: int, counter: list[int]
) -> dict[str, Any]:
    keys = list(group)
    if len(keys) != 1 or keys[0] not in GROUP_KEYS:
        raise SegmentFilterError(
            _('A group has exactly one key, "all" or "any"; found: %(keys)s.')
            % {"keys": ", ".join(repr(key) for key in keys) or _("no keys")},
            path,
        )
    group_key = keys[0]
    group_path = _join(path, group_key)
    if depth > MAX_DEPTH:
        raise SegmentFilterError(
            _("Groups nest at most %(depth)d deep.") % {"depth": MAX_DEPTH}, path
        )
    members = group[group_key]
    if not isinstance(members, list):
        raise SegmentFilterError(_("Expected a list of conditions."), group_path)
    normalised = []
    for index, member in enumerate(members):
        member_path = f"{group_path}[{index}]"
        if isinstance(member, dict) and any(key in member for key in GROUP_KEYS):
            normalised.append(
                _validate_group(member, path=member_path, depth=depth + 1, counter=counter)
            )
            continue
        counter[0] += 1
        if counter[0] > MAX_CONDITIONS:
            raise SegmentFilterError(
                _("A filter has at most %(count)d conditions.") % {"count": MAX_CONDITIONS},
                member_path,
            )
        normalised.append(_validate_condition(member, path=member_path))
    return {group_key: normalised}


def _validate_condition(condition: object, *, path: str) -> dict[str, Any]:
    if not isinstance(condition, dict):
        raise SegmentFilterError(_("A condition is a JSON object."), path)
    if "field" in condition:
        return _validate_field_condition(condition, path=path)
    kinds = [key for key in CONDITION_KEYS if key in condition]
    if not kinds:
        raise SegmentFilterError(
            _("Unknown condition with keys %(keys)s; expected one of: %(expected)s.")
            % {
                "keys": ", ".join(repr(key) for key in condition) or _("no keys"),
                "expected": ", ".join(["field", *CONDITION_KEYS, *GROUP_KEYS]),
            },
            path,
        )
    if len(kinds) > 1:
        raise SegmentFilterError(
            _("A condition has one kind; found %(kinds)s.")
            % {"kinds": ", ".join(repr(kind) for kind in kinds)},
            path,
        )
    kind = kinds[0]
    allowed = {"event", "within"} if kind == "event" else {kind}
    for key in condition:
        if key not in allowed:
            raise SegmentFilterError(_("Unexpected key %(key)r.") % {"key": key}, path)
    value_path = _join(path, kind)
    value = condition[kind]
    normalised: dict[str, Any]
    if kind == "tag":
        normalised = {"tag": _text(value, value_path, strip=True)}
    elif kind == "status":
        normalised = {"status": _status(value, value_path)}
    elif kind in ("list", "stage"):
        normalised = {kind: _uuid(value, value_path)}
    elif kind == "event":
        normalised = {"event": _text(value, value_path, strip=True)}
        if "within" in condition:
            normalised["within"] = _duration(condition["within"], _join(path, "within"))
    else:  # opened, clicked
        normalised = {kind: _duration(value, value_path)}
    if kind in REGISTRABLE_CONDITIONS and kind not in _registry:
        raise SegmentFilterError(
            _(
                "The condition %(kind)r is not available yet: the app that provides it is not "
                "installed."
            )
            % {"kind": kind},
            path,
        )
    return normalised


def _validate_field_condition(condition: dict[str, Any], *, path: str) -> dict[str, Any]:
    for key in condition:
        if key not in ("field", "op", "value"):
            raise SegmentFilterError(_("Unexpected key %(key)r.") % {"key": key}, path)
    field = condition["field"]
    field_path = _join(path, "field")
    if not isinstance(field, str):
        raise SegmentFilterError(_("The field name is a string."), field_path)
    if field.startswith(ATTRIBUTE_PREFIX):
        attribute_key = field.removeprefix(ATTRIBUTE_PREFIX)
        if len(attribute_key) > 100 or not ATTRIBUTE_KEY.match(attribute_key):
            raise SegmentFilterError(
                _(
                    "Bad attribute key %(key)r: use letters, digits and _, not starting with a "
                    "digit."
                )
                % {"key": attribute_key[:100]},
                field_path,
            )
        kind = "attribute"
    elif field in FIELDS:
        kind = FIELDS[field]
    else:
        raise SegmentFilterError(
            _("Unknown field %(field)r; use one of %(fields)s or attributes.<key>.")
            % {"field": field[:100], "fields": ", ".join(FIELDS)},
            field_path,
        )
    op_path = _join(path, "op")
    if "op" not in condition:
        raise SegmentFilterError(_("The operator is missing."), op_path)
    op = condition["op"]
    if not isinstance(op, str) or op not in OPERATORS:
        raise SegmentFilterError(
            _("Unknown operator %(op)r; use one of %(ops)s.")
            % {"op": op if not isinstance(op, str) else op[:50], "ops": ", ".join(OPERATORS)},
            op_path,
        )
    if op not in KIND_OPERATORS[kind]:
        raise SegmentFilterError(
            _("The operator %(op)r does not apply to %(field)s.") % {"op": op, "field": field},
            op_path,
        )
    value_path = _join(path, "value")
    if op == "exists":
        value = condition.get("value", True)
        if not isinstance(value, bool):
            raise SegmentFilterError(_("exists takes true or false."), value_path)
        return {"field": field, "op": op, "value": value}
    if "value" not in condition:
        raise SegmentFilterError(_("The value is missing."), value_path)
    value = condition["value"]
    if op == "in":
        if not isinstance(value, list) or not value:
            raise SegmentFilterError(_("in takes a non-empty list of values."), value_path)
        if len(value) > MAX_IN_VALUES:
            raise SegmentFilterError(
                _("in takes at most %(count)d values.") % {"count": MAX_IN_VALUES}, value_path
            )
        values = [
            _field_value(kind, field, op, item, f"{value_path}[{index}]")
            for index, item in enumerate(value)
        ]
        return {"field": field, "op": op, "value": values}
    return {"field": field, "op": op, "value": _field_value(kind, field, op, value, value_path)}


def _field_value(kind: str, field: str, op: str, value: object, path: str) -> Any:
    if kind in (TEXT, TEXT_CI):
        text = _text(value, path)
        return text.lower() if field == "email" else text
    if kind == NUMBER:
        return _number(value, path)
    if kind == CHOICE:
        return _status(value, path)
    if kind == DATETIME:
        return _moment(value, path)
    # attributes: JSON scalars; contains takes text, gt/lt a number or an ISO date.
    if op == "contains":
        return _text(value, path)
    if op in ("gt", "lt"):
        if isinstance(value, str):
            return _moment(value, path)
        return _number(value, path)
    if isinstance(value, str):
        return _text(value, path)
    if isinstance(value, bool) or value is None:
        if value is None:
            raise SegmentFilterError(_("null is not a value; use exists."), path)
        return value
    return _number(value, path)


def _text(value: object, path: str, *, strip: bool = False) -> str:
    if not isinstance(value, str):
        raise SegmentFilterError(_("Expected a string."), path)
    text = value.strip() if strip else value
    if strip and not text:
        raise SegmentFilterError(_("Expected a non-empty string."), path)
    if len(text) > MAX_TEXT_LENGTH:
        raise SegmentFilterError(
            _("At most %(count)d characters.") % {"count": MAX_TEXT_LENGTH}, path
        )
    return text


def _number(value: object, path: str) -> int | float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise SegmentFilterError(_("Expected a number."), path)
    if isinstance(value, float) and value != value:  # NaN
        raise SegmentFilterError(_("Expected a number."), path)
    return value


def _status(value: object, path: str) -> str:
    if not isinstance(value, str) or value not in ContactStatus.values:
        raise SegmentFilterError(
            _("Unknown status %(status)r; use one of %(statuses)s.")
            % {
                "status": value[:50] if isinstance(value, str) else value,
                "statuses": ", ".join(ContactStatus.values),
            },
            path,
        )
    return value


def _uuid(value: object, path: str) -> str:
    if isinstance(value, str):
        try:
            return str(uuid.UUID(value))
        except ValueError:
            pass
    raise SegmentFilterError(_("Expected an id (a UUID string)."), path)


def _moment(value: object, path: str) -> str:
    """An ISO 8601 date ("2025-03-01") or date-time ("2025-03-01T10:00:00+01:00")."""
    if isinstance(value, str):
        text = value.strip()
        try:
            if parse_date(text) is not None or parse_datetime(text) is not None:
                return text
        except ValueError:
            pass
    raise SegmentFilterError(
        _("Expected an ISO 8601 date or date-time, e.g. 2025-03-01 or 2025-03-01T10:00:00+01:00."),
        path,
    )


def _duration(value: object, path: str) -> str:
    if isinstance(value, str):
        text = value.strip().upper()
        if ISO_DURATION.match(text) and text != "P":
            duration = segment_duration(text)
            if dt.timedelta(0) < duration <= MAX_DURATION:
                return text
            raise SegmentFilterError(
                _("A duration is longer than zero and at most %(days)d days.")
                % {"days": MAX_DURATION.days},
                path,
            )
    raise SegmentFilterError(
        _("Expected an ISO 8601 duration in weeks, days or hours, e.g. P30D, P2W or PT12H."),
        path,
    )


def segment_duration(text: str) -> dt.timedelta:
    """The timedelta of a validated duration such as "P30D", "P2W" or "PT12H"."""
    return parse_duration(text)


# --- Compilation ---------------------------------------------------------------------------


def _compile(workspace: Workspace, node: dict[str, Any]) -> Q:
    """The Q of a validated node (group or condition)."""
    for group_key in GROUP_KEYS:
        if group_key in node:
            members = [_compile(workspace, member) for member in node[group_key]]
            if not members:
                # all of nothing is everyone; any of nothing is no one
                return MATCH_ALL if group_key == "all" else MATCH_NONE
            combined = members[0]
            for member in members[1:]:
                combined = combined & member if group_key == "all" else combined | member
            return combined
    if "field" in node:
        return _compile_field(workspace, node["field"], node["op"], node["value"])
    if "tag" in node:
        tagged = Contact.tags.through.objects.filter(
            tag__workspace=workspace, tag__name=node["tag"]
        )
        return Q(pk__in=tagged.values("contact_id"))
    if "status" in node:
        return Q(status=node["status"])
    if "list" in node:
        subscribed = Subscription.objects.filter(
            mailing_list_id=node["list"],
            mailing_list__workspace=workspace,
            status=SubscriptionStatus.SUBSCRIBED,
        )
        return Q(pk__in=subscribed.values("contact_id"))
    for key in REGISTRABLE_CONDITIONS:
        if key in node:
            compiler = _registry.get(key)
            if compiler is None:
                raise SegmentFilterError(
                    _("The condition %(kind)r is not available yet.") % {"kind": key}
                )
            return compiler(workspace, node)
    raise SegmentFilterError(_("Unknown condition."))  # unreachable after validation


def _compile_field(workspace: Workspace, field: str, op: str, value: Any) -> Q:
    if field.startswith(ATTRIBUTE_PREFIX):
        return _compile_attribute(workspace, field.removeprefix(ATTRIBUTE_PREFIX), op, value)
    kind = FIELDS[field]
    if op == "exists":
        if field in NULLABLE_FIELDS:
            present = Q(**{f"{field}__isnull": False})
        elif kind in (TEXT, TEXT_CI):
            present = ~Q(**{field: ""})
        else:
            present = MATCH_ALL
        return present if value else ~present
    if op == "neq":
        return ~_compile_field(workspace, field, "eq", value)
    if kind == DATETIME:
        return _compare_moment(workspace, field, op, value)
    if kind == TEXT_CI and field != "email":  # email is stored lower-cased; value is too
        if op == "in":
            matches = Q(**{f"{field}__iexact": value[0]})
            for item in value[1:]:
                matches |= Q(**{f"{field}__iexact": item})
            return matches
        lookup = {"eq": "iexact", "contains": "icontains"}[op]
    else:
        lookup = {"eq": "exact", "contains": "contains", "in": "in", "gt": "gt", "lt": "lt"}[op]
    return Q(**{f"{field}__{lookup}": value})


def _compare_moment(workspace: Workspace, field: str, op: str, value: str) -> Q:
    """Dates are whole days in the workspace's time zone; naive date-times are local too."""
    zone = _zone(workspace)
    day = parse_date(value)
    if day is not None:
        start = dt.datetime.combine(day, dt.time.min, tzinfo=zone)
        end = dt.datetime.combine(day + dt.timedelta(days=1), dt.time.min, tzinfo=zone)
        if op == "gt":
            return Q(**{f"{field}__gte": end})
        if op == "lt":
            return Q(**{f"{field}__lt": start})
        return Q(**{f"{field}__gte": start, f"{field}__lt": end})
    moment = parse_datetime(value)
    assert moment is not None  # validated
    if timezone.is_naive(moment):
        moment = moment.replace(tzinfo=zone)
    lookup = {"eq": "exact", "gt": "gt", "lt": "lt"}[op]
    return Q(**{f"{field}__{lookup}": moment})


def _zone(workspace: Workspace) -> dt.tzinfo:
    try:
        return zoneinfo.ZoneInfo(workspace.timezone or "UTC")
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return dt.UTC


def _compile_attribute(workspace: Workspace, key: str, op: str, value: Any) -> Q:
    # KeyTransform takes the key as one literal key: "a__b" stays the key "a__b" and a key named
    # like a lookup ("contains", "in") stays a key.
    has_key = Q(HasKey(F("attributes"), key))
    if op == "exists":
        return has_key if value else ~has_key
    if op == "neq":
        # contacts without the key do not equal the value either
        return ~_compile_attribute(workspace, key, "eq", value) | ~has_key
    # The JSON output field lets the lookups encode their values as JSON, as filter() would.
    attribute = KeyTransform(key, ExpressionWrapper(F("attributes"), output_field=JSONField()))
    if op in ("gt", "lt") and isinstance(value, str):
        # ISO dates in attributes compare as text, so the value keeps the stored format.
        day = parse_date(value)
        bound = day.isoformat() if day is not None else value
        lookup_name = op
        if day is not None and op == "gt":
            # "after 2025-03-01" excludes "2025-03-01T08:00" too
            bound = (day + dt.timedelta(days=1)).isoformat()
            lookup_name = "gte"
        bound_lookup = attribute.get_lookup(lookup_name)
        assert bound_lookup is not None
        return Q(bound_lookup(attribute, bound))
    lookup_name = {"eq": "exact", "contains": "icontains", "in": "in", "gt": "gt", "lt": "lt"}[op]
    lookup = attribute.get_lookup(lookup_name)
    assert lookup is not None
    return Q(lookup(attribute, value))


# --- Selectors -----------------------------------------------------------------------------


def segment_queryset(*, workspace: Workspace, filter: dict[str, Any]) -> ContactQuerySet:
    """The workspace's contacts matching `filter`, each once (raises SegmentFilterError).

    Matching runs as `id IN (subquery)`, so a registered condition that joins cannot return a
    contact twice and callers may add select/prefetch and ordering freely.
    """
    condition = _compile(workspace, segment_filter_validate(filter))
    matching = Contact.objects.for_workspace(workspace).filter(condition).values("pk")
    return Contact.objects.for_workspace(workspace).filter(pk__in=matching)


def segment_members(segment: Segment) -> ContactQuerySet:
    """The contacts in the segment now, newest first."""
    return segment_queryset(workspace=segment.workspace, filter=segment.filter).order_by(
        "-created_at", "pk"
    )


def segment_count(*, workspace: Workspace, filter: dict[str, Any]) -> int:
    """How many of the workspace's contacts match `filter` (raises SegmentFilterError)."""
    return segment_queryset(workspace=workspace, filter=filter).count()


def segment_counts(
    *, workspace: Workspace, segments: Sequence[Segment]
) -> dict[uuid.UUID, int | None]:
    """Segment id -> member count, in one query for all of them.

    None for a segment whose stored filter no longer validates (e.g. it uses a condition whose
    app was switched off).
    """
    counts: dict[uuid.UUID, int | None] = {}
    aggregates: dict[str, Count] = {}
    aliases: dict[str, uuid.UUID] = {}
    for index, segment in enumerate(segments):
        try:
            condition = _compile(workspace, segment_filter_validate(segment.filter))
        except SegmentFilterError:
            counts[segment.pk] = None
            continue
        alias = f"segment_{index}"
        aliases[alias] = segment.pk
        aggregates[alias] = Count("pk", filter=condition, distinct=True)
    if aggregates:
        row = Contact.objects.for_workspace(workspace).aggregate(**aggregates)
        for alias, segment_id in aliases.items():
            counts[segment_id] = row[alias]
    return counts


def segment_list(*, workspace: Workspace) -> QuerySet[Segment]:
    """The workspace's segments by name."""
    return Segment.objects.filter(workspace=workspace).order_by("name", "pk")


def segment_get(*, workspace: Workspace, segment_id: uuid.UUID | str) -> Segment:
    """One segment of this workspace; Segment.DoesNotExist for any other id."""
    return Segment.objects.select_related("workspace").get(workspace=workspace, pk=segment_id)


# --- Services ------------------------------------------------------------------------------


def _clean_name(name: str) -> str:
    cleaned = name.strip()
    if not cleaned:
        raise ValidationError({"name": [_("A segment needs a name.")]})
    if len(cleaned) > NAME_MAX_LENGTH:
        raise ValidationError(
            {"name": [_("At most %(count)d characters.") % {"count": NAME_MAX_LENGTH}]}
        )
    return cleaned


def segment_create(*, workspace: Workspace, name: str, filter: object) -> Segment:
    """Save a new segment with the validated, normalised filter.

    Running it twice makes two segments (the API's Idempotency-Key guards retries).
    """
    return Segment.objects.create(
        workspace=workspace,
        name=_clean_name(name),
        filter=_validated_for_field(filter),
    )


def segment_update(
    *,
    segment: Segment,
    name: str | None = None,
    filter: object = None,
) -> Segment:
    """Rename the segment and/or replace its filter (None leaves a part as it is).

    Safe to run twice. Members are computed when asked for, so nothing else changes.
    """
    update_fields = ["updated_at"]
    if name is not None:
        segment.name = _clean_name(name)
        update_fields.append("name")
    if filter is not None:
        segment.filter = _validated_for_field(filter)
        update_fields.append("filter")
    segment.save(update_fields=update_fields)
    return segment


@transaction.atomic
def segment_delete(*, segment: Segment) -> None:
    """Delete the segment (its contacts stay). ConflictError while something still uses it."""
    try:
        segment.delete()
    except ProtectedError as exc:
        raise ConflictError(
            _("This segment is still used (e.g. by a broadcast) and cannot be deleted.")
        ) from exc


def _validated_for_field(filter: object) -> dict[str, Any]:
    try:
        return segment_filter_validate(filter)
    except SegmentFilterError as exc:
        raise ValidationError({"filter": [exc.message]}) from exc
