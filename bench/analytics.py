"""Benchmark of analytics: the funnel report's time against SELECT count(*) of the events table
in the same run (goal, issue 7: report / count <= 0.05), and the time of the full rebuild.

Run by hand (it creates and drops its own database, funnelwerk_bench_analytics):

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/funnelwerk \\
    .venv/bin/python bench/analytics.py [--messages 2000000] [--events-per-message 5]

"Events" are tracking.Activity rows, the table every open, click and ESP event lands in: 5 per
message (one ESP delivery or bounce report, three opens, one click, human or machine), 10M
over 2M messages by default. The messages carry the first-time milestones those events set
(what the rollups count). Everything is made with INSERT ... SELECT generate_series in SQL:
- 500,000 contacts; 400,000 of them run a sequence of three mails (tagged attention, interest,
  desire of an AIDA funnel), 1.2M messages over 90 days; the rest of the messages are
  broadcasts of 100,000 each, one every ten days;
- milestones: 3 % bounced, 40 % of the delivered opened by a person (a fifth of them clicked),
  25 % machine opens, 3 % bot clicks, 0.5 % unsubscribed, 0.1 % complaints;
- stage moves: every enrolled contact enters attention with its first mail, half move on to
  interest a day later, half of those to desire, a tenth of the others go back; 20,000 of
  those in desire buy (an event with a value and its conversion).
Then: the rebuild (analytics_rebuild's function), SELECT count(*) of the events (median of 5)
and the funnel report over the 90 days (median of 5, FunnelReportQuery.run, as the API runs
it; then with compare=True), and the recompute of one day of one broadcast (what the refresh
does per dirty key).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchdb import bench_database

ROOT = Path(__file__).resolve().parent.parent
DATABASE = "funnelwerk_bench_analytics"
CONTACTS = 500_000
ENROLLED = 400_000
STEPS = 3
BROADCAST_SIZE = 100_000
DAYS = 90
RUNS = 5
START = "2026-01-01 00:00:00+00"


def timed(label: str, action) -> float:  # type: ignore[no-untyped-def]
    began = time.perf_counter()
    action()
    seconds = time.perf_counter() - began
    print(f"  {label}: {seconds:.1f} s", flush=True)
    return seconds


def fill(messages: int, per_message: int) -> dict[str, str]:
    """Make the history in SQL; returns the ids the measurements need."""
    from django.db import connection

    from campaigns.models import SequenceStatus
    from campaigns.services import sequence_create, sequence_set_status
    from core.models import Workspace
    from funnel.services import funnel_create

    workspace = Workspace.objects.create(name="Bench", slug="bench")
    funnel = funnel_create(workspace=workspace, name="AIDA", preset="aida", goal_event="purchase")
    stage = {s.key: str(s.pk) for s in funnel.stages.all()}
    steps = []
    for number, key in enumerate(("attention", "interest", "desire")):
        steps.append(
            {"key": f"mail{number}", "type": "email", "stage": stage[key], "subject": key,
             "html": "<p>Hi</p>", "next": f"wait{number}" if number < STEPS - 1 else None}
        )  # fmt: skip
        if number < STEPS - 1:
            steps.append(
                {"key": f"wait{number}", "type": "wait", "duration": "P2D",
                 "next": f"mail{number + 1}"}
            )  # fmt: skip
    sequence = sequence_create(workspace=workspace, funnel=funnel, name="Welcome", steps=steps)
    sequence_set_status(sequence=sequence, status=SequenceStatus.ACTIVE)
    broadcasts = max(0, (messages - ENROLLED * STEPS) // BROADCAST_SIZE)
    ws = str(workspace.pk)
    params = {
        "ws": ws,
        "funnel": str(funnel.pk),
        "sequence": str(sequence.pk),
        "start": START,
        **{f"stage_{key}": value for key, value in stage.items()},
    }

    def run(sql: str, extra: dict[str, object] | None = None) -> None:
        with connection.cursor() as cursor:
            cursor.execute(sql, {**params, **(extra or {})})

    run("SELECT setseed(0.42)")
    # The rows are consistent by construction: skip the foreign-key triggers while loading.
    run("SET session_replication_role = replica")
    timed(
        "contacts",
        lambda: run(
            """INSERT INTO contacts_contact (id, email, first_name, last_name, locale, timezone,
            attributes, status, source, score, created_at, updated_at, workspace_id,
            confirmation_nonce)
            SELECT gen_random_uuid(), 'p' || n || '@example.org', '', '', '', '', '{}',
            'subscribed', 'bench', 0, %(start)s, %(start)s, %(ws)s, ''
            FROM generate_series(1, %(count)s) n""",
            {"count": CONTACTS},
        ),
    )
    run("CREATE TEMP TABLE bench_contact AS SELECT id, row_number() OVER (ORDER BY id) AS n, "
        "(random() * 80)::int AS day0 FROM contacts_contact")  # fmt: skip
    run("CREATE INDEX ON bench_contact (n)")
    timed(
        "enrollments",
        lambda: run(
            """INSERT INTO campaigns_enrollment (id, status, current_step, entered_at,
            exit_reason, contact_id, workspace_id, sequence_id)
            SELECT gen_random_uuid(), 'completed', '', %(start)s::timestamptz
            + make_interval(days => c.day0), '', c.id, %(ws)s, %(sequence)s
            FROM bench_contact c WHERE c.n <= %(enrolled)s""",
            {"enrolled": ENROLLED},
        ),
    )
    milestones = """
        CASE WHEN b THEN NULL ELSE s + interval '2 minutes' END,
        CASE WHEN NOT b AND o THEN s + interval '3 hours' END,
        CASE WHEN NOT b AND o AND random() < 0.2 THEN s + interval '4 hours' END,
        CASE WHEN random() < 0.25 THEN s + interval '5 seconds' END,
        CASE WHEN random() < 0.03 THEN s + interval '3 seconds' END,
        CASE WHEN b THEN s + interval '1 minute' END,
        CASE WHEN NOT b AND random() < 0.001 THEN s + interval '6 hours' END,
        CASE WHEN NOT b AND random() < 0.005 THEN s + interval '7 hours' END"""
    columns = """(id, workspace_id, contact_id, enrollment_id, step_key, broadcast_id, variant,
        stage_id, subject, status, attempts, error, esp_message_id, esp_accepted_at, created_at,
        sent_at, delivered_at, opened_at, clicked_at, machine_opened_at, bot_clicked_at,
        bounced_at, complained_at, unsubscribed_at)"""
    timed(
        "sequence messages",
        lambda: run(
            f"""INSERT INTO campaigns_message {columns}
            SELECT gen_random_uuid(), %(ws)s, e.contact_id, e.id, 'mail' || k, NULL, 0,
            (ARRAY[%(stage_attention)s, %(stage_interest)s, %(stage_desire)s])[k + 1]::uuid,
            'Hi', 'sent', 1, '', '', s, s, s, {milestones}
            FROM (SELECT e.*, k, e.entered_at + make_interval(days => 2 * k, hours => 9) AS s,
                  random() < 0.03 AS b, random() < 0.4 AS o
                  FROM campaigns_enrollment e CROSS JOIN generate_series(0, {STEPS - 1}) k) e"""
        ),
    )
    broadcast_ids = []
    for number in range(broadcasts):
        with connection.cursor() as cursor:
            cursor.execute(
                """INSERT INTO campaigns_broadcast (id, workspace_id, name, subject, html,
                variants, utm, local_time, status, audience_count, winner_by_chance,
                created_at) VALUES (gen_random_uuid(), %s, %s, 'News', '<p>News</p>', '[]',
                '{}', false, 'sent', %s, false, now()) RETURNING id""",
                [ws, f"News {number}", BROADCAST_SIZE],
            )
            broadcast_ids.append(str(cursor.fetchone()[0]))
    for number, broadcast_id in enumerate(broadcast_ids):
        timed(
            f"broadcast {number}",
            lambda number=number, broadcast_id=broadcast_id: run(
                f"""INSERT INTO campaigns_message {columns}
                SELECT gen_random_uuid(), %(ws)s, c.id, NULL, '', %(broadcast)s, 0, NULL,
                'News', 'sent', 1, '', '', s, s, s, {milestones}
                FROM (SELECT c.*, %(start)s::timestamptz + make_interval(days => %(day)s,
                      secs => c.n %% 36000) AS s, random() < 0.03 AS b, random() < 0.4 AS o
                      FROM bench_contact c WHERE c.n > %(offset)s
                      AND c.n <= %(offset)s + %(size)s) c""",
                {
                    "broadcast": broadcast_id,
                    "day": number * 10 + 5,
                    "offset": (number * 37_000) % (CONTACTS - BROADCAST_SIZE),
                    "size": BROADCAST_SIZE,
                },
            ),
        )
    # Loading 10M rows is much faster without the table's indexes; they are made again after.
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'tracking_activity' "
            "AND indexname NOT IN (SELECT conname FROM pg_constraint)"
        )
        activity_indexes = cursor.fetchall()
        for name, _definition in activity_indexes:
            cursor.execute(f'DROP INDEX "{name}"')
    timed(
        f"events ({per_message} per message)",
        lambda: run(
            """INSERT INTO tracking_activity (key, workspace_id, message_id, sequence_id,
            step_key, broadcast_id, variant, kind, origin, actor, rules_version, reason, url,
            occurred_at, recorded_at, method, user_agent, ip, esp, detail)
            SELECT m.id || ':' || j, m.workspace_id, m.id, NULL, m.step_key, m.broadcast_id, 0,
            (ARRAY['delivered', 'open', 'open', 'click', 'open'])[(j - 1) %% 5 + 1],
            CASE WHEN j = 1 THEN 'esp' WHEN j = 4 THEN 'redirect' ELSE 'pixel' END,
            CASE WHEN j = 1 THEN 'service' WHEN j = 2 THEN 'machine' ELSE 'human' END,
            1, '', CASE WHEN j = 4 THEN 'https://shop.example/' ELSE '' END,
            m.sent_at + make_interval(mins => j * 7), m.sent_at + make_interval(mins => j * 7),
            'GET', 'Mozilla/5.0 (bench)', '203.0.113.0', '', ''
            FROM campaigns_message m CROSS JOIN generate_series(1, %(per)s) j""",
            {"per": per_message},
        ),
    )

    def reindex() -> None:
        with connection.cursor() as cursor:
            for _name, definition in activity_indexes:
                cursor.execute(definition)

    timed("events' indexes", reindex)
    moves = """INSERT INTO funnel_stagetransition (id, workspace_id, funnel_id, contact_id,
        from_stage_id, to_stage_id, occurred_at, cause, cause_detail, reason)
        SELECT gen_random_uuid(), %(ws)s, %(funnel)s, e.contact_id, {source}, {target},
        e.entered_at + make_interval(days => {after}, hours => 9), 'rule', '', ''
        FROM campaigns_enrollment e JOIN bench_contact c ON c.id = e.contact_id WHERE {which}"""

    def transitions() -> None:
        run(moves.format(source="NULL", target="%(stage_attention)s::uuid", after=0,
                         which="true"))  # fmt: skip
        run(moves.format(source="%(stage_attention)s::uuid", target="%(stage_interest)s::uuid",
                         after=1, which="c.n %% 2 = 0"))  # fmt: skip
        run(moves.format(source="%(stage_interest)s::uuid", target="%(stage_desire)s::uuid",
                         after=2, which="c.n %% 4 = 0"))  # fmt: skip
        run(moves.format(source="%(stage_interest)s::uuid", target="%(stage_attention)s::uuid",
                         after=3, which="c.n %% 20 = 2"))  # fmt: skip

    timed("stage moves", transitions)

    def purchases() -> None:
        run("""INSERT INTO funnel_event (id, workspace_id, contact_id, name, properties, value,
            currency, occurred_at, received_at, source, channel, processed_at)
            SELECT gen_random_uuid(), %(ws)s, e.contact_id, 'purchase', '{}', 49.90, 'EUR',
            e.entered_at + make_interval(days => 3, hours => 12), now(), 'bench', '', now()
            FROM campaigns_enrollment e JOIN bench_contact c ON c.id = e.contact_id
            WHERE c.n %% 20 = 0""")  # fmt: skip
        run("""INSERT INTO funnel_conversion (id, funnel_id, contact_id, event_id, stage_id,
            value, currency, occurred_at)
            SELECT gen_random_uuid(), %(funnel)s, contact_id, id, %(stage_desire)s, value,
            currency, occurred_at FROM funnel_event WHERE name = 'purchase'""")  # fmt: skip

    timed("purchases", purchases)
    run("SET session_replication_role = DEFAULT")
    timed("vacuum analyze", lambda: _vacuum())
    return {"funnel": str(funnel.pk), "broadcast": broadcast_ids[0] if broadcast_ids else ""}


def _vacuum() -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE")


def child(messages: int, per_message: int) -> None:
    import django

    sys.path.insert(0, str(ROOT))
    django.setup()
    import datetime as dt

    from django.db import connection

    from analytics.models import DirtyKey, DirtyKind, MessageDaily, StageStay
    from analytics.queries.base import Period
    from analytics.queries.funnel import FunnelReportQuery
    from analytics.rollups import _recompute_messages, rollups_rebuild
    from core.models import Workspace

    print("filling", flush=True)
    ids = fill(messages, per_message)
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM campaigns_message")
        message_count = cursor.fetchone()[0]
    print(f"messages: {message_count}", flush=True)

    began = time.perf_counter()
    result = rollups_rebuild()
    rebuild = time.perf_counter() - began
    print(f"rebuild: {rebuild:.1f} s ({result})", flush=True)
    _vacuum()

    counts = []
    for _run in range(RUNS):
        with connection.cursor() as cursor:
            began = time.perf_counter()
            cursor.execute("SELECT count(*) FROM tracking_activity")
            events = cursor.fetchone()[0]
            counts.append(time.perf_counter() - began)
    workspace = Workspace.objects.get(slug="bench")
    period = Period(start=dt.date(2026, 1, 1), end=dt.date(2026, 1, 1) + dt.timedelta(DAYS - 1))
    reports, compared = [], []
    for _run in range(RUNS):
        began = time.perf_counter()
        query = FunnelReportQuery(workspace=workspace, funnel_id=ids["funnel"], period=period)
        report = query.run()
        reports.append(time.perf_counter() - began)
    statements: list[str] = []

    def counted(execute, sql, params, many, context):  # type: ignore[no-untyped-def]
        statements.append(sql)
        return execute(sql, params, many, context)

    with connection.execute_wrapper(counted):
        FunnelReportQuery(workspace=workspace, funnel_id=ids["funnel"], period=period).run()
    for _run in range(RUNS):
        began = time.perf_counter()
        FunnelReportQuery(
            workspace=workspace, funnel_id=ids["funnel"], period=period, compare=True
        ).run()
        compared.append(time.perf_counter() - began)
    day = MessageDaily.objects.filter(broadcast_id=ids["broadcast"]).order_by("-sent").first()
    key_seconds = []
    if day is not None:
        key = DirtyKey(
            kind=DirtyKind.MESSAGES, workspace_id=workspace.pk, object_id=ids["broadcast"],
            is_broadcast=True, day=day.day,
        )  # fmt: skip
        for _run in range(RUNS):
            began = time.perf_counter()
            _recompute_messages(key)
            key_seconds.append(time.perf_counter() - began)
    count_seconds, report_seconds = statistics.median(counts), statistics.median(reports)
    print(f"stays: {StageStay.objects.count()}")
    stages = [
        f"{stage.key} entered {stage.entered} median {stage.median_time_in_stage_seconds}"
        for stage in report.stages
    ]
    print("stages: " + ", ".join(stages))
    print(f"events: {events}")
    print(f"SELECT count(*) of the events: {count_seconds * 1000:.1f} ms (median of {RUNS})")
    print(
        f"funnel report, {DAYS} days: {report_seconds * 1000:.1f} ms (median of {RUNS}, "
        f"{len(statements)} statements)"
    )
    print(
        f"funnel report with the previous {DAYS} days: "
        f"{statistics.median(compared) * 1000:.1f} ms (median of {RUNS})"
    )
    print(f"ratio report / count: {report_seconds / count_seconds:.3f} (goal <= 0.05)")
    if key_seconds:
        print(
            f"recompute of one broadcast day ({day.sent} mails): "
            f"{statistics.median(key_seconds) * 1000:.1f} ms"
        )
    print(f"rebuild: {rebuild:.1f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=2_000_000)
    parser.add_argument("--events-per-message", type=int, default=5)
    parser.add_argument(
        "--scale", type=float, default=1.0, help="shrink everything (0.01 for a smoke run)"
    )
    parser.add_argument("--database", default=DATABASE)
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        global CONTACTS, ENROLLED, BROADCAST_SIZE
        CONTACTS, ENROLLED = int(CONTACTS * args.scale), int(ENROLLED * args.scale)
        BROADCAST_SIZE = int(BROADCAST_SIZE * args.scale)
        child(int(args.messages * args.scale), args.events_per_message)
        return
    with bench_database(args.database, keep=args.keep) as environment:
        subprocess.run(
            [
                sys.executable,
                str(Path(__file__).resolve()),
                "--child",
                "--messages",
                str(args.messages),
                "--events-per-message",
                str(args.events_per_message),
                "--scale",
                str(args.scale),
            ],
            cwd=ROOT,
            env=environment,
            check=True,
        )


if __name__ == "__main__":
    main()
