"""Validation of contact fields, shared by the API serializers and the page forms."""

from __future__ import annotations

import functools
import re
from typing import Any

from django.core.exceptions import ValidationError
from django.utils.translation import gettext as _
from email_validator import EmailNotValidError, validate_email

from core.validators import validate_locale, validate_timezone

__all__ = [
    "clean_tags",
    "normalize_email",
    "validate_attributes",
    "validate_locale",
    "validate_timezone",
]
MAX_ATTRIBUTES = 100
MAX_TAGS = 100
MAX_TAG_LENGTH = 100


@functools.lru_cache(maxsize=4096)  # pure; event batches name the same addresses again and again
def normalize_email(value: str) -> str:
    """The address in its stored form: syntax checked, IDN domains decoded, lower-cased.

    No DNS look-up: deliverability is learned from bounces, not guessed at signup.
    """
    try:
        result = validate_email(value.strip(), check_deliverability=False)
    except EmailNotValidError as exc:
        raise ValidationError(
            _("Enter a valid email address: %(reason)s") % {"reason": exc}
        ) from exc
    return result.normalized.lower()


def validate_attributes(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValidationError(_("Attributes must be a JSON object."))
    if len(value) > MAX_ATTRIBUTES:
        raise ValidationError(
            _("At most %(count)d attributes per contact.") % {"count": MAX_ATTRIBUTES}
        )
    for key in value:
        if not key or len(key) > 100 or not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", key):
            raise ValidationError(
                _("Attribute names use letters, digits and _ and start with a letter: %(key)s")
                % {"key": key}
            )
    return value


def clean_tags(value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(tag, str) for tag in value):
        raise ValidationError(_("Tags must be a list of strings."))
    tags = []
    for raw in value:
        tag = raw.strip()
        if not tag:
            continue
        if len(tag) > MAX_TAG_LENGTH:
            raise ValidationError(
                _("A tag has at most %(count)d characters.") % {"count": MAX_TAG_LENGTH}
            )
        if tag not in tags:
            tags.append(tag)
    if len(tags) > MAX_TAGS:
        raise ValidationError(_("At most %(count)d tags per contact.") % {"count": MAX_TAGS})
    return tags
