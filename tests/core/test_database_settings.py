"""config.env.parse_database_url: our PostgreSQL connections carry the planner setting."""

from __future__ import annotations

import pytest
from django.db import connection

from config.env import parse_database_url

URL = "postgres://app:secret@db.example:5432/funnelwerk"


def test_postgresql_connections_say_random_reads_are_cheap(monkeypatch):
    monkeypatch.delenv("DATABASE_RANDOM_PAGE_COST", raising=False)
    database = parse_database_url(URL)
    assert database["NAME"] == "funnelwerk"
    assert database["OPTIONS"]["options"] == "-c random_page_cost=1.1"


def test_the_setting_can_be_changed_or_left_to_the_server(monkeypatch):
    monkeypatch.setenv("DATABASE_RANDOM_PAGE_COST", "2")
    assert parse_database_url(URL)["OPTIONS"]["options"] == "-c random_page_cost=2.0"
    monkeypatch.setenv("DATABASE_RANDOM_PAGE_COST", "")
    assert "options" not in parse_database_url(URL).get("OPTIONS", {})
    monkeypatch.setenv("DATABASE_RANDOM_PAGE_COST", "cheap")
    with pytest.raises(ValueError):
        parse_database_url(URL)


def test_options_in_the_url_win_and_sqlite_gets_none(monkeypatch):
    monkeypatch.delenv("DATABASE_RANDOM_PAGE_COST", raising=False)
    database = parse_database_url(URL + "?options=-c%20statement_timeout%3D5000")
    assert database["OPTIONS"]["options"] == "-c statement_timeout=5000"
    assert "options" not in parse_database_url("sqlite:////tmp/x.sqlite3").get("OPTIONS", {})


@pytest.mark.django_db
def test_the_test_database_connection_has_it():
    with connection.cursor() as cursor:
        cursor.execute("SHOW random_page_cost")
        assert float(cursor.fetchone()[0]) == pytest.approx(1.1)
