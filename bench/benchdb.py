"""Shared by the bench scripts: each benchmark creates its own throwaway PostgreSQL database
next to the one DATABASE_URL names, and drops it afterwards."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

import psycopg2


def with_database(url: str, name: str) -> str:
    """`url` with its database name replaced by `name`."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


def admin_connection(url: str) -> psycopg2.extensions.connection:
    """An autocommit connection to the server's "postgres" database (to create and drop)."""
    parts = urlsplit(url)
    connection = psycopg2.connect(
        dbname="postgres",
        user=parts.username or None,
        password=parts.password or None,
        host=parts.hostname or None,
        port=parts.port or None,
    )
    connection.autocommit = True
    return connection
