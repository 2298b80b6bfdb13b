"""Benchmark of ESP tracking webhooks: SendGrid event batches through anymail's view and
tracking.esp against PostgreSQL COPY of the same Activity rows.

Run by hand (it creates and drops its own database, funnelwerk_bench_webhooks by default):

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/funnelwerk_bench_webhooks \\
    .venv/bin/python bench/webhooks.py [--events 100000] [--mix delivered-open]

(a) Makes --messages sent messages with ESP ids (one workspace, one contact each), then POSTs
    --events SendGrid Event Webhook events for them in requests of 1,000 to
    /webhooks/esp/sendgrid/tracking/ through Django's test Client with basic auth: the whole
    request path (middleware, anymail's auth check and parsing, its signal per event, the
    message lookup, the activity INSERT ... ON CONFLICT, milestones, opens through
    tracking.ingest.hits_write with their classification and reactions, suppression) is
    measured, only the network is left out. Each request is checked: 200, and afterwards
    every event is stored exactly once.
(b) Loads the same rows (the Activity rows the webhook path stored, with new keys) into the
    activity table with COPY (psycopg2 copy_expert from an in-memory CSV stream) in the same
    run.
The issue's goal (issue 6): webhook events/s >= 0.2 x COPY rows/s and >= 10,000 events/s.

Mixes: "delivered-open" (default): 65 % delivered, 35 % opens by a person; "delivered": only
deliveries (the path of tracking.esp alone, without tracking.ingest); "realistic": 55 %
delivered, 30 % opens, 5 % clicks, 5 % deferred, 3 % soft bounces, 1.5 % hard bounces, 0.5 %
complaints (hard bounces and complaints suppress their contacts).
"""

from __future__ import annotations

import argparse
import base64
import csv
import io
import json
import logging
import os
import random
import subprocess
import sys
import time
import uuid
import warnings
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from benchdb import bench_database

ROOT = Path(__file__).resolve().parent.parent
SECRET = "bench:webhook-secret"
BATCH = 1_000
COPY_CHUNK = 10_000
SENT = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)
BROWSER = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko)"
MIXES = {
    "delivered": [("delivered", 1.0)],
    "delivered-open": [("delivered", 0.65), ("open", 0.35)],
    "realistic": [
        ("delivered", 0.55),
        ("open", 0.30),
        ("click", 0.05),
        ("deferred", 0.05),
        ("blocked", 0.03),
        ("bounce", 0.015),
        ("spamreport", 0.005),
    ],
}


def setup_django(database_url: str) -> None:
    os.environ["DATABASE_URL"] = database_url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.test")
    sys.path.insert(0, str(ROOT))
    warnings.filterwarnings("ignore", "No directory at")
    # anymail warns on every SendGrid request that it no longer supports SendGrid officially.
    warnings.filterwarnings("ignore", "django-anymail has dropped official support")
    logging.getLogger("kombu.connection").setLevel(logging.ERROR)
    import django

    django.setup()
    from config.celery import app

    # Tasks scheduled by reactions are published to an in-memory broker, not run eagerly.
    app.conf.task_always_eager = False
    app.conf.broker_url = "memory://"
    app.conf.broker_transport_options = {}


def make_messages(count: int) -> list[Any]:
    """`count` sent messages, each to a contact of its own, with a SendGrid (anymail) id."""
    from django.db import connection

    from campaigns.models import Message, MessageStatus
    from contacts.models import Contact, ContactStatus
    from core.models import Workspace

    workspace = Workspace.objects.create(name="Bench", slug="bench-webhooks")
    contacts = Contact.objects.bulk_create(
        Contact(
            workspace=workspace,
            email=f"reader{number}@bench.example.org",
            status=ContactStatus.SUBSCRIBED,
            source="bench",
        )
        for number in range(count)
    )
    messages = Message.objects.bulk_create(
        (
            Message(
                workspace=workspace,
                contact=contact,
                subject="Spring sale",
                status=MessageStatus.SENT,
                esp_message_id=str(uuid.uuid4()),
                esp_accepted_at=SENT,
                sent_at=SENT,
            )
            for contact in contacts
        ),
        batch_size=5_000,
    )
    with connection.cursor() as cursor:
        # As autovacuum would have done on a table that grew by that much.
        cursor.execute("ANALYZE campaigns_message, contacts_contact")
    return messages


def sendgrid_events(messages: list[Any], count: int, mix: str, seed: int = 6) -> list[dict]:
    """SendGrid Event Webhook events in the shape SendGrid posts them."""
    rng = random.Random(seed)
    names, weights = zip(*MIXES[mix], strict=True)
    events = []
    for number in range(count):
        message = messages[rng.randrange(len(messages))]
        name = rng.choices(names, weights)[0]
        at = SENT + timedelta(seconds=rng.randrange(60, 7 * 24 * 3600))
        event: dict[str, Any] = {
            "email": message.contact.email,
            "timestamp": int(at.timestamp()),
            "smtp-id": f"<{message.pk.hex}@sendgrid.bench>",
            "event": "bounce" if name == "blocked" else name,
            "category": ["newsletter"],
            "sg_event_id": base64.urlsafe_b64encode(f"{name}-{number}".encode()).decode(),
            "sg_message_id": f"{message.pk.hex[:22]}.filterdrecv-5645d9c87f-6r2ch-1-0",
            "anymail_id": message.esp_message_id,
        }
        if name == "delivered":
            event["response"] = "250 2.0.0 OK"
        elif name in ("open", "click"):
            event.update(useragent=BROWSER, ip=f"203.0.113.{rng.randrange(256)}")
            if name == "click":
                event["url"] = f"https://shop.example/products/{rng.randrange(50)}"
        elif name == "deferred":
            event.update(response="421 4.7.0 Try again later", attempt="1")
        elif name == "blocked":
            event.update(type="blocked", status="4.7.1", reason="421 4.7.1 Temporarily deferred")
        elif name == "bounce":
            event.update(type="bounce", status="5.1.1", reason="550 5.1.1 User unknown")
        events.append(event)
    return events


def run_webhooks(events: list[dict]) -> dict[str, float]:
    from django.test import Client
    from django.urls import reverse

    client = Client(
        HTTP_AUTHORIZATION="Basic " + base64.b64encode(SECRET.encode()).decode(),
    )
    url = reverse("anymail:sendgrid_tracking_webhook")
    bodies = [json.dumps(events[start : start + BATCH]) for start in range(0, len(events), BATCH)]
    seconds = 0.0
    slowest = 0.0
    for body in bodies:
        started = time.perf_counter()
        response = client.post(url, body, content_type="application/json")
        elapsed = time.perf_counter() - started
        seconds += elapsed
        slowest = max(slowest, elapsed)
        assert response.status_code == 200, response.content[:500]
    return {"seconds": seconds, "requests": len(bodies), "slowest": slowest}


def check_stored(events: list[dict]) -> Counter[str]:
    """Every event is stored exactly once (by its key) and every delivered message has its
    delivered_at; returns the stored kinds."""
    from campaigns.models import Message
    from tracking.models import Activity

    keys = {f"esp:sendgrid:{event['sg_event_id']}" for event in events}
    stored = Counter(
        Activity.objects.filter(key__startswith="esp:sendgrid:").values_list("kind", flat=True)
    )
    found = Activity.objects.filter(key__in=keys).count()
    assert found == len(keys) == sum(stored.values()), (found, len(keys), stored)
    delivered = {event["anymail_id"] for event in events if event["event"] == "delivered"}
    marked = Message.objects.filter(delivered_at__isnull=False).count()
    assert marked == len(delivered), (marked, len(delivered))
    return stored


def run_copy() -> dict[str, float]:
    """COPY the rows the webhook path stored, with new keys, into the same table."""
    from django.db import connection

    from tracking.models import Activity

    fields = [field for field in Activity._meta.concrete_fields if field.name != "id"]
    columns = [field.column for field in fields]
    sql = (
        f'COPY "{Activity._meta.db_table}" ({", ".join(columns)}) '
        "FROM STDIN WITH (FORMAT csv, NULL '\\N')"
    )
    rows = list(Activity.objects.filter(key__startswith="esp:sendgrid:").values_list(*columns))
    key_at = columns.index("key")
    copy_seconds = 0.0
    wall_started = time.perf_counter()
    with connection.cursor() as cursor:
        for start in range(0, len(rows), COPY_CHUNK):
            stream = io.StringIO()
            writer = csv.writer(stream)
            for row in rows[start : start + COPY_CHUNK]:
                values = ["\\N" if value is None else value for value in row]
                values[key_at] = f"copy:{values[key_at]}"
                writer.writerow(values)
            stream.seek(0)
            started = time.perf_counter()
            cursor.copy_expert(sql, stream)
            copy_seconds += time.perf_counter() - started
    wall_seconds = time.perf_counter() - wall_started
    copied = Activity.objects.filter(key__startswith="copy:").count()
    assert copied == len(rows), (copied, len(rows))
    return {"seconds": copy_seconds, "wall_seconds": wall_seconds, "rows": len(rows)}


def child(count: int, message_count: int, mix: str) -> None:
    setup_django(os.environ["DATABASE_URL"])
    from contacts.models import Contact

    print(
        f"machine    : {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at start",
        flush=True,
    )
    messages = make_messages(message_count)
    events = sendgrid_events(messages, count, mix)
    webhooks = run_webhooks(events)
    stored = check_stored(events)
    copy = run_copy()
    rate = count / webhooks["seconds"]
    copy_rate = copy["rows"] / copy["seconds"]
    print(
        f"webhooks   : {count} SendGrid events ({mix}) in {webhooks['requests']} requests of "
        f"{BATCH}: {webhooks['seconds']:.2f} s, {rate:,.0f} events/s (slowest request "
        f"{webhooks['slowest'] * 1000:.0f} ms); stored once each: "
        + ", ".join(f"{kind} {number}" for kind, number in stored.most_common()),
        flush=True,
    )
    print(
        f"COPY       : the same {copy['rows']} activity rows: {copy['seconds']:.2f} s, "
        f"{copy_rate:,.0f} rows/s (COPY statements only; {copy['rows'] / copy['wall_seconds']:,.0f}"
        f" rows/s including the CSV generation)",
        flush=True,
    )
    print(
        f"ratio      : webhooks / COPY = {rate / copy_rate:.3f} (goals: ratio >= 0.2, "
        f">= 10,000 events/s)",
        flush=True,
    )
    suppressed = Contact.objects.filter(status__in=["bounced", "complained"]).count()
    if suppressed:
        print(f"suppressed : {suppressed} contacts (hard bounces, complaints)", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--messages", type=int, default=50_000)
    parser.add_argument("--mix", choices=sorted(MIXES), default="delivered-open")
    parser.add_argument("--database", default="funnelwerk_bench_webhooks")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        child(args.events, args.messages, args.mix)
        return

    with bench_database(args.database, extra_env={"ANYMAIL_WEBHOOK_SECRET": SECRET}) as environment:
        subprocess.run(
            [
                sys.executable,
                __file__,
                "--child",
                "--events",
                str(args.events),
                "--messages",
                str(args.messages),
                "--mix",
                args.mix,
            ],
            cwd=ROOT,
            env=environment,
            check=True,
        )


if __name__ == "__main__":
    main()
