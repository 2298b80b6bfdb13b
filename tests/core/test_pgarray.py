"""core.pgarray: lists reach PostgreSQL as one array literal and come back unchanged."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
from django.db import connection
from hypothesis import given, settings
from hypothesis import strategies as st

from core.pgarray import pg_array

pytestmark = pytest.mark.django_db

# PostgreSQL text holds any character but NUL (surrogates are no characters in UTF-8).
TEXT = st.text(
    alphabet=st.characters(exclude_characters="\x00", exclude_categories=("Cs",)), max_size=30
)


def _round_trip(values: list, sql_type: str) -> list:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT %s::{sql_type}[]", [pg_array(values)])
        return cursor.fetchone()[0]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.none(), TEXT), max_size=12))
def test_any_text_comes_back_as_it_was_sent(values):
    assert _round_trip(values, "text") == values


def test_text_that_looks_like_syntax_is_text():
    values = ["NULL", "", " padded ", "a,b", "{x}", '"quoted"', "back\\slash", "ümlaut ✓", None]
    assert _round_trip(values, "text") == values


def test_uuids_times_numbers_and_booleans():
    ids = [uuid.uuid4(), None, uuid.uuid4()]
    assert _round_trip(ids, "uuid") == ids
    berlin = dt.timezone(dt.timedelta(hours=1))
    times = [dt.datetime(2026, 3, 1, 9, 30, 15, 123456, tzinfo=berlin), None]
    back = _round_trip(times, "timestamptz")
    assert back[0] == times[0] and back[1] is None
    assert _round_trip([0, -5, None, 32767], "int") == [0, -5, None, 32767]
    assert _round_trip([True, False, None], "bool") == [True, False, None]
    assert _round_trip([], "text") == []
