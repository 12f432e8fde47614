"""Batch jobs: chunks in order through the dispatcher, error events, carried state,
SQL cursors on SQLite and PostgreSQL, a SIGKILL mid-batch, and bounded memory."""

from __future__ import annotations

import collections
import json
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from test_crash import env, start_worker

import fairqueue as fq
import fq_sample_jobs as sample
from conftest import wait_until
from fairqueue.errors import InvalidArgument
from fairqueue.storage.sqlite import SQLiteStorage


def chunks() -> list[list[int]]:
    return [ids for tag, ids in sample.runs if tag == "chunk"]


def test_chunks_run_in_order_and_the_record_shows_progress(app: fq.FairQueue) -> None:
    with app.testing() as run:
        handle = app.execute_batch(sample.Numbers(1000), org="acme", scope=300)
    assert [c[0] for c in chunks()] == [0, 300, 600, 900] and [len(c) for c in chunks()] == [300, 300, 300, 100]
    assert sample.runs[-1] == ("finish", handle.id)
    record = run.get(handle.id)
    assert record is not None and record.kind == "batch" and record.status is fq.JobStatus.COMPLETED
    assert (record.items_processed, record.items_total, record.error_count) == (1000, 1000, 0)
    assert run.order == [handle.id] * 5, "each chunk is a delivery of its own, then the finish"


def test_a_failing_chunk_leaves_the_others_and_produces_one_error_event(app: fq.FairQueue) -> None:
    heard: list[fq.BatchErrorEvent] = []
    app.on_batch_error(heard.append)
    try:
        with app.testing() as run:
            handle = app.execute_batch(sample.Numbers(1000, fail_ids=(450,)), org="acme", scope=200)
    finally:
        app._batch_error_callbacks.clear()
    assert [c[0] for c in chunks()] == [0, 200, 400, 600, 800], "earlier and later chunks ran"
    [event] = run.batch_errors(handle.id)
    assert (event.phase, event.chunk, event.exception_type, event.message) == ("EXECUTE", 2, "ValueError", "chunk from 400 refuses")
    assert event.record_ids == list(range(400, 600)) and "Traceback" in event.traceback
    assert heard == [event], "subscribers got it once"
    record = run.get(handle.id)
    assert record is not None and record.status is fq.JobStatus.COMPLETED
    assert (record.items_processed, record.error_count) == (1000, 1)


def test_a_stateful_batch_carries_its_state_to_finish(app: fq.FairQueue) -> None:
    with app.testing():
        app.execute_batch(sample.Summing(1000), org="acme", scope=7)
    assert ("total", sum(range(1000))) in sample.runs


def test_a_batch_over_a_sql_query_on_a_sqlite_file(app: fq.FairQueue, tmp_path: Path) -> None:
    user_db = tmp_path / "shop.db"
    with sqlite3.connect(user_db) as db:
        db.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, total REAL)")
        db.executemany("INSERT INTO orders (total) VALUES (?)", [(i * 1.5,) for i in range(1234)])
    with fq.Worker(app, slots=2):
        handle = app.execute_batch(sample.Rows(str(user_db), "SELECT id FROM orders WHERE total > 3 ORDER BY id"), org="acme")
        wait_until(lambda: handle.status is fq.JobStatus.COMPLETED, what="the batch")
    seen = [i for tag, ids in sample.runs if tag == "rows" for i in ids]
    assert seen == list(range(4, 1235))
    record = app.get(handle.id)
    assert record is not None and record.items_processed == 1231 and record.items_total == 1231


def test_a_batch_over_a_sql_query_on_postgres(app: fq.FairQueue, pg_dsn: str, pg_schema: str) -> None:
    import psycopg

    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{pg_schema}"')
        conn.execute(f'CREATE TABLE "{pg_schema}".contacts (id INTEGER PRIMARY KEY)')
        conn.execute(f'INSERT INTO "{pg_schema}".contacts SELECT generate_series(1, 950)')
    with app.testing():
        app.execute_batch(sample.Rows(pg_dsn, f'SELECT id FROM "{pg_schema}".contacts ORDER BY id'), org="acme", scope=400)
    assert [len(ids) for tag, ids in sample.runs if tag == "rows"] == [400, 400, 150]
    assert [i for tag, ids in sample.runs if tag == "rows" for i in ids] == list(range(1, 951))


def test_bad_batches_are_refused(app: fq.FairQueue) -> None:
    with pytest.raises(InvalidArgument, match="invalid scope 0: expected 1 to 2000"):
        app.execute_batch(sample.Numbers(10), org="acme", scope=0)
    with pytest.raises(InvalidArgument, match="invalid scope 2001"):
        app.execute_batch(sample.Numbers(10), org="acme", scope=2001)
    with pytest.raises(InvalidArgument, match="expected an instance of a fairqueue.Batchable subclass"):
        app.execute_batch(sample.Chain(0, 0), org="acme")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="does not define execute"):

        class NoExecute(fq.Batchable):
            def start(self, ctx: fq.Context) -> list[int]:
                return []

    assert app.jobs() == []


@pytest.mark.timeout(300)
def test_a_batch_resumes_after_a_sigkill_without_redoing_finished_chunks(tmp_path: Path) -> None:
    store, effects = tmp_path / "fq.db", tmp_path / "effects.log"
    environment = env(store, effects)
    original = sample.app.storage
    sample.app.storage = SQLiteStorage(store)
    try:
        handle = sample.app.execute_batch(sample.Numbers(300, pause=0.05), org="acme", scope=10)
    finally:
        sample.app.storage.close()
        sample.app.storage = original

    def progress() -> int:
        with sqlite3.connect(store, timeout=30) as db:
            return int(db.execute("SELECT items_processed FROM fq_jobs WHERE id = ?", (handle.id,)).fetchone()[0])

    worker = start_worker(environment)
    try:
        wait_until(lambda: progress() >= 100, timeout=60, what="ten chunks")
        worker.send_signal(signal.SIGKILL)
        worker.wait()
        committed = progress()
        worker = start_worker(environment)  # its lease of 1 s lapses, then the batch goes on here
        wait_until(lambda: "finish" in effects.read_text().split("\n"), timeout=120, what="the batch to finish")
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=60)
    starts = collections.Counter(int(line.split()[1]) for line in effects.read_text().splitlines() if line.startswith("start"))
    assert sorted(starts) == list(range(0, 300, 10)), "every chunk ran"
    assert all(starts[first] == 1 for first in range(0, committed, 10)), "finished chunks never ran again"
    assert sum(n - 1 for n in starts.values()) <= 1, "at most the chunk running at the kill ran twice"
    with sqlite3.connect(store) as db:
        status, processed, errors = db.execute(
            "SELECT status, items_processed, error_count FROM fq_jobs WHERE id = ?", (handle.id,)
        ).fetchone()
    assert (status, processed, errors) == ("completed", 300, 0)


MEASURE = textwrap.dedent(
    """
    import json, resource, sys
    import fq_sample_jobs as sample
    with sample.app.testing() as run:
        handle = sample.app.execute_batch(sample.Blank(int(sys.argv[1])), org="acme", scope=2000)
    record = run.get(handle.id)
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"processed": record.items_processed, "status": record.status.value, "peak_kib": peak_kib}))
    """
)


@pytest.mark.timeout(600)
def test_a_five_million_record_batch_runs_in_bounded_memory(tmp_path: Path) -> None:
    def measure(records: int) -> dict[str, int]:
        out = subprocess.run(
            [sys.executable, "-c", MEASURE, str(records)],
            env=env(tmp_path / "unused.db", tmp_path / "effects.log"),
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        return json.loads(out.splitlines()[-1])  # type: ignore[no-any-return]

    started = time.monotonic()
    small, large = measure(500_000), measure(5_000_000)
    print(
        f"\npeak RSS: {small['peak_kib'] / 1024:.1f} MiB for 500,000 records, "
        f"{large['peak_kib'] / 1024:.1f} MiB for 5,000,000 ({time.monotonic() - started:.0f} s)"
    )
    assert small["processed"] == 500_000 and large["processed"] == 5_000_000
    assert large["status"] == "completed"
    # Ten times the records, no more memory beyond noise: nothing grows with the record count.
    assert large["peak_kib"] - small["peak_kib"] < 16 * 1024


def test_the_flex_queue_through_the_app_and_a_worker(app: fq.FairQueue) -> None:
    handles = [app.execute_batch(sample.Numbers(30), org="acme", scope=10) for _ in range(8)]
    held = [h.id for h in handles[5:]]
    assert [r.id for r in app.flex_queue("acme")] == held and all(h.status is fq.JobStatus.HOLDING for h in handles[5:])
    assert app.move_to_front(held[2]) == [held[2], held[0], held[1]]
    assert app.org("acme").move_after(held[2], held[1]) == [held[0], held[1], held[2]]
    assert app.move_before(held[1], held[0]) == [held[1], held[0], held[2]]
    with pytest.raises(LookupError, match="for org 'globex'"):
        app.org("globex").move_to_end(held[0])
    with pytest.raises(InvalidArgument, match="is not holding"):
        app.move_to_end(handles[0].id)
    with pytest.raises(InvalidArgument, match="invalid minutes -1"):
        app.schedule_batch(sample.Numbers(1), -1, org="acme")
    later = app.schedule_batch(sample.Numbers(1), 60, org="globex")
    assert later.status is fq.JobStatus.QUEUED and (app.get(later.id).run_at or 0) > time.time() + 3500  # type: ignore[union-attr]
    with fq.Worker(app, slots=4):
        wait_until(lambda: all(h.status is fq.JobStatus.COMPLETED for h in handles), timeout=30, what="all 8 batches")
    finishes = [job_id for tag, job_id in sample.runs if tag == "finish"]
    assert sorted(finishes) == sorted(h.id for h in handles)
    started = [app.get(i).started_at or 0 for i in (held[1], held[0], held[2])]  # type: ignore[union-attr]
    assert started == sorted(started), "held batches started in their flex-queue order"
