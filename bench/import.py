"""Benchmark of the CSV import: rows/s and peak memory for generated files of N rows.

Run by hand (it creates and drops its own database, funnelwerk_bench by default):

    DJANGO_SETTINGS_MODULE=config.settings.test \\
    DATABASE_URL=postgres://postgres@127.0.0.1:5432/funnelwerk \\
    .venv/bin/python bench/import.py --rows 100000 1000000 [--tracemalloc-max-rows 300000]

Each size runs in a fresh subprocess, so the peaks are independent: the tracemalloc peak of
Python allocations during contact_import_run, and the growth of the process's maximum resident
set (ru_maxrss) during the run. The goal (issue 3, item 8) is a 1M-row peak within 1.5x of the
100k-row peak: the import streams the file and works in fixed-size batches.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

from benchdb import bench_database

ROOT = Path(__file__).resolve().parent.parent
FIRST_NAMES = ["Anna", "Bernd", "Chiara", "Dieter", "Elif", "Jürgen", "Zoë", "Ömer"]
LAST_NAMES = ["Müller", "Schmidt", "Weiß", "Özdemir", "Nguyen", "Smith", "García", "Kowalski"]
CITIES = ["Berlin", "Köln", "München", "Wien", "Zürich", "Hamburg"]


def generate_csv(path: Path, rows: int, seed: int = 3) -> None:
    """Write a German-Excel-style file row by row (never held in memory): ; separated,
    a third of the rows subscribed with consent, one in a hundred with a broken address."""
    rng = random.Random(seed)
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, delimiter=";")
        writer.writerow(
            ["E-Mail", "Vorname", "Nachname", "Stadt", "Tags", "Einwilligungsdatum", "Quelle"]
        )
        for number in range(rows):
            subscribed = number % 3 == 0
            writer.writerow(
                [
                    f"person{number}@example.org" if number % 100 != 7 else f"broken{number}",
                    rng.choice(FIRST_NAMES),
                    rng.choice(LAST_NAMES),
                    rng.choice(CITIES),
                    "kunde,newsletter" if number % 5 == 0 else "",
                    f"2024-0{1 + number % 9}-1{number % 10}" if subscribed else "",
                    "Webshop" if subscribed else "",
                ]
            )


def child(rows: int, use_tracemalloc: bool) -> dict[str, float | int]:
    """One measurement, in this (fresh) process: Django is set up against the bench database."""
    import django

    django.setup()
    from django.core.files import File

    from contacts.importing import contact_import_create, contact_import_run, suggest_mapping
    from contacts.models import Contact, ContactImport, ImportStatus
    from core.models import Workspace

    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / f"bench-{rows}.csv"
        generate_csv(path, rows)
        workspace = Workspace.objects.create(
            name=f"Bench {rows}", slug=f"bench-{rows}-{os.getpid()}"
        )
        with path.open("rb") as handle:
            contact_import = contact_import_create(
                workspace=workspace, uploaded_file=File(handle, name=path.name), created_by="bench"
            )
        mapping = {
            **suggest_mapping(contact_import.headers),
            "Stadt": "attributes.city",
            "Einwilligungsdatum": "consent_at",
            "Quelle": "consent_source",
        }
        # Queued by hand rather than through contact_import_configure: the test settings run
        # Celery eagerly, and the run is what is measured, directly.
        ContactImport.objects.filter(pk=contact_import.pk).update(
            status=ImportStatus.QUEUED, mapping=mapping, tags=["bench"]
        )
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        if use_tracemalloc:
            tracemalloc.start()
        started = time.perf_counter()
        contact_import_run(import_id=str(contact_import.pk))
        seconds = time.perf_counter() - started
        peak = tracemalloc.get_traced_memory()[1] if use_tracemalloc else 0
        tracemalloc.stop()
        rss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        contact_import.refresh_from_db()
        assert contact_import.status == ImportStatus.COMPLETED, contact_import.failure_reason
        result = {
            "rows": rows,
            "seconds": round(seconds, 2),
            "rows_per_second": round(rows / seconds),
            "tracemalloc_peak_mib": round(peak / 2**20, 2),
            "maxrss_before_mib": round(rss_before / 1024, 1),
            "maxrss_delta_mib": round((rss_after - rss_before) / 1024, 1),
            "created": contact_import.created,
            "failed": contact_import.failed,
            "contacts": Contact.objects.filter(workspace=workspace).count(),
        }
    return result


def run_child(rows: int, *, traced: bool, environment: dict[str, str]) -> dict:
    """Measure one size in a fresh interpreter, so that no peak carries over."""
    command = [sys.executable, __file__, "--child", str(rows)]
    if traced:
        command.append("--traced")
    output = subprocess.run(
        command, cwd=ROOT, env=environment, check=True, capture_output=True, text=True
    ).stdout
    return json.loads(output.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--database", default="funnelwerk_bench")
    parser.add_argument(
        "--tracemalloc-max-rows",
        type=int,
        default=1_000_000,
        help="tracemalloc slows Python down about 5x: trace only sizes up to this many rows "
        "(speed and max RSS always come from a separate run without tracemalloc)",
    )
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--traced", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        print(json.dumps(child(args.child, args.traced)))
        return

    results = []
    with bench_database(args.database) as environment, tempfile.TemporaryDirectory() as media:
        environment["MEDIA_ROOT"] = media
        for rows in args.rows:
            result = run_child(rows, traced=False, environment=environment)
            if rows <= args.tracemalloc_max_rows:
                traced = run_child(rows, traced=True, environment=environment)
                result["tracemalloc_peak_mib"] = traced["tracemalloc_peak_mib"]
            results.append(result)
            print(
                f"{result['rows']:>9} rows: {result['seconds']:>8} s, "
                f"{result['rows_per_second']:>6} rows/s, "
                f"max RSS +{result['maxrss_delta_mib']} MiB "
                f"(from {result['maxrss_before_mib']} MiB), "
                f"tracemalloc peak {result['tracemalloc_peak_mib'] or 'not traced'} MiB, "
                f"{result['created']} created, {result['failed']} bad rows",
                flush=True,
            )
    if len(results) >= 2:
        small, large = results[0], results[-1]
        print(
            f"max RSS growth: {large['rows']} rows / {small['rows']} rows = "
            f"{large['maxrss_delta_mib'] / small['maxrss_delta_mib']:.2f}x (goal <= 1.5x)"
        )
        traced = [result for result in results if result["tracemalloc_peak_mib"]]
        if len(traced) >= 2:
            ratio = traced[-1]["tracemalloc_peak_mib"] / traced[0]["tracemalloc_peak_mib"]
            print(
                f"tracemalloc peak: {traced[-1]['rows']} rows / {traced[0]['rows']} rows = "
                f"{ratio:.2f}x (goal <= 1.5x)"
            )


if __name__ == "__main__":
    main()
