"""core.prepared: statements PostgreSQL plans once per connection."""

from __future__ import annotations

import pytest
from django.db import connection, transaction

from core.prepared import PreparedStatement

pytestmark = pytest.mark.django_db(transaction=True)

DOUBLE = PreparedStatement("funnelwerk_test_double", "SELECT %s::int * 2, %s::text")


def _prepared_names() -> set[str]:
    with connection.cursor() as cursor:
        cursor.execute("SELECT name FROM pg_prepared_statements")
        return {row[0] for row in cursor.fetchall()}


def _run(statement: PreparedStatement, *params: object) -> tuple:
    with connection.cursor() as cursor:
        cursor.execute(statement.sql_to_run(), list(params))
        return cursor.fetchone()


def test_a_statement_is_prepared_once_per_connection_and_run_by_name():
    assert _run(DOUBLE, 21, "x") == (42, "x")
    assert DOUBLE.sql_to_run() == "EXECUTE funnelwerk_test_double(%s, %s)"
    assert "funnelwerk_test_double" in _prepared_names()
    assert _run(DOUBLE, 2, "it's; DROP") == (4, "it's; DROP")


def test_a_new_connection_prepares_it_again():
    _run(DOUBLE, 1, "a")
    connection.close()
    assert "funnelwerk_test_double" not in _prepared_names()
    assert _run(DOUBLE, 5, "b") == (10, "b")


def test_it_outlives_a_rolled_back_transaction():
    connection.close()
    with pytest.raises(ZeroDivisionError), transaction.atomic():
        _run(DOUBLE, 3, "c")
        raise ZeroDivisionError
    assert _run(DOUBLE, 4, "d") == (8, "d")


def test_switched_off_it_is_the_statement_itself(settings):
    settings.DATABASE_PREPARED_STATEMENTS = False
    assert DOUBLE.sql_to_run() == DOUBLE.sql
    assert _run(DOUBLE, 6, "e") == (12, "e")


def test_names_are_identifiers():
    with pytest.raises(ValueError):
        PreparedStatement("drop table x", "SELECT 1")
