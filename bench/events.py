"""Benchmark of event ingestion: /api/v1/events/batch/ against PostgreSQL COPY of the same rows.

Run by hand (it creates and drops its own database, funnelwerk_bench_events by default):

    DJANGO_SETTINGS_MODULE=config.settings.test \\
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/funnelwerk_bench_events \\
    .venv/bin/python bench/events.py [--events 100000]

(a) POSTs N events in 1,000-event batches to /api/v1/events/batch/ through Django's test Client:
    the whole request path (middleware, key authentication, throttle, JSON parsing, per-item
    validation, contact resolution, the insert, scheduling the processing task) is measured,
    only the network is left out. Ingestion only: the processing task is published to an
    in-memory Celery broker that nobody consumes, so rules and goals do not run inside the
    measured requests; events_process is then timed on its own for a sample of the batches.
(b) Loads the same N rows into the events table with COPY (psycopg2 copy_expert from an
    in-memory CSV stream generated in chunks) into a fresh workspace.
The issue's goal (issue 4): batch events/s >= 0.2 x COPY rows/s.
"""

from __future__ import annotations

import argparse
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
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from benchdb import bench_database

ROOT = Path(__file__).resolve().parent.parent
CONTACTS = 1_000
BATCH = 1_000
COPY_CHUNK = 10_000
START = datetime(2025, 1, 1, tzinfo=UTC)


# --- database set-up and tear-down (as bench/import.py does it) --------------------------------


# --- the events, identical for both paths ------------------------------------------------------


@dataclass(frozen=True)
class BenchEvent:
    contact_index: int
    name: str
    properties: dict[str, Any]
    value: Decimal | None
    currency: str
    occurred_at: datetime
    external_id: str
    source: str = "bench"
    channel: str = "web"


def bench_events(count: int, seed: int = 4) -> Iterator[BenchEvent]:
    """70 % page views, 20 % demo bookings, 10 % purchases with a value, over one year."""
    rng = random.Random(seed)
    for number in range(count):
        roll = rng.random()
        name = "page_view" if roll < 0.7 else "demo_booked" if roll < 0.9 else "purchase"
        properties: dict[str, Any] = {"path": f"/products/{rng.randrange(500)}"}
        value = None
        if name == "demo_booked":
            properties = {"plan": rng.choice(["free", "pro", "team"]), "seats": rng.randrange(50)}
        elif name == "purchase":
            value = Decimal(rng.randrange(100, 100_000)) / 100
            properties = {"order": f"A-{number}", "address": {"country": rng.choice(["DE", "AT"])}}
        yield BenchEvent(
            contact_index=rng.randrange(CONTACTS),
            name=name,
            properties=properties,
            value=value,
            currency="EUR" if value is not None else "",
            occurred_at=START + timedelta(seconds=rng.randrange(365 * 24 * 3600)),
            external_id=f"bench-{number}",
        )


# --- the measurement (runs in this process once the database is migrated) ----------------------


def setup_django(database_url: str) -> None:
    os.environ["DATABASE_URL"] = database_url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.test")
    # The request path keeps its throttle check; its limit must not be what is measured.
    os.environ.setdefault("API_RATE_LIMIT", "1000000/min")
    sys.path.insert(0, str(ROOT))
    # STATIC_ROOT exists only after collectstatic; kombu notes that memory:// has no host.
    warnings.filterwarnings("ignore", "No directory at")
    logging.getLogger("kombu.connection").setLevel(logging.ERROR)
    import django

    django.setup()
    from config.celery import app

    # The test settings run Celery eagerly, which would process every batch inside its request.
    # Publish to an in-memory broker instead: the enqueue is measured, the processing is not.
    app.conf.task_always_eager = False
    app.conf.broker_url = "memory://"
    app.conf.broker_transport_options = {}


def make_workspace(label: str) -> tuple[Any, list[Any]]:
    from contacts.models import Contact, ContactStatus
    from core.models import Workspace
    from funnel import services

    workspace = Workspace.objects.create(name=f"Bench {label}", slug=f"bench-{label}")
    Contact.objects.bulk_create(
        Contact(
            workspace=workspace,
            email=f"person{number}@{label}.example.org",
            status=ContactStatus.NOT_SUBSCRIBED,
            source="bench",
        )
        for number in range(CONTACTS)
    )
    contacts = list(Contact.objects.filter(workspace=workspace).order_by("email"))
    # A funnel with a goal and a rule, so that processing has real work to do.
    funnel = services.funnel_create(
        workspace=workspace, name="Sales", preset="aida", goal_event="purchase"
    )
    services.rule_create(
        funnel=funnel,
        when={"event": "demo_booked", "where": {"plan": {"in": ["pro", "team"]}}},
        move_to=funnel.stages.get(key="desire"),
    )
    return workspace, contacts


def api_json(event: BenchEvent, contacts: list[Any]) -> dict[str, Any]:
    contact = contacts[event.contact_index]
    item: dict[str, Any] = {
        # Half the integrations know the contact's id, half send an email address.
        "contact": str(contact.pk) if event.contact_index % 2 == 0 else contact.email,
        "name": event.name,
        "properties": event.properties,
        "occurred_at": event.occurred_at.isoformat(),
        "external_id": event.external_id,
        "source": event.source,
        "channel": event.channel,
    }
    if event.value is not None:
        item["value"] = str(event.value)
        item["currency"] = event.currency
    return item


def run_batches(count: int) -> dict[str, float]:
    from django.test import Client

    from core.services import api_key_create
    from funnel.models import Event

    workspace, contacts = make_workspace("batch")
    _api_key, raw_key = api_key_create(
        workspace=workspace, name="bench", access="full", created_by=None
    )
    client = Client(HTTP_AUTHORIZATION=f"Bearer {raw_key}")
    events = bench_events(count)
    seconds = 0.0
    created = duplicates = 0
    remaining = count
    while remaining:
        size = min(BATCH, remaining)
        remaining -= size
        body = json.dumps({"events": [api_json(next(events), contacts) for _ in range(size)]})
        started = time.perf_counter()
        response = client.post("/api/v1/events/batch/", body, content_type="application/json")
        seconds += time.perf_counter() - started
        assert response.status_code == 200, response.content[:500]
        result = response.json()
        assert result["errors"] == [], result["errors"][:3]
        created += result["created"]
        duplicates += result["duplicates"]
    stored = Event.objects.filter(workspace=workspace).count()
    assert created == stored == count, (created, stored, count)
    return {"seconds": seconds, "created": created, "duplicates": duplicates}


def run_processing(sample: int) -> dict[str, float]:
    """events_process on the first `sample` stored batch events, 1000 ids per call like the
    task; it claims each event, applies the rule and the goal, and sends event_recorded."""
    from funnel.models import Conversion, Event, StageTransition
    from funnel.services import events_process

    ids = [
        str(pk)
        for pk in Event.objects.filter(workspace__slug="bench-batch", processed_at__isnull=True)
        .order_by("received_at", "pk")
        .values_list("pk", flat=True)[:sample]
    ]
    started = time.perf_counter()
    processed = 0
    for offset in range(0, len(ids), BATCH):
        processed += events_process(event_ids=ids[offset : offset + BATCH])
    seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "processed": processed,
        "transitions": StageTransition.objects.filter(workspace__slug="bench-batch").count(),
        "conversions": Conversion.objects.filter(funnel__workspace__slug="bench-batch").count(),
    }


def run_copy(count: int) -> dict[str, float]:
    from django.db import connection

    from funnel.models import Event

    workspace, contacts = make_workspace("copy")
    columns = [field.column for field in Event._meta.concrete_fields]
    sql = (
        f'COPY "{Event._meta.db_table}" ({", ".join(columns)}) '
        "FROM STDIN WITH (FORMAT csv, NULL '\\N')"
    )
    received_at = datetime.now(tz=UTC).isoformat()
    events = bench_events(count)
    copy_seconds = 0.0
    wall_started = time.perf_counter()
    remaining = count
    with connection.cursor() as cursor:
        while remaining:
            size = min(COPY_CHUNK, remaining)
            remaining -= size
            stream = io.StringIO()
            writer = csv.writer(stream)
            for event in (next(events) for _ in range(size)):
                row = {
                    "id": str(uuid.uuid4()),
                    "workspace_id": str(workspace.pk),
                    "contact_id": str(contacts[event.contact_index].pk),
                    "name": event.name,
                    "properties": json.dumps(event.properties),
                    "value": "\\N" if event.value is None else str(event.value),
                    "currency": event.currency,
                    "occurred_at": event.occurred_at.isoformat(),
                    "received_at": received_at,
                    "source": event.source,
                    "channel": event.channel,
                    "external_id": event.external_id,
                    "processed_at": "\\N",
                }
                writer.writerow([row[column] for column in columns])
            stream.seek(0)
            started = time.perf_counter()
            cursor.copy_expert(sql, stream)
            copy_seconds += time.perf_counter() - started
    wall_seconds = time.perf_counter() - wall_started
    stored = Event.objects.filter(workspace=workspace).count()
    assert stored == count, (stored, count)
    return {"seconds": copy_seconds, "wall_seconds": wall_seconds, "stored": stored}


def child(count: int, process_sample: int) -> None:
    setup_django(os.environ["DATABASE_URL"])
    batch = run_batches(count)
    copy = run_copy(count)
    processing = run_processing(min(process_sample, count)) if process_sample else None
    batch_rate = count / batch["seconds"]
    copy_rate = count / copy["seconds"]
    print(
        f"batch API  : {count} events in {count // BATCH + bool(count % BATCH)} requests of "
        f"{BATCH}: {batch['seconds']:.2f} s, {batch_rate:,.0f} events/s "
        f"(ingestion only: parse, validate, resolve contacts, insert, enqueue the task; "
        f"rules and goals not run in the request)",
        flush=True,
    )
    print(
        f"COPY       : {count} rows: {copy['seconds']:.2f} s, {copy_rate:,.0f} rows/s "
        f"(COPY statements only; {count / copy['wall_seconds']:,.0f} rows/s including the "
        f"CSV generation)",
        flush=True,
    )
    print(
        f"ratio      : batch / COPY = {batch_rate / copy_rate:.3f} (goal >= 0.2)",
        flush=True,
    )
    if processing:
        print(
            f"processing : events_process on {processing['processed']} of the batch events "
            f"(1000 ids per call, 1 rule + 1 goal): {processing['seconds']:.2f} s, "
            f"{processing['processed'] / processing['seconds']:,.0f} events/s, "
            f"{processing['transitions']} stage moves, {processing['conversions']} conversions "
            f"(measured separately, not part of the figures above)",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--database", default="funnelwerk_bench_events")
    parser.add_argument(
        "--process-sample",
        type=int,
        default=10_000,
        help="how many of the batch events to run events_process on afterwards (0: none)",
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        child(args.events, args.process_sample)
        return

    with bench_database(args.database) as environment:
        # A fresh interpreter that sets Django up against the bench database only.
        subprocess.run(
            [
                sys.executable,
                __file__,
                "--child",
                "--events",
                str(args.events),
                "--process-sample",
                str(args.process_sample),
            ],
            cwd=ROOT,
            env=environment,
            check=True,
        )


if __name__ == "__main__":
    main()
