"""What only the PostgreSQL store can show: the caller's transaction, many hosts, versions, NOTIFY.

Every test runs in a fresh schema of the test database (``pg_schema`` in
conftest.py); under CI=true an unreachable server fails these tests.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Iterator
from typing import Any, Optional, TypeVar

import pytest

from fairqueue.errors import DuplicateSignature, InvalidArgument, SchemaVersionError, StorageError
from fairqueue.records import Admission, Finish, JobStatus, NewJob
from fairqueue.storage import SCHEMA_VERSION, Storage, job_filter, open_storage

NOW = 1_700_000_000.0
_T = TypeVar("_T")


def job(org: str = "org-1", **kw: Any) -> NewJob:
    return NewJob(org=org, kind="future", handler="app.jobs:send", payload="[]", **kw)


@pytest.fixture
def pg(pg_dsn: str) -> Any:
    """The psycopg module (imported only once the server is known to be usable)."""
    import psycopg

    return psycopg


@pytest.fixture
def store(pg_dsn: str, pg_schema: str) -> Iterator[Any]:
    from fairqueue.storage.postgres import PostgresStorage

    with PostgresStorage(pg_dsn, schema=pg_schema) as s:
        yield s


@pytest.fixture
def listener(pg: Any, pg_dsn: str, store: Any) -> Iterator[Any]:
    """A connection LISTENing on the store's channel."""
    with pg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(f"LISTEN {store.channel}")
        yield conn


def _notes(listener: Any, timeout: float, stop_after: Optional[int] = None) -> list[tuple[str, str]]:
    """The notifications that arrive within ``timeout`` seconds (or the first ``stop_after``)."""
    return [(n.channel, n.payload) for n in listener.notifies(timeout=timeout, stop_after=stop_after)]


def _one_note(listener: Any) -> tuple[str, str]:
    """Waits for exactly one notification (and briefly makes sure no second one follows)."""
    [note] = _notes(listener, 5, stop_after=1)
    assert _notes(listener, 0.1) == []
    return note


# ----- enqueue inside the caller's transaction ----------------------------------------------


def test_enqueue_in_the_callers_transaction_exists_once_it_commits(pg: Any, pg_dsn: str, store: Any, listener: Any) -> None:
    with pg.connect(pg_dsn) as conn:  # not autocommit: the app's ordinary transaction
        conn.execute("CREATE TEMP TABLE orders (id int)")
        conn.execute("INSERT INTO orders VALUES (1)")
        [job_id] = store.job_enqueue_in(conn, [job(duplicate_signature="order-1")], NOW)
        # Not visible to anyone else before the commit, nor announced.
        assert store.job_get(job_id) is None and store.job_pending() == []
        assert _notes(listener, 0.2) == []
        conn.commit()
    record = store.job_get(job_id)
    assert record is not None and record.status is JobStatus.QUEUED
    assert [p.id for p in store.job_pending()] == [job_id]
    assert _one_note(listener) == (store.channel, "queued")


def test_enqueue_in_a_rolled_back_transaction_never_existed(pg: Any, pg_dsn: str, store: Any, listener: Any) -> None:
    with pg.connect(pg_dsn) as conn:
        ids = store.job_enqueue_in(conn, [job(duplicate_signature="sig"), job()], NOW)
        conn.rollback()
    assert all(store.job_get(i) is None for i in ids)
    assert store.job_pending() == [] and store.job_counts() == {} and store.job_list() == []
    assert not store.job_signature_taken("sig")
    assert _notes(listener, 0.3) == []


def test_enqueue_in_a_psycopg_transaction_block_follows_the_block(pg: Any, pg_dsn: str, store: Any) -> None:
    with pg.connect(pg_dsn, autocommit=True) as conn:
        with pytest.raises(RuntimeError, match="app failed"):
            with conn.transaction():
                [lost] = store.job_enqueue_in(conn, [job()], NOW)
                raise RuntimeError("app failed")
        with conn.transaction():
            [kept] = store.job_enqueue_in(conn, [job()], NOW)
    assert store.job_get(lost) is None
    assert store.job_get(kept) is not None


def test_enqueue_in_an_idle_autocommit_connection_commits_at_once(pg: Any, pg_dsn: str, store: Any) -> None:
    with pg.connect(pg_dsn, autocommit=True) as conn:
        [job_id] = store.job_enqueue_in(conn, [job()], NOW)
        assert store.job_get(job_id) is not None


def test_a_duplicate_in_the_callers_transaction_leaves_it_usable(pg: Any, pg_dsn: str, store: Any) -> None:
    store.job_enqueue([job(duplicate_signature="sync")], NOW)
    with pg.connect(pg_dsn) as conn:
        conn.execute("CREATE TEMP TABLE orders (id int)")
        conn.execute("INSERT INTO orders VALUES (1)")
        with pytest.raises(DuplicateSignature, match="sync"):
            store.job_enqueue_in(conn, [job(org="other"), job(duplicate_signature="sync")], NOW)
        # The savepoint absorbed the failure: the caller's own work goes on and commits.
        [job_id] = store.job_enqueue_in(conn, [job(org="other")], NOW)
        assert conn.execute("SELECT count(*) FROM orders").fetchone() == (1,)
        conn.commit()
    assert [r.org for r in store.job_list()] == ["other", "org-1"]
    assert store.job_get(job_id) is not None


def test_enqueue_in_a_failed_transaction_is_refused(pg: Any, pg_dsn: str, store: Any) -> None:
    with pg.connect(pg_dsn) as conn:
        with pytest.raises(pg.errors.DivisionByZero):
            conn.execute("SELECT 1 / 0")
        with pytest.raises(StorageError, match="roll it back"):
            store.job_enqueue_in(conn, [job()], NOW)


def test_a_late_commit_still_comes_after_the_last_seen_seq(pg: Any, pg_dsn: str, store: Any) -> None:
    """The reason for publishing ready_seq: a job whose transaction commits after a
    later one was already seen must not fall behind the reader's high-water mark."""
    with pg.connect(pg_dsn) as conn:
        [late] = store.job_enqueue_in(conn, [job(org="late")], NOW)
        [early] = store.job_enqueue([job(org="early")], NOW)
        [seen] = store.job_pending()
        assert seen.id == early
        conn.commit()
    retried, expired = store.job_enqueue([job(), job()], NOW)
    store.job_claim([retried, expired], "w1", NOW + 10, NOW)
    store.job_finish([Finish(retried, "w1", JobStatus.QUEUED, NOW + 1, error="boom")])
    assert store.job_requeue_expired(NOW + 20) == [expired]
    fresh = store.job_pending(after_seq=seen.ready_seq)
    assert [p.id for p in fresh] == [late, retried, expired]
    assert all(p.ready_seq > seen.ready_seq for p in fresh)


# ----- many hosts ------------------------------------------------------------------------------


def _race(*bodies: Callable[[], _T]) -> list[_T]:
    """Runs the bodies in threads released together; returns their results in order."""
    barrier = threading.Barrier(len(bodies))
    results: list[Any] = [None] * len(bodies)
    errors: list[BaseException] = []

    def run(i: int, body: Callable[[], _T]) -> None:
        try:
            barrier.wait()
            results[i] = body()
        except BaseException as e:  # reported by the main thread
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i, b)) for i, b in enumerate(bodies)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    return results


def test_two_hosts_racing_claims_take_each_job_exactly_once(pg_dsn: str, pg_schema: str) -> None:
    from fairqueue.storage.postgres import PostgresStorage

    with PostgresStorage(pg_dsn, schema=pg_schema) as a, PostgresStorage(pg_dsn, schema=pg_schema) as b:
        ids = a.job_enqueue([job(org=f"o{i % 20}") for i in range(3000)], NOW)
        shuffled = random.Random(7).sample(ids, len(ids))

        def claim_all(store: Storage, worker: str, order: list[int]) -> list[int]:
            got: list[int] = []
            for start in range(0, len(order), 100):
                got.extend(r.id for r in store.job_claim(order[start : start + 100], worker, NOW + 30, NOW))
            return got

        got_a, got_b = _race(lambda: claim_all(a, "host-a", ids), lambda: claim_all(b, "host-b", shuffled))
        assert not set(got_a) & set(got_b)
        assert sorted(got_a + got_b) == ids
        assert got_a and got_b, "both hosts should have won some jobs"
        owners = {r.id: r.lease_owner for r in a.job_list(limit=len(ids))}
        assert all(owners[i] == "host-a" for i in got_a) and all(owners[i] == "host-b" for i in got_b)
        assert all(r.attempts == 1 for r in b.job_list(limit=len(ids)))


def test_two_hosts_re_deliver_each_expired_job_once(pg_dsn: str, pg_schema: str) -> None:
    from fairqueue.storage.postgres import PostgresStorage

    with PostgresStorage(pg_dsn, schema=pg_schema) as a, PostgresStorage(pg_dsn, schema=pg_schema) as b:
        ids = a.job_enqueue([job() for _ in range(500)], NOW)
        a.job_claim(ids, "dead-host", NOW + 10, NOW)
        got_a, got_b = _race(lambda: a.job_requeue_expired(NOW + 20), lambda: b.job_requeue_expired(NOW + 20))
        assert sorted(got_a + got_b) == ids
        pending = b.job_pending()
        assert sorted(p.id for p in pending) == ids and len({p.ready_seq for p in pending}) == len(ids)


def test_a_failed_pipelined_turn_changes_nothing_and_the_store_goes_on(store: Any) -> None:
    """A worker's turn runs in pipeline mode: an error met mid-turn must roll all of it
    back (outcomes included) and leave the pooled connections usable."""
    from fairqueue.storage.postgres import claims

    a, b = store.job_enqueue([job(), job()], NOW)
    store.job_claim([a], "w", NOW + 10, NOW)

    def turn_that_fails(cur: Any) -> None:
        claims.send_final(store.db, cur, [Finish(a, "w", JobStatus.COMPLETED, NOW + 1)])
        cur.execute("SELECT 1 / 0")
        cur.fetchall()

    for _ in range(3):  # more times than the pool has connections to spoil
        with pytest.raises(StorageError, match="DivisionByZero"):
            store.db.transaction(turn_that_fails, durable=False, pipeline=True)
    record = store.job_get(a)
    assert record is not None and record.status is JobStatus.PROCESSING, "the outcome was rolled back with the turn"
    applied, claim = store.job_finish_and_claim([Finish(a, "w", JobStatus.COMPLETED, NOW + 2)], [b], "w", NOW + 10, NOW, Admission())
    assert applied == [a] and [r.id for r in claim] == [b]


def test_finish_from_a_host_whose_lease_was_taken_over_is_ignored(pg_dsn: str, pg_schema: str) -> None:
    from fairqueue.storage.postgres import PostgresStorage

    with PostgresStorage(pg_dsn, schema=pg_schema) as a, PostgresStorage(pg_dsn, schema=pg_schema) as b:
        [job_id] = a.job_enqueue([job()], NOW)
        a.job_claim([job_id], "host-a", NOW + 10, NOW)
        assert b.job_requeue_expired(NOW + 11) == [job_id]
        [again] = b.job_claim([job_id], "host-b", NOW + 100, NOW + 12)
        assert again.attempts == 2
        assert a.job_finish([Finish(job_id, "host-a", JobStatus.COMPLETED, NOW + 13)]) == []
        assert b.job_finish([Finish(job_id, "host-b", JobStatus.COMPLETED, NOW + 14)]) == [job_id]


def test_listing_running_jobs_reads_their_index_never_the_history(pg: Any, pg_dsn: str, store: Any) -> None:
    """With thousands of finished jobs and none running, a newest-first walk of the
    primary key (the planner's own choice) reads them all on every listing."""
    from fairqueue.storage.postgres import jobs

    ids = store.job_enqueue([job() for _ in range(3000)], NOW)
    store.job_claim(ids, "w", NOW + 10, NOW)
    store.job_finish([Finish(i, "w", JobStatus.COMPLETED, NOW + 1) for i in ids])
    with pg.connect(pg_dsn) as conn:  # no ANALYZE: statistics lag behind a busy table
        where, params = job_filter("%s", None, None, JobStatus.PROCESSING, None)
        plan = "\n".join(r[0] for r in conn.execute("EXPLAIN " + jobs.list_sql(store.db, where, JobStatus.PROCESSING), [*params, 1]))
    assert "fq_jobs_processing" in plan and "fq_jobs_pkey" not in plan, plan
    assert store.job_list(status=JobStatus.PROCESSING, limit=1) == []
    assert [r.id for r in store.job_list(status=JobStatus.COMPLETED, limit=2)] == ids[:-3:-1]


# ----- schema and versions ------------------------------------------------------------------------


def test_upgrade_is_idempotent_and_safe_to_race(pg_dsn: str, pg_schema: str) -> None:
    from fairqueue.storage.postgres import PostgresStorage

    stores = _race(*[lambda: PostgresStorage(pg_dsn, schema=pg_schema) for _ in range(3)])
    try:
        assert [s.upgrade() for s in stores] == [SCHEMA_VERSION] * 3
        [job_id] = stores[0].job_enqueue([job()], NOW)
        assert stores[2].job_get(job_id) is not None
    finally:
        for s in stores:
            s.close()
    with PostgresStorage(pg_dsn, schema=pg_schema, upgrade=False) as again:
        assert again.job_get(job_id) is not None


def test_a_version_2_schema_upgrades_in_place_and_keeps_its_jobs(pg: Any, pg_dsn: str, pg_schema: str) -> None:
    from fairqueue.storage.postgres import PostgresStorage
    from fairqueue.storage.postgres.schema import MIGRATIONS

    with pg.connect(pg_dsn) as conn:  # the schema as fairqueue 0.1 with schema version 2 left it
        conn.execute(f"CREATE SCHEMA {pg_schema}")
        conn.execute(f"CREATE TABLE {pg_schema}.fq_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        for version in (1, 2):
            conn.execute(MIGRATIONS[version].replace("{s}", pg_schema))
        conn.execute(f"INSERT INTO {pg_schema}.fq_meta VALUES ('schema_version', '2')")
    with pytest.raises(StorageError, match=f"is at version 2; this fairqueue needs version {SCHEMA_VERSION}"):
        PostgresStorage(pg_dsn, schema=pg_schema, upgrade=False)
    with pg.connect(pg_dsn) as conn:
        conn.execute(
            f"INSERT INTO {pg_schema}.fq_jobs (org, kind, handler, payload, status, created_at, ready_seq) "
            f"VALUES ('o', 'future', 'm:f', '{{}}', 'queued', 0, 1)"
        )
    with PostgresStorage(pg_dsn, schema=pg_schema) as store:
        with pg.connect(pg_dsn) as conn:
            functions = conn.execute(
                "SELECT proname, proconfig FROM pg_proc WHERE pronamespace = %s::regnamespace", (pg_schema,)
            ).fetchall()
            indexes = {r[0] for r in conn.execute("SELECT indexname FROM pg_indexes WHERE schemaname = %s", (pg_schema,))}
            # A one-row table is cheapest to scan whole: ask which index the sweep would use.
            conn.execute("SET enable_seqscan = off")
            sweep = "\n".join(r[0] for r in conn.execute(
                f"EXPLAIN UPDATE {pg_schema}.fq_jobs SET status = 'queued' WHERE status = 'processing' AND lease_expires_at < 0"
            ))  # fmt: skip
        assert functions == [("fq_usage_locked", ["plan_cache_mode=force_generic_plan"])], (
            "the claim function of version 2 is gone, version 8's is there, planning once per session (version 9)"
        )
        assert "fq_jobs_leases" not in indexes and "fq_jobs_processing" in sweep, (indexes, sweep)
        [pending] = store.job_pending()
        [claimed] = store.job_claim([pending.id], "w", NOW + 10, NOW, Admission(pair_caps={("o", "future"): 1}))
        assert claimed.org == "o" and claimed.status is JobStatus.PROCESSING
        # Version 6's alert episodes and webhook outbox arrived on the way.
        assert "fq_webhook_outbox_due" in indexes
        assert store.alert_episode_set("wait_observed:o", True, NOW, "evt_1", [("https://hooks.example/x", "{}")])
        [delivery] = store.webhook_outbox_claim(NOW, 10, 30.0)
        assert (delivery.event_id, delivery.url) == ("evt_1", "https://hooks.example/x")
        # Version 7's job columns (the old job took their defaults), settings and rates.
        assert (claimed.queue, claimed.key, claimed.priority, claimed.cost) == ("default", None, 5, 1)
        assert "fq_jobs_processing_key" in indexes and store.settings_read() == (0, [])


def test_a_schema_from_a_newer_fairqueue_is_refused(pg: Any, pg_dsn: str, pg_schema: str) -> None:
    from fairqueue.storage.postgres import PostgresStorage

    PostgresStorage(pg_dsn, schema=pg_schema).close()
    with pg.connect(pg_dsn) as conn:
        conn.execute(
            f"UPDATE {pg_schema}.fq_meta SET value = %s WHERE key = 'schema_version'", (str(SCHEMA_VERSION + 1),)
        )
    for upgrade in (True, False):
        with pytest.raises(SchemaVersionError, match="upgrade fairqueue") as caught:
            PostgresStorage(pg_dsn, schema=pg_schema, upgrade=upgrade)
        message = str(caught.value)
        assert f"version {SCHEMA_VERSION + 1}" in message and f"fairqueue's {SCHEMA_VERSION}" in message


def test_without_upgrade_a_missing_schema_is_a_clear_error(pg_dsn: str, pg_schema: str) -> None:
    from fairqueue.storage.postgres import PostgresStorage

    with pytest.raises(StorageError, match=r"does not exist.*upgrade\(\)"):
        PostgresStorage(pg_dsn, schema=pg_schema, upgrade=False)


def test_the_tables_live_in_the_chosen_schema(pg: Any, pg_dsn: str, store: Any) -> None:
    with pg.connect(pg_dsn) as conn:
        rows = conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s ORDER BY 1", (store.schema,)
        ).fetchall()
    assert rows == [
        ("fq_alert_episodes",), ("fq_batch_errors",), ("fq_flex",), ("fq_history",), ("fq_jobs",), ("fq_meta",),
        ("fq_rate_state",), ("fq_settings",), ("fq_settings_version",), ("fq_triggers",), ("fq_usage",),
        ("fq_webhook_outbox",), ("fq_workers",),
    ]  # fmt: skip


def test_a_schema_name_that_would_need_quoting_is_refused(pg_dsn: str) -> None:
    from fairqueue.storage.postgres import PostgresStorage

    with pytest.raises(InvalidArgument, match="lower-case identifier"):
        PostgresStorage(pg_dsn, schema='x"; DROP TABLE users; --')


# ----- statements and errors -----------------------------------------------------------------------


def test_every_statement_that_reads_records_lists_the_record_columns_in_order(pg_dsn: str) -> None:
    """Records are built by position (rows.record): a statement's select list must be rows.FIELDS."""
    import re

    from fairqueue.storage.postgres.queries import QUERIES
    from fairqueue.storage.postgres.rows import FIELDS

    for name in ("job_get", "flex_list", "claim_take"):
        listed = re.search(r"(?:SELECT|RETURNING)\s+(.*?)(?:\s+FROM\b|\s*$)", QUERIES[name], re.S)
        assert listed is not None, name
        columns = [c.strip().removeprefix("j.") for c in listed.group(1).split(",")]
        assert tuple(columns) == FIELDS, name


def test_a_statement_file_with_a_name_used_twice_or_sql_before_a_name_is_refused(pg_dsn: str) -> None:
    from fairqueue.storage.postgres.queries import parse

    assert parse("-- header\n\n-- name: a\n-- why\nSELECT 1\n  FROM t\n-- name: b\nSELECT 2\n", "x.sql") == {
        "a": "SELECT 1\n  FROM t",
        "b": "SELECT 2",
    }
    with pytest.raises(ValueError, match="x.sql:3: statement 'a' is named twice"):
        parse("-- name: a\nSELECT 1\n-- name: a\nSELECT 2\n", "x.sql")
    with pytest.raises(ValueError, match="x.sql:1: SQL before the first"):
        parse("SELECT 1\n-- name: a\nSELECT 2\n", "x.sql")
    with pytest.raises(ValueError, match="no statement under \\['b'\\]"):
        parse("-- name: a\nSELECT 1\n-- name: b\n", "x.sql")


def test_database_errors_become_fairqueue_errors_in_one_place(pg: Any, pg_dsn: str, store: Any) -> None:
    from fairqueue.storage.postgres.errors import translate

    store.job_enqueue([job(duplicate_signature="once")], NOW)
    with pg.connect(pg_dsn) as conn:
        with pytest.raises(pg.errors.UniqueViolation) as caught:
            conn.execute(
                f"INSERT INTO {store.schema}.fq_jobs (org, kind, handler, payload, status, created_at, duplicate_signature) "
                "VALUES ('o', 'future', 'm:f', '{}', 'queued', 0, 'once')"
            )
    duplicate = translate(caught.value, store.db.where, jobs=[job(duplicate_signature="once")])
    assert isinstance(duplicate, DuplicateSignature) and "['once']" in str(duplicate)
    other = translate(pg.errors.DivisionByZero("division by zero"), store.db.where)
    assert type(other) is StorageError and str(other).startswith(f"fairqueue schema {store.schema!r} of database ")
    assert "DivisionByZero: division by zero" in str(other)
    gave_up = translate(pg.errors.DeadlockDetected("deadlock detected"), "here", conflicts=5)
    assert str(gave_up) == "fairqueue here: gave up after 5 conflicts: deadlock detected"


# ----- wake-ups and URLs --------------------------------------------------------------------------


def test_enqueue_retry_and_re_delivery_notify_listeners(store: Any, listener: Any) -> None:
    assert store.channel == f"fairqueue_{store.schema}"
    a, b = store.job_enqueue([job(), job()], NOW)
    assert _one_note(listener) == (store.channel, "queued")  # one per transaction, not per job
    store.job_claim([a, b], "w1", NOW + 10, NOW)
    assert _notes(listener, 0.2) == []  # claims queue nothing
    store.job_finish([Finish(a, "w1", JobStatus.QUEUED, NOW + 1, error="retry")])
    assert _one_note(listener) == (store.channel, "queued")
    store.job_requeue_expired(NOW + 20)
    assert _one_note(listener) == (store.channel, "queued")


def test_open_storage_opens_a_postgres_url_in_its_schema(pg_dsn: str, pg_schema: str) -> None:
    from fairqueue.storage.postgres import PostgresStorage

    sep = "&" if "?" in pg_dsn else "?"
    with open_storage(f"{pg_dsn}{sep}schema={pg_schema}&application_name=fq_url_test") as store:
        assert isinstance(store, PostgresStorage) and store.schema == pg_schema
        [job_id] = store.job_enqueue([job()], NOW)
    with PostgresStorage(pg_dsn, schema=pg_schema, upgrade=False) as again:
        assert again.job_get(job_id) is not None


def test_open_storage_routes_postgres_urls(pg_dsn: str) -> None:
    # Port 1 refuses at once: the error shows which store the URL was routed to.
    for url in ("postgresql://postgres@127.0.0.1:1/test", "postgres://postgres@127.0.0.1:1/test"):
        with pytest.raises(StorageError, match="cannot connect to PostgreSQL"):
            open_storage(url)


def test_connections_the_server_dropped_are_replaced(pg: Any, pg_dsn: str, pg_schema: str) -> None:
    """After a server restart (here: its backends terminated) the pool's dead
    connections are replaced, and an operation that had not committed runs again."""
    from fairqueue.storage.postgres import PostgresStorage

    name = f"fq_{pg_schema}"
    sep = "&" if "?" in pg_dsn else "?"
    with PostgresStorage(f"{pg_dsn}{sep}application_name={name}", schema=pg_schema, pool_size=2) as store:
        [job_id] = store.job_enqueue([job()], NOW)
        with pg.connect(pg_dsn, autocommit=True) as admin:
            killed = admin.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = %s", (name,)
            ).fetchone()
        assert killed is not None and killed[0] >= 1
        assert store.job_get(job_id) is not None
        [other] = store.job_enqueue([job()], NOW)
        assert [p.id for p in store.job_pending()] == [job_id, other]


def test_hosts_racing_capped_claims_never_exceed_a_pairs_cap_together(pg_dsn: str, pg_schema: str) -> None:
    from fairqueue.storage.postgres import PostgresStorage

    hosts = [PostgresStorage(pg_dsn, schema=pg_schema) for _ in range(4)]
    try:
        ids = hosts[0].job_enqueue([job(org=f"o{i % 20}") for i in range(400)], NOW)
        caps = Admission(pair_caps={(f"o{i}", "future"): 3 for i in range(20)})
        orders = [random.Random(seed).sample(ids, len(ids)) for seed in range(4)]

        def claim_all(store: Storage, worker: str, order: list[int]) -> list[int]:
            got: list[int] = []
            for start in range(0, len(order), 16):
                got.extend(r.id for r in store.job_claim(order[start : start + 16], worker, NOW + 30, NOW, admission=caps))
            return got

        for round_ in range(2):
            _race(*(lambda s=s, i=i: claim_all(s, f"host-{i}", orders[i]) for i, s in enumerate(hosts)))
            processing = hosts[0].job_list(status=JobStatus.PROCESSING, limit=1000)
            per_org = {org: sum(r.org == org for r in processing) for org in {r.org for r in processing}}
            assert per_org == {f"o{i}": 3 for i in range(20)}, f"round {round_}"
            hosts[0].job_finish([Finish(r.id, r.lease_owner or "", JobStatus.COMPLETED, NOW + 1) for r in processing])
    finally:
        for s in hosts:
            s.close()


def test_queued_subscribers_hear_other_hosts_commits_and_not_their_rollbacks(pg: Any, pg_dsn: str, store: Any) -> None:
    heard = threading.Semaphore(0)
    unsubscribe = store.job_queued_subscribe(heard.release)
    try:
        assert heard.acquire(timeout=5), "a new subscription calls back once, for what it may have missed"
        from fairqueue.storage.postgres import PostgresStorage

        with PostgresStorage(pg_dsn, schema=store.schema) as other_host:
            with pg.connect(pg_dsn) as conn:
                other_host.job_enqueue_in(conn, [job()], NOW)
                conn.rollback()
            assert not heard.acquire(timeout=0.3), "a rolled-back enqueue wakes nobody"
            other_host.job_enqueue([job()], NOW)
            assert heard.acquire(timeout=5), "a committed enqueue on another host wakes the subscriber"
    finally:
        unsubscribe()
    store.job_enqueue([job()], NOW)
    assert not heard.acquire(timeout=0.3), "after unsubscribing nothing calls back"


def test_hosts_racing_for_an_orgs_last_daily_executions_never_exceed_its_limit(pg_dsn: str, pg_schema: str) -> None:
    from fairqueue.errors import DailyLimitExceeded
    from fairqueue.storage.postgres import PostgresStorage

    hosts = [PostgresStorage(pg_dsn, schema=pg_schema) for _ in range(3)]
    try:

        def enqueue_until_refused(store: PostgresStorage) -> int:
            stored = 0
            for _ in range(40):
                try:
                    store.job_enqueue([job(org="a")], NOW, daily_limits={"a": 50})
                    stored += 1
                except DailyLimitExceeded:
                    pass
            return stored

        stored = _race(*(lambda s=s: enqueue_until_refused(s) for s in hosts))
        assert sum(stored) == 50 and len(hosts[0].job_list(limit=200)) == 50
        assert hosts[1].usage_daily("a", NOW).count == 50
    finally:
        for s in hosts:
            s.close()


def test_hosts_firing_at_the_same_moment_fire_each_schedule_once(pg_dsn: str, pg_schema: str) -> None:
    from fairqueue.records import NewTrigger
    from fairqueue.storage.postgres import PostgresStorage

    hosts = [PostgresStorage(pg_dsn, schema=pg_schema) for _ in range(3)]
    try:
        for i in range(30):
            hosts[0].trigger_create(
                NewTrigger(org=f"o{i % 3}", name=f"s{i}", cron="0 0 * * * ?", timezone="UTC", handler="app.jobs:Report",
                           payload="{}", next_fire_at=NOW - i),
                NOW, max_per_org=100,
            )  # fmt: skip

        def fire(store: PostgresStorage) -> list[int]:
            return [job for _ in range(5) for job in store.trigger_fire_due(NOW, lambda t, now: now + 3600, limit=4)]

        fired = _race(*(lambda s=s: fire(s) for s in hosts))
        assert sum(map(len, fired)) == 30 and len({j for f in fired for j in f}) == 30
        assert all(t.times_fired == 1 for t in hosts[1].trigger_list())
        assert len(hosts[2].job_list(limit=100)) == 30
    finally:
        for s in hosts:
            s.close()


def test_a_flex_queue_left_stalled_by_a_crash_is_promoted_by_the_next_sweep(
    pg: Any, pg_dsn: str, pg_schema: str, store: Any
) -> None:
    batches = store.job_enqueue([NewJob(org="acme", kind="batch", handler="app.jobs:Sync", payload="{}") for _ in range(6)], 0.0)
    assert store.job_get(batches[5]).status is JobStatus.HOLDING
    store.job_claim(batches[:5], "w1", 60.0, 1.0)
    # The five outcomes committed, then the process died before the promotion's own
    # transaction: nothing is left that would ever end another batch of this org.
    with pg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(
            f"UPDATE \"{pg_schema}\".fq_jobs SET status = 'completed', lease_owner = NULL WHERE id = ANY(%s)", (batches[:5],)
        )
    assert store.job_get(batches[5]).status is JobStatus.HOLDING
    store.job_requeue_expired(2.0)
    assert store.job_get(batches[5]).status is JobStatus.QUEUED
    assert [p.id for p in store.job_pending()] == [batches[5]]
