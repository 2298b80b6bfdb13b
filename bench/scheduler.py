"""Benchmark of the sequence engine: time to claim a batch of 1,000 due enrollments with a
small and a large enrollments table, and steps advanced per second for a simple sequence.

Run by hand (it creates and drops its own database, funnelwerk_bench_scheduler or --database):

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/funnelwerk \\
    .venv/bin/python bench/scheduler.py --sizes 100000 10000000 [--explain]

Each size runs in a fresh database filled with INSERT ... SELECT generate_series: 90 % of the
rows are finished runs (completed), 10 % active, of which 2,000 are due and the rest wait in the
future (next_run_at up to 30 days ahead); then the tables are vacuumed and analysed, as
autovacuum keeps a table in use. The claim is the engine's own (campaigns.engine._claim: SELECT
... FOR UPDATE SKIP LOCKED over the partial index enrollment_due, LIMIT 1,000, then the
contacts, workspaces and sequences of the batch), timed as the median of 20 runs, each in a
transaction that is rolled back. Goal (issue 5): large / small <= 1.5.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchdb import admin_connection, with_database

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/funnelwerk"
DATABASE = "funnelwerk_bench_scheduler"
CONTACTS = 20_000
DUE = 2_000
BATCH = 1_000
RUNS = 20


def child(size: int, *, explain: bool) -> None:
    """Fill the fresh database with `size` enrollments and print the measurements (and, with
    `explain`, the plan of the claim's locking query)."""
    import django

    sys.path.insert(0, str(ROOT))
    django.setup()
    import datetime as dt

    from celery import current_app
    from django.db import connection, transaction

    # The engine alone: the sending task it schedules per batch is published to an in-memory
    # broker instead of running eagerly (bench/send.py measures sending).
    current_app.conf.task_always_eager = False
    current_app.conf.broker_url = "memory://"
    from django.utils import timezone

    from campaigns import engine
    from campaigns.models import Enrollment, Sequence, SequenceStatus
    from campaigns.services import enrollment_create, sequence_create, sequence_set_status
    from contacts.models import Contact, ContactStatus
    from core.models import Workspace

    workspace = Workspace.objects.create(
        name="Bench", slug="bench", frequency_cap_per_day=100, frequency_cap_per_week=100
    )
    Contact.objects.bulk_create(
        [
            Contact(
                workspace=workspace,
                email=f"p{number}@example.org",
                status=ContactStatus.SUBSCRIBED,
            )
            for number in range(CONTACTS)
        ],
        batch_size=5000,
    )
    active = size // 10
    sequences = max(1, -(-active // CONTACTS))
    template = sequence_create(
        workspace=workspace,
        name="S0",
        steps=[
            {"key": "a", "type": "email", "subject": "Hi", "html": "<p>Hi</p>", "next": "w"},
            {"key": "w", "type": "wait", "duration": "P1D", "next": None},
        ],
    )
    Sequence.objects.bulk_create(
        [
            Sequence(
                workspace=workspace,
                name=f"S{number}",
                steps=template.steps,
                trigger=template.trigger,
                status=SequenceStatus.ACTIVE,
            )
            for number in range(1, sequences)
        ]
    )
    Sequence.objects.update(status=SequenceStatus.ACTIVE)
    started = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute(
            """
            CREATE TEMP TABLE bench_seq AS
              SELECT id, row_number() OVER (ORDER BY id) - 1 AS n FROM campaigns_sequence;
            CREATE TEMP TABLE bench_contact AS
              SELECT id, row_number() OVER (ORDER BY id) - 1 AS n FROM contacts_contact;
            INSERT INTO campaigns_enrollment (id, workspace_id, sequence_id, contact_id, status,
                current_step, next_run_at, step_started_at, entered_at, finished_at, exit_reason)
            SELECT gen_random_uuid(), %(ws)s, s.id, c.id,
                   CASE WHEN g <= %(active)s THEN 'active' ELSE 'completed' END,
                   CASE WHEN g <= %(active)s THEN 'w' ELSE 'a' END,
                   CASE WHEN g <= %(due)s THEN now() - interval '1 minute'
                        WHEN g <= %(active)s THEN now() + (g %% 43200) * interval '1 minute'
                        ELSE NULL END,
                   now(), now() - interval '40 days',
                   CASE WHEN g <= %(active)s THEN NULL ELSE now() - interval '30 days' END, ''
            FROM generate_series(1, %(size)s) AS g
            JOIN bench_seq s ON s.n = ((g - 1) / %(contacts)s) %% %(sequences)s
            JOIN bench_contact c ON c.n = (g - 1) %% %(contacts)s;
            """,
            {
                "ws": workspace.pk,
                "active": active,
                "due": DUE,
                "size": size,
                "contacts": CONTACTS,
                "sequences": sequences,
            },
        )
    # A table in use is vacuumed and analysed by autovacuum; right after a bulk fill it is
    # not: without this, the timings below include setting hint bits on first reads, plans
    # from missing statistics (contacts) and an autovacuum of the whole table running
    # alongside. The checkpoint writes the fill out before the clock starts.
    with connection.cursor() as cursor:
        for statement in (
            "VACUUM (ANALYZE) campaigns_enrollment",
            "VACUUM (ANALYZE) contacts_contact",
            "VACUUM (ANALYZE) campaigns_sequence",
            "CHECKPOINT",
        ):
            cursor.execute(statement)
    filled = time.perf_counter() - started

    if explain:
        with transaction.atomic():
            locking = (
                Enrollment.objects.select_for_update(skip_locked=True, of=("self",))
                .filter(
                    status="active",
                    next_run_at__lte=timezone.now(),
                    sequence__status=SequenceStatus.ACTIVE,
                )
                .order_by("next_run_at")[:BATCH]
            )
            sql, params = locking.query.sql_with_params()
            with connection.cursor() as cursor:
                cursor.execute(f"EXPLAIN (ANALYZE, BUFFERS) {sql}", params)
                plan = "\n".join(f"PLAN {row[0]}" for row in cursor.fetchall())
            transaction.set_rollback(True)
        print(plan)

    timings = []
    for _run in range(RUNS):
        with transaction.atomic():
            began = time.perf_counter()
            claimed = engine._claim(BATCH, timezone.now())
            timings.append(time.perf_counter() - began)
            assert len(claimed) == BATCH, len(claimed)
            transaction.set_rollback(True)

    # Steps advanced per second: 10,000 fresh runs of "email -> wait P1D", due now.
    Enrollment.objects.filter(status="active", next_run_at__lte=timezone.now()).update(
        status="completed", next_run_at=None
    )
    runner = sequence_create(workspace=workspace, name="Runner", steps=template.steps)
    sequence_set_status(sequence=runner, status=SequenceStatus.ACTIVE)
    for contact in Contact.objects.order_by("pk")[:10_000]:
        enrollment_create(sequence=runner, contact=contact)
    steps = messages = 0
    began = time.perf_counter()
    while True:
        result = engine.tick(limit=BATCH)
        steps += result.steps
        messages += result.messages
        if result.claimed < BATCH:
            break
    advanced = time.perf_counter() - began
    assert messages == 10_000, messages
    assert not Enrollment.objects.filter(
        sequence=runner, next_run_at__lte=timezone.now() - dt.timedelta(seconds=0)
    ).exists()
    print(
        f"RESULT {size} {statistics.median(timings) * 1000:.3f} {filled:.1f} "
        f"{steps / advanced:.0f} {messages / advanced:.0f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 10_000_000])
    parser.add_argument("--database", default=DATABASE)
    parser.add_argument(
        "--explain", action="store_true", help="print EXPLAIN (ANALYZE, BUFFERS) of the claim"
    )
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, explain=args.explain)
        return
    base_url = os.environ.get("DATABASE_URL", DEFAULT_URL)
    environment = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": os.environ.get("DJANGO_SETTINGS_MODULE", "config.settings.test"),
        "DATABASE_URL": with_database(base_url, args.database),
    }
    results: dict[int, tuple[float, float, float, float]] = {}
    admin = admin_connection(base_url)
    try:
        for size in args.sizes:
            with admin.cursor() as cursor:
                cursor.execute(f'DROP DATABASE IF EXISTS "{args.database}" WITH (FORCE)')
                cursor.execute(f'CREATE DATABASE "{args.database}"')
            subprocess.run(
                [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
                cwd=ROOT,
                env=environment,
                check=True,
            )
            output = subprocess.run(
                [sys.executable, __file__, "--child", str(size)]
                + (["--explain"] if args.explain else []),
                cwd=ROOT,
                env=environment,
                check=True,
                capture_output=True,
                text=True,
            ).stdout
            for plan_line in output.splitlines():
                if plan_line.startswith("PLAN "):
                    print(f"  {plan_line[5:]}")
            line = next(line for line in output.splitlines() if line.startswith("RESULT"))
            _tag, _size, claim_ms, filled, steps, sent = line.split()
            results[size] = (float(claim_ms), float(filled), float(steps), float(sent))
            print(
                f"{size:>11,} enrollments: claim of {BATCH:,} due = {float(claim_ms):7.2f} ms "
                f"(median of 20; table filled in {float(filled):.0f} s); "
                f"{float(steps):,.0f} steps/s, {float(sent):,.0f} messages created/s",
                flush=True,
            )
    finally:
        with admin.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{args.database}" WITH (FORCE)')
        admin.close()
    if len(results) >= 2:
        small, large = min(results), max(results)
        ratio = results[large][0] / results[small][0]
        verdict = "meets" if ratio <= 1.5 else "misses"
        print(f"claim time ratio {large:,} / {small:,} = {ratio:.2f} ({verdict} the goal <= 1.5)")


if __name__ == "__main__":
    main()
