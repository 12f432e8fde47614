"""The PostgreSQL store: enqueue and drain with 1, 2 and 4 worker processes, and the
quiet org's wait under a noisy flood, each against the embedded store run the same way.

Run: ``pytest benches/test_bench_postgres.py --benchmark-enable --benchmark-only -s``
(needs the server of ``FAIRQUEUE_TEST_POSTGRES``, default
``postgresql://postgres@127.0.0.1:5432/test``; each benchmark works in a schema
of its own and drops it). Figures and how to read them: benches/README.md.
"""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

import fq_sample_jobs as sample
from fairqueue.storage import Storage, open_storage
from fairqueue.storage.postgres import PostgresStorage
from fairqueue.storage.sqlite import SQLiteStorage

DSN = os.environ.get("FAIRQUEUE_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/test")
SUPPORT = Path(__file__).resolve().parents[1] / "tests" / "support"
DRAIN_JOBS = 40_000
SINGLE_JOBS = 1_000
BULK_JOBS = 100_000
ORGS = 100
# No-op jobs finish at once, so a worker's batch per round trip is its free slots:
# 64 thread slots per process keep each claim and each outcome commit full.
SLOTS = 64
FLOOD = 100_000
QUIET_JOBS = 200


@pytest.fixture
def store_url(tmp_path: Path) -> Iterator[Callable[[str], str]]:
    """Makes a fresh store URL of either kind; PostgreSQL schemas are dropped afterwards."""
    schemas: list[str] = []

    def make(kind: str) -> str:
        if kind == "sqlite":
            return str(tmp_path / f"fq-{uuid.uuid4().hex[:8]}.db")
        schemas.append(f"fq_bench_{uuid.uuid4().hex[:12]}")
        return f"{DSN}?schema={schemas[-1]}"

    yield make
    with psycopg.connect(DSN, autocommit=True) as conn:
        for schema in schemas:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def use(url: str) -> Storage:
    store = open_storage(url)
    sample.app.storage = store
    return store


def exists(store: Storage, condition: str) -> bool:
    """Whether a stored job meets ``condition``: a probe of the partial index the
    condition names, light enough to poll every 20 ms without taking CPU from the
    workers. (``Storage.job_list(status=..., limit=1)`` is a listing, newest first:
    with no job in that status it walks the whole primary key, tens of ms a poll.)"""
    if isinstance(store, PostgresStorage):
        return bool(store.db.read(f"SELECT EXISTS (SELECT 1 FROM {store.db.s}.fq_jobs WHERE {condition})")[0][0])
    assert isinstance(store, SQLiteStorage)
    return bool(store._read(f"SELECT EXISTS (SELECT 1 FROM fq_jobs WHERE {condition})")[0][0])


def unfinished(store: Storage) -> bool:
    """Whether any job is still queued or running."""
    return exists(store, "status = 'queued'") or exists(store, "status = 'processing'")


def start_workers(url: str, processes: int, affinity: bool = False) -> list[subprocess.Popen[bytes]]:
    environment = {
        **os.environ,
        "FQ_STORE": url,
        "FQ_SLOTS": str(SLOTS),
        "PYTHONPATH": os.pathsep.join([str(SUPPORT), os.environ.get("PYTHONPATH", "")]),
    }
    return [
        subprocess.Popen(
            # Without resource conservation: it would (rightly) throttle a host this busy.
            [sys.executable, "-m", "fairqueue", "worker", "fq_sample_jobs:app", "--slots", str(SLOTS), "--no-conservation",
             *(["--affinity"] if affinity else [])],
            env=environment,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(processes)
    ]


def stop_workers(workers: list[subprocess.Popen[bytes]]) -> None:
    for w in workers:
        w.send_signal(signal.SIGTERM)
    for w in workers:
        w.wait(timeout=60)


def wait_for_drain(store: Storage, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while unfinished(store):
        assert time.monotonic() < deadline, "the workers did not finish"
        time.sleep(0.02)


@pytest.mark.parametrize("kind", ["postgres", "sqlite"])
def test_enqueue_single(benchmark: Any, store_url: Any, kind: str) -> None:
    """One job per call, each its own durable transaction."""
    store = use(store_url(kind))

    def enqueue() -> None:
        for i in range(SINGLE_JOBS):
            sample.noop.delay(f"org-{i % ORGS}")

    benchmark.pedantic(enqueue, rounds=3)
    benchmark.extra_info["jobs_per_second"] = round(SINGLE_JOBS / benchmark.stats.stats.mean)
    store.close()


@pytest.mark.parametrize("kind", ["postgres", "sqlite"])
def test_enqueue_bulk(benchmark: Any, store_url: Any, kind: str) -> None:
    """``delay_many`` in calls of 10,000 jobs: one durable transaction per call."""
    store = use(store_url(kind))
    calls = [() for _ in range(10_000)]

    def enqueue() -> None:
        for i in range(BULK_JOBS // len(calls)):
            sample.noop.delay_many(f"org-{i % ORGS}", calls)

    benchmark.pedantic(enqueue, rounds=3)
    benchmark.extra_info["jobs_per_second"] = round(BULK_JOBS / benchmark.stats.stats.mean)
    store.close()


@pytest.mark.parametrize("processes", [1, 2, 4])
@pytest.mark.parametrize("kind", ["postgres", "sqlite"])
def test_drain(benchmark: Any, store_url: Any, kind: str, processes: int) -> None:
    """Worker processes, already running and idle, drain no-op jobs bulk-enqueued
    for 100 orgs; timed from the first enqueue to the last completion."""

    def run() -> None:
        url = store_url(kind)
        store = use(url)
        workers = start_workers(url, processes, affinity=True)
        try:
            sample.noop.delay("warm-up")
            wait_for_drain(store)
            calls = [() for _ in range(DRAIN_JOBS // ORGS)]
            started = time.perf_counter()
            for i in range(ORGS):
                sample.noop.delay_many(f"org-{i}", calls)
            wait_for_drain(store)
            benchmark.extra_info.setdefault("seconds", []).append(time.perf_counter() - started)
        finally:
            stop_workers(workers)
            store.close()

    # Three rounds, the fastest reported: on a shared 2-core machine another tenant's
    # burst costs a single round up to a third of its speed.
    benchmark.pedantic(run, rounds=3)
    rates = sorted(DRAIN_JOBS / s for s in benchmark.extra_info["seconds"])
    benchmark.extra_info["jobs_per_second"] = round(rates[-1])
    print(f"\ndrain {kind} x{processes} processes: {rates[-1]:,.0f} jobs/s (rounds: {', '.join(f'{r:,.0f}' for r in rates)})")


@pytest.mark.parametrize("processes", [1, 4])
@pytest.mark.parametrize("kind", ["postgres", "sqlite"])
def test_quiet_org_wait_under_a_noisy_flood(benchmark: Any, store_url: Any, kind: str, processes: int) -> None:
    """Worker processes (1 or 4, org affinity on) drain a 100,000-job
    flood from one org while a quiet org enqueues a job every 10 ms; the quiet jobs'
    waits (start - enqueue) are reported."""

    def run() -> None:
        url = store_url(kind)
        store = use(url)
        calls = [() for _ in range(10_000)]
        for _ in range(FLOOD // len(calls)):
            sample.noop.delay_many("noisy", calls)
        workers = start_workers(url, processes, affinity=True)
        try:
            # The quiet org arrives once the flood is being drained (not while the
            # worker starts and loads the backlog).
            while not exists(store, "finished_at IS NOT NULL"):
                time.sleep(0.01)
            time.sleep(0.5)
            quiet = []
            for _ in range(QUIET_JOBS):
                quiet.append(sample.noop.delay("quiet").id)
                time.sleep(0.01)
            wait_for_drain(store)
            waits = []
            for job_id in quiet:
                record = store.job_get(job_id)
                assert record is not None and record.started_at is not None
                waits.append(record.started_at - record.created_at)
            p99 = statistics.quantiles(waits, n=100)[98]
            benchmark.extra_info["quiet_p99_ms"] = round(p99 * 1000, 1)
            benchmark.extra_info["quiet_p50_ms"] = round(statistics.median(waits) * 1000, 1)
            print(f"\nquiet org under a {FLOOD:,} flood on {kind}, {processes} processes: "
                  f"p50 {statistics.median(waits) * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms")
        finally:
            stop_workers(workers)
            store.close()

    benchmark.pedantic(run, rounds=1)
