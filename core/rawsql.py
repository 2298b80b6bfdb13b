"""Values for the parameters of raw SQL, as the database backend stores them.

The ORM converts values itself; a hand-written statement (the send path's claim, the analytics
stays) gets them through these: a UUID as SQLite keeps it (32 hex digits) or as PostgreSQL
takes it, a datetime as the backend adapts it.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from django.db import connection
from django.db.models import UUIDField

_UUID: UUIDField[uuid.UUID | str, uuid.UUID] = UUIDField()


def db_uuid(value: uuid.UUID | str) -> Any:
    return _UUID.get_db_prep_value(value, connection)


def db_time(value: datetime) -> Any:
    return connection.ops.adapt_datetimefield_value(value)


__all__ = ["db_time", "db_uuid"]
