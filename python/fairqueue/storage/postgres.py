"""The PostgreSQL store: many worker processes on many hosts share one database.

Install it with ``pip install fairqueue[postgres]`` (psycopg 3 and psycopg_pool).

Everything lives in one schema (``fairqueue`` unless told otherwise), so the
store can sit beside the application's own tables in the same database. The
schema is versioned (``fq_meta``) and created or migrated by
:meth:`PostgresStorage.upgrade`, which runs on open unless ``upgrade=False``; a
schema written by a newer fairqueue is refused with
:class:`~fairqueue.errors.SchemaVersionError`.

How hosts stay out of each other's way:

* **Claims** lock the still-queued rows in id order (``SELECT … ORDER BY id FOR
  UPDATE``) and move them to processing in the same transaction. Two claimers
  racing for the same job serialise on its row lock; the second re-reads the row,
  finds it no longer queued and leaves it out. Locking in one global order means
  claimers never deadlock each other.
* **Outcomes, heartbeats and re-deliveries** apply only while the row is
  processing under the expected lease owner (or with an expired lease), so a late
  worker cannot overwrite the outcome of a re-delivery.
* **ready_seq in commit order.** A worker remembers the largest ``ready_seq`` it
  has seen and later asks only for larger ones (:class:`~fairqueue.records.PendingJob`).
  A sequence alone cannot promise that: a transaction that drew 10 may commit
  after one that drew 11 was already seen, and job 10 would be skipped forever.
  So a job that becomes queued (enqueued, retried, lease expired) gets a
  *provisional* negative ``ready_seq`` (``-nextval('fq_queued_seq')``: its place in
  line), and :meth:`PostgresStorage.job_pending` *publishes* committed provisional
  rows first: under a transaction-scoped advisory lock it numbers them from
  ``fq_ready_seq``, in provisional order, and commits. Only publishers draw from
  ``fq_ready_seq`` and they take turns, so every published number is larger than
  every number committed before it, and a reader never skips a job. Enqueuers
  take no lock at all, which is what lets an enqueue join the caller's own
  transaction (:meth:`PostgresStorage.job_enqueue_in`) for as long as it likes.
* **Wake-ups**: every transaction that makes a job queued sends a NOTIFY on the
  channel ``fairqueue_<schema>`` (:attr:`PostgresStorage.channel`, payload
  ``"queued"``), delivered when it commits and never if it rolls back. Workers
  may ``LISTEN`` on it instead of polling.

Durability: enqueues and aborts commit with the server's default
``synchronous_commit``, so they are on disk before the call returns. Claims,
heartbeats, outcomes and re-deliveries commit with ``synchronous_commit = off``:
they survive any crash of a client or host running workers, and only a crash of
the database server itself (or its power) can lose the last fraction of a second
of them, which at worst runs a job again (at-least-once), the same trade the
embedded store makes. A job's outcome and the children its
handler enqueued are committed together, so they are kept or lost together.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Optional, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

try:
    import psycopg
    from psycopg import errors as pg_errors
    from psycopg.pq import TransactionStatus
    from psycopg.rows import tuple_row
    from psycopg_pool import ConnectionPool
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError(
        "the PostgreSQL store needs psycopg 3 and psycopg_pool: pip install 'fairqueue[postgres]'"
    ) from e

from fairqueue.errors import (
    DailyLimitExceeded,
    DuplicateSignature,
    InvalidArgument,
    LimitExceeded,
    SchemaVersionError,
    StorageError,
)
from fairqueue.records import (
    BatchErrorEvent,
    HistoryEntry,
    Claimed,
    Finish,
    JobRecord,
    JobStatus,
    NewJob,
    NewTrigger,
    PendingJob,
    TriggerRecord,
    TriggerState,
    WaitingFacts,
)
from fairqueue.storage import (
    FEW_STATUSES,
    LIVE_STATUSES,
    SCHEMA_VERSION,
    Caps,
    admit_within_caps,
    FLEX_ACTIVE,
    DailyUsage,
    NextFire,
    Storage,
    check_daily_limits,
    refused_fires,
    check_finishes,
    job_filter,
    flex_admit,
    flex_order,
    schedule_name_taken,
    scheduled_job,
    too_many_schedules,
    usage_hour,
)

__all__ = ["PostgresStorage", "DEFAULT_SCHEMA", "DEFAULT_POOL_SIZE"]

DEFAULT_SCHEMA = "fairqueue"
"""The schema fairqueue's tables live in unless another is chosen."""

DEFAULT_POOL_SIZE = 4
"""Connections one :class:`PostgresStorage` opens at most."""

log = logging.getLogger("fairqueue.storage.postgres")

_T = TypeVar("_T")
_Cursor = psycopg.Cursor[tuple[Any, ...]]

# Lower-case identifiers only: the schema name is also part of the NOTIFY channel
# and of SQL text, so it must need no quoting; 53 characters leaves room for the
# channel's "fairqueue_" prefix within PostgreSQL's 63-byte identifiers.
_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,52}")

# Advisory lock class ids ("FQ" + purpose); the second key is hashtext(schema).
_LOCK_UPGRADE = 0x46510001
_LOCK_PUBLISH = 0x46510002
_LOCK_CAP = 0x46510003  # second key: hashtext(schema, org, kind), taken by claims
_LOCK_USAGE = 0x46510004  # second key: hashtext(schema, org)
_LOCK_TRIGGERS = 0x46510005  # second key: hashtext(schema, org)
_LOCK_FLEX = 0x46510006  # second key: hashtext(schema, org)

# Deadlocks are possible only between multi-row updates that meet rows in
# different orders (a late heartbeat against a re-delivery); the loser is rolled
# back whole and simply runs again.
_RETRIES = 5

_LIVE = "('holding', 'queued', 'preparing', 'processing')"

_FIELDS = (
    "id", "org", "kind", "handler", "payload", "status", "created_at", "run_at", "started_at", "finished_at",
    "attempts", "items_processed", "items_total", "error_count", "extended_status", "parent_id", "chain_depth",
    "duplicate_signature", "lease_owner", "lease_expires_at", "cancel_requested",
)  # fmt: skip
_COLUMNS = ", ".join(_FIELDS)
_J_COLUMNS = ", ".join(f"j.{name}" for name in _FIELDS)

# Migration n takes a schema at version n - 1 to version n. Each runs inside the
# upgrade transaction (PostgreSQL DDL is transactional): a failed upgrade leaves
# the schema as it was. Never edit a released migration; append a new one.
_MIGRATIONS: dict[int, str] = {
    1: f"""
CREATE SEQUENCE {{s}}.fq_ready_seq AS BIGINT;
CREATE SEQUENCE {{s}}.fq_queued_seq AS BIGINT;
CREATE TABLE {{s}}.fq_jobs (
    id                  BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    org                 TEXT             NOT NULL,
    kind                TEXT             NOT NULL,
    handler             TEXT             NOT NULL,
    payload             TEXT             NOT NULL,
    status              TEXT             NOT NULL CHECK (status IN
                            ('holding', 'queued', 'preparing', 'processing', 'completed', 'failed', 'aborted')),
    created_at          DOUBLE PRECISION NOT NULL,
    run_at              DOUBLE PRECISION,
    started_at          DOUBLE PRECISION,
    finished_at         DOUBLE PRECISION,
    attempts            INTEGER          NOT NULL DEFAULT 0,
    items_processed     INTEGER          NOT NULL DEFAULT 0,
    items_total         INTEGER,
    error_count         INTEGER          NOT NULL DEFAULT 0,
    extended_status     TEXT,
    parent_id           BIGINT,
    chain_depth         INTEGER          NOT NULL DEFAULT 0,
    duplicate_signature TEXT,
    lease_owner         TEXT,
    lease_expires_at    DOUBLE PRECISION,
    cancel_requested    BOOLEAN          NOT NULL DEFAULT FALSE,
    -- > 0: published (see the module docstring); < 0: queued, not yet published.
    ready_seq           BIGINT
);
CREATE INDEX fq_jobs_queued ON {{s}}.fq_jobs (ready_seq) WHERE status = 'queued';
CREATE INDEX fq_jobs_leases ON {{s}}.fq_jobs (lease_expires_at) WHERE status = 'processing';
CREATE INDEX fq_jobs_org ON {{s}}.fq_jobs (org, id);
CREATE UNIQUE INDEX fq_jobs_signature ON {{s}}.fq_jobs (duplicate_signature)
    WHERE duplicate_signature IS NOT NULL AND status IN {_LIVE};
""",
}
_MIGRATIONS[2] = """
-- Claims count each (org, kind)'s processing jobs to hold its cap across hosts.
CREATE INDEX fq_jobs_processing ON {s}.fq_jobs (org, kind) WHERE status = 'processing';
CREATE INDEX fq_jobs_holding ON {s}.fq_jobs (org, kind) WHERE status = 'holding';
-- Explanations count the jobs finished in a recent window.
CREATE INDEX fq_jobs_finished ON {s}.fq_jobs (finished_at) WHERE finished_at IS NOT NULL;
-- A claim that lost a job to another host takes the pair's next queued job instead.
CREATE INDEX fq_jobs_pair_queued ON {s}.fq_jobs (org, kind, id) WHERE status = 'queued';

-- Jobs stored per org and hour, for the daily limit's rolling window.
CREATE TABLE {s}.fq_usage (
    org   TEXT    NOT NULL,
    hour  INTEGER NOT NULL,
    count INTEGER NOT NULL,
    PRIMARY KEY (org, hour)
);

-- Schedules (app.schedule): each fires its job at the times of its cron expression.
CREATE TABLE {s}.fq_triggers (
    id               BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    org              TEXT             NOT NULL,
    name             TEXT             NOT NULL,
    cron             TEXT             NOT NULL,
    timezone         TEXT             NOT NULL,
    handler          TEXT             NOT NULL,
    payload          TEXT             NOT NULL,
    state            TEXT             NOT NULL CHECK (state IN ('waiting', 'complete', 'aborted')),
    created_at       DOUBLE PRECISION NOT NULL,
    next_fire_at     DOUBLE PRECISION,
    previous_fire_at DOUBLE PRECISION,
    times_fired      INTEGER          NOT NULL DEFAULT 0,
    last_job_id      BIGINT
);
CREATE INDEX fq_triggers_due ON {s}.fq_triggers (next_fire_at) WHERE state = 'waiting';
CREATE UNIQUE INDEX fq_triggers_name ON {s}.fq_triggers (org, name) WHERE state = 'waiting';

-- Batch error events (the reference platform's BatchApexErrorEvent).
CREATE TABLE {s}.fq_batch_errors (
    id             BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    job_id         BIGINT           NOT NULL,
    org            TEXT             NOT NULL,
    phase          TEXT             NOT NULL,
    chunk          INTEGER,
    record_ids     TEXT             NOT NULL,
    exception_type TEXT             NOT NULL,
    message        TEXT             NOT NULL,
    traceback      TEXT             NOT NULL,
    at             DOUBLE PRECISION NOT NULL
);
CREATE INDEX fq_batch_errors_job ON {s}.fq_batch_errors (job_id);

-- Each org's flex queue: its holding batch jobs, in the order they will start.
CREATE TABLE {s}.fq_flex (
    job_id   BIGINT  PRIMARY KEY,
    org      TEXT    NOT NULL,
    position INTEGER NOT NULL
);
CREATE INDEX fq_flex_org ON {s}.fq_flex (org, position);

-- Recorded facts for charts and explanations: pending and running per org over
-- time, throttle periods, extended delays.
CREATE TABLE {s}.fq_history (
    id      BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    at      DOUBLE PRECISION NOT NULL,
    kind    TEXT             NOT NULL,
    org     TEXT,
    value   DOUBLE PRECISION NOT NULL,
    figures TEXT             NOT NULL
);
CREATE INDEX fq_history_at ON {s}.fq_history (at);

-- A capped claim in one round trip (see PostgresStorage.job_claim). Returns the
-- claimed rows (now processing) and the asked-for candidates left queued at their cap.
CREATE FUNCTION {s}.fq_claim(
    ids BIGINT[], cap_orgs TEXT[], cap_kinds TEXT[], cap_limits INTEGER[],
    worker TEXT, lease_until DOUBLE PRECISION, at DOUBLE PRECISION, lock_class INTEGER, lock_space TEXT
) RETURNS SETOF {s}.fq_jobs LANGUAGE plpgsql
-- Plan each call for the table as it is now: a plan cached while the table was
-- nearly empty would go on scanning it whole once it holds millions of jobs.
SET plan_cache_mode = force_custom_plan AS $fn$
BEGIN
    -- One lock per capped pair, taken in one global order so claimers never deadlock;
    -- held to commit, so no other claim of the pair runs between count and claim.
    PERFORM pg_advisory_xact_lock(lock_class, h)
    FROM (SELECT DISTINCT hashtext(lock_space || chr(31) || o || chr(31) || k) AS h
          FROM unnest(cap_orgs, cap_kinds) AS u(o, k) ORDER BY h) AS locks;
    -- The still-queued candidates are locked in id order (so claimers never deadlock;
    -- one another claimer took meanwhile fails the re-check and drops out), ranked
    -- within their pair in the caller's order, and admitted while the pair's
    -- processing count stays within its cap. "status || ''" rather than "status":
    -- rows are found through the id array and the primary key, never through the
    -- partial index of queued jobs, which a planner with stale statistics (a freshly
    -- loaded backlog) would read whole.
    RETURN QUERY
    WITH asked AS (
        SELECT u.id, u.ord, j.org, j.kind
        FROM unnest(ids) WITH ORDINALITY AS u(id, ord) JOIN {s}.fq_jobs j ON j.id = u.id
    ), candidates AS (
        SELECT j.id, j.org, j.kind, a.ord, FALSE AS stand_in
        FROM asked a JOIN {s}.fq_jobs j ON j.id = a.id
        WHERE (j.status || '') = 'queued' ORDER BY j.id FOR UPDATE OF j
    ), lost AS (
        -- Asked-for jobs another claimer took: each pair's next ready queued jobs
        -- stand in for them, skipping rows other claimers hold locked.
        SELECT a.org, a.kind, COUNT(*) AS n, MIN(a.ord) AS ord
        FROM asked a WHERE a.id NOT IN (SELECT id FROM candidates) GROUP BY a.org, a.kind
    ), stand_ins AS (
        SELECT s.id, l.org, l.kind, l.ord + cardinality(ids) AS ord, TRUE AS stand_in
        FROM lost l CROSS JOIN LATERAL (
            SELECT q.id FROM {s}.fq_jobs q
            WHERE q.org = l.org AND q.kind = l.kind AND q.status = 'queued'
              AND (q.run_at IS NULL OR q.run_at <= at) AND q.id <> ALL(ids)
            ORDER BY q.id LIMIT l.n FOR UPDATE SKIP LOCKED
        ) s
    ), everyone AS (
        SELECT * FROM candidates UNION ALL SELECT * FROM stand_ins
    ), caps AS (
        SELECT * FROM unnest(cap_orgs, cap_kinds, cap_limits) AS c(org, kind, cap)
    ), held AS (
        SELECT j.org, j.kind, COUNT(*) AS n
        FROM {s}.fq_jobs j JOIN caps ON j.org = caps.org AND j.kind = caps.kind
        WHERE j.status = 'processing' GROUP BY j.org, j.kind
    ), ranked AS (
        SELECT e.id, e.stand_in, caps.cap IS NULL
               OR COALESCE(held.n, 0) + ROW_NUMBER() OVER (PARTITION BY e.org, e.kind ORDER BY e.ord, e.id) <= caps.cap
               AS admitted
        FROM everyone e
        LEFT JOIN caps ON caps.org = e.org AND caps.kind = e.kind
        LEFT JOIN held ON held.org = e.org AND held.kind = e.kind
    ), claimed AS (
        UPDATE {s}.fq_jobs j SET status = 'processing', lease_owner = worker, lease_expires_at = lease_until,
            started_at = COALESCE(j.started_at, at), attempts = j.attempts + 1
        FROM ranked r WHERE j.id = r.id AND r.admitted RETURNING j.*
    )
    SELECT * FROM claimed
    UNION ALL
    -- The rows as they were before this statement: still queued.
    SELECT j.* FROM ranked r JOIN {s}.fq_jobs j ON j.id = r.id WHERE NOT r.admitted AND NOT r.stand_in;
END
$fn$;
"""
_MIGRATIONS[3] = """
-- Claims are plain statements in the worker's transaction now (PostgresStorage._claim):
-- the one-statement function cost 2-3 ms of planning a call and held the cap locks throughout.
DROP FUNCTION {s}.fq_claim(BIGINT[], TEXT[], TEXT[], INTEGER[], TEXT, DOUBLE PRECISION, DOUBLE PRECISION, INTEGER, TEXT);
-- The lease sweep reads the small index of processing jobs (fq_jobs_processing); a
-- separate index of their lease times cost index writes on every claim, outcome and
-- heartbeat (a heartbeat changes no indexed column now: a HOT update).
DROP INDEX {s}.fq_jobs_leases;
"""
assert max(_MIGRATIONS) == SCHEMA_VERSION, "every schema version needs its migration"


_TRIGGER_COLUMNS = (
    "id, org, name, cron, timezone, handler, payload, state, created_at, next_fire_at, previous_fire_at, "
    "times_fired, last_job_id"
)


def _trigger(row: Sequence[Any]) -> TriggerRecord:
    values = list(row)
    values[7] = TriggerState(values[7])
    return TriggerRecord(*values)


def _without_commit_flush(conn: psycopg.Connection[Any]) -> None:
    conn.execute("SET synchronous_commit = off")


def _record(row: Sequence[Any]) -> JobRecord:
    # Built field by field rather than through __init__, as the SQLite store does:
    # the worker reads many records per second and the values come from our schema.
    record = JobRecord.__new__(JobRecord)
    values = record.__dict__
    values.update(zip(_FIELDS, row))
    values["status"] = JobStatus(values["status"])
    return record


def _floats(values: Iterable[Optional[float]]) -> list[Optional[float]]:
    # psycopg types a list by its elements; an int among floats must not turn the array into int8[].
    return [None if v is None else float(v) for v in values]


class PostgresStorage(Storage):
    """A store in a PostgreSQL database, shared by any number of processes and hosts.

    Args:
        dsn: a libpq connection string or ``postgresql://`` URL.
        schema: the schema that holds fairqueue's tables (lower-case letters,
            digits and ``_``); created if missing.
        pool_size: connections this store opens at most (one is opened up front).
        upgrade: create or migrate the schema on open (:meth:`upgrade`). With
            False, a missing or older schema is an error instead.
        connect_timeout: seconds to wait for the first connection.

    Raises:
        InvalidArgument: ``schema`` or ``pool_size`` is malformed.
        SchemaVersionError: the schema was written by a newer fairqueue.
        StorageError: the database cannot be reached, or (``upgrade=False``) the
            schema is missing or older than this fairqueue.
    """

    def __init__(
        self,
        dsn: str,
        *,
        schema: str = DEFAULT_SCHEMA,
        pool_size: int = DEFAULT_POOL_SIZE,
        upgrade: bool = True,
        connect_timeout: float = 10.0,
    ) -> None:
        if not isinstance(schema, str) or not _SCHEMA_NAME.fullmatch(schema):
            raise InvalidArgument(
                f"schema {schema!r} is not a plain lower-case identifier: use letters a-z, digits and '_', "
                "starting with a letter or '_', at most 53 characters"
            )
        if pool_size < 1:
            raise InvalidArgument(f"pool_size {pool_size} must be at least 1")
        self.schema = schema
        """The schema holding fairqueue's tables."""
        self._dsn = dsn
        self.channel = f"fairqueue_{schema}"
        """The NOTIFY channel: a notification (payload ``"queued"``) follows every commit that queues a job."""
        self._where = f"schema {schema!r}"
        s = f'"{schema}"'
        self._sql_insert = (
            f"INSERT INTO {s}.fq_jobs (org, kind, handler, payload, status, created_at, run_at, parent_id, "
            f"chain_depth, duplicate_signature, ready_seq) "
            f"SELECT u.org, u.kind, u.handler, u.payload, u.status, %s, u.run_at, u.parent_id, u.chain_depth, u.sig, "
            f"CASE WHEN u.status = 'queued' THEN -nextval('{s}.fq_queued_seq') END "
            f"FROM unnest(%b::text[], %b::text[], %b::text[], %b::text[], %b::float8[], %b::bigint[], %b::int[], "
            f"%b::text[], %b::text[]) WITH ORDINALITY "
            f"AS u(org, kind, handler, payload, run_at, parent_id, chain_depth, sig, status, ord) "
            f"ORDER BY u.ord"
        )
        self._s = s
        # One plain connection first: an unreachable server or a missing database
        # is reported at once, in libpq's words, rather than as a pool timeout.
        try:
            with psycopg.connect(dsn, connect_timeout=max(1, round(connect_timeout))) as probe:
                info = probe.info
                self._where = f"schema {schema!r} of database {info.dbname!r} on {info.host}:{info.port}"
        except psycopg.Error as e:
            raise StorageError(f"cannot connect to PostgreSQL for fairqueue {self._where}: {str(e).strip()}") from e
        self._pool: ConnectionPool[psycopg.Connection[tuple[Any, ...]]] = ConnectionPool(
            dsn,
            min_size=1,
            max_size=pool_size,
            kwargs={"autocommit": True},
            name=f"fairqueue-{schema}",
            open=False,
        )
        # State changes (claims, outcomes, leases) commit without waiting for the WAL
        # flush (module docstring). A pool of their own with the setting made once
        # per connection lets each run as one statement, one round trip.
        self._fast_pool: ConnectionPool[psycopg.Connection[tuple[Any, ...]]] = ConnectionPool(
            dsn,
            min_size=1,
            max_size=pool_size,
            kwargs={"autocommit": True},
            configure=_without_commit_flush,
            name=f"fairqueue-{schema}-fast",
            open=False,
        )
        try:
            self._pool.open(wait=True, timeout=connect_timeout)
            self._fast_pool.open(wait=True, timeout=connect_timeout)
            if upgrade:
                self.upgrade()
            else:
                self._check_version()
        except BaseException as e:
            self._pool.close()
            self._fast_pool.close()
            if isinstance(e, psycopg.Error):
                raise StorageError(f"cannot open fairqueue {self._where}: {e}") from e
            raise

    @classmethod
    def from_url(cls, url: str) -> PostgresStorage:
        """Opens the store a ``postgresql://`` (or ``postgres://``) URL names.

        The URL is libpq's, plus one parameter of fairqueue's own, ``schema``
        (default ``fairqueue``): ``postgresql://app@db.internal/shop?schema=jobs``.
        """
        parts = urlsplit(url)
        query = parse_qsl(parts.query, keep_blank_values=True)
        schemas = [value for key, value in query if key == "schema"]
        rest = urlencode([(key, value) for key, value in query if key != "schema"])
        dsn = urlunsplit(parts._replace(query=rest))
        return cls(dsn, schema=schemas[-1] if schemas else DEFAULT_SCHEMA)

    # ----- schema -------------------------------------------------------------------

    def upgrade(self) -> int:
        """Creates the schema or migrates it to this fairqueue's version; returns that version.

        Idempotent and safe to run from many processes at once (they take turns on
        an advisory lock); all migrations apply in one transaction or none does.

        Raises:
            SchemaVersionError: the schema is newer than this fairqueue.
        """

        def body(cur: _Cursor) -> int:
            cur.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (_LOCK_UPGRADE, self.schema))
            cur.execute(f"CREATE SCHEMA IF NOT EXISTS {self._s}")
            cur.execute(f"CREATE TABLE IF NOT EXISTS {self._s}.fq_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            version = self._version(cur)
            for target in range(version + 1, SCHEMA_VERSION + 1):
                cur.execute(_MIGRATIONS[target].replace("{s}", self._s))
            if version < SCHEMA_VERSION:
                cur.execute(
                    f"INSERT INTO {self._s}.fq_meta (key, value) VALUES ('schema_version', %s) "
                    f"ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                    (str(SCHEMA_VERSION),),
                )
            return SCHEMA_VERSION

        return self._transaction(body)

    def _version(self, cur: _Cursor) -> int:
        """The schema's version (0: none yet); refuses a newer one."""
        cur.execute("SELECT to_regclass(%s)", (f"{self._s}.fq_meta",))
        found = cur.fetchone()
        if found is None or found[0] is None:
            return 0
        cur.execute(f"SELECT value FROM {self._s}.fq_meta WHERE key = 'schema_version'")
        row = cur.fetchone()
        version = 0 if row is None else int(row[0])
        if version > SCHEMA_VERSION:
            raise SchemaVersionError(
                f"fairqueue {self._where} has schema version {version}, newer than this fairqueue's "
                f"{SCHEMA_VERSION}: upgrade fairqueue to use it"
            )
        return version

    def _check_version(self) -> None:
        version = self._transaction(self._version)
        if version < SCHEMA_VERSION:
            state = "does not exist" if version == 0 else f"is at version {version}"
            raise StorageError(
                f"fairqueue {self._where} {state}; this fairqueue needs version {SCHEMA_VERSION}: "
                "run PostgresStorage.upgrade() (or open the store with upgrade=True)"
            )

    # ----- plumbing -----------------------------------------------------------------

    def _transaction(
        self, body: Callable[[_Cursor], _T], durable: bool = True, block: bool = True, pipeline: bool = False
    ) -> _T:
        """Runs ``body`` in one transaction on a pooled connection; commits if it returns.

        ``durable=False`` commits without waiting for the WAL flush (module
        docstring). ``block=False`` runs without BEGIN/COMMIT, for a read of one
        statement (which autocommit makes its own transaction) and two round trips
        less. ``pipeline=True`` runs it in pipeline mode: statements go out as they
        are executed, and one round trip waits for all sent so far only when a
        result is fetched (BEGIN travels with the first statement).

        Runs ``body`` again after a deadlock or serialization failure (all of it was
        rolled back), and after a pooled connection turned out broken before the
        commit was sent (a server restart; nothing was committed). Other database
        errors become :class:`StorageError`.
        """
        for attempt in range(_RETRIES):
            retry_if_broken = True
            conn: Optional[psycopg.Connection[tuple[Any, ...]]] = None
            try:
                with (self._pool if durable else self._fast_pool).connection() as conn:
                    if not block:
                        with conn.cursor() as cur:
                            return body(cur)
                    with conn.pipeline() if pipeline else contextlib.nullcontext(), conn.transaction():
                        with conn.cursor() as cur:
                            result = body(cur)
                        # From here the COMMIT may have reached the server: never run twice.
                        retry_if_broken = False
                    return result
            except (pg_errors.DeadlockDetected, pg_errors.SerializationFailure) as e:
                if attempt == _RETRIES - 1:
                    raise StorageError(f"fairqueue {self._where}: gave up after {_RETRIES} conflicts: {e}") from e
            except pg_errors.UniqueViolation:
                raise  # the caller says what it means
            except psycopg.OperationalError as e:
                # The pool discards a broken connection when it comes back, so the
                # next attempt gets a fresh one.
                if not (retry_if_broken and conn is not None and conn.broken) or attempt == _RETRIES - 1:
                    raise StorageError(f"fairqueue {self._where}: {type(e).__name__}: {e}") from e
            except psycopg.Error as e:
                raise StorageError(f"fairqueue {self._where}: {type(e).__name__}: {e}") from e
        raise AssertionError("unreachable")  # pragma: no cover

    def _read(self, sql: str, params: Sequence[Any] = (), durable: bool = True) -> list[tuple[Any, ...]]:
        """The rows of one statement, its own transaction (one consistent snapshot);
        ``durable=False`` for a statement that writes, as in :meth:`_transaction`."""

        def body(cur: _Cursor) -> list[tuple[Any, ...]]:
            cur.execute(sql, params)
            return cur.fetchall()

        return self._transaction(body, durable=durable, block=False)

    def _notify(self, cur: _Cursor) -> None:
        # A constant payload: PostgreSQL folds identical notifications of one transaction into one.
        cur.execute("SELECT pg_notify(%s, 'queued')", (self.channel,))

    def _insert(
        self,
        conn: psycopg.Connection[Any],
        jobs: Sequence[NewJob],
        now: float,
        daily_limits: Optional[Mapping[str, int]] = None,
    ) -> list[int]:
        """Inserts ``jobs`` as queued and notifies :attr:`channel`, in ``conn``'s current transaction.

        Commits nothing, so it runs in one of ours or in the caller's own
        (:meth:`job_enqueue_in`). Returns the new ids in the jobs' order. A live
        duplicate signature raises psycopg's ``UniqueViolation``. With
        ``daily_limits``, each org's usage is locked (an advisory lock per org,
        in one order, held to commit) before it is checked, so two hosts cannot
        both take an org's last executions.
        """
        with conn.cursor(row_factory=tuple_row) as cur:
            if daily_limits:
                self._check_daily_limits(cur, jobs, daily_limits, now)
            rows = self._insert_rows(cur, jobs, now, skip_taken=False)
        # The identity column draws ids in insertion order, which is the jobs' order.
        return sorted(r[0] for r in rows)

    def _insert_rows(
        self, cur: _Cursor, jobs: Sequence[NewJob], now: float, *, skip_taken: bool
    ) -> list[tuple[Any, ...]]:
        """Inserts ``jobs`` and notifies; returns (id, duplicate_signature) of each stored.

        With ``skip_taken`` a job whose signature is live is left out instead of
        failing the statement (and with it the transaction).
        """
        statuses = [JobStatus.QUEUED] * len(jobs)
        batch_orgs = sorted({j.org for j in jobs if j.kind == "batch"})
        if batch_orgs:
            self._lock_flex(cur, batch_orgs)
            statuses = flex_admit(jobs, lambda org: self._flex_counts(cur, org))
        params = (
            float(now),
            [j.org for j in jobs],
            [j.kind for j in jobs],
            [j.handler for j in jobs],
            [j.payload for j in jobs],
            _floats(j.run_at for j in jobs),
            [None if j.parent_id is None else int(j.parent_id) for j in jobs],
            [int(j.chain_depth) for j in jobs],
            [j.duplicate_signature for j in jobs],
            [status.value for status in statuses],
        )
        sql = self._sql_insert
        if skip_taken:
            sql += f" ON CONFLICT (duplicate_signature) WHERE duplicate_signature IS NOT NULL AND status IN {_LIVE} DO NOTHING"
        cur.execute(sql + " RETURNING id, duplicate_signature, org, status", params)
        rows = cur.fetchall()
        for job_id, _, org, status in sorted(rows):
            if status == "holding":
                cur.execute(
                    f"INSERT INTO {self._s}.fq_flex (job_id, org, position) "
                    f"SELECT %s, %s, COALESCE(MAX(position), 0) + 1 FROM {self._s}.fq_flex WHERE org = %s",
                    (job_id, org, org),
                )
        if rows:
            self._notify(cur)
            per_org: dict[str, int] = {}
            for _, _, org, _ in sorted(rows, key=lambda r: r[2]):
                # In org order, so concurrent transactions lock usage rows in one order.
                per_org[org] = per_org.get(org, 0) + 1
            cur.execute(
                f"INSERT INTO {self._s}.fq_usage (org, hour, count) SELECT * FROM unnest(%b::text[], %b::int[], %b::int[]) "
                f"ON CONFLICT (org, hour) DO UPDATE SET count = fq_usage.count + EXCLUDED.count",
                (list(per_org), [usage_hour(now)] * len(per_org), list(per_org.values())),
            )
        return rows

    @staticmethod
    def _missing(jobs: Sequence[NewJob], stored: list[Optional[str]]) -> list[str]:
        """The signatures of ``jobs`` that were not stored (a multiset difference)."""
        left = [s for s in stored if s is not None]
        missing = []
        for j in jobs:
            if j.duplicate_signature is None:
                continue
            if j.duplicate_signature in left:
                left.remove(j.duplicate_signature)
            else:
                missing.append(j.duplicate_signature)
        return missing

    @staticmethod
    def _duplicate(jobs: Sequence[NewJob]) -> DuplicateSignature:
        signatures = [j.duplicate_signature for j in jobs if j.duplicate_signature]
        return DuplicateSignature(
            f"a job with duplicate signature among {signatures!r} is already holding, queued or running; "
            "nothing was enqueued"
        )

    # ----- the interface ------------------------------------------------------------

    def _usage_of(self, cur: _Cursor, org: str, now: float) -> DailyUsage:
        cur.execute(
            f"SELECT COALESCE(SUM(count), 0), MIN(hour) FROM {self._s}.fq_usage WHERE org = %s AND hour >= %s",
            (org, DailyUsage.window_start(now)),
        )
        row = cur.fetchone()
        assert row is not None
        return DailyUsage(org, int(row[0]), row[1])

    def usage_daily(self, org: str, now: float) -> DailyUsage:
        """See :meth:`Storage.usage_daily`."""
        return self._transaction(lambda cur: self._usage_of(cur, org, now), block=False)

    def job_enqueue(
        self, jobs: Sequence[NewJob], now: float, daily_limits: Optional[Mapping[str, int]] = None
    ) -> list[int]:
        """See :meth:`Storage.job_enqueue`; committed (durably) before it returns."""
        if not jobs:
            return []
        try:
            return self._transaction(lambda cur: self._insert(cur.connection, jobs, now, daily_limits))
        except pg_errors.UniqueViolation as e:
            raise self._duplicate(jobs) from e

    def job_enqueue_in(
        self,
        conn: psycopg.Connection[Any],
        jobs: Sequence[NewJob],
        now: float,
        daily_limits: Optional[Mapping[str, int]] = None,
    ) -> list[int]:
        """Enqueues ``jobs`` inside the caller's own transaction on ``conn``; returns their ids.

        Nothing is committed here: when the caller commits, the jobs exist (and
        workers listening on :attr:`channel` are notified); when it rolls back,
        they never existed and no worker ever saw them. ``conn`` must be connected
        to this store's database. On a connection in autocommit mode with no
        transaction open there is no transaction to join: the jobs are committed
        before this returns, as :meth:`job_enqueue` would.

        A duplicate signature raises :class:`DuplicateSignature` and stores none of
        ``jobs``; the caller's transaction stays usable (the insert runs in a
        savepoint).

        Raises:
            DuplicateSignature: a live job already has one of the signatures.
            StorageError: the caller's transaction has already failed, or the
                database refused the insert.
        """
        self.check_connection(conn)
        if not jobs:
            return []
        status = conn.info.transaction_status
        if status == TransactionStatus.INERROR:
            raise StorageError("cannot enqueue: the connection's transaction has already failed; roll it back first")
        if conn.autocommit and status == TransactionStatus.IDLE:
            try:
                with conn.transaction():
                    return self._insert(conn, jobs, now, daily_limits)
            except pg_errors.UniqueViolation as e:
                raise self._duplicate(jobs) from e
            except psycopg.Error as e:
                raise StorageError(f"fairqueue {self._where}: {type(e).__name__}: {e}") from e
        # A savepoint rather than conn.transaction(): on an idle non-autocommit
        # connection psycopg's block would BEGIN and COMMIT on its own, while here
        # the statement opens the caller's implicit transaction and leaves it open.
        with conn.cursor(row_factory=tuple_row) as cur:
            try:
                cur.execute("SAVEPOINT fairqueue_enqueue")
                ids = self._insert(conn, jobs, now, daily_limits)
                cur.execute("RELEASE SAVEPOINT fairqueue_enqueue")
                return ids
            except DailyLimitExceeded:
                cur.execute("ROLLBACK TO SAVEPOINT fairqueue_enqueue")
                cur.execute("RELEASE SAVEPOINT fairqueue_enqueue")
                raise
            except pg_errors.UniqueViolation as e:
                cur.execute("ROLLBACK TO SAVEPOINT fairqueue_enqueue")
                cur.execute("RELEASE SAVEPOINT fairqueue_enqueue")
                raise self._duplicate(jobs) from e
            except psycopg.Error as e:
                raise StorageError(f"fairqueue {self._where}: {type(e).__name__}: {e}") from e

    def job_queued_subscribe(self, callback: Callable[[], None]) -> Optional[Callable[[], None]]:
        """See :meth:`Storage.job_queued_subscribe`: LISTENs on :attr:`channel` on a
        connection of its own (outside the pool), reconnecting if it drops; each
        reconnect calls ``callback`` once, since notifications sent while it was
        away are lost."""
        stop = threading.Event()

        def listen() -> None:
            while not stop.is_set():
                try:
                    with psycopg.connect(self._dsn, autocommit=True, connect_timeout=10) as conn:
                        conn.execute(f'LISTEN "{self.channel}"')
                        callback()
                        while not stop.is_set():
                            for _ in conn.notifies(timeout=0.5):
                                callback()
                except psycopg.Error as e:
                    log.warning("fairqueue %s: LISTEN connection lost (%s); reconnecting", self._where, e)
                    stop.wait(1.0)

        thread = threading.Thread(target=listen, name=f"fairqueue-listen-{self.schema}", daemon=True)
        thread.start()

        def unsubscribe() -> None:
            stop.set()
            thread.join(timeout=5)

        return unsubscribe

    def trigger_create(self, trigger: NewTrigger, now: float, max_per_org: int) -> int:
        """See :meth:`Storage.trigger_create`; creates for one org take turns (an advisory lock)."""
        s = self._s

        def body(cur: _Cursor) -> int:
            self._lock_orgs(cur, _LOCK_TRIGGERS, [trigger.org])
            cur.execute(f"SELECT name FROM {s}.fq_triggers WHERE org = %s AND state = 'waiting'", (trigger.org,))
            names = [r[0] for r in cur.fetchall()]
            if trigger.name in names:
                raise schedule_name_taken(trigger.org, trigger.name)
            if len(names) >= max_per_org:
                raise too_many_schedules(trigger.org, len(names), max_per_org)
            cur.execute(
                f"INSERT INTO {s}.fq_triggers (org, name, cron, timezone, handler, payload, state, created_at, "
                f"next_fire_at) VALUES (%s, %s, %s, %s, %s, %s, 'waiting', %s, %s) RETURNING id",
                (trigger.org, trigger.name, trigger.cron, trigger.timezone, trigger.handler, trigger.payload, now,
                 trigger.next_fire_at),
            )  # fmt: skip
            row = cur.fetchone()
            assert row is not None
            return int(row[0])

        return self._transaction(body)

    def trigger_get(self, trigger_id: int) -> Optional[TriggerRecord]:
        """See :meth:`Storage.trigger_get`."""
        rows = self._read(f"SELECT {_TRIGGER_COLUMNS} FROM {self._s}.fq_triggers WHERE id = %s", (trigger_id,))
        return _trigger(rows[0]) if rows else None

    def trigger_list(self, *, org: Optional[str] = None, state: Optional[TriggerState] = None) -> list[TriggerRecord]:
        """See :meth:`Storage.trigger_list`."""
        sql = (
            f"SELECT {_TRIGGER_COLUMNS} FROM {self._s}.fq_triggers "
            f"WHERE (%s::text IS NULL OR org = %s) AND (%s::text IS NULL OR state = %s) ORDER BY id"
        )
        value = state.value if state else None
        return [_trigger(r) for r in self._read(sql, (org, org, value, value))]

    def trigger_abort(self, trigger_id: int, org: Optional[str] = None) -> Optional[TriggerState]:
        """See :meth:`Storage.trigger_abort`."""
        s = self._s

        def body(cur: _Cursor) -> Optional[TriggerState]:
            cur.execute(f"SELECT org, state FROM {s}.fq_triggers WHERE id = %s FOR UPDATE", (trigger_id,))
            row = cur.fetchone()
            if row is None or (org is not None and row[0] != org):
                return None
            cur.execute(
                f"UPDATE {s}.fq_triggers SET state = 'aborted', next_fire_at = NULL WHERE id = %s AND state = 'waiting'",
                (trigger_id,),
            )
            return TriggerState(row[1])

        return self._transaction(body)

    def trigger_fire_due(
        self, now: float, next_fire: NextFire, limit: int = 100, daily_limit: Optional[Callable[[str], int]] = None
    ) -> list[int]:
        """See :meth:`Storage.trigger_fire_due`.

        Due schedules are locked with ``FOR UPDATE SKIP LOCKED``: hosts firing at
        the same moment split them, and one that waited on a lock re-checks the
        row and finds it no longer due.
        """
        s = self._s

        def body(cur: _Cursor) -> list[int]:
            cur.execute(
                f"SELECT {_TRIGGER_COLUMNS} FROM {s}.fq_triggers WHERE state = 'waiting' AND next_fire_at <= %s "
                f"ORDER BY next_fire_at, id LIMIT %s FOR UPDATE SKIP LOCKED",
                (now, limit),
            )
            due = [_trigger(r) for r in cur.fetchall()]
            if not due:
                return []
            refused: dict[int, str] = {}
            if daily_limit is not None:
                # As an enqueue with daily limits: the orgs' usage locked, then counted.
                self._lock_orgs(cur, _LOCK_USAGE, [t.org for t in due])
                refused = refused_fires(due, daily_limit, lambda org: self._usage_of(cur, org, now), now)
            # One insert for all: its usage rows are locked in one order (see _insert_rows).
            run = [t for t in due if t.id not in refused]
            rows = self._insert_rows(cur, [scheduled_job(t) for t in run], now, skip_taken=False) if run else []
            fired = sorted(int(r[0]) for r in rows)  # identity ids follow the jobs' order
            job_ids = dict(zip((t.id for t in run), fired))
            for t in due:
                if t.id in refused:
                    job = scheduled_job(t)
                    cur.execute(
                        f"INSERT INTO {s}.fq_jobs (org, kind, handler, payload, status, created_at, finished_at, "
                        f"error_count, extended_status) VALUES (%s, %s, %s, %s, 'failed', %s, %s, 1, %s) RETURNING id",
                        (job.org, job.kind, job.handler, job.payload, now, now, refused[t.id]),
                    )
                    job_ids[t.id] = cur.fetchone()[0]  # type: ignore[index]
            following = [next_fire(t, now) for t in due]
            cur.execute(
                f"UPDATE {s}.fq_triggers t SET state = u.state, next_fire_at = u.next_fire_at, "
                f"previous_fire_at = t.next_fire_at, times_fired = t.times_fired + 1, last_job_id = u.job_id "
                f"FROM unnest(%b::bigint[], %b::text[], %b::float8[], %b::bigint[]) AS u(id, state, next_fire_at, job_id) "
                f"WHERE t.id = u.id",
                (
                    [t.id for t in due],
                    ["waiting" if f is not None else "complete" for f in following],
                    _floats(following),
                    [job_ids[t.id] for t in due],
                ),
            )
            return fired

        if not self._read(f"SELECT 1 FROM {s}.fq_triggers WHERE state = 'waiting' AND next_fire_at <= %s LIMIT 1", (now,)):
            return []
        return self._transaction(body)

    def check_connection(self, connection: Any) -> None:
        """Raises :class:`InvalidArgument` unless ``connection`` is an open psycopg 3 connection."""
        if not isinstance(connection, psycopg.Connection):
            raise InvalidArgument(
                f"connection {connection!r} is not a psycopg 3 connection: pass the psycopg.Connection "
                "whose transaction the jobs should join"
            )
        if connection.closed:
            raise InvalidArgument("connection is closed: pass an open psycopg connection")

    def job_signature_taken(self, signature: str) -> bool:
        """See :meth:`Storage.job_signature_taken`."""
        sql = f"SELECT 1 FROM {self._s}.fq_jobs WHERE duplicate_signature = %s AND status IN {_LIVE} LIMIT 1"
        return bool(self._read(sql, (signature,)))

    def job_cancel_requested(self, job_ids: Sequence[int]) -> list[int]:
        """See :meth:`Storage.job_cancel_requested`."""
        if not job_ids:
            return []
        sql = f"SELECT id FROM {self._s}.fq_jobs WHERE id = ANY(%s) AND cancel_requested ORDER BY id"
        rows = self._read(sql, (list(job_ids),))
        return [r[0] for r in rows]

    def job_get(self, job_id: int) -> Optional[JobRecord]:
        """See :meth:`Storage.job_get`."""
        rows = self._read(f"SELECT {_COLUMNS} FROM {self._s}.fq_jobs WHERE id = %s", (job_id,))
        return _record(rows[0]) if rows else None

    def job_list(
        self,
        *,
        org: Optional[str] = None,
        kind: Optional[str] = None,
        status: Optional[JobStatus] = None,
        before_id: Optional[int] = None,
        limit: int = 100,
    ) -> list[JobRecord]:
        """See :meth:`Storage.job_list`."""
        where, params = job_filter("%s", org, kind, status, before_id)
        return [_record(r) for r in self._read(self._list_sql(where, status), [*params, limit])]

    def _list_sql(self, where: str, status: Optional[JobStatus]) -> str:
        # "id + 0" keeps the planner off the primary key's order, so a status of
        # FEW_STATUSES is read through its partial index and sorted (see FEW_STATUSES).
        order = "id + 0" if status in FEW_STATUSES else "id"
        return f"SELECT {_COLUMNS} FROM {self._s}.fq_jobs WHERE {where} ORDER BY {order} DESC LIMIT %s"

    def _publish(self, cur: _Cursor) -> None:
        """Numbers committed provisional rows from ``fq_ready_seq``, in provisional order.

        Publishers take turns on an advisory lock held until their commit, so each
        draws numbers only after the previous one's are visible (module docstring).
        """
        s = self._s
        cur.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", (_LOCK_PUBLISH, self.schema))
        # A new statement, a new snapshot: what the previous publisher did is visible now.
        cur.execute(
            f"SELECT id FROM {s}.fq_jobs WHERE status = 'queued' AND ready_seq < 0 ORDER BY ready_seq DESC, id"
        )
        ids = [r[0] for r in cur.fetchall()]
        if not ids:
            return
        cur.execute(f"SELECT setval('{s}.fq_ready_seq', nextval('{s}.fq_ready_seq') + %s - 1)", (len(ids),))
        last = cur.fetchone()
        assert last is not None
        first = int(last[0]) - len(ids) + 1
        # A job claimed or aborted meanwhile is left alone (its number is simply never used).
        cur.execute(
            f"UPDATE {s}.fq_jobs j SET ready_seq = u.seq FROM unnest(%b::bigint[], %b::bigint[]) AS u(id, seq) "
            f"WHERE j.id = u.id AND j.status = 'queued' AND j.ready_seq < 0",
            (ids, list(range(first, first + len(ids)))),
        )

    def job_pending(self, after_seq: int = 0, limit: Optional[int] = None) -> list[PendingJob]:
        """See :meth:`Storage.job_pending`.

        First publishes the jobs queued by transactions committed since anyone last
        looked (gives them their ``ready_seq``, in a short transaction of its own),
        so a job whose enqueue committed late still comes after the largest
        ``ready_seq`` any reader has seen.
        """
        s = self._s
        if self._read(f"SELECT 1 FROM {s}.fq_jobs WHERE status = 'queued' AND ready_seq < 0 LIMIT 1"):
            self._transaction(self._publish)
        rows = self._read(
            f"SELECT id, org, kind, run_at, attempts, ready_seq FROM {s}.fq_jobs "
            f"WHERE status = 'queued' AND ready_seq > %s ORDER BY ready_seq LIMIT %s",
            (max(after_seq, 0), limit),
        )
        return [PendingJob(*r) for r in rows]

    def job_counts(self, live: bool = False) -> dict[tuple[str, str, JobStatus], int]:
        """See :meth:`Storage.job_counts`."""
        if live:
            # One query per status, its literal matching a partial index's condition.
            rows = self._read(
                " UNION ALL ".join(
                    f"SELECT org, kind, status, COUNT(*) FROM {self._s}.fq_jobs WHERE status = '{status.value}' "
                    "GROUP BY org, kind, status"
                    for status in LIVE_STATUSES
                )
            )
        else:
            rows = self._read(f"SELECT org, kind, status, COUNT(*) FROM {self._s}.fq_jobs GROUP BY org, kind, status")
        return {(org, kind, JobStatus(status)): int(n) for org, kind, status, n in rows}

    def job_claim(
        self, job_ids: Sequence[int], worker: str, lease_until: float, now: float, caps: Optional[Caps] = None
    ) -> Claimed:
        """See :meth:`Storage.job_claim`. Safe against any number of concurrent claimers on any host.

        One transaction (:meth:`_claim`): the asked-for rows still queued are locked
        (stand-ins found for those gone), then a transaction-scoped advisory lock is
        taken per capped (org, kind) among them, in one global order, then each
        pair's processing jobs are counted and what fits is claimed. Every claim of
        a pair, on every host, takes its turn between count and commit, so the count
        cannot go stale and the cap holds at every instant. Leaving processing
        (outcomes, re-deliveries) only lowers a count and needs no lock.
        """
        if not job_ids:
            return Claimed()
        return self._transaction(
            lambda cur: self._claim(cur, list(job_ids), worker, lease_until, now, caps), durable=False, pipeline=True
        )

    def job_finish_and_claim(
        self,
        finishes: Sequence[Finish],
        job_ids: Sequence[int],
        worker: str,
        lease_until: float,
        now: float,
        caps: Optional[Caps] = None,
    ) -> tuple[list[int], Claimed]:
        """See :meth:`Storage.job_finish_and_claim`: plain outcomes and the claim share
        one transaction (one commit); outcomes with children, retries or batch
        progress take :meth:`job_finish`'s own path first."""
        check_finishes(finishes)
        plain = [f for f in finishes if f.status is not JobStatus.QUEUED and not f.children and f.progress is None]
        if len(plain) < len(finishes) or not job_ids:
            return Storage.job_finish_and_claim(self, finishes, job_ids, worker, lease_until, now, caps)
        ended_batches: list[str] = []

        def body(cur: _Cursor) -> tuple[list[int], Claimed]:
            # The outcomes go out first (the slots they free count for the claim's caps);
            # their result arrives with the claim's first one, in the same round trip.
            with cur.connection.cursor() as outcomes:
                if plain:
                    self._send_final(outcomes, plain)
                claim = self._claim(cur, list(job_ids), worker, lease_until, now, caps)
                ended_batches[:] = []
                return self._applied_final(outcomes, ended_batches) if plain else [], claim

        applied, claim = self._transaction(body, durable=False, pipeline=True)
        if ended_batches:
            self._transaction(lambda cur: self._promote(cur, ended_batches))
        done = set(applied)
        return [f.job_id for f in finishes if f.job_id in done], claim

    def _claim(
        self, cur: _Cursor, asked: list[int], worker: str, lease_until: float, now: float, caps: Optional[Caps]
    ) -> Claimed:
        s = self._s
        # The still-queued asked-for jobs, locked in id order (claimers never deadlock;
        # one another claimer took meanwhile fails the re-check and drops out).
        # "status || ''": found through the primary key, never through the partial
        # index of queued jobs, which a planner with stale statistics (a fresh
        # backlog) would read whole.
        cur.execute(
            f"SELECT id, org, kind FROM {s}.fq_jobs WHERE id = ANY(%s) AND (status || '') = 'queued' ORDER BY id FOR UPDATE",
            (asked,),
        )
        order = {job_id: n for n, job_id in enumerate(asked)}
        candidates: list[tuple[int, str, str]] = sorted(cur.fetchall(), key=lambda c: order[c[0]])
        if len(candidates) < len(asked):
            candidates += self._stand_ins(cur, asked, {c[0] for c in candidates}, now)
        capped = sorted({(org, kind) for _, org, kind in candidates if (org, kind) in (caps or {})})
        held: dict[tuple[str, str], int] = {}
        if capped:
            # One advisory lock per capped pair, in one global order, taken after the row
            # locks (nothing holding them waits for a row) and held to commit: every
            # claim of a pair takes its turn between count and commit.
            orgs, kinds = [org for org, _ in capped], [kind for _, kind in capped]
            cur.execute(
                "SELECT pg_advisory_xact_lock(%s, h) FROM (SELECT DISTINCT hashtext(%s || chr(31) || o || chr(31) || k) AS h "
                "FROM unnest(%b::text[], %b::text[]) AS u(o, k) ORDER BY h) AS locks",
                (_LOCK_CAP, self.schema, orgs, kinds),
            )
            # A new statement, a new snapshot: the counts include every claim committed
            # before our locks. (In a pipeline both go out together; the server runs
            # them in order.)
            cur.execute(
                f"SELECT org, kind, COUNT(*) FROM {s}.fq_jobs WHERE status = 'processing' "
                f"AND org = ANY(%s) AND kind = ANY(%s) GROUP BY org, kind",
                (orgs, kinds),
            )
            held = {(org, kind): int(n) for org, kind, n in cur.fetchall()}
        ids, at_cap = admit_within_caps(candidates, held, caps or {})
        claimed: list[JobRecord] = []
        if ids:
            cur.execute(
                f"UPDATE {s}.fq_jobs SET status = 'processing', lease_owner = %s, lease_expires_at = %s, "
                f"started_at = COALESCE(started_at, %s), attempts = attempts + 1 WHERE id = ANY(%s) RETURNING {_COLUMNS}",
                (worker, float(lease_until), float(now), ids),
            )
            rank = {job_id: n for n, job_id in enumerate(ids)}
            claimed = sorted((_record(r) for r in cur.fetchall()), key=lambda r: rank[r.id])
        return Claimed(claimed, [job_id for job_id in at_cap if job_id in order])

    def _stand_ins(self, cur: _Cursor, asked: list[int], queued: set[int], now: float) -> list[tuple[int, str, str]]:
        """For each asked job another claimer took meanwhile, its pair's oldest ready
        queued job that was not asked for, skipping rows other claimers hold locked
        (see :meth:`Storage.job_claim`). One statement: while several workers race for
        the same jobs, most of a claim's jobs are stand-ins, for many pairs."""
        s = self._s
        cur.execute(
            f"WITH lost AS (SELECT org, kind, COUNT(*) AS n FROM {s}.fq_jobs WHERE id = ANY(%s) GROUP BY org, kind) "
            f"SELECT q.id, lost.org, lost.kind FROM lost CROSS JOIN LATERAL ("
            f"SELECT id FROM {s}.fq_jobs WHERE org = lost.org AND kind = lost.kind AND status = 'queued' "
            f"AND (run_at IS NULL OR run_at <= %s) AND id <> ALL(%s) ORDER BY id LIMIT lost.n FOR UPDATE SKIP LOCKED"
            f") AS q ORDER BY q.id",
            ([i for i in asked if i not in queued], float(now), asked),
        )
        return [(job_id, org, kind) for job_id, org, kind in cur.fetchall()]

    def job_heartbeat(self, job_ids: Sequence[int], worker: str, lease_until: float) -> None:
        """See :meth:`Storage.job_heartbeat`."""
        if not job_ids:
            return

        def body(cur: _Cursor) -> None:
            cur.execute(
                f"UPDATE {self._s}.fq_jobs SET lease_expires_at = %s "
                f"WHERE id = ANY(%s) AND status = 'processing' AND lease_owner = %s",
                (float(lease_until), list(job_ids), worker),
            )

        self._transaction(body, durable=False)

    def job_finish(self, finishes: Sequence[Finish]) -> list[int]:
        """See :meth:`Storage.job_finish`: all outcomes and their children in one transaction."""
        check_finishes(finishes)
        if not finishes:
            return []
        s = self._s
        final = [f for f in finishes if f.status is not JobStatus.QUEUED]
        retried = [f for f in finishes if f.status is JobStatus.QUEUED]

        ended_batches: list[str] = []  # orgs whose batch ended: their next holding one may start

        def body(cur: _Cursor) -> list[int]:
            applied: list[int] = []
            ended_batches.clear()
            if final:
                self._send_final(cur, final)
                applied += self._applied_final(cur, ended_batches)
            if retried:
                cur.execute(
                    f"UPDATE {s}.fq_jobs j SET status = 'queued', run_at = u.retry_at, lease_owner = NULL, "
                    f"lease_expires_at = NULL, extended_status = u.error, "
                    f"error_count = j.error_count + (u.error IS NOT NULL)::int, "
                    f"ready_seq = -nextval('{s}.fq_queued_seq') "
                    f"FROM unnest(%b::bigint[], %b::text[], %b::float8[], %b::text[]) AS u(id, worker, retry_at, error) "
                    f"WHERE j.id = u.id AND j.status = 'processing' AND j.lease_owner = u.worker RETURNING j.id",
                    (
                        [f.job_id for f in retried],
                        [f.worker for f in retried],
                        _floats(f.retry_at for f in retried),
                        [f.error for f in retried],
                    ),
                )
                applied.extend(r[0] for r in cur.fetchall())
                if cur.rowcount:
                    self._notify(cur)
            done = set(applied)
            for f in finishes:
                if f.progress is not None and f.job_id in done:
                    self._apply_progress(cur, f)
                if f.children and f.job_id in done:
                    self._insert_children(cur, f)
            return applied

        # The bulk (final outcomes, no children) is one statement: its own transaction.
        simple = not retried and not any(f.children or f.progress for f in finishes)
        done = set(self._transaction(body, durable=False, block=not simple))
        if ended_batches:
            # Its own transaction, so the common outcome stays one statement; after a
            # crash in between, job_requeue_expired's sweep promotes instead.
            self._transaction(lambda cur: self._promote(cur, ended_batches))
        return [f.job_id for f in finishes if f.job_id in done]

    def _send_final(self, cur: _Cursor, final: Sequence[Finish]) -> None:
        """Stores completed and failed outcomes (no children, no progress) in one
        statement; :meth:`_applied_final` reads what it did."""
        cur.execute(
            f"UPDATE {self._s}.fq_jobs j SET status = u.status, finished_at = u.at, lease_owner = NULL, "
            f"lease_expires_at = NULL, extended_status = COALESCE(u.error, j.extended_status), "
            f"error_count = j.error_count + (u.error IS NOT NULL)::int "
            f"FROM unnest(%b::bigint[], %b::text[], %b::text[], %b::float8[], %b::text[]) "
            f"AS u(id, worker, status, at, error) "
            f"WHERE j.id = u.id AND j.status = 'processing' AND j.lease_owner = u.worker RETURNING j.id, j.kind, j.org",
            (
                [f.job_id for f in final],
                [f.worker for f in final],
                [f.status.value for f in final],
                _floats(f.at for f in final),
                [f.error for f in final],
            ),
        )

    @staticmethod
    def _applied_final(cur: _Cursor, ended_batches: list[str]) -> list[int]:
        """The ids :meth:`_send_final`'s statement applied to; notes the orgs whose batch ended."""
        applied: list[int] = []
        for job_id, kind, org in cur.fetchall():
            applied.append(job_id)
            if kind == "batch":
                ended_batches.append(org)
        return applied

    def _check_daily_limits(self, cur: _Cursor, jobs: Sequence[NewJob], limits: Mapping[str, int], now: float) -> None:
        """Raises DailyLimitExceeded if ``jobs`` would take an org past its limit. The
        orgs' usage is locked first (to commit), so two hosts cannot both take an org's
        last executions."""
        self._lock_orgs(cur, _LOCK_USAGE, [j.org for j in jobs if j.org in limits])
        check_daily_limits(jobs, limits, lambda org: self._usage_of(cur, org, now), now)

    def _lock_orgs(self, cur: _Cursor, lock_class: int, orgs: Sequence[str]) -> None:
        """Takes ``lock_class``'s transaction-scoped advisory lock for each org, in one
        global order (so two transactions locking several orgs never deadlock)."""
        cur.execute(
            "SELECT pg_advisory_xact_lock(%s, h) FROM (SELECT DISTINCT hashtext(%s::text || chr(31) || o) AS h "
            "FROM unnest(%b::text[]) AS o ORDER BY h) AS locks",
            (lock_class, self.schema, sorted(set(orgs))),
        )

    def _lock_flex(self, cur: _Cursor, orgs: Sequence[str]) -> None:
        """Takes turns with every other transaction that counts or changes these orgs' batches."""
        self._lock_orgs(cur, _LOCK_FLEX, orgs)

    def _flex_counts(self, cur: _Cursor, org: str) -> tuple[int, int]:
        cur.execute(
            f"SELECT {self._active_batches('%s')}, (SELECT COUNT(*) FROM {self._s}.fq_flex WHERE org = %s)", (org, org, org)
        )
        row = cur.fetchone()
        assert row is not None
        return int(row[0]), int(row[1])

    def _active_batches(self, org: str) -> str:
        """SQL for ``org``'s queued and processing batches: one count per status, its
        literal matching a partial index (a prepared statement's parameter would not),
        so the count never reads the org's finished history."""
        return " + ".join(
            f"(SELECT COUNT(*) FROM {self._s}.fq_jobs j WHERE j.org = {org} AND j.kind = 'batch' AND j.status = '{status}')"
            for status in ("queued", "processing")
        )

    def _promote(self, cur: _Cursor, orgs: Sequence[str]) -> None:
        """Starts each org's next holding batch if it has room for one."""
        self._lock_flex(cur, orgs)
        for org in sorted(set(orgs)):
            if self._flex_counts(cur, org)[0] >= FLEX_ACTIVE:
                continue
            cur.execute(
                f"DELETE FROM {self._s}.fq_flex WHERE job_id = (SELECT job_id FROM {self._s}.fq_flex WHERE org = %s "
                f"ORDER BY position LIMIT 1) RETURNING job_id",
                (org,),
            )
            row = cur.fetchone()
            if row is not None:
                cur.execute(
                    f"UPDATE {self._s}.fq_jobs SET status = 'queued', ready_seq = -nextval('{self._s}.fq_queued_seq') "
                    f"WHERE id = %s",
                    (row[0],),
                )
                self._notify(cur)

    def history_append(self, entries: Sequence[HistoryEntry]) -> None:
        """See :meth:`Storage.history_append`."""
        if not entries:
            return

        def body(cur: _Cursor) -> None:
            cur.executemany(
                f"INSERT INTO {self._s}.fq_history (at, kind, org, value, figures) VALUES (%s, %s, %s, %s, %s)",
                [(e.at, e.kind, e.org, e.value, json.dumps(e.figures)) for e in entries],
            )

        self._transaction(body, durable=False)

    def history_read(self, since: float, kinds: Optional[Sequence[str]] = None) -> list[HistoryEntry]:
        """See :meth:`Storage.history_read`."""
        rows = self._read(
            f"SELECT at, kind, org, value, figures FROM {self._s}.fq_history WHERE at >= %s ORDER BY at, id", (since,)
        )
        return [HistoryEntry(r[0], r[1], r[2], r[3], json.loads(r[4])) for r in rows if kinds is None or r[1] in kinds]

    def job_waiting_facts(self, record: JobRecord, now: float, window: float) -> WaitingFacts:
        """See :meth:`Storage.job_waiting_facts`."""
        since = now - window
        t = f"{self._s}.fq_jobs"
        [counts] = self._read(
            "SELECT " + f"""(SELECT COUNT(*) FROM {t} WHERE status = 'queued' AND org = %s AND kind = %s AND id < %s),
            (SELECT COUNT(*) FROM {t} WHERE status = 'queued' AND id < %s AND (run_at IS NULL OR run_at <= %s)),
            (SELECT COUNT(*) FROM {t} WHERE org = %s AND kind = %s AND finished_at >= %s),
            (SELECT COUNT(*) FROM {t} WHERE finished_at >= %s),
            (SELECT COUNT(*) FROM {t} WHERE status = 'processing'),
            (SELECT MIN(finished_at) FROM {t} WHERE finished_at >= %s),
            (SELECT COUNT(*) FROM (SELECT org, kind FROM {t} WHERE status = 'queued'
                                   UNION SELECT org, kind FROM {t} WHERE status = 'processing') AS lines)""",
            (record.org, record.kind, record.id, record.id, now, record.org, record.kind, since, since, since),
        )
        holders = [r[0] for r in self._read(
            f"SELECT id FROM {t} WHERE status = 'processing' AND org = %s AND kind = %s ORDER BY id",
            (record.org, record.kind),
        )]  # fmt: skip
        return WaitingFacts(counts[0], counts[1], holders, counts[2], counts[3], counts[4], counts[5], counts[6])

    def flex_list(self, org: str) -> list[JobRecord]:
        """See :meth:`Storage.flex_list`."""
        rows = self._read(
            f"SELECT {_J_COLUMNS} FROM {self._s}.fq_flex f JOIN {self._s}.fq_jobs j ON j.id = f.job_id "
            f"WHERE f.org = %s ORDER BY f.position",
            (org,),
        )
        return [_record(r) for r in rows]

    def flex_move(self, job_id: int, org: str, *, before: Optional[int] = None, after: Optional[int] = None,
                  to: Optional[str] = None) -> list[int]:  # fmt: skip
        """See :meth:`Storage.flex_move`."""

        def body(cur: _Cursor) -> list[int]:
            self._lock_flex(cur, [org])
            cur.execute(f"SELECT job_id FROM {self._s}.fq_flex WHERE org = %s ORDER BY position", (org,))
            order = flex_order([int(r[0]) for r in cur.fetchall()], job_id, before, after, to)
            cur.execute(
                f"UPDATE {self._s}.fq_flex f SET position = u.position "
                f"FROM unnest(%b::bigint[]) WITH ORDINALITY AS u(job_id, position) WHERE f.job_id = u.job_id",
                (order,),
            )
            return order

        return self._transaction(body)

    def _apply_progress(self, cur: _Cursor, f: Finish) -> None:
        p = f.progress
        assert p is not None
        cur.execute(
            f"UPDATE {self._s}.fq_jobs SET payload = %s, items_processed = %s, items_total = %s, error_count = %s, "
            f"attempts = CASE WHEN status = 'queued' THEN 0 ELSE attempts END WHERE id = %s",
            (p.payload, p.items_processed, p.items_total, p.error_count, f.job_id),
        )
        if p.errors:
            cur.executemany(
                f"INSERT INTO {self._s}.fq_batch_errors (job_id, org, phase, chunk, record_ids, exception_type, message, "
                f"traceback, at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                [(e.job_id, e.org, e.phase, e.chunk, json.dumps(e.record_ids), e.exception_type, e.message, e.traceback,
                  e.at) for e in p.errors],
            )  # fmt: skip

    def batch_errors(self, job_id: int) -> list[BatchErrorEvent]:
        """See :meth:`Storage.batch_errors`."""
        rows = self._read(
            f"SELECT job_id, org, phase, chunk, record_ids, exception_type, message, traceback, at "
            f"FROM {self._s}.fq_batch_errors WHERE job_id = %s ORDER BY id",
            (job_id,),
        )
        return [BatchErrorEvent(r[0], r[1], r[2], r[3], json.loads(r[4]), r[5], r[6], r[7], r[8]) for r in rows]

    def _insert_children(self, cur: _Cursor, f: Finish) -> None:
        # ON CONFLICT … DO NOTHING rather than check-then-insert: a concurrent enqueue
        # of the same signature cannot abort the whole group commit.
        try:
            if f.daily_limits:
                self._check_daily_limits(cur, f.children, f.daily_limits, f.at)
            stored = self._insert_rows(cur, f.children, f.at, skip_taken=True)
        except LimitExceeded as e:  # past the daily limit, or a batch child past a full flex queue
            cur.execute(
                f"UPDATE {self._s}.fq_jobs SET extended_status = %s WHERE id = %s", (f"children not enqueued: {e}", f.job_id)
            )
            return
        taken = self._missing(f.children, [r[1] for r in stored])
        if taken:
            cur.execute(
                f"UPDATE {self._s}.fq_jobs SET extended_status = %s WHERE id = %s",
                (f"child not enqueued: duplicate signature {taken!r} already queued or running", f.job_id),
            )

    def job_requeue_expired(self, now: float) -> list[int]:
        """See :meth:`Storage.job_requeue_expired`. Concurrent callers requeue each job once."""

        def body(cur: _Cursor) -> list[int]:
            # A row whose owner is finishing or heartbeating it right now is waited
            # for and re-checked: a fresh lease or an outcome leaves it alone.
            cur.execute(
                f"UPDATE {self._s}.fq_jobs SET status = 'queued', lease_owner = NULL, lease_expires_at = NULL, "
                f"extended_status = 'lease expired; re-delivered', ready_seq = -nextval('{self._s}.fq_queued_seq') "
                f"WHERE status = 'processing' AND lease_expires_at < %s RETURNING id",
                (float(now),),
            )
            expired = sorted(r[0] for r in cur.fetchall())
            if expired:
                self._notify(cur)
            # A batch's outcome and the promotion it allows commit apart (job_finish):
            # a crash in between would leave the org's flex queue waiting for an event
            # that may never come. Each worker's sweep starts what has room.
            sql = f"SELECT DISTINCT f.org FROM {self._s}.fq_flex f WHERE {self._active_batches('f.org')} < %s"
            cur.execute(sql, (FLEX_ACTIVE,))
            stalled = [r[0] for r in cur.fetchall()]
            if stalled:
                self._promote(cur, stalled)
            return expired

        return self._transaction(body, durable=False)

    def job_abort(self, job_id: int, now: float, org: Optional[str] = None) -> Optional[JobStatus]:
        """See :meth:`Storage.job_abort`."""
        s = self._s

        def body(cur: _Cursor) -> Optional[JobStatus]:
            cur.execute(f"SELECT org, status, kind FROM {s}.fq_jobs WHERE id = %s FOR UPDATE", (job_id,))
            row = cur.fetchone()
            if row is None or (org is not None and row[0] != org):
                return None
            status = JobStatus(row[1])
            if status in (JobStatus.HOLDING, JobStatus.QUEUED):
                cur.execute(
                    f"UPDATE {s}.fq_jobs SET status = 'aborted', finished_at = %s, "
                    f"extended_status = 'aborted while waiting' WHERE id = %s",
                    (float(now), job_id),
                )
                if status is JobStatus.HOLDING:
                    cur.execute(f"DELETE FROM {s}.fq_flex WHERE job_id = %s", (job_id,))
                elif row[2] == "batch":
                    self._promote(cur, [row[0]])
                return JobStatus.ABORTED
            if status in (JobStatus.PREPARING, JobStatus.PROCESSING):
                cur.execute(f"UPDATE {s}.fq_jobs SET cancel_requested = TRUE WHERE id = %s", (job_id,))
            return status

        return self._transaction(body)

    def close(self) -> None:
        """Closes every pooled connection."""
        self._pool.close()
        self._fast_pool.close()
