"""What only a file-backed store can show: reopening, versions, and surviving SIGKILL."""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
import textwrap
from contextlib import closing
from pathlib import Path

import pytest

from fairqueue.errors import SchemaVersionError, StorageError
from fairqueue.records import JobStatus, NewJob
from fairqueue.storage import LIVE_STATUSES, SCHEMA_VERSION, open_storage
from fairqueue.storage import sqlite as sqlite_store
from fairqueue.storage.sqlite import SQLiteStorage
from sqlite_rewind import rewind


def test_everything_survives_closing_and_reopening(tmp_path: Path) -> None:
    path = tmp_path / "fq.db"
    with SQLiteStorage(path) as store:
        ids = store.job_enqueue([NewJob("org-1", "future", "m:f", "[]") for _ in range(3)], 1.0)
        store.job_claim(ids[:1], "w1", 100.0, 1.0)
    with open_storage(str(path)) as store:
        assert [p.id for p in store.job_pending()] == ids[1:]
        assert store.job_get(ids[0]).status is JobStatus.PROCESSING  # type: ignore[union-attr]


def test_a_store_from_a_newer_fairqueue_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "fq.db"
    SQLiteStorage(path).close()
    with closing(sqlite3.connect(path)) as db, db:
        db.execute("UPDATE fq_meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION + 1),))
    with pytest.raises(SchemaVersionError, match="upgrade fairqueue"):
        SQLiteStorage(path)


def test_a_missing_directory_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="does not exist"):
        SQLiteStorage(tmp_path / "nowhere" / "fq.db")


def test_every_acknowledged_enqueue_survives_sigkill(tmp_path: Path) -> None:
    """A child enqueues in a loop and reports each id after job_enqueue returns;
    it is killed mid-stream. Every id it reported must be in the file."""
    path = tmp_path / "fq.db"
    child = textwrap.dedent(
        f"""
        import sys
        from fairqueue.records import NewJob
        from fairqueue.storage.sqlite import SQLiteStorage
        store = SQLiteStorage({str(path)!r})
        while True:
            ids = store.job_enqueue([NewJob("org-1", "future", "m:f", "[]")] * 50, 1.0)
            sys.stdout.write(f"{{ids[-1]}}\\n")
            sys.stdout.flush()
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", child], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    reported = [int(proc.stdout.readline()) for _ in range(40)]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL
    with SQLiteStorage(path) as store:
        pending = {p.id for p in store.job_pending()}
    assert set(range(1, reported[-1] + 1)) <= pending


def test_processes_sharing_a_file_fire_each_schedule_once(tmp_path: Path) -> None:
    import threading

    from fairqueue.records import NewTrigger

    path = tmp_path / "fq.db"
    stores = [SQLiteStorage(path) for _ in range(3)]
    try:
        for i in range(30):
            stores[0].trigger_create(
                NewTrigger(org="o", name=f"s{i}", cron="0 0 * * * ?", timezone="UTC", handler="app.jobs:Report",
                           payload="{}", next_fire_at=100.0 - i),
                100.0, max_per_org=100,
            )  # fmt: skip
        fired: list[int] = []
        barrier = threading.Barrier(3)

        def fire(store: SQLiteStorage) -> None:
            barrier.wait()
            for _ in range(5):
                fired.extend(store.trigger_fire_due(100.0, lambda t, now: now + 3600, limit=4))

        threads = [threading.Thread(target=fire, args=(s,)) for s in stores]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(fired) == sorted(set(fired)) and len(fired) == 30
        assert all(t.times_fired == 1 for t in stores[1].trigger_list())
    finally:
        for s in stores:
            s.close()


def test_live_counts_read_indexes_only_never_the_whole_table(tmp_path: Path) -> None:
    """Workers ask for live counts every few seconds; on a file holding millions of
    finished jobs a full scan each time would stall them."""
    SQLiteStorage(tmp_path / "fq.db").close()
    with closing(sqlite3.connect(tmp_path / "fq.db")) as db:
        plan = [row[3] for row in db.execute("EXPLAIN QUERY PLAN " + sqlite_store.LIVE_COUNTS)]
    scans = [step for step in plan if step.startswith("SCAN fq_jobs")]
    assert len(scans) == len(LIVE_STATUSES), plan
    assert all(re.fullmatch(r"SCAN fq_jobs USING (COVERING )?INDEX fq_jobs_\w+", step) for step in scans), plan


def test_explanations_read_the_backlog_and_the_recent_window_never_the_whole_history(tmp_path: Path) -> None:
    """Alerts explain a job of each waiting org every second: each count must go
    through an index of live jobs or of finish times, not scan every job ever stored."""
    SQLiteStorage(tmp_path / "fq.db").close()
    with closing(sqlite3.connect(tmp_path / "fq.db")) as db:
        plan = [row[3] for row in db.execute("EXPLAIN QUERY PLAN " + sqlite_store.WAITING_FACTS, [0] * 10)]
    reads = [step for step in plan if step.startswith(("SCAN fq_jobs", "SEARCH fq_jobs"))]
    assert len(reads) == 8, plan
    whole_table = ("fq_jobs_org", "PRIMARY KEY")
    assert all(" INDEX fq_jobs_" in step and not any(w in step for w in whole_table) for step in reads), plan


def test_listing_running_or_holding_jobs_reads_their_index_never_the_history(tmp_path: Path) -> None:
    """`fairqueue jobs --status processing` and the dashboard list by status; walking
    the primary key newest-first would read every finished job when none is running."""
    SQLiteStorage(tmp_path / "fq.db").close()
    with closing(sqlite3.connect(tmp_path / "fq.db")) as db:
        for status in (JobStatus.PROCESSING, JobStatus.HOLDING):
            where, params = sqlite_store.job_filter("?", "org-1", None, status, None)
            plan = [row[3] for row in db.execute("EXPLAIN QUERY PLAN " + sqlite_store.list_sql(where, status), [*params, 10])]
            assert any(f"INDEX fq_jobs_{status.value}" in step for step in plan), plan
            assert not any("PRIMARY KEY" in step or step == "SCAN fq_jobs" for step in plan), plan


def test_the_lease_sweep_reads_the_processing_index_never_the_table(tmp_path: Path) -> None:
    """Every worker looks for lapsed leases every second."""
    SQLiteStorage(tmp_path / "fq.db").close()
    with closing(sqlite3.connect(tmp_path / "fq.db")) as db:
        plan = [row[3] for row in db.execute("EXPLAIN QUERY PLAN " + sqlite_store.EXPIRED, [0.0])]
    assert any("INDEX fq_jobs_processing" in step for step in plan) and not any(step == "SCAN fq_jobs" for step in plan), plan


def test_a_version_2_file_loses_the_lease_index_and_keeps_its_jobs(tmp_path: Path) -> None:
    path = tmp_path / "fq.db"
    with SQLiteStorage(path) as store:
        [job_id] = store.job_enqueue([NewJob(org="o", kind="future", handler="m:f", payload="{}")], 1.0)
    with closing(sqlite3.connect(path)) as db, db:  # as a version-2 fairqueue left it
        rewind(db, 2)
    with SQLiteStorage(path) as store:
        assert store.job_get(job_id) is not None
        store.job_claim([job_id], "w", 10.0, 1.0)
        assert store.job_requeue_expired(11.0) == [job_id]
    with closing(sqlite3.connect(path)) as db:
        indexes = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
        version = db.execute("SELECT value FROM fq_meta WHERE key = 'schema_version'").fetchone()[0]
    assert "fq_jobs_leases" not in indexes and "fq_webhook_outbox_due" in indexes and version == str(SCHEMA_VERSION)


@pytest.mark.skipif(sys.version_info < (3, 11), reason="Connection.setlimit is new in Python 3.11")
def test_a_bulk_enqueue_larger_than_sqlites_longest_string_is_stored_whole_and_in_order(tmp_path: Path) -> None:
    # SQLite refuses a bound string over its length limit (1 GB by default; lowered
    # to 10 MiB here): 20 payloads of 1 MiB, one run, must still go in.
    payloads = [f'{{"n": {i}, "pad": "{"x" * (1 << 20)}"}}' for i in range(20)]
    with closing(SQLiteStorage(tmp_path / "fq.db")) as store:
        store._db.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, 10 << 20)
        ids = store.job_enqueue([NewJob("org-1", "future", "app.jobs:send", p) for p in payloads], 1.0)
        assert [store.job_get(i).payload for i in ids] == payloads  # type: ignore[union-attr]
        pending = store.job_pending()
        assert [p.id for p in pending] == ids
        assert [p.ready_seq for p in pending] == list(range(pending[0].ready_seq, pending[0].ready_seq + 20))


def test_database_errors_become_storage_errors_naming_the_store(tmp_path: Path) -> None:
    path = tmp_path / "fq.db"
    with SQLiteStorage(path) as store:
        [job_id] = store.job_enqueue([NewJob("org-1", "future", "m:f", "[]")], 1.0)
        with closing(sqlite3.connect(path)) as db, db:  # a file someone damaged by hand
            db.execute("DROP TABLE fq_flex")
        with pytest.raises(StorageError, match=rf"store {re.escape(repr(str(path)))}: OperationalError: no such table: fq_flex"):
            store.flex_move(job_id, "org-1", to="front")  # in a transaction
        with pytest.raises(StorageError, match="no such table: fq_flex"):
            store.flex_list("org-1")  # a read
        assert store.job_get(job_id).status is JobStatus.QUEUED  # type: ignore[union-attr]
    with pytest.raises(StorageError, match="cannot open store"):
        SQLiteStorage(tmp_path)  # a directory, not a file
