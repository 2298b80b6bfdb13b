"""Receivers: what tracking does when others announce something.

Connected in TrackingConfig.ready() (dispatch_uid makes connecting twice harmless).
"""

from __future__ import annotations

from typing import Any

from anymail.signals import tracking as anymail_tracking

from tracking import esp


def on_esp_tracking_event(sender: Any, *, event: Any, esp_name: str, **kwargs: Any) -> None:
    """anymail checked a webhook request and parsed one of its events (tracking.esp)."""
    esp.esp_event_receive(esp_name=esp_name, event=event)


def connect() -> None:
    """Wire the receivers (called from TrackingConfig.ready)."""
    anymail_tracking.connect(on_esp_tracking_event, dispatch_uid="tracking.esp.tracking_event")
