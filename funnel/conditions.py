"""Property conditions of stage rules: {"plan": "pro", "total": {"gte": 100}}."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from django.utils.translation import gettext as _

from core.exceptions import ApplicationError

OPERATORS = ("eq", "neq", "gt", "gte", "lt", "lte", "in", "contains", "exists")


def validate_where(where: Any) -> dict[str, Any]:
    """Check a rule's property conditions; raise ApplicationError naming the property."""
    if where is None:
        return {}
    if not isinstance(where, dict):
        raise ApplicationError(_("where must be an object of property conditions."), field="when")
    for name, condition in where.items():
        if not isinstance(name, str) or not name:
            raise ApplicationError(_("Property names must be text."), field="when")
        if isinstance(condition, dict):
            if len(condition) != 1 or next(iter(condition)) not in OPERATORS:
                raise ApplicationError(
                    _("where.%(name)s: use one of %(ops)s.")
                    % {"name": name, "ops": ", ".join(OPERATORS)},
                    field="when",
                )
            op, value = next(iter(condition.items()))
            if op == "in" and not isinstance(value, list):
                raise ApplicationError(
                    _("where.%(name)s.in needs a list.") % {"name": name}, field="when"
                )
    return dict(where)


def _number(value: Any) -> Decimal | None:
    if isinstance(value, bool):
        return None
    try:
        return Decimal(str(value))
    except (InvalidOperation, ValueError):
        return None


def _compare(actual: Any, op: str, expected: Any) -> bool:
    if op == "exists":
        return (actual is not None) == bool(expected)
    if actual is None:
        return op == "neq"
    if op == "eq":
        return bool(actual == expected)
    if op == "neq":
        return bool(actual != expected)
    if op == "in":
        return actual in expected
    if op == "contains":
        return str(expected).lower() in str(actual).lower()
    left, right = _number(actual), _number(expected)
    if left is None or right is None:
        return False
    return {"gt": left > right, "gte": left >= right, "lt": left < right, "lte": left <= right}[op]


def where_matches(where: dict[str, Any], properties: dict[str, Any]) -> bool:
    """True when every condition holds for the event's properties (dotted names reach into
    nested objects: "address.country")."""
    for name, condition in where.items():
        actual: Any = properties
        for part in name.split("."):
            actual = actual.get(part) if isinstance(actual, dict) else None
        op, expected = (
            next(iter(condition.items())) if isinstance(condition, dict) else ("eq", condition)
        )
        if not _compare(actual, op, expected):
            return False
    return True
