"""PostgreSQL array literals for bulk statements.

A Python list as a query parameter reaches PostgreSQL (through psycopg2) as ARRAY['a', 'b', ...]:
an expression with one node per element, quoted element by element on the client and parsed
node by node on the server. For the bulk statements of the hot paths (a thousand rows per
statement, twenty columns) that costs more than the statement's real work. pg_array() turns
the list into one array literal ('{"a","b"}'), one string parameter that the statement casts
(%s::uuid[], %s::text[], ...): PostgreSQL reads it with the type's input function, and the
client quotes one string. bench/webhooks.py: 1,000 activity rows insert in 22 ms instead of 37.

Values are written as PostgreSQL reads them back: None as NULL, booleans as t/f, everything
else as str() (a datetime's str() is ISO 8601 with its offset, which timestamptz reads). Every
element is double-quoted with backslash and double quote escaped, so text with commas, braces,
quotes or the word NULL arrives unchanged.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


def pg_array(values: Iterable[Any]) -> str:
    """The PostgreSQL array literal of `values` (one dimension), for a parameter cast to an
    array type: cursor.execute("... unnest(%s::uuid[]) ...", [pg_array(ids)])."""
    # One loop without a call per element: this runs for every column of every bulk write.
    elements: list[str] = []
    append = elements.append
    for value in values:
        if value is None:
            append("NULL")
            continue
        if value is True or value is False:
            append("t" if value else "f")
            continue
        text = value if type(value) is str else str(value)
        if "\\" in text or '"' in text:
            text = text.replace("\\", "\\\\").replace('"', '\\"')
        append('"' + text + '"')
    return "{" + ",".join(elements) + "}"


__all__ = ["pg_array"]
