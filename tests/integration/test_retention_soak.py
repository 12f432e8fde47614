"""Retention end to end: 20,000 jobs through one real worker on a SQLite file (and on
PostgreSQL) with a short retention; the store does not grow with the jobs run, and
`fairqueue db prune` / `db vacuum` count and delete what the retention no longer keeps."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest
from click.testing import CliRunner

import fairqueue as fq
import fq_retention_jobs as soak
from conftest import wait_until
from fairqueue.cli import main
from fairqueue.records import Finish, HistoryEntry, JobStatus, NewJob
from fairqueue.runtime.duties.pruning import Pruning
from fairqueue.storage import Storage, open_storage
from fairqueue.storage.sqlite import SQLiteStorage

CHUNKS, CHUNK = 10, 2_000


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield str(tmp_path / "fq.db")
    else:
        yield f"{request.getfixturevalue('pg_dsn')}?schema={request.getfixturevalue('pg_schema')}"


def job_rows(store: Storage) -> int:
    return sum(store.job_counts().values())


def test_twenty_thousand_jobs_leave_a_bounded_store(store_url: str) -> None:
    soak.app.storage = open_storage(store_url)
    soak.app.retention = fq.Retention(completed=0.2)
    try:
        worker = soak.app.worker()
        pruning = next(d for d in worker.duties if isinstance(d, Pruning))
        pruning.every = pruning.interval = 0.1  # the production pace is 30 s; the rules are the same
        worker.start()
        sizes = []
        try:
            for k in range(CHUNKS):
                soak.noop.delay_many(f"org-{k % 3}", [[i] for i in range(CHUNK)])
                wait_until(lambda done=(k + 1) * CHUNK: worker.completed >= done, timeout=120, what=f"chunk {k} to complete")
                # Once its jobs are older than the retention, the pruner removes them: the store
                # holds at most the last chunk's jobs, however many ran before.
                wait_until(lambda: job_rows(soak.app.storage) == 0, timeout=60, what=f"chunk {k} to be pruned")
                if isinstance(soak.app.storage, SQLiteStorage):
                    path = soak.app.storage.path
                    sizes.append(sum(p.stat().st_size for p in (path, path.with_name(path.name + "-wal")) if p.exists()))
        finally:
            worker.stop(grace=5)
        assert worker.completed == CHUNKS * CHUNK
        assert pruning.total.jobs == CHUNKS * CHUNK, "every job was deleted by the worker's pruner"
        if sizes:
            # Freed pages are reused by the next chunk's rows (and handed back when they stay
            # free), so the file stops growing once it holds a chunk and its log.
            assert max(sizes[3:]) <= 1.25 * sizes[2], f"the file keeps growing: {sizes}"
    finally:
        soak.app.storage.close()
        soak.app.storage = open_storage(":memory:")


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.output


def test_db_prune_counts_then_deletes_by_the_default_retention(tmp_path: Path) -> None:
    path = tmp_path / "fq.db"
    now = time.time()
    with SQLiteStorage(path) as store:
        old, new = store.job_enqueue([NewJob("a", "future", "m:f", "{}")] * 30, now - 3 * 86400), store.job_enqueue(
            [NewJob("a", "future", "m:f", "{}")] * 5, now)  # fmt: skip
        store.job_claim(old + new, "w", now + 60, now)
        store.job_finish([Finish(i, "w", JobStatus.COMPLETED, now - 2 * 86400) for i in old[:20]]
                         + [Finish(i, "w", JobStatus.FAILED, now - 2 * 86400, error="x") for i in old[20:]]
                         + [Finish(i, "w", JobStatus.COMPLETED, now) for i in new])  # fmt: skip
        store.history_append([HistoryEntry(now - 40 * 86400, "pending", "a", 1, {}), HistoryEntry(now, "pending", "a", 1, {})])

    code, out = invoke("db", "prune", "--store", str(path), "--dry-run", "--json")
    assert code == 0, out
    counted = json.loads(out)
    assert (counted["dry_run"], counted["jobs"], counted["jobs_by_status"]["completed"]) == (True, 20, 20)
    assert counted["jobs_by_status"]["failed"] == 0, "failed jobs are kept 7 days"
    assert (counted["history"], counted["usage"]) == (1, 1)
    code, out = invoke("db", "prune", "--store", str(path))
    assert code == 0 and out.startswith("deleted 20 finished jobs, 1 history entries, 1 usage counters"), out
    with SQLiteStorage(path) as store:
        assert job_rows(store) == 15 and len(store.history_read(0)) == 1
    code, out = invoke("db", "prune", "--store", str(path), "--json")
    assert code == 0 and json.loads(out)["jobs"] == 0


def test_db_vacuum_switches_an_older_store_to_incremental_auto_vacuum(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with closing(sqlite3.connect(path)) as conn:
        conn.execute("CREATE TABLE made_before (x)")  # as a store created before retention was
    with SQLiteStorage(path) as store:
        store.job_enqueue([NewJob("a", "future", "m:f", "{}")], time.time())
    code, out = invoke("db", "vacuum", "--store", str(path), "--json")
    assert code == 0, out
    assert json.loads(out)["vacuumed"] is True
    with closing(sqlite3.connect(path)) as conn:
        assert conn.execute("PRAGMA auto_vacuum").fetchone() == (2,), "INCREMENTAL"
    code, out = invoke("db", "vacuum", "--store", ":memory:")
    assert code == 0 and "nothing to do" in out
