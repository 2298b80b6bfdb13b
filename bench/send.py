"""Benchmark of sending: end-to-end msg/s against the sink-only rate, in the same run.

Run by hand (it creates and drops its own database, funnelwerk_bench_send by default):

    DJANGO_SETTINGS_MODULE=config.settings.test \\
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/funnelwerk \\
    REDIS_URL=redis://127.0.0.1:6379/4 \\
    .venv/bin/python bench/send.py [--messages 5000] [--workers 2] [--batch 500]

- end-to-end: N due Messages (one sequence step each) -> claimed, re-checked, rendered by
  campaigns.rendering.message_email -> SMTP sink on loopback -> acceptance committed, by the
  real campaigns.sending.messages_send in `--workers` processes (each its own database
  connection) taking batches of `--batch` ids from a shared queue.
- sink-only: the same mails, prebuilt (campaigns.sending.message_mail, as the send path
  builds them: content, footer, headers and tracking) before the clock starts, sent over one
  SMTP connection to the same sink by the same backend.

The sink is aiosmtpd in its own process with a handler that only counts, or (--sink minimal)
the minimal asyncio sink of bench/smtp_sink.py in --sink-processes processes on one port.
Goal (issue 5): ratio >= 0.5 and >= 1,000 msg/s.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchdb import bench_database

ROOT = Path(__file__).resolve().parent.parent
HTML = "<p>Hello {{ contact.first_name }},</p>" + "<p>Lorem ipsum dolor sit amet.</p>" * 40


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# --- the sink ----------------------------------------------------------------------------


class CountingHandler:
    def __init__(self, counter: Any) -> None:
        self.counter = counter

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self.counter.get_lock():
            self.counter.value += 1
        return "250 OK"


def run_sink(port: int, counter: Any, stop: Any) -> None:
    from aiosmtpd.controller import Controller

    controller = Controller(CountingHandler(counter), hostname="127.0.0.1", port=port)
    controller.start()
    stop.wait()
    controller.stop()


def run_minimal_sink(port: int, counter: Any, stop: Any) -> None:
    from smtp_sink import serve

    serve(port, counter, stop)


def start_sinks(kind: str, processes: int, port: int, counter: Any, stop: Any) -> list[Any]:
    """`processes` sink processes on one port (the minimal sink shares it with SO_REUSEPORT;
    aiosmtpd runs as one)."""
    context = multiprocessing.get_context("spawn")
    target = run_minimal_sink if kind == "minimal" else run_sink
    count = processes if kind == "minimal" else 1
    sinks = [context.Process(target=target, args=(port, counter, stop)) for _ in range(count)]
    for sink in sinks:
        sink.start()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # until the port answers
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as probe:
                probe.recv(100)
            break
        except OSError:
            time.sleep(0.1)
    return sinks


# --- Django side -------------------------------------------------------------------------


def setup_django(port: int) -> None:
    """Set Django up against the bench database, sending to the sink."""
    import django

    django.setup()
    from django.conf import settings

    from config.env import parse_email_url

    transport = parse_email_url(f"smtp://127.0.0.1:{port}", environ={})
    settings.EMAIL_BACKEND = transport.backend
    for name, value in transport.settings.items():
        setattr(settings, name, value)


def create_messages(count: int) -> list[str]:
    from django.db import transaction

    from campaigns.models import Enrollment, Message, Sequence, SequenceStatus
    from contacts.models import Contact, ContactStatus
    from core.models import Workspace

    with transaction.atomic():
        workspace = Workspace.objects.create(
            name="Bench",
            slug=f"bench-send-{os.getpid()}",
            sender_name="Bench",
            sender_email="bench@example.com",
            postal_address="Musterstraße 1, 10115 Berlin",
            privacy_policy_url="https://example.com/privacy",
            send_rate_per_second=1_000_000,  # measured: the machinery, not the throttle
        )
        sequence = Sequence.objects.create(
            workspace=workspace,
            name="Bench",
            status=SequenceStatus.ACTIVE,
            steps=[
                {
                    "key": "hello",
                    "type": "email",
                    "subject": "Hello {{ contact.first_name }}",
                    "html": HTML,
                    "next": None,
                }
            ],
        )
        contacts = Contact.objects.bulk_create(
            Contact(
                workspace=workspace,
                email=f"reader{number}@example.org",
                first_name=f"Reader{number}",
                status=ContactStatus.SUBSCRIBED,
            )
            for number in range(count)
        )
        enrollments = Enrollment.objects.bulk_create(
            Enrollment(workspace=workspace, sequence=sequence, contact=contact, current_step="")
            for contact in contacts
        )
        messages = Message.objects.bulk_create(
            Message(
                workspace=workspace,
                contact=contact,
                enrollment=enrollment,
                step_key="hello",
                subject="Hello",
            )
            for contact, enrollment in zip(contacts, enrollments, strict=True)
        )
    return [str(message.pk) for message in messages]


def worker(port: int, batches: Any, ready: Any, go: Any, results: Any) -> None:
    """One sending worker: its own Django and database connection, batches from the queue."""
    setup_django(port)
    from campaigns.sending import messages_send

    ready.release()
    go.wait()
    sent = 0
    while True:
        batch = batches.get()
        if batch is None:
            break
        sent += messages_send(message_ids=batch).sent
    results.put(sent)


def end_to_end(port: int, ids: list[str], workers: int, batch_size: int) -> tuple[float, int]:
    context = multiprocessing.get_context("spawn")
    batches = context.Queue()
    for start in range(0, len(ids), batch_size):
        batches.put(ids[start : start + batch_size])
    for _ in range(workers):
        batches.put(None)
    ready, go, results = context.Semaphore(0), context.Event(), context.Queue()
    processes = [
        context.Process(target=worker, args=(port, batches, ready, go, results))
        for _ in range(workers)
    ]
    for process in processes:
        process.start()
    for _ in processes:
        ready.acquire()
    started = time.perf_counter()
    go.set()
    sent = sum(results.get() for _ in processes)
    seconds = time.perf_counter() - started
    for process in processes:
        process.join()
    return seconds, sent


def prebuilt_mails(ids: list[str]) -> list[Any]:
    """The mails end-to-end sent, built again as the send path builds them
    (campaigns.sending.messages_load and message_mail: same content, headers, footer and
    tracking), before any clock starts."""
    from campaigns.sending import message_mail, messages_load

    mails = []
    sequences: dict[Any, Any] = {}
    for start in range(0, len(ids), 500):
        batch = messages_load(ids[start : start + 500])
        mails += [message_mail(message=message, sequences=sequences) for message in batch.values()]
    return mails


def sink_only(mails: list[Any]) -> float:
    """The prebuilt mails over one SMTP connection, by the same backend as end-to-end: what
    sending them costs without claiming, rendering and recording."""
    from django.core.mail import get_connection

    connection = get_connection(fail_silently=False)
    connection.open()
    started = time.perf_counter()
    for mail in mails:
        connection.send_messages([mail])
    seconds = time.perf_counter() - started
    connection.close()
    return seconds


def child(args: argparse.Namespace) -> dict[str, Any]:
    """The measurement, in a process whose DATABASE_URL is the bench database."""
    context = multiprocessing.get_context("spawn")
    counter, stop = context.Value("i", 0), context.Event()
    port = free_port()
    sinks = start_sinks(args.sink, args.sink_processes, port, counter, stop)
    try:
        setup_django(port)
        from django.db import connection

        from campaigns.models import Message, MessageStatus

        ids = create_messages(args.messages)
        connection.close()  # the workers open their own
        e2e_seconds, sent = end_to_end(port, ids, args.workers, args.batch)
        committed = Message.objects.filter(
            pk__in=ids, status=MessageStatus.SENT, esp_accepted_at__isnull=False
        ).count()
        received_e2e = counter.value
        mails = prebuilt_mails(ids)
        sink_seconds = sink_only(mails)
        received_total = counter.value
    finally:
        stop.set()
        for sink in sinks:
            sink.join()
    return {
        "messages": args.messages,
        "workers": args.workers,
        "batch": args.batch,
        "sink": f"{args.sink} x {len(sinks)}",
        "end_to_end_seconds": round(e2e_seconds, 3),
        "end_to_end_per_second": round(sent / e2e_seconds),
        "sent": sent,
        "committed": committed,
        "received_end_to_end": received_e2e,
        "sink_only_seconds": round(sink_seconds, 3),
        "sink_only_per_second": round(args.messages / sink_seconds),
        "received_sink_only": received_total - received_e2e,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--database", default="funnelwerk_bench_send")
    parser.add_argument(
        "--sink",
        choices=("aiosmtpd", "minimal"),
        default="aiosmtpd",
        help="the SMTP sink: aiosmtpd, or the minimal one of bench/smtp_sink.py",
    )
    parser.add_argument(
        "--sink-processes", type=int, default=1, help="processes of the minimal sink"
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        print(json.dumps(child(args)))
        return

    with bench_database(args.database) as environment:
        command = [
            sys.executable,
            __file__,
            "--child",
            "--messages",
            str(args.messages),
            "--workers",
            str(args.workers),
            "--batch",
            str(args.batch),
            "--sink",
            args.sink,
            "--sink-processes",
            str(args.sink_processes),
        ]
        output = subprocess.run(
            command, cwd=ROOT, env=environment, check=True, capture_output=True, text=True
        ).stdout
        result = json.loads(output.strip().splitlines()[-1])
    ratio = result["end_to_end_per_second"] / result["sink_only_per_second"]
    print(
        f"end-to-end: {result['messages']} messages, {result['workers']} workers, batches of "
        f"{result['batch']}, sink {result['sink']}: "
        f"{result['end_to_end_seconds']} s = {result['end_to_end_per_second']} msg/s "
        f"({result['sent']} sent, {result['committed']} committed, "
        f"{result['received_end_to_end']} received by the sink)"
    )
    print(
        f"sink-only:  the same {result['messages']} mails, prebuilt, over one connection: "
        f"{result['sink_only_seconds']} s = {result['sink_only_per_second']} msg/s "
        f"({result['received_sink_only']} received)"
    )
    print(
        f"ratio end-to-end / sink-only = {ratio:.2f} (goal >= 0.5); end-to-end "
        f"{result['end_to_end_per_second']} msg/s (goal >= 1,000)"
    )


if __name__ == "__main__":
    main()
