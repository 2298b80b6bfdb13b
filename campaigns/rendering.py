"""Rendering of email content authored by workspace users (untrusted templates): Jinja2's
SandboxedEnvironment against a plain context."""

from __future__ import annotations

from jinja2 import TemplateSyntaxError
from jinja2.sandbox import SandboxedEnvironment

from core.exceptions import ApplicationError

environment = SandboxedEnvironment(autoescape=True)


def check_template(source: str) -> None:
    """Raise ApplicationError naming the line when `source` is not a valid template."""
    try:
        environment.parse(source)
    except TemplateSyntaxError as exc:
        raise ApplicationError(f"line {exc.lineno}: {exc.message}") from exc
