"""ESP batches recorded at the same time over the same messages: no deadlock, nothing lost.

Two webhook requests of an ESP (or a retry next to a slow first attempt) can carry events for
the same messages in different orders. They are recorded in concurrent transactions; each must
finish (a deadlock would abort one with a 500 and leave the ESP to retry).
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection, transaction

from campaigns.models import Message, MessageStatus
from tests.factories import ContactFactory, WorkspaceFactory
from tracking.esp import EspReport, esp_reports_record
from tracking.models import Activity

T0 = datetime(2026, 5, 4, 9, 0, tzinfo=UTC)


def _waiting_backends() -> int:
    with connection.cursor() as cursor:
        # Inside a transaction the statistics views are a snapshot taken at their first read.
        cursor.execute("SELECT pg_stat_clear_snapshot()")
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        return int(cursor.fetchone()[0])


def _report(message: Message, kind: str, minutes: int) -> EspReport:
    return EspReport(
        key=f"sendgrid:{message.esp_message_id}:{kind}:{minutes}",
        esp="sendgrid",
        kind=kind,
        esp_message_ids=(message.esp_message_id,),
        occurred_at=T0 + timedelta(minutes=minutes),
    )


@pytest.mark.django_db(transaction=True)
def test_two_batches_over_the_same_messages_in_opposite_orders_both_finish() -> None:
    # given many sent messages, and two batches with events for all of them in opposite orders
    workspace = WorkspaceFactory()
    messages = []
    for number in range(200):
        contact = ContactFactory(workspace=workspace, email=f"reader{number}@example.org")
        messages.append(
            Message.objects.create(
                workspace=workspace,
                contact=contact,
                subject="Spring sale",
                status=MessageStatus.SENT,
                esp_message_id=f"<esp-{number}@example.com>",
                esp_accepted_at=T0,
                sent_at=T0,
            )
        )
    forward = [_report(message, "delivered", n) for n, message in enumerate(messages)]
    # (another ESP request with the same messages' deliveries, reported in reverse)
    backward = [_report(message, "delivered", n) for n, message in enumerate(reversed(messages))]
    errors: list[BaseException] = []

    def record(batch: list[EspReport]) -> None:
        try:
            esp_reports_record(batch)
        except BaseException as error:  # reported by the assertion below
            errors.append(error)
        finally:
            connection.close()

    # when both are recorded while a third transaction holds every message row, so that both
    # wait and then run at the same moment
    with transaction.atomic():
        list(Message.objects.select_for_update().values_list("pk", flat=True))
        threads = [threading.Thread(target=record, args=(batch,)) for batch in (forward, backward)]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 10
        while _waiting_backends() < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert _waiting_backends() == 2, errors
    for thread in threads:
        thread.join(timeout=30)

    # then both finished: every report is stored and every message delivered
    assert errors == []
    assert Activity.objects.count() == 400
    assert not Message.objects.filter(delivered_at__isnull=True).exists()
