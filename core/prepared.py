"""Statements PostgreSQL plans once per connection: PREPARE, then EXECUTE by name.

The send path runs the same two statements for every mail (campaigns.sending: the claim and
the acceptance). Sent as text, PostgreSQL parses and plans them each time: for the claim, with
its three EXISTS subqueries, planning takes longer than running it. Prepared once per
connection they cost 316 µs per mail instead of 540 (bench/send.py's database part).

A prepared statement lives as long as its database session, whatever happens to the
transaction that prepared it (PREPARE is not transactional), so which connection has which
statement is remembered per connection object: a new connection prepares again. A pooler in
transaction mode (PgBouncer) hands each transaction another session; set
DATABASE_PREPARED_STATEMENTS=false there. SQLite and that setting get the statement as text.
"""

from __future__ import annotations

import re
import weakref
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import connection

_PLACEHOLDER = re.compile(r"%s")
# Raw DB-API connection -> names prepared on it.
_prepared: weakref.WeakKeyDictionary[Any, set[str]] = weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class PreparedStatement:
    """One statement with %s placeholders (every value a parameter), prepared under `name`."""

    name: str
    sql: str
    parameters: int = field(init=False)

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[a-z_][a-z0-9_]*", self.name):
            raise ValueError(f"not a statement name: {self.name!r}")
        object.__setattr__(self, "parameters", len(_PLACEHOLDER.findall(self.sql)))

    def _numbered(self) -> str:
        numbers = iter(range(1, self.parameters + 1))
        return _PLACEHOLDER.sub(lambda _: f"${next(numbers)}", self.sql)

    def sql_to_run(self) -> str:
        """The SQL that runs this statement on the current connection, with the same %s
        placeholders: EXECUTE name(%s, ...) on PostgreSQL (prepared first where this
        connection has not got it), else the statement itself."""
        if connection.vendor != "postgresql" or not settings.DATABASE_PREPARED_STATEMENTS:
            return self.sql
        connection.ensure_connection()
        names = _prepared.setdefault(connection.connection, set())
        if self.name not in names:
            with connection.cursor() as cursor:
                cursor.execute(f"PREPARE {self.name} AS {self._numbered()}")
            names.add(self.name)
        if not self.parameters:
            return f"EXECUTE {self.name}"
        return f"EXECUTE {self.name}({', '.join(['%s'] * self.parameters)})"


__all__ = ["PreparedStatement"]
