"""ISO 8601 durations without years and months (whose length varies): P2W, P30D, PT12H,
P1DT2H30M. Used by segments, waits, timeouts and send schedules alike."""

from __future__ import annotations

import datetime as dt
import re

ISO_DURATION = re.compile(
    r"^P(?:(?P<weeks>\d+)W|(?:(?P<days>\d+)D)?"
    r"(?:T(?=\d)(?:(?P<hours>\d+)H)?(?:(?P<minutes>\d+)M)?(?:(?P<seconds>\d+)S)?)?)$"
)


def parse_duration(text: str) -> dt.timedelta:
    """The timedelta of "P30D", "P2W", "PT12H", ...; ValueError for anything else."""
    match = ISO_DURATION.match(text.strip().upper()) if isinstance(text, str) else None
    if match is None or text.strip().upper() == "P":
        raise ValueError(f"not an ISO 8601 duration without years and months: {text!r}")
    parts = {name: int(number) for name, number in match.groupdict().items() if number}
    return dt.timedelta(**parts)
