"""The PostgreSQL store keeps live jobs apart from finished ones (schema version 8):
a store of version 7 upgrades in place with its jobs in every status, every outcome
moves its job out of the live table, and every reader still sees every job."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest

from fairqueue.records import Finish, JobStatus, NewJob
from fairqueue.storage import LIVE_STATUSES
from fairqueue.storage.postgres import PostgresStorage
from fairqueue.storage.postgres.schema import MIGRATIONS, SCHEMA_VERSION

NOW = 1_700_000_000.0
LIVE = {s.value for s in LIVE_STATUSES} | {JobStatus.PREPARING.value}


def job(org: str = "acme", **kw: Any) -> NewJob:
    return NewJob(org=org, kind="future", handler="app.jobs:send", payload="[]", **kw)


def statuses(conn: psycopg.Connection[Any], table: str) -> dict[int, str]:
    return dict(conn.execute(f"SELECT id, status FROM {table}").fetchall())  # type: ignore[arg-type]


def test_a_version_7_store_upgrades_with_its_jobs_in_every_status(pg_dsn: str, pg_schema: str) -> None:
    every = [s.value for s in JobStatus]
    with psycopg.connect(pg_dsn) as conn:  # the schema as fairqueue with schema version 7 left it
        conn.execute(f"CREATE SCHEMA {pg_schema}")
        conn.execute(f"CREATE TABLE {pg_schema}.fq_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        for version in range(1, 8):
            conn.execute(MIGRATIONS[version].replace("{s}", pg_schema))  # type: ignore[arg-type]
        conn.execute(f"INSERT INTO {pg_schema}.fq_meta VALUES ('schema_version', '7')")
        for n, status in enumerate(every):
            finished = None if status in LIVE else NOW + n
            conn.execute(
                f"INSERT INTO {pg_schema}.fq_jobs (org, kind, handler, payload, status, created_at, finished_at, "  # type: ignore[arg-type]
                "ready_seq, duplicate_signature) VALUES ('acme', 'future', 'app.jobs:send', '[]', %s, %s, %s, %s, %s)",
                (status, NOW, finished, n + 1 if status == "queued" else None, f"sig-{status}"),
            )
        before = statuses(conn, f"{pg_schema}.fq_jobs")
    with PostgresStorage(pg_dsn, schema=pg_schema) as store, psycopg.connect(pg_dsn) as conn:
        live = statuses(conn, f"{pg_schema}.fq_jobs_live")
        done = statuses(conn, f"{pg_schema}.fq_jobs_done")
        assert set(live.values()) == LIVE and not set(done.values()) & LIVE
        assert {**live, **done} == before and not set(live) & set(done)
        assert {job_id: store.job_get(job_id).status.value for job_id in before} == before  # type: ignore[union-attr]
        assert sorted(r.id for r in store.job_list(limit=100)) == sorted(before)
        assert sum(store.job_counts().values()) == len(before)
        [meta] = conn.execute(f"SELECT value FROM {pg_schema}.fq_meta WHERE key = 'schema_version'").fetchall()  # type: ignore[arg-type]
        assert meta == (str(SCHEMA_VERSION),)
        # The jobs keep working: the queued one is claimed and finished, a failed one re-runs.
        [pending] = store.job_pending()
        [claimed] = store.job_claim([pending.id], "w", NOW + 60, NOW)
        assert store.job_finish([Finish(claimed.id, "w", JobStatus.COMPLETED, NOW + 1)]) == [claimed.id]
        failed = next(i for i, s in before.items() if s == "failed")
        assert store.job_rerun([failed], NOW) == [failed]
        assert store.job_get(failed).status is JobStatus.QUEUED  # type: ignore[union-attr]
        # New ids do not collide with the moved ones.
        [fresh] = store.job_enqueue([job()], NOW)
        assert fresh > max(before)


def test_no_finished_job_stays_in_the_live_table(pg_dsn: str, pg_schema: str) -> None:
    with PostgresStorage(pg_dsn, schema=pg_schema) as store, psycopg.connect(pg_dsn, autocommit=True) as conn:
        ids = store.job_enqueue([job() for _ in range(8)], NOW)
        claimed = store.job_claim(ids[:6], "w", NOW + 60, NOW)
        assert [c.id for c in claimed] == ids[:6]
        outcomes = [
            Finish(ids[0], "w", JobStatus.COMPLETED, NOW + 1),
            Finish(ids[1], "w", JobStatus.FAILED, NOW + 1, error="boom"),
            Finish(ids[2], "w", JobStatus.DISCARDED, NOW + 1, error="gave up"),
            Finish(ids[3], "w", JobStatus.QUEUED, NOW + 1, error="again", retry_at=NOW + 2),
            Finish(ids[4], "w", JobStatus.COMPLETED, NOW + 1, children=(job(),)),
        ]
        assert store.job_finish(outcomes) == ids[:5]
        # A late outcome of a worker that lost its lease changes nothing.
        assert store.job_finish([Finish(ids[0], "other", JobStatus.FAILED, NOW + 2)]) == []
        assert store.job_abort(ids[6], NOW + 1) is JobStatus.ABORTED
        assert store.job_abort(ids[0], NOW + 1) is JobStatus.COMPLETED
        live = statuses(conn, f"{pg_schema}.fq_jobs_live")
        done = statuses(conn, f"{pg_schema}.fq_jobs_done")
        assert not set(live.values()) - LIVE and not set(live) & set(done)
        assert done == {ids[0]: "completed", ids[1]: "failed", ids[2]: "discarded", ids[4]: "completed", ids[6]: "aborted"}
        child = max(live)
        assert live == {ids[3]: "queued", ids[5]: "processing", ids[7]: "queued", child: "queued"}
        finished = store.job_get(ids[1])
        assert finished is not None and finished.status is JobStatus.FAILED and finished.extended_status == "boom"
        assert finished.finished_at == NOW + 1 and finished.lease_owner is None and finished.error_count == 1
        assert [r.id for r in store.job_list(status=JobStatus.FAILED)] == [ids[1]]
        assert store.job_prune({JobStatus.COMPLETED: NOW + 5}, 10) == 2
        assert store.job_get(ids[0]) is None and store.job_get(ids[4]) is None and store.job_get(ids[1]) is not None
        # The database refuses a finished job in the live table.
        with pytest.raises(psycopg.errors.CheckViolation):
            conn.execute(f"UPDATE {pg_schema}.fq_jobs_live SET status = 'completed' WHERE id = %s", (ids[5],))  # type: ignore[arg-type]
