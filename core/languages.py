"""Choosing the language to write to someone in."""

from __future__ import annotations

from django.conf import settings


def first_supported_language(*candidates: str | None) -> str:
    """The first candidate ("de", "de-AT", "de_DE", …) we have translations for, reduced to
    its language; else the default language."""
    supported = {code for code, _name in settings.LANGUAGES}
    for candidate in candidates:
        language = (candidate or "").replace("_", "-").split("-")[0].lower()
        if language in supported:
            return language
    return str(settings.LANGUAGE_CODE)
