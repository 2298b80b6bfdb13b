"""Fixtures of the tracking tests."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.tracking.sns_signing import SnsSigner


@pytest.fixture
def sns(settings: Any) -> Iterator[SnsSigner]:
    """A signer whose certificate URL (http on loopback) tracking.sns accepts in this test."""
    settings.WEBHOOKS_ALLOW_INSECURE_LOOPBACK = True
    settings.SNS_SIGNING_CERT_HOSTS = r"127\.0\.0\.1"
    signer = SnsSigner()
    try:
        yield signer
    finally:
        signer.close()
