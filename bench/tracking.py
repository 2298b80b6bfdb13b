"""Benchmark of the open pixel and the click redirect: requests/s and p99 under wrk on loopback.

Run by hand (it creates and drops its own database, fw_bench_tracking, next to the one
DATABASE_URL names, and uses Redis database 9 with a stream of its own; wrk comes from Debian:
`apt-get install -y wrk`):

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres \\
    REDIS_URL=redis://127.0.0.1:6379/0 \\
    .venv/bin/python bench/tracking.py [--workers 3] [--connections 8] [--duration 15] \\
        [--rounds 3] [--messages 2000] [--writer-sample 1000]

(Only host, port and user are taken from the two URLs; the database is always
fw_bench_tracking and the Redis database 9.) The exit status is 0 when every goal is met.

The real app is served as production serves it: gunicorn with sync workers running
config.wsgi, production settings (bench/tracking_settings.py: DEBUG off, Redis buffer,
persistent database connections, gunicorn's access log as in the Dockerfile) with a bench
URLconf and middleware (bench/tracking_urls.py) that add the reference views. One gunicorn
serves every target in the same run; wrk (one Lua script per target, rotating over one path
per message: many distinct messages and tokens, a browser's User-Agent) runs each target for
--duration seconds with a fixed number of connections:

- bare:          a bare Django view answering the 1x1 GIF, routed through the URLconf and the
                 whole middleware stack like any page (the issue's reference);
- bare-early:    the same GIF answered by a middleware at the place the pixel is answered
                 (right after SecurityMiddleware and TrackingMiddleware): the stricter reference;
- pixel:         GET /t/o/<token>, buffered (XADD to the Redis stream);
- redirect:      GET /t/c/<token> (302), buffered;
- sync-pixel:    the pixel, with the hit written to PostgreSQL in the request
                 (tracking.ingest.hits_write) instead of buffered;
- sync-redirect: the redirect, likewise.

Tokens are real (campaigns.tracking_links.mail_tracking) for real sent Messages of a sequence,
one group of --messages messages per stored target. After the runs the buffer is drained with
tracking.buffer.hits_drain_all (now= past the clicks' hold-back) and every stored target is
checked: Activity rows == answers with the expected status (200 / 302) that gunicorn's access
log shows, i.e. 0 lost and 0 doubled. The access log is the reference because wrk stops with
requests in flight: those were answered (and recorded) but never counted by wrk, so wrk's own
count may be lower by up to --connections per run; the bench checks that bound too.

With --rounds N every target runs N times, interleaved, and the table shows the medians (the
machine's other load shifts requests/s from run to run). Also printed, to tell where the time
goes: CPU microseconds per request of the gunicorn workers, the Redis server and the bench
database's PostgreSQL backends, from /proc (less moved by other load than requests/s);
the drain's rate; and the writer alone on --writer-sample hits that are each the first of
their message (the wrk runs come back to every message many times, which the writer turns
into one reaction per message and batch).

Goals (issue 6): pixel and redirect >= 0.8 x the bare view's requests/s, >= 1.5 x their
synchronous variant's, and 0 lost.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import psycopg2.extensions
    import redis

ROOT = Path(__file__).resolve().parent.parent
# This file is bench/tracking.py: with its folder first on sys.path, as Python puts it for a
# script, "tracking" would name this file instead of the app.
sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != ROOT / "bench"]
sys.path.insert(0, str(ROOT))

from bench.benchdb import admin_connection, with_database  # noqa: E402

SETTINGS = "bench.tracking_settings"
DATABASE = "fw_bench_tracking"
DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/postgres"
DEFAULT_REDIS = "redis://127.0.0.1:6379/0"
LINK = "https://shop.example/spring?ref=mail"
BROWSER = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.4 Safari/605.1.15"
)
ACCESS_LINE = re.compile(r'"(?:GET|HEAD) (\S+) HTTP/1\.[01]" (\d{3}) ')


@dataclass(frozen=True)
class Target:
    name: str
    prefix: str  # the path prefix served, as it shows in the access log
    group: str  # the messages (and tokens) whose paths wrk rotates over
    status: int  # the answer expected
    stored: bool  # hits are stored (and checked)


TARGETS = [
    Target("bare", "/bench/gif/", "pixel", 200, stored=False),
    Target("bare-early", "/b/g/", "pixel", 200, stored=False),
    Target("pixel", "/t/o/", "pixel", 200, stored=True),
    Target("redirect", "/t/c/", "redirect", 302, stored=True),
    Target("sync-pixel", "/b/o/", "sync-pixel", 200, stored=True),
    Target("sync-redirect", "/b/c/", "sync-redirect", 302, stored=True),
]
GROUPS = ["pixel", "redirect", "sync-pixel", "sync-redirect"]
WRITER = "writer"


@dataclass
class Run:
    requests: int
    seconds: float
    non_2xx_3xx: int
    socket_errors: dict[str, int]
    p50_ms: float
    p99_ms: float
    cpu: dict[str, float] = field(default_factory=dict)  # CPU seconds by component

    @property
    def per_second(self) -> float:
        return self.requests / self.seconds

    def cpu_us(self, component: str) -> float:
        """CPU microseconds per request spent by `component`."""
        return self.cpu.get(component, 0.0) / self.requests * 1e6 if self.requests else 0.0


@dataclass
class Outcome:
    target: Target
    runs: list[Run] = field(default_factory=list)

    @property
    def per_second(self) -> float:
        return statistics.median(run.per_second for run in self.runs)

    @property
    def p99_ms(self) -> float:
        return statistics.median(run.p99_ms for run in self.runs)

    def cpu_us(self, component: str) -> float:
        return statistics.median(run.cpu_us(component) for run in self.runs)


# --- the app's side: fixtures, tokens, drain, counts (in this process, on the bench database) --


def setup_django() -> None:
    import warnings

    # STATIC_ROOT exists only after collectstatic; nothing here serves static files.
    warnings.filterwarnings("ignore", "No directory at")
    import django

    django.setup()


def messages_create(sizes: dict[str, int]) -> dict[str, tuple[uuid.UUID, list[uuid.UUID]]]:
    """A workspace, one sequence per group, and sizes[group] sent Messages in each (a day old,
    so no open or click counts as a prefetch or a scanner's); {group: (sequence id, ids)}."""
    from django.db import transaction
    from django.utils import timezone

    from campaigns.models import Enrollment, Message, MessageStatus, Sequence, SequenceStatus
    from contacts.models import Contact, ContactStatus
    from core.models import Workspace

    sent_at = timezone.now() - timedelta(days=1)
    groups: dict[str, tuple[uuid.UUID, list[uuid.UUID]]] = {}
    with transaction.atomic():
        workspace = Workspace.objects.create(
            name="Bench",
            slug="bench-tracking",
            sender_name="Bench",
            sender_email="bench@example.com",
            postal_address="Musterstraße 1, 10115 Berlin",
            privacy_policy_url="https://example.com/privacy",
        )
        for group, size in sizes.items():
            sequence = Sequence.objects.create(
                workspace=workspace,
                name=f"Bench {group}",
                status=SequenceStatus.ACTIVE,
                steps=[
                    {
                        "key": "hello",
                        "type": "email",
                        "subject": "Hello",
                        "html": f'<p><a href="{LINK}">Shop</a></p>',
                        "next": None,
                    }
                ],
            )
            contacts = Contact.objects.bulk_create(
                Contact(
                    workspace=workspace,
                    email=f"reader{number}@{group}.example.org",
                    status=ContactStatus.SUBSCRIBED,
                )
                for number in range(size)
            )
            enrollments = Enrollment.objects.bulk_create(
                Enrollment(
                    workspace=workspace, sequence=sequence, contact=contact, current_step="hello"
                )
                for contact in contacts
            )
            messages = Message.objects.bulk_create(
                Message(
                    workspace=workspace,
                    contact=contact,
                    enrollment=enrollment,
                    step_key="hello",
                    subject="Hello",
                    status=MessageStatus.SENT,
                    sent_at=sent_at,
                    esp_accepted_at=sent_at,
                )
                for contact, enrollment in zip(contacts, enrollments, strict=True)
            )
            groups[group] = (sequence.pk, [message.pk for message in messages])
    return groups


def tokens_build(groups: dict[str, tuple[uuid.UUID, list[uuid.UUID]]]) -> dict[str, list[str]]:
    """The pixel token (pixel groups) or the click token of the mail's link (redirect groups)
    of every message, as the send path builds them."""
    from urllib.parse import urlsplit

    from campaigns.tracking_links import Source, mail_tracking

    tokens: dict[str, list[str]] = {}
    for group, (sequence_id, message_ids) in groups.items():
        found: list[str] = []
        for message_id in message_ids:
            tracking = mail_tracking(
                mode="personal",
                track_opens=True,
                track_clicks=True,
                message_id=message_id,
                source=Source(sequence_id=sequence_id, step_key="hello"),
                utm=None,
            )
            if group.endswith("pixel"):
                url = tracking.pixel_url
            else:
                assert tracking.link_rewriter is not None
                url = tracking.link_rewriter(LINK, 0)
            assert url is not None
            found.append(urlsplit(url).path.rsplit("/", 1)[1])
        tokens[group] = found
    return tokens


def drain() -> tuple[int, float]:
    """Everything buffered into the database; (written, seconds)."""
    from django.utils import timezone

    from tracking import buffer

    # Clicks younger than HOLD_SECONDS wait for the next run: drain as a writer would then.
    later = timezone.now() + timedelta(seconds=buffer.HOLD_SECONDS + 1)
    started = time.perf_counter()
    written = buffer.hits_drain_all(now=later)
    return written, time.perf_counter() - started


def writer_run(sequence_id: uuid.UUID, message_ids: list[uuid.UUID]) -> tuple[int, float, int]:
    """The writer alone, when every hit is a message's first (as in a campaign's first hour,
    unlike the wrk runs, which come back to each message many times): one human open or click
    (alternating) of each message, buffered as the hot path buffers it, then drained.
    Returns (written, seconds, Activity rows stored)."""
    from django.utils import timezone

    from tracking import buffer
    from tracking.hits import CLICK, OPEN, Hit
    from tracking.models import Activity, Origin

    now = timezone.now()
    for number, message_id in enumerate(message_ids):
        click = number % 2 == 1
        buffer.hit_record(
            Hit(
                key=uuid.uuid4().hex,
                kind=CLICK if click else OPEN,
                message_id=message_id,
                source=None,
                link_index=0 if click else None,
                url=LINK if click else "",
                occurred_at=now,
                user_agent=BROWSER,
                ip="127.0.0.0",
                method="GET",
                origin=Origin.REDIRECT if click else Origin.PIXEL,
            )
        )
    written, seconds = drain()
    return written, seconds, Activity.objects.filter(sequence_id=sequence_id).count()


def buffer_left() -> tuple[int, int]:
    """(entries in the stream, entries read but not acknowledged)."""
    import redis
    from django.conf import settings

    from tracking import buffer

    client = redis.Redis.from_url(settings.TRACKING_BUFFER_URL)
    length = int(client.xlen(settings.TRACKING_STREAM))
    try:
        pending = int(client.xpending(settings.TRACKING_STREAM, buffer.GROUP)["pending"])
    except redis.ResponseError:
        pending = 0
    return length, pending


def stored_by_group(
    groups: dict[str, tuple[uuid.UUID, list[uuid.UUID]]],
) -> dict[str, Counter[str]]:
    """Activity rows per group, by kind/actor ("open/human": 123, ...)."""
    from django.db.models import Count

    from tracking.models import Activity

    found: dict[str, Counter[str]] = {}
    for group, (sequence_id, _ids) in groups.items():
        rows = (
            Activity.objects.filter(sequence_id=sequence_id)
            .values_list("kind", "actor")
            .annotate(count=Count("id"))
        )
        found[group] = Counter({f"{kind}/{actor}": count for kind, actor, count in rows})
    return found


def milestones_set_count(groups: dict[str, tuple[uuid.UUID, list[uuid.UUID]]]) -> dict[str, int]:
    """Messages per group whose opened_at is set."""
    from campaigns.models import Message

    return {
        group: Message.objects.filter(pk__in=ids, opened_at__isnull=False).count()
        for group, (_sequence, ids) in groups.items()
    }


# --- serving and loading -------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def gunicorn_start(
    port: int, workers: int, access_log: Path, error_log: Path, environment: dict[str, str]
) -> subprocess.Popen[bytes]:
    command = [
        sys.executable,
        "-m",
        "gunicorn",
        "config.wsgi:application",
        "--bind",
        f"127.0.0.1:{port}",
        "--workers",
        str(workers),
        "--worker-class",
        "sync",
        "--access-logfile",
        str(access_log),
        "--error-logfile",
        str(error_log),
    ]
    server = subprocess.Popen(command, cwd=ROOT, env=environment)
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/bench/gif/up", timeout=2) as r:
                if r.status == 200:
                    return server
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        if server.poll() is not None or time.monotonic() > deadline:
            server.kill()
            raise SystemExit(f"gunicorn did not come up; see {error_log}")
        time.sleep(0.2)


def gunicorn_stop(server: subprocess.Popen[bytes]) -> None:
    if server.poll() is None:
        server.terminate()  # the master stops its workers gracefully
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


CPU_COMPONENTS = ("app", "redis", "postgres")
_TICK = os.sysconf("SC_CLK_TCK")


def _process_cpu(pid: int) -> float:
    """CPU seconds (user + system) of process `pid` so far; 0 if it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


class CpuMeter:
    """CPU time of the gunicorn workers ("app"), the Redis server ("redis", all its clients)
    and the PostgreSQL backends of the bench database ("postgres"), from /proc: a figure per
    request that the rest of the machine's load does not change, unlike requests/s."""

    def __init__(
        self,
        master_pid: int,
        admin: psycopg2.extensions.connection,
        buffer_client: redis.Redis,
    ) -> None:
        self.master_pid = master_pid
        self.admin = admin
        self.buffer_client = buffer_client

    def _pids(self) -> dict[str, list[int]]:
        children = Path(f"/proc/{self.master_pid}/task/{self.master_pid}/children")
        with self.admin.cursor() as cursor:
            cursor.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s", [DATABASE])
            backends = [int(row[0]) for row in cursor.fetchall()]
        return {"app": [int(pid) for pid in children.read_text().split()], "postgres": backends}

    def snapshot(self) -> dict[tuple[str, int], float]:
        taken = {
            (component, pid): _process_cpu(pid)
            for component, pids in self._pids().items()
            for pid in pids
        }
        info = self.buffer_client.info("cpu")
        taken["redis", 0] = float(info["used_cpu_user"]) + float(info["used_cpu_sys"])
        return taken

    @staticmethod
    def spent(
        before: dict[tuple[str, int], float], after: dict[tuple[str, int], float]
    ) -> dict[str, float]:
        spent = dict.fromkeys(CPU_COMPONENTS, 0.0)
        for (component, pid), seconds in after.items():
            spent[component] += max(0.0, seconds - before.get((component, pid), 0.0))
        return spent


LUA = """\
-- Generated by bench/tracking.py: rotate over {count} paths; print the figures as JSON.
wrk.headers["User-Agent"] = "{agent}"
local paths = {{
{paths}
}}
local prepared = {{}}
local position = 1
function init(args)
  for index, path in ipairs(paths) do
    prepared[index] = wrk.format("GET", path)
  end
  position = math.random(#prepared)
end
function request()
  local prepared_request = prepared[position]
  position = position % #prepared + 1
  return prepared_request
end
function done(summary, latency, requests)
  local errors = summary.errors
  io.write(string.format(
    'BENCH {{"requests": %d, "duration_us": %d, "status": %d, "connect": %d, "read": %d, ' ..
    '"write": %d, "timeout": %d, "p50_us": %d, "p99_us": %d}}\\n',
    summary.requests, summary.duration, errors.status, errors.connect, errors.read,
    errors.write, errors.timeout, latency:percentile(50), latency:percentile(99)))
end
"""


def lua_write(directory: Path, target: Target, tokens: list[str]) -> Path:
    script = directory / f"{target.name}.lua"
    paths = ",\n".join(f'  "{target.prefix}{token}"' for token in tokens)
    script.write_text(LUA.format(count=len(tokens), agent=BROWSER, paths=paths))
    return script


def wrk_run(
    port: int, script: Path, seconds: int, connections: int, threads: int, meter: CpuMeter
) -> Run:
    command = [
        "wrk",
        "--latency",
        "--threads",
        str(threads),
        "--connections",
        str(connections),
        "--duration",
        f"{seconds}s",
        "--timeout",
        "10s",
        "--script",
        str(script),
        f"http://127.0.0.1:{port}",
    ]
    before = meter.snapshot()
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    spent = meter.spent(before, meter.snapshot())
    line = next(line for line in output.splitlines() if line.startswith("BENCH "))
    data = json.loads(line.removeprefix("BENCH "))
    return Run(
        requests=data["requests"],
        seconds=data["duration_us"] / 1e6,
        non_2xx_3xx=data["status"],
        socket_errors={name: data[name] for name in ("connect", "read", "write", "timeout")},
        p50_ms=data["p50_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
        cpu=spent,
    )


def access_counts(access_log: Path) -> Counter[tuple[str, int]]:
    """Answers gunicorn logged, by (target prefix, status)."""
    counts: Counter[tuple[str, int]] = Counter()
    prefixes = [target.prefix for target in TARGETS]
    with access_log.open(encoding="utf-8", errors="replace") as lines:
        for line in lines:
            match = ACCESS_LINE.search(line)
            if match is None:
                continue
            path, status = match.groups()
            prefix = next((prefix for prefix in prefixes if path.startswith(prefix)), "other")
            counts[prefix, int(status)] += 1
    return counts


# --- the run ---------------------------------------------------------------------------------


def versions() -> str:
    import django
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SHOW server_version")
        postgres = cursor.fetchone()[0]
    gunicorn = (
        subprocess.run(
            [sys.executable, "-m", "gunicorn", "--version"], capture_output=True, text=True
        )
        .stdout.split()[-1]
        .strip("()")
    )
    banner = subprocess.run(["wrk", "--version"], capture_output=True, text=True)
    wrk = (banner.stdout + banner.stderr + " ? ?").split()[1]
    return (
        f"Python {platform.python_version()}, Django {django.get_version()}, gunicorn "
        f"{gunicorn}, PostgreSQL {postgres}, wrk {wrk}"
    )


def load() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def ratio(value: float, reference: float) -> str:
    return f"{value / reference:.2f}" if reference else "-"


def report(
    args: argparse.Namespace,
    outcomes: dict[str, Outcome],
    answered: Counter[tuple[str, int]],
    stored: dict[str, Counter[str]],
    drained: tuple[int, float],
    writer: tuple[int, float, int] | None,
    left: tuple[int, int],
    opened: dict[str, int],
) -> bool:
    bare = outcomes["bare"].per_second
    early = outcomes["bare-early"].per_second
    sync_of = {"pixel": "sync-pixel", "redirect": "sync-redirect"}
    header = (
        f"{'target':<14}{'req/s':>8}{'p99 ms':>8}{'p50 ms':>8}{'/bare':>7}{'/early':>8}"
        f"{'/sync':>7}{'answered':>10}{'wrk ok':>9}{'non-2/3xx':>10}{'stored':>8}{'lost':>6}"
        f"{'doubled':>8}"
    )
    print(header)
    print("-" * len(header))
    losses: dict[str, tuple[int, int]] = {}
    for name, outcome in outcomes.items():
        target = outcome.target
        ok = answered[target.prefix, target.status]
        wrk_ok = sum(run.requests - run.non_2xx_3xx for run in outcome.runs)
        non = sum(run.non_2xx_3xx for run in outcome.runs)
        rest = sum(
            count
            for (prefix, status), count in answered.items()
            if prefix == target.prefix and status != target.status
        )
        stored_text = lost_text = doubled_text = "-"
        if target.stored:
            rows = sum(stored[target.group].values())
            lost, doubled = max(0, ok - rows), max(0, rows - ok)
            losses[name] = (lost, doubled)
            stored_text, lost_text, doubled_text = str(rows), str(lost), str(doubled)
        sync = outcomes[sync_of[name]].per_second if name in sync_of else 0.0
        print(
            f"{name:<14}{outcome.per_second:>8.0f}{outcome.p99_ms:>8.2f}"
            f"{statistics.median(run.p50_ms for run in outcome.runs):>8.2f}"
            f"{ratio(outcome.per_second, bare):>7}{ratio(outcome.per_second, early):>8}"
            f"{ratio(outcome.per_second, sync) if sync else '-':>7}{ok:>10}{wrk_ok:>9}"
            f"{f'{non}+{rest}' if rest else non:>10}{stored_text:>8}{lost_text:>6}"
            f"{doubled_text:>8}"
        )
    print()
    print(
        f"{'CPU us/request':<14}{'app':>8}{'redis':>8}{'postgres':>10}{'total':>8}"
        f"{'vs bare-early':>15}{'bare/this':>11}"
    )
    early_cpu = sum(outcomes["bare-early"].cpu_us(part) for part in CPU_COMPONENTS)
    bare_cpu = sum(outcomes["bare"].cpu_us(part) for part in CPU_COMPONENTS)
    for name, outcome in outcomes.items():
        parts = [outcome.cpu_us(part) for part in CPU_COMPONENTS]
        print(
            f"{name:<14}{parts[0]:>8.0f}{parts[1]:>8.0f}{parts[2]:>10.0f}{sum(parts):>8.0f}"
            f"{f'{sum(parts) - early_cpu:+.0f}':>15}{ratio(bare_cpu, sum(parts)):>11}"
        )
    print(
        "(app: the gunicorn workers; redis: the whole server; postgres: the bench database's "
        "backends; from /proc, per request wrk counted; bare/this: the requests/s ratio to "
        "expect where CPU is the limit)"
    )
    print()
    print(
        "answered: answers with the expected status in gunicorn's access log (every run of the "
        "target); wrk ok: those wrk counted (it stops with requests in flight)"
    )
    if args.rounds > 1:
        for name, outcome in outcomes.items():
            figures = ", ".join(
                f"{run.per_second:.0f}/s p99 {run.p99_ms:.2f} ms" for run in outcome.runs
            )
            print(f"  rounds {name}: {figures}")
    written, seconds = drained
    print(
        f"drain: {written} hits of the wrk runs (about {written / (2 * args.messages):.0f} per "
        f"message) written by tracking.buffer.hits_drain_all in {seconds:.2f} s "
        f"({written / seconds if seconds else 0:,.0f} hits/s); left in the stream: {left[0]}, "
        f"pending: {left[1]}"
    )
    if writer is not None:
        written, seconds, rows = writer
        print(
            f"writer: {args.writer_sample} hits, each the first open or click of its message, "
            f"buffered and drained: {written} written in {seconds:.2f} s "
            f"({written / seconds if seconds else 0:,.0f} hits/s), {rows} stored"
        )
        if not written == rows == args.writer_sample:
            print("note: the writer sample lost or doubled hits")
    for group in GROUPS:
        kinds = ", ".join(f"{kind} {count}" for kind, count in sorted(stored[group].items()))
        print(f"stored {group}: {kinds or 'nothing'}; messages with opened_at: {opened[group]}")

    # Consistency of the two counts: wrk may miss the answers to requests in flight at its stop.
    problems: list[str] = []
    for name, outcome in outcomes.items():
        target = outcome.target
        ok = answered[target.prefix, target.status]
        wrk_ok = sum(run.requests - run.non_2xx_3xx for run in outcome.runs)
        if target.name == "bare":
            continue  # the warm-up and the readiness probe also went there
        slack = args.connections * len(outcome.runs)
        if not wrk_ok <= ok <= wrk_ok + slack:
            problems.append(f"{name}: access log {ok} vs wrk {wrk_ok} (allowed: up to +{slack})")
        errors = {
            key: sum(run.socket_errors[key] for run in outcome.runs)
            for key in ("connect", "read", "write", "timeout")
        }
        if any(errors.values()):
            problems.append(f"{name}: socket errors {errors}")
    for problem in problems:
        print(f"note: {problem}")

    print()
    verdicts: list[tuple[str, bool]] = []
    for name in ("pixel", "redirect"):
        value = outcomes[name].per_second
        verdicts.append(
            (
                f"{name} >= 0.8 x bare: {value / bare:.2f} (vs bare-early {value / early:.2f})",
                value >= 0.8 * bare,
            )
        )
        sync = outcomes[sync_of[name]].per_second
        verdicts.append(
            (f"{name} >= 1.5 x {sync_of[name]}: {value / sync:.2f}", value >= 1.5 * sync)
        )
    lost_total = sum(lost for lost, _ in losses.values())
    doubled_total = sum(doubled for _, doubled in losses.values())
    verdicts.append(
        (
            f"0 lost, 0 doubled: lost {lost_total}, doubled {doubled_total}, "
            f"left in the buffer {left[0] + left[1]}",
            lost_total == doubled_total == 0 and left == (0, 0),
        )
    )
    for text, met in verdicts:
        print(f"goal {'met   ' if met else 'MISSED'}  {text}")
    return all(met for _, met in verdicts)


def bench(
    args: argparse.Namespace,
    workdir: Path,
    environment: dict[str, str],
    admin: psycopg2.extensions.connection,
    buffer_client: redis.Redis,
) -> bool:
    setup_django()
    from django.db import connections

    print(
        f"configuration: {os.cpu_count()} CPUs; gunicorn config.wsgi, {args.workers} sync "
        f"workers, access log to a file; settings {SETTINGS} (production + bench URLconf and "
        f"middleware), DEBUG off, buffer Redis db 9; wrk {args.threads} thread(s), "
        f"{args.connections} connections, {args.duration} s per target, {args.rounds} round(s), "
        f"{args.messages} messages (distinct paths) per target"
    )
    print(f"versions: {versions()}")
    print(f"load average at the start: {load()} (anything else running skews the figures)")
    sizes = dict.fromkeys(GROUPS, args.messages)
    if args.writer_sample:
        sizes[WRITER] = args.writer_sample
    groups = messages_create(sizes)
    writer_group = groups.pop(WRITER, None)
    tokens = tokens_build(groups)
    scripts = {target.name: lua_write(workdir, target, tokens[target.group]) for target in TARGETS}
    connections.close_all()  # the workers open their own; nothing of ours stays idle in between

    port = int(environment["BENCH_PORT"])
    access_log, error_log = workdir / "access.log", workdir / "error.log"
    server = gunicorn_start(port, args.workers, access_log, error_log, environment)
    outcomes = {target.name: Outcome(target) for target in TARGETS}
    meter = CpuMeter(server.pid, admin, buffer_client)
    try:
        # Every worker imports, connects and fills its caches before anything is measured.
        wrk_run(port, scripts["bare"], 3, args.connections, args.threads, meter)
        for round_number in range(args.rounds):
            for target in TARGETS:
                run = wrk_run(
                    port,
                    scripts[target.name],
                    args.duration,
                    args.connections,
                    args.threads,
                    meter,
                )
                outcomes[target.name].runs.append(run)
                print(
                    f"  round {round_number + 1} {target.name:<14} {run.per_second:8.0f} req/s, "
                    f"p99 {run.p99_ms:6.2f} ms, {run.requests} requests",
                    flush=True,
                )
        print(f"load average after the runs: {load()}")
    finally:
        gunicorn_stop(server)
    answered = access_counts(access_log)
    drained = drain()
    writer = writer_run(*writer_group) if writer_group else None
    left = buffer_left()
    stored = stored_by_group(groups)
    opened = milestones_set_count(groups)
    connections.close_all()
    print()
    return report(args, outcomes, answered, stored, drained, writer, left, opened)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=3, help="gunicorn sync workers")
    parser.add_argument("--connections", type=int, default=8, help="wrk connections")
    parser.add_argument("--threads", type=int, default=1, help="wrk threads")
    parser.add_argument("--duration", type=int, default=15, help="seconds per target and round")
    parser.add_argument("--rounds", type=int, default=1, help="runs of every target")
    parser.add_argument("--messages", type=int, default=2000, help="messages per target")
    parser.add_argument(
        "--writer-sample",
        type=int,
        default=1000,
        help="hits on distinct messages to time the writer with afterwards (0: none)",
    )
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is missing: apt-get install -y wrk")

    base_url = os.environ.get("DATABASE_URL", DEFAULT_URL)
    port = free_port()
    environment = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": SETTINGS,
        "DATABASE_URL": with_database(base_url, DATABASE),
        "REDIS_URL": os.environ.get("REDIS_URL", DEFAULT_REDIS),
        "SECRET_KEY": secrets.token_urlsafe(48),
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
        "LOG_LEVEL": "WARNING",
        "PYTHONPATH": str(ROOT),
        "BENCH_PORT": str(port),
    }
    os.environ.update(environment)  # this process sets Django up on the same settings

    import redis

    from bench.tracking_settings import BENCH_REDIS_URL, STREAM

    buffer_client = redis.Redis.from_url(BENCH_REDIS_URL)
    buffer_client.delete(STREAM)
    admin = admin_connection(base_url)
    with admin.cursor() as cursor:
        cursor.execute(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
        cursor.execute(f'CREATE DATABASE "{DATABASE}"')
    workdir = Path(tempfile.mkdtemp(prefix="fw-bench-tracking-"))
    try:
        subprocess.run(
            [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
            cwd=ROOT,
            env=environment,
            check=True,
        )
        met = bench(args, workdir, environment, admin, buffer_client)
    finally:
        with admin.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
        admin.close()
        buffer_client.delete(STREAM)
        # What the app may have left in the bench's Redis database: tasks nobody ran, cache.
        for pattern in ("_kombu.*", "celery", "bench-tracking:*"):
            for key in buffer_client.scan_iter(pattern):
                buffer_client.delete(key)
        shutil.rmtree(workdir, ignore_errors=True)
    sys.exit(0 if met else 1)


if __name__ == "__main__":
    main()
