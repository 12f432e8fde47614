"""The PostgreSQL store's ready_seq: an enqueue in fairqueue's own transaction writes its
job once, already published (no publish write), while readers still never skip a job
committed late; and a store whose queued jobs were numbered outside the sequence
upgrades to a horizon above them."""

from __future__ import annotations

import threading
import time
from typing import Any

import psycopg

from fairqueue.records import NewJob
from fairqueue.storage.postgres import PostgresStorage
from fairqueue.storage.postgres.connection import LOCK_PUBLISH

NOW = 1_700_000_000.0


def job(org: str = "acme", **kw: Any) -> NewJob:
    return NewJob(org=org, kind="future", handler="app.jobs:send", payload="[]", **kw)


def test_an_enqueue_writes_its_job_once_already_published(pg_dsn: str, pg_schema: str) -> None:
    with PostgresStorage(pg_dsn, schema=pg_schema) as store, psycopg.connect(pg_dsn) as conn:
        direct = store.job_enqueue([job(), job(org="other")], NOW, {"acme": 10})
        [joined] = store.job_enqueue_in(conn, [job()], NOW)
        conn.commit()
        seqs = dict(conn.execute(f"SELECT id, ready_seq FROM {pg_schema}.fq_jobs").fetchall())  # type: ignore[arg-type]
        assert all(seqs[i] > 0 for i in direct) and seqs[direct[0]] < seqs[direct[1]]
        assert seqs[joined] < 0, "an enqueue in the caller's transaction is published by the next reader"
        assert [p.id for p in store.job_pending()] == [*direct, joined]


def test_a_reader_waits_for_an_enqueue_that_drew_its_number_and_has_not_committed(pg_dsn: str, pg_schema: str) -> None:
    """What the horizon is for: an enqueue that drew 1 commits after one that drew 2;
    a reader that returned 2 alone would move past 1 for good."""
    with PostgresStorage(pg_dsn, schema=pg_schema) as store, psycopg.connect(pg_dsn) as slow:
        # An enqueue as job_insert_published makes it, stopped between its insert and its commit.
        slow.execute("SELECT pg_advisory_xact_lock_shared(%s, hashtext(%s))", (LOCK_PUBLISH, pg_schema))
        [(first,)] = slow.execute(
            f"INSERT INTO {pg_schema}.fq_jobs (org, kind, handler, payload, status, created_at, ready_seq) "  # type: ignore[arg-type]
            f"VALUES ('acme', 'future', 'app.jobs:send', '[]', 'queued', %s, nextval('{pg_schema}.fq_ready_seq')) RETURNING id",
            (NOW,),
        ).fetchall()
        [second] = store.job_enqueue([job()], NOW)
        read: list[list[int]] = []
        reader = threading.Thread(target=lambda: read.append([p.id for p in store.job_pending()]))
        reader.start()
        time.sleep(1.0)
        assert read == [], "the reader waits for the enqueue holding the publish lock"
        slow.commit()
        reader.join(timeout=60)
        assert read == [[first, second]]
