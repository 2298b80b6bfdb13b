"""Errors that services raise for a person or an API client to read."""

from __future__ import annotations

from typing import Any


class ApplicationError(Exception):
    """A rule of the domain refused the request.

    `field` names the input at fault when there is one (the API answers 400 {field: [message]});
    `status` lets a service say the request conflicts with the current state (409).
    """

    status: int = 400

    def __init__(
        self, message: str, *, field: str | None = None, extra: dict[str, Any] | None = None
    ):
        super().__init__(message)
        self.message = message
        self.field = field
        self.extra = extra or {}


class ConflictError(ApplicationError):
    """The request is valid but conflicts with the current state of the data."""

    status = 409
