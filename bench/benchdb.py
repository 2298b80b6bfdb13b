"""Shared by the bench scripts: each benchmark creates its own throwaway PostgreSQL database
next to the one DATABASE_URL names, and drops it afterwards."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg2

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/funnelwerk"


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


@contextlib.contextmanager
def bench_database(
    name: str, *, extra_env: Mapping[str, str] | None = None, keep: bool = False
) -> Iterator[dict[str, str]]:
    """A fresh database `name` on the server of DATABASE_URL, migrated, dropped at the end
    (unless `keep`). Yields the environment for the measuring child process: DATABASE_URL
    naming that database, the settings module, PYTHONPATH, and `extra_env`."""
    if "bench" not in name:
        raise SystemExit("the bench drops its database at the end: give a name with 'bench'")
    base_url = os.environ.get("DATABASE_URL", DEFAULT_URL)
    environment = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": os.environ.get("DJANGO_SETTINGS_MODULE", "config.settings.test"),
        "DATABASE_URL": with_database(base_url, name),
        "PYTHONPATH": str(ROOT),
        **(extra_env or {}),
    }
    admin = admin_connection(base_url)
    try:
        with admin.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            cursor.execute(f'CREATE DATABASE "{name}"')
        subprocess.run(
            [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
            cwd=ROOT,
            env=environment,
            check=True,
        )
        yield environment
    finally:
        if not keep:
            with admin.cursor() as cursor:
                cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()
