"""The app on the PostgreSQL store: enqueue inside the caller's own transaction."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

import fairqueue as fq
import fq_sample_jobs as sample
from conftest import wait_until
from fairqueue.errors import InvalidArgument
from fairqueue.storage.postgres import PostgresStorage


@pytest.fixture
def pg_app(pg_dsn: str, pg_schema: str) -> Iterator[fq.FairQueue]:
    """The sample jobs' app on this test's own PostgreSQL schema."""
    original = sample.app.storage
    sample.app.storage = PostgresStorage(pg_dsn, schema=pg_schema)
    sample.runs.clear()
    try:
        yield sample.app
    finally:
        sample.app.storage.close()
        sample.app.storage = original


@pytest.fixture
def conn(pg_dsn: str) -> Iterator[Any]:
    """The user's own connection, with a table of their own beside fairqueue's."""
    import psycopg

    with psycopg.connect(pg_dsn) as c:
        c.execute("CREATE TEMP TABLE orders (id SERIAL PRIMARY KEY, item TEXT NOT NULL)")
        c.commit()
        yield c


def test_jobs_enqueued_in_a_committed_transaction_exist_and_run(pg_app: fq.FairQueue, conn: Any) -> None:
    conn.execute("INSERT INTO orders (item) VALUES ('book')")
    queued = pg_app.enqueue(sample.Chain(0, 0), org="acme", connection=conn)
    with pg_app.transaction(connection=conn):
        future = sample.record.delay("acme", "after-commit")
    assert queued.id is not None and future.id is not None
    with PostgresStorage(conn.info.dsn, schema=pg_app.storage.schema) as elsewhere:  # type: ignore[attr-defined]
        assert elsewhere.job_get(future.id) is None, "invisible to others until the caller commits"
    conn.commit()
    with fq.Worker(pg_app, slots=2):
        wait_until(lambda: queued.status is fq.JobStatus.COMPLETED and future.status is fq.JobStatus.COMPLETED)
    assert ("after-commit", "acme", future.id) in sample.runs


def test_jobs_enqueued_in_a_rolled_back_transaction_never_existed(pg_app: fq.FairQueue, conn: Any) -> None:
    conn.execute("INSERT INTO orders (item) VALUES ('book')")
    handle = pg_app.enqueue(sample.Chain(0, 0), org="acme", connection=conn)
    conn.rollback()
    assert handle.id is not None and pg_app.get(handle.id) is None
    assert pg_app.jobs() == []
    assert conn.execute("SELECT COUNT(*) FROM orders").fetchone() == (0,)


def test_connection_must_be_a_psycopg_connection(pg_app: fq.FairQueue) -> None:
    with pytest.raises(InvalidArgument, match="not a psycopg 3 connection"):
        pg_app.enqueue(sample.Chain(0, 0), org="acme", connection="postgresql://db/x")
    assert pg_app.jobs() == []


def test_connection_needs_the_postgres_store(app: fq.FairQueue, pg_dsn: str) -> None:
    import psycopg

    with psycopg.connect(pg_dsn) as c:
        with pytest.raises(InvalidArgument, match="needs the PostgreSQL store"):
            app.enqueue(sample.Chain(0, 0), org="acme", connection=c)
        with pytest.raises(InvalidArgument, match="needs the PostgreSQL store"):
            with app.transaction(connection=c):
                sample.record.delay("acme", "x")
    assert app.jobs() == []
