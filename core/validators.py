"""Validators used by more than one app."""

from __future__ import annotations

import re
import zoneinfo

from django.core.exceptions import ValidationError
from django.utils.translation import gettext as _

LOCALE_PATTERN = re.compile(r"^[a-z]{2,3}([-_][A-Za-z0-9]{2,8})*$")


def validate_locale(value: str) -> None:
    if value and not LOCALE_PATTERN.match(value):
        raise ValidationError(_("Use a language code such as en, de or de-AT."))


def validate_timezone(value: str) -> None:
    if value and value not in zoneinfo.available_timezones():
        raise ValidationError(_("Use a time zone name such as Europe/Berlin."))
