"""The embedded default store: one SQLite file in WAL mode.

Why SQLite: it ships with Python (nothing to install or start), one file holds
everything, WAL lets readers run beside the single writer, several processes on
one machine can share the file safely, and ``synchronous=FULL`` makes a commit
durable before it returns. Outcomes are written in batches (group commit) so
durability does not cost one fsync per job.
"""

from __future__ import annotations

import json
import math
import operator
import sqlite3
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, Optional, TypeVar, Union

from fairqueue._core import Dispatcher, EmbeddedTurns, SlotLine
from fairqueue.errors import (
    DuplicateSignature,
    FairQueueError,
    LimitExceeded,
    MalformedRecord,
    SchemaVersionError,
    StorageCorrupt,
    StorageError,
    StorageFull,
    StorageUnavailable,
)
from fairqueue.records import (
    Admission,
    BatchErrorEvent,
    Candidate,
    Claimed,
    Finish,
    HistoryEntry,
    JobRecord,
    JobStatus,
    NewJob,
    NewTrigger,
    PendingJob,
    RateScope,
    Reaped,
    SettingChange,
    SettingRow,
    TriggerRecord,
    TriggerState,
    WaitingFacts,
    WorkerInfo,
    WorkerRecord,
)
from fairqueue.retention import DOWNSAMPLE_STEP, SAMPLED_HISTORY, prune_order
from fairqueue.storage.interface import (
    FEW_STATUSES,
    FINISHED_SQL,
    FLEX_ACTIVE,
    LIVE_STATUSES,
    RERUNNABLE,
    SCHEMA_VERSION,
    DailyUsage,
    FinishedCallback,
    Held,
    LineTurn,
    NextFire,
    Storage,
    WebhookDelivery,
    admit,
    capped_scopes,
    check_daily_limits,
    check_finishes,
    dead_worker_outcome,
    flex_admit,
    flex_order,
    job_filter,
    live_worker_named,
    merge_settings,
    rate_scope_text,
    rate_scopes,
    refused_fires,
    rerun_note,
    schedule_name_taken,
    scheduled_job,
    too_many_schedules,
    usage_hour,
)
from fairqueue.storage.lock_files import HeldLock, probe
from fairqueue.storage.waiting import FinishedFanout

__all__ = ["SQLiteStorage"]

_T = TypeVar("_T")

_INSERT_ROW = (
    "INSERT INTO fq_jobs (org, kind, handler, payload, status, created_at, run_at, parent_id, "
    "chain_depth, duplicate_signature, queue, key, priority, cost, ready_seq) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
# A run of jobs alike but for their payloads, in one statement: binding a row's
# parameters from Python costs ~4 µs, several times what SQLite spends storing it.
_INSERT_RUN = (
    "INSERT INTO fq_jobs (org, kind, handler, status, created_at, run_at, parent_id, chain_depth, "
    "duplicate_signature, queue, key, priority, cost, ready_seq, payload) "
    "SELECT ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ? + json_each.key, json_each.value FROM json_each(?) "
    "ORDER BY json_each.key"
)
_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
# Payload characters per run statement at most: SQLite refuses a bound string over
# 1 GB, and the array is a copy of the payloads.
_RUN_BYTES = 8 << 20
_ALIKE = operator.itemgetter(0, 1, 2, *range(4, len(NewJob._fields)))
"""A NewJob's fields but its payload."""


def _runs(jobs: Sequence[NewJob], statuses: Sequence[JobStatus]) -> Iterator[tuple[int, int]]:
    """(start, end) of each run of consecutive jobs that differ only in their payloads."""
    start = 0
    first, status = _ALIKE(jobs[0]), statuses[0]
    for i in range(1, len(jobs)):
        if statuses[i] is not status or _ALIKE(jobs[i]) != first:
            yield start, i
            start, first, status = i, _ALIKE(jobs[i]), statuses[i]
    yield start, len(jobs)


# Enum.value is a descriptor call; a bulk insert reads it once per job.
_STATUS_TEXT = {status: status.value for status in JobStatus}
_LIVE = "('holding', 'queued', 'preparing', 'processing')"
_RERUNNABLE = "(" + ", ".join(f"'{s.value}'" for s in RERUNNABLE) + ")"

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS fq_meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS fq_jobs (
    id                  INTEGER PRIMARY KEY AUTOINCREMENT,
    org                 TEXT    NOT NULL,
    kind                TEXT    NOT NULL,
    handler             TEXT    NOT NULL,
    payload             TEXT    NOT NULL,
    status              TEXT    NOT NULL,
    created_at          REAL    NOT NULL,
    run_at              REAL,
    started_at          REAL,
    finished_at         REAL,
    attempts            INTEGER NOT NULL DEFAULT 0,
    items_processed     INTEGER NOT NULL DEFAULT 0,
    items_total         INTEGER,
    error_count         INTEGER NOT NULL DEFAULT 0,
    extended_status     TEXT,
    parent_id           INTEGER,
    chain_depth         INTEGER NOT NULL DEFAULT 0,
    duplicate_signature TEXT,
    lease_owner         TEXT,
    lease_expires_at    REAL,
    cancel_requested    INTEGER NOT NULL DEFAULT 0,
    ready_seq           INTEGER
);
CREATE INDEX IF NOT EXISTS fq_jobs_queued ON fq_jobs (ready_seq) WHERE status = 'queued';
CREATE INDEX IF NOT EXISTS fq_jobs_org ON fq_jobs (org, id);
CREATE UNIQUE INDEX IF NOT EXISTS fq_jobs_signature ON fq_jobs (duplicate_signature)
    WHERE duplicate_signature IS NOT NULL AND status IN {_LIVE};
"""

# Migration n takes a store at version n - 1 to version n, in the opening
# transaction; _SCHEMA above is version 1. Never edit a released migration.
_MIGRATIONS: dict[int, str] = {
    2: """
-- Claims count each (org, kind)'s processing jobs to hold its cap across processes.
CREATE INDEX IF NOT EXISTS fq_jobs_processing ON fq_jobs (org, kind) WHERE status = 'processing';
CREATE INDEX IF NOT EXISTS fq_jobs_holding ON fq_jobs (org, kind) WHERE status = 'holding';
-- Explanations count the jobs finished in a recent window.
CREATE INDEX IF NOT EXISTS fq_jobs_finished ON fq_jobs (finished_at) WHERE finished_at IS NOT NULL;
-- A claim that lost a job to another process takes the pair's next queued job instead.
CREATE INDEX IF NOT EXISTS fq_jobs_pair_queued ON fq_jobs (org, kind, id) WHERE status = 'queued';
-- Jobs stored per org and hour, for the daily limit's rolling window.
CREATE TABLE IF NOT EXISTS fq_usage (
    org   TEXT    NOT NULL,
    hour  INTEGER NOT NULL,
    count INTEGER NOT NULL,
    PRIMARY KEY (org, hour)
) WITHOUT ROWID;
-- Schedules (app.schedule): each fires its job at the times of its cron expression.
CREATE TABLE IF NOT EXISTS fq_triggers (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    org              TEXT    NOT NULL,
    name             TEXT    NOT NULL,
    cron             TEXT    NOT NULL,
    timezone         TEXT    NOT NULL,
    handler          TEXT    NOT NULL,
    payload          TEXT    NOT NULL,
    state            TEXT    NOT NULL,
    created_at       REAL    NOT NULL,
    next_fire_at     REAL,
    previous_fire_at REAL,
    times_fired      INTEGER NOT NULL DEFAULT 0,
    last_job_id      INTEGER
);
CREATE INDEX IF NOT EXISTS fq_triggers_due ON fq_triggers (next_fire_at) WHERE state = 'waiting';
CREATE UNIQUE INDEX IF NOT EXISTS fq_triggers_name ON fq_triggers (org, name) WHERE state = 'waiting';
-- Batch error events (the reference platform's BatchApexErrorEvent).
CREATE TABLE IF NOT EXISTS fq_batch_errors (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id         INTEGER NOT NULL,
    org            TEXT    NOT NULL,
    phase          TEXT    NOT NULL,
    chunk          INTEGER,
    record_ids     TEXT    NOT NULL,
    exception_type TEXT    NOT NULL,
    message        TEXT    NOT NULL,
    traceback      TEXT    NOT NULL,
    at             REAL    NOT NULL
);
CREATE INDEX IF NOT EXISTS fq_batch_errors_job ON fq_batch_errors (job_id);
-- Each org's flex queue: its holding batch jobs, in the order they will start.
CREATE TABLE IF NOT EXISTS fq_flex (
    job_id   INTEGER PRIMARY KEY,
    org      TEXT    NOT NULL,
    position INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS fq_flex_org ON fq_flex (org, position);
-- Recorded facts for charts and explanations: pending and running per org over
-- time, throttle periods, extended delays.
CREATE TABLE IF NOT EXISTS fq_history (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    at      REAL    NOT NULL,
    kind    TEXT    NOT NULL,
    org     TEXT,
    value   REAL    NOT NULL,
    figures TEXT    NOT NULL
);
CREATE INDEX IF NOT EXISTS fq_history_at ON fq_history (at)
""",
}
# Version 3: the lease sweep reads the small index of processing jobs (fq_jobs_processing);
# a separate index of their lease times cost an insert and a delete on every job. (It
# left the version-1 script above too, which every open re-runs.)
_MIGRATIONS[3] = "DROP INDEX IF EXISTS fq_jobs_leases"
# Version 4: the worker registry (each worker's proof of life is a lock file beside the
# store, see lock_files), and the count of worker deaths each job was running at.
_MIGRATIONS[4] = """
CREATE TABLE IF NOT EXISTS fq_workers (
    name       TEXT    PRIMARY KEY,
    host       TEXT    NOT NULL,
    pid        INTEGER NOT NULL,
    mode       TEXT    NOT NULL,
    slots      INTEGER NOT NULL,
    started_at REAL    NOT NULL,
    last_seen  REAL    NOT NULL,
    lock_token TEXT    NOT NULL,
    alone      INTEGER
);
ALTER TABLE fq_jobs ADD COLUMN worker_deaths INTEGER NOT NULL DEFAULT 0
"""
# Version 5: the job lifecycle — handler attempts apart from deliveries, every
# attempt's error, and the handler's result.
_MIGRATIONS[5] = """
ALTER TABLE fq_jobs ADD COLUMN handler_attempts INTEGER NOT NULL DEFAULT 0;
ALTER TABLE fq_jobs ADD COLUMN result TEXT;
ALTER TABLE fq_jobs ADD COLUMN errors TEXT;
-- Retention deletes each status's finished jobs oldest first.
CREATE INDEX IF NOT EXISTS fq_jobs_status_finished ON fq_jobs (status, finished_at) WHERE finished_at IS NOT NULL
"""
# Version 6: alerts once per fleet — each (condition, org) episode's state, which one
# worker's conditional update flips — and the durable outbox of webhook deliveries.
_MIGRATIONS[6] = """
CREATE TABLE IF NOT EXISTS fq_alert_episodes (
    key           TEXT    PRIMARY KEY,
    open          INTEGER NOT NULL,
    opened_at     REAL,
    closed_at     REAL,
    last_event_id TEXT    NOT NULL
);
CREATE TABLE IF NOT EXISTS fq_webhook_outbox (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id        TEXT    NOT NULL,
    url             TEXT    NOT NULL,
    body            TEXT    NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL,
    delivered_at    REAL,
    last_error      TEXT,
    created_at      REAL    NOT NULL,
    UNIQUE (event_id, url)
);
-- The deliveries still to make, by when they are due.
CREATE INDEX IF NOT EXISTS fq_webhook_outbox_due ON fq_webhook_outbox (next_attempt_at) WHERE next_attempt_at IS NOT NULL
"""
# Version 7: flow control inside a tenant and tenant settings that live in the store —
# each job's named queue, concurrency key, priority and cost; the stored settings
# (per org, (org, kind), (org, key), tier, queue) with the version every change bumps;
# each rate limit's state (GCRA's theoretical arrival time); the queues a worker serves.
_MIGRATIONS[7] = """
ALTER TABLE fq_jobs ADD COLUMN queue TEXT NOT NULL DEFAULT 'default';
ALTER TABLE fq_jobs ADD COLUMN key TEXT;
ALTER TABLE fq_jobs ADD COLUMN priority INTEGER NOT NULL DEFAULT 5;
ALTER TABLE fq_jobs ADD COLUMN cost INTEGER NOT NULL DEFAULT 1;
-- Claims count each capped org's and key's processing jobs.
CREATE INDEX IF NOT EXISTS fq_jobs_processing_key ON fq_jobs (org, key) WHERE status = 'processing';
-- A claim that lost a job to another process takes a stand-in from the same line
-- (org, kind, key, queue), highest priority first, through this index (the pair's
-- index it replaces left the key to a filter: a scan of a flood for a quiet key).
DROP INDEX IF EXISTS fq_jobs_pair_queued;
CREATE INDEX IF NOT EXISTS fq_jobs_line_queued ON fq_jobs (org, kind, key, queue, priority DESC, id) WHERE status = 'queued';
CREATE TABLE IF NOT EXISTS fq_settings (
    scope      TEXT NOT NULL,
    name       TEXT NOT NULL,
    kind       TEXT NOT NULL DEFAULT '',
    key        TEXT NOT NULL DEFAULT '',
    vals       TEXT NOT NULL,
    updated_at REAL NOT NULL,
    updated_by TEXT,
    PRIMARY KEY (scope, name, kind, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS fq_settings_version (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    version INTEGER NOT NULL
);
INSERT OR IGNORE INTO fq_settings_version (id, version) VALUES (1, 0);
CREATE TABLE IF NOT EXISTS fq_rate_state (
    scope TEXT PRIMARY KEY,
    tat   REAL NOT NULL
) WITHOUT ROWID;
ALTER TABLE fq_workers ADD COLUMN queues TEXT
"""
# Version 8: each schedule's queue, priority and cost (its fires carry them); one index
# less for every outcome to write — the finish-time index repeats
# fq_jobs_status_finished (status, finished_at), which the reads of jobs finished since
# a time take a range per finished status of. (PostgreSQL's version 8 also reads the
# daily usage under the enqueue's locks in one statement; one writer needs nothing.)
_MIGRATIONS[8] = """
DROP INDEX IF EXISTS fq_jobs_finished;
-- A schedule's fires wait in its job class's queue, with its priority and cost.
ALTER TABLE fq_triggers ADD COLUMN queue TEXT NOT NULL DEFAULT 'default';
ALTER TABLE fq_triggers ADD COLUMN priority INTEGER NOT NULL DEFAULT 5;
ALTER TABLE fq_triggers ADD COLUMN cost INTEGER NOT NULL DEFAULT 1
"""
# Version 9 is PostgreSQL's alone (its enqueue's usage function plans once per
# session); the embedded store's schema is unchanged.
_MIGRATIONS[9] = ""
assert max(_MIGRATIONS) == SCHEMA_VERSION, "every schema version needs its migration"

_COLUMNS = (
    "id, org, kind, handler, payload, status, created_at, run_at, started_at, finished_at, attempts, "
    "items_processed, items_total, error_count, extended_status, parent_id, chain_depth, "
    "duplicate_signature, lease_owner, lease_expires_at, cancel_requested, handler_attempts, result, errors, worker_deaths, "
    "queue, key, priority, cost"
)

# SQLite's default limit on bound parameters is 32,766; stay far below it.
_CHUNK = 500


_FIELDS = tuple(name.strip() for name in _COLUMNS.split(","))


_TRIGGER_COLUMNS = (
    "id, org, name, cron, timezone, handler, payload, state, created_at, next_fire_at, previous_fire_at, "
    "times_fired, last_job_id, queue, priority, cost"
)


def _trigger(row: sqlite3.Row) -> TriggerRecord:
    values = list(row)
    values[7] = TriggerState(values[7])
    return TriggerRecord(*values)


# One query per live status, its literal matching a partial index's condition, so
# the counts read those indexes and never the finished jobs.
LIVE_COUNTS = " UNION ALL ".join(
    f"SELECT org, kind, '{status.value}', COUNT(*) FROM fq_jobs WHERE status = '{status.value}' GROUP BY org, kind"
    for status in LIVE_STATUSES
)


# What explain needs, read through indexes whose size follows the backlog or the
# recent window, never through the store's whole history (alerts ask every second).
# The finished jobs are read a range per finished status of (status, finished_at).
WAITING_FACTS = """SELECT
    (SELECT COUNT(*) FROM fq_jobs INDEXED BY fq_jobs_line_queued
     WHERE status = 'queued' AND org = ? AND kind = ? AND id < ?),
    (SELECT COUNT(*) FROM fq_jobs INDEXED BY fq_jobs_queued
     WHERE status = 'queued' AND id < ? AND (run_at IS NULL OR run_at <= ?)),
    (SELECT COUNT(*) FROM fq_jobs INDEXED BY fq_jobs_status_finished
     WHERE status IN (_FINISHED_) AND finished_at >= ? AND org = ? AND kind = ?),
    (SELECT COUNT(*) FROM fq_jobs INDEXED BY fq_jobs_status_finished WHERE status IN (_FINISHED_) AND finished_at >= ?),
    (SELECT COUNT(*) FROM fq_jobs WHERE status = 'processing'),
    (SELECT MIN(finished_at) FROM fq_jobs INDEXED BY fq_jobs_status_finished
     WHERE status IN (_FINISHED_) AND finished_at >= ?),
    (SELECT COUNT(*) FROM (SELECT org, kind FROM fq_jobs WHERE status = 'queued'
                           UNION SELECT org, kind FROM fq_jobs WHERE status = 'processing'))""".replace("_FINISHED_", FINISHED_SQL)


def _is_plain(f: Finish) -> bool:
    """A completion with nothing to store but its end (most outcomes)."""
    return (f.status is JobStatus.COMPLETED and f.error is None and f.result is None and not f.children
            and f.progress is None)  # fmt: skip


def _unlimited(admission: Optional[Admission]) -> bool:
    """Whether a claim under ``admission`` has no cap, rate limit or pause to check."""
    return admission is None or not (
        admission.pair_caps or admission.org_caps or admission.key_caps or admission.rates or admission.paused
    )


def _record(row: Sequence[Any]) -> JobRecord:
    # Built field by field rather than through __init__: the worker reads many
    # records per second and the values come from our own schema.
    record = JobRecord.__new__(JobRecord)
    values = record.__dict__
    values.update(zip(_FIELDS, row))
    status = _STATUSES.get(values["status"])
    if status is None:
        statuses = ", ".join(s.value for s in JobStatus)
        raise MalformedRecord(f"job {values['id']}'s stored status {values['status']!r} is not one of {statuses}")
    values["status"] = status
    values["cancel_requested"] = bool(values["cancel_requested"])
    return record


# A status by its stored value (a dictionary lookup: JobStatus(value) costs a microsecond a record).
_STATUSES = {s.value: s for s in JobStatus}


_SETTINGS_VERSION = "SELECT version FROM fq_settings_version WHERE id = 1"

# A worker's registry row (the values of _worker_row, then last seen and its lock's token).
_WORKER_INSERT = (
    "INSERT INTO fq_workers (name, host, pid, mode, slots, started_at, queues, last_seen, lock_token) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def _worker_row(worker: WorkerInfo) -> tuple[Any, ...]:
    queues = None if worker.queues is None else _JSON.encode(list(worker.queues))
    return (worker.name, worker.host, worker.pid, worker.mode, worker.slots, worker.started_at, queues)


# An outcome's handler attempt: counted if the handler ran, its error (if any) appended.
_ATTEMPT = (
    "handler_attempts = handler_attempts + ?, "
    "errors = CASE WHEN ? IS NULL THEN errors ELSE json_insert(COALESCE(errors, '[]'), '$[#]', json(?)) END"
)

# Jobs whose lease lapsed, read every second by every worker: through the index of
# processing jobs (a few per slot), never the table.
EXPIRED = (
    "SELECT id FROM fq_jobs INDEXED BY fq_jobs_processing WHERE status = 'processing' AND lease_expires_at < ? ORDER BY id"
)


def list_sql(where: str, status: Optional[JobStatus]) -> str:
    # "+id" keeps SQLite off the rowid order, so a status of FEW_STATUSES is read
    # through its partial index and sorted (see FEW_STATUSES).
    order = "+id" if status in FEW_STATUSES else "id"
    return f"SELECT {_COLUMNS} FROM fq_jobs WHERE {where} ORDER BY {order} DESC LIMIT ?"


def storage_error(
    error: sqlite3.Error, path: Path, *, jobs: Sequence[NewJob] = (), opening: bool = False
) -> FairQueueError:
    """The fairqueue error to raise (``from error``) for a sqlite3 error: the embedded
    store's one translation, as the PostgreSQL store's is ``postgres.errors.translate``.

    Args:
        error: what sqlite3 raised.
        path: the store's file.
        jobs: the jobs the operation was storing: a constraint they broke (the
            unique index of live duplicate signatures, the one a store of jobs
            can break) becomes :class:`DuplicateSignature` naming their signatures.
        opening: the store was being opened.
    """
    if isinstance(error, sqlite3.OperationalError) and "no such function: json" in str(error):
        return StorageError(
            f"this Python's SQLite {sqlite3.sqlite_version} has no JSON functions, which the embedded store's "
            "bulk enqueue uses: use a Python whose SQLite is 3.38 or newer (or was built with JSON1)"
        )
    if isinstance(error, sqlite3.IntegrityError) and jobs:
        signatures = [j.duplicate_signature for j in jobs if j.duplicate_signature]
        return DuplicateSignature(
            f"a job with duplicate signature among {signatures!r} is already holding, queued or running; "
            "nothing was enqueued"
        )
    code = getattr(error, "sqlite_errorcode", 0) & 0xFF  # the primary result code
    if code == _SQLITE_FULL:
        return StorageFull(f"store {str(path)!r}: the disk is full ({error}); free space on its volume: nothing was written")
    if code in (_SQLITE_CORRUPT, _SQLITE_NOTADB):
        return StorageCorrupt(
            f"store {str(path)!r} is damaged ({error}): restore it from a backup, or move it away to start an empty "
            "store; fairqueue will not write to it"
        )
    if code in (_SQLITE_BUSY, _SQLITE_LOCKED):
        return StorageUnavailable(f"store {str(path)!r} stayed locked by another process for 30 s ({error}); try again")
    if opening:
        return StorageError(f"cannot open store {str(path)!r}: {error}")
    return StorageError(f"store {str(path)!r}: {type(error).__name__}: {error}")


# SQLite's primary result codes (sqlite3.h) that storage_error tells apart.
_SQLITE_BUSY, _SQLITE_LOCKED, _SQLITE_CORRUPT, _SQLITE_FULL, _SQLITE_NOTADB = 5, 6, 11, 13, 26


class SQLiteStorage(Storage):
    """A store in one local SQLite file (created on first use).

    Args:
        path: the database file; its directory must exist.
    """

    native_turns = True  # fairqueue._core.EmbeddedTurns.worker_turn

    def __init__(self, path: Union[str, Path]) -> None:
        self.path = Path(path)
        if not self.path.parent.is_dir():
            raise StorageError(f"cannot create store {str(self.path)!r}: directory {str(self.path.parent)!r} does not exist")
        self._lock = threading.Lock()
        self._workers_folder = self.path.with_name(self.path.name + "-workers")
        self._registered: dict[str, tuple[WorkerInfo, HeldLock]] = {}
        self._finished = FinishedFanout()  # this process's waiters (job_finished_subscribe)
        try:
            self._db = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False, timeout=30.0)
        except sqlite3.Error as e:
            raise storage_error(e, self.path, opening=True) from e
        self._db.row_factory = sqlite3.Row
        self._durable = True
        try:
            try:
                # The bulk enqueue needs SQLite's JSON functions: refused now, not at the first enqueue.
                self._db.execute("SELECT json_valid('[]')")
                # Only a file with no tables yet takes this (an older store needs `fairqueue db
                # vacuum` once): the pruner can then hand freed pages back (space_reclaim).
                self._db.execute("PRAGMA auto_vacuum = INCREMENTAL")
                self._db.execute("PRAGMA journal_mode = WAL")
                self._db.execute("PRAGMA synchronous = FULL")
                self._db.execute("PRAGMA busy_timeout = 30000")
                # A damaged file is refused now, by every entry point, rather than
                # half-read later (it reads the whole file: milliseconds per MB).
                problems = [" ".join(str(row[0]).split()) for row in self._db.execute("PRAGMA quick_check(5)")]
            except sqlite3.Error as e:
                raise storage_error(e, self.path, opening=True) from e
            if problems != ["ok"]:
                raise StorageCorrupt(
                    f"store {str(self.path)!r} is damaged ({'; '.join(problems)}): restore it from a backup, or move "
                    "it away to start an empty store; fairqueue will not write to it"
                )
            self._create_or_check_schema()
            # The pick-up's and the worker turn's statements, run in Rust on a connection
            # of their own (see fairqueue._core.EmbeddedTurns): the same schema and file.
            self._turns = self._native(lambda: EmbeddedTurns(str(self.path), _COLUMNS), opening=True)
        except BaseException:
            self._db.close()
            raise

    def _create_or_check_schema(self) -> None:
        with self._transaction(durable=True) as db:
            for statement in filter(str.strip, _SCHEMA.split(";")):
                db.execute(statement)
            row = db.execute("SELECT value FROM fq_meta WHERE key = 'schema_version'").fetchone()
            if row is None:
                db.execute("INSERT INTO fq_meta (key, value) VALUES ('schema_version', '1')")
                db.execute("INSERT INTO fq_meta (key, value) VALUES ('ready_seq', '0')")
                version = 1
            else:
                version = int(row["value"])
            if version > SCHEMA_VERSION:
                raise SchemaVersionError(
                    f"store {str(self.path)!r} has schema version {version}, newer than this fairqueue's "
                    f"{SCHEMA_VERSION}: upgrade fairqueue to use it"
                )
            for target in range(version + 1, SCHEMA_VERSION + 1):
                for statement in filter(str.strip, _MIGRATIONS[target].split(";")):
                    db.execute(statement)
            if version < SCHEMA_VERSION:
                db.execute("UPDATE fq_meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION),))

    def _native(self, call: Callable[[], _T], opening: bool = False) -> _T:
        """Runs a call of the Rust statements, translating SQLite's errors as the Python ones are."""
        try:
            return call()
        except sqlite3.Error as e:
            message, code = e.args if len(e.args) == 2 else (str(e), 0)
            error = sqlite3.OperationalError(message)
            error.sqlite_errorcode = code
            raise storage_error(error, self.path, opening=opening) from None

    @contextmanager
    def _transaction(self, durable: bool = False, jobs: Sequence[NewJob] = ()) -> Iterator[sqlite3.Connection]:
        """One write transaction, taken up front so it never fails half-way on a lock upgrade.

        ``durable`` transactions (enqueues) fsync before they return. The others
        (claims, outcomes, lease changes) survive a killed process but may be lost
        to a power cut; losing one only makes a job run again, which at-least-once
        delivery allows, so they skip the fsync.

        A sqlite3 error is translated (:func:`storage_error`; ``jobs``, the jobs
        the transaction stores, name the signatures of a duplicate).
        """
        with self._lock:
            try:
                if durable != self._durable:
                    self._db.execute(f"PRAGMA synchronous = {'FULL' if durable else 'NORMAL'}")
                    self._durable = durable
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    yield self._db
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
                self._db.execute("COMMIT")
            except sqlite3.Error as e:
                raise storage_error(e, self.path, jobs=jobs) from e

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        """The rows of one statement (its own transaction)."""
        with self._lock:
            try:
                return self._db.execute(sql, params).fetchall()
            except sqlite3.Error as e:
                raise storage_error(e, self.path) from e

    @staticmethod
    def _take_ready_seqs(db: sqlite3.Connection, n: int) -> int:
        """Reserves ``n`` ready sequence numbers; returns the first. Call inside a write transaction."""
        last = int(db.execute("SELECT value FROM fq_meta WHERE key = 'ready_seq'").fetchone()[0])
        db.execute("UPDATE fq_meta SET value = ? WHERE key = 'ready_seq'", (str(last + n),))
        return last + 1

    @staticmethod
    def _usage_of(db: sqlite3.Connection, org: str, now: float) -> DailyUsage:
        row = db.execute(
            "SELECT COALESCE(SUM(count), 0), MIN(hour) FROM fq_usage WHERE org = ? AND hour >= ?",
            (org, DailyUsage.window_start(now)),
        ).fetchone()
        return DailyUsage(org, int(row[0]), row[1])

    @classmethod
    def _insert(cls, db: sqlite3.Connection, jobs: Sequence[NewJob], now: float) -> list[int]:
        hour = usage_hour(now)
        per_org: dict[str, int] = {}
        for j in jobs:
            per_org[j.org] = per_org.get(j.org, 0) + 1
        db.executemany(
            "INSERT INTO fq_usage (org, hour, count) VALUES (?, ?, ?) "
            "ON CONFLICT (org, hour) DO UPDATE SET count = count + excluded.count",
            [(org, hour, n) for org, n in per_org.items()],
        )
        statuses = (
            flex_admit(jobs, lambda org: cls._flex_counts(db, org))
            if any(j.kind == "batch" for j in jobs)
            else [JobStatus.QUEUED] * len(jobs)
        )
        first_seq = cls._take_ready_seqs(db, len(jobs))
        singles: list[tuple[Any, ...]] = []
        for start, end in _runs(jobs, statuses):
            job, status = jobs[start], statuses[start]
            seq = first_seq + start if status is JobStatus.QUEUED else None
            if end - start == 1:
                # NewJob's fields are the columns' order, around status and created_at.
                singles.append((*job[:4], _STATUS_TEXT[status], now, *job[4:], seq))
                continue
            if singles:
                db.executemany(_INSERT_ROW, singles)
                singles = []
            # One statement per _RUN_BYTES of the run: the payloads as one JSON array of
            # strings (each stored exactly as given), the other columns bound once.
            low = start
            while low < end:
                high, size = low + 1, len(jobs[low].payload)
                while high < end and size + len(jobs[high].payload) <= _RUN_BYTES:
                    size += len(jobs[high].payload)
                    high += 1
                db.execute(
                    _INSERT_RUN,
                    (job.org, job.kind, job.handler, _STATUS_TEXT[status], now, job.run_at, job.parent_id,
                     job.chain_depth, job.duplicate_signature, job.queue, job.key, job.priority, job.cost,
                     None if seq is None else seq + low - start,
                     _JSON.encode([j.payload for j in jobs[low:high]])),
                )  # fmt: skip
                low = high
        if singles:
            db.executemany(_INSERT_ROW, singles)
        # AUTOINCREMENT hands out consecutive ids inside one write transaction.
        last = db.execute("SELECT last_insert_rowid()").fetchone()[0]
        ids = list(range(last - len(jobs) + 1, last + 1))
        for job_id, j, status in zip(ids, jobs, statuses):
            if status is JobStatus.HOLDING:
                db.execute(
                    "INSERT INTO fq_flex (job_id, org, position) "
                    "SELECT ?, ?, COALESCE(MAX(position), 0) + 1 FROM fq_flex WHERE org = ?",
                    (job_id, j.org, j.org),
                )
        return ids

    @staticmethod
    def _flex_counts(db: sqlite3.Connection, org: str) -> tuple[int, int]:
        # One count per status, each through its partial index (never the org's history).
        active = db.execute(
            "SELECT (SELECT COUNT(*) FROM fq_jobs WHERE org = ? AND kind = 'batch' AND status = 'queued') "
            "+ (SELECT COUNT(*) FROM fq_jobs WHERE org = ? AND kind = 'batch' AND status = 'processing')",
            (org, org),
        ).fetchone()[0]
        holding = db.execute("SELECT COUNT(*) FROM fq_flex WHERE org = ?", (org,)).fetchone()[0]
        return int(active), int(holding)

    @classmethod
    def _promote(cls, db: sqlite3.Connection, org: str) -> None:
        """Starts ``org``'s next holding batch if it has room for one."""
        if cls._flex_counts(db, org)[0] >= FLEX_ACTIVE:
            return
        row = db.execute("SELECT job_id FROM fq_flex WHERE org = ? ORDER BY position LIMIT 1", (org,)).fetchone()
        if row is None:
            return
        db.execute("DELETE FROM fq_flex WHERE job_id = ?", (row[0],))
        db.execute(
            "UPDATE fq_jobs SET status = 'queued', ready_seq = ? WHERE id = ?", (cls._take_ready_seqs(db, 1), row[0])
        )

    def job_finished_subscribe(self, callback: FinishedCallback) -> Optional[Callable[[], None]]:
        """See :meth:`Storage.job_finished_subscribe`: hears the outcomes stored by this
        process only (a worker in another process sharing the file is not heard), so
        :attr:`hears_every_finish` is False."""
        return self._finished.subscribe(callback)

    def job_enqueue(
        self, jobs: Sequence[NewJob], now: float, daily_limits: Optional[Mapping[str, int]] = None
    ) -> list[int]:
        if not jobs:
            return []
        with self._transaction(durable=True, jobs=jobs) as db:
            if daily_limits:
                check_daily_limits(jobs, daily_limits, lambda org: self._usage_of(db, org, now), now)
            return self._insert(db, jobs, now)

    def usage_daily(self, org: str, now: float) -> DailyUsage:
        with self._lock:
            try:
                return self._usage_of(self._db, org, now)
            except sqlite3.Error as e:
                raise storage_error(e, self.path) from e

    def job_signature_taken(self, signature: str) -> bool:
        sql = f"SELECT 1 FROM fq_jobs WHERE duplicate_signature = ? AND status IN {_LIVE}"
        return bool(self._read(sql, (signature,)))

    def job_cancel_requested(self, job_ids: Sequence[int]) -> list[int]:
        asked = list(job_ids)
        found: list[int] = []
        for start in range(0, len(asked), _CHUNK):
            chunk = asked[start : start + _CHUNK]
            marks = ", ".join("?" * len(chunk))
            found += [r[0] for r in self._read(f"SELECT id FROM fq_jobs WHERE id IN ({marks}) AND cancel_requested", chunk)]
        return sorted(found)

    def job_get(self, job_id: int) -> Optional[JobRecord]:
        rows = self._read(f"SELECT {_COLUMNS} FROM fq_jobs WHERE id = ?", (job_id,))
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
        where, params = job_filter("?", org, kind, status, before_id)
        return [_record(r) for r in self._read(list_sql(where, status), [*params, limit])]

    def job_pending(
        self, after_seq: int = 0, limit: Optional[int] = None, queues: Optional[Sequence[str]] = None
    ) -> list[PendingJob]:
        served = None if queues is None else _JSON.encode(list(queues))
        rows = self._native(lambda: self._turns.pending(after_seq, -1 if limit is None else limit, served))
        return [PendingJob(*r) for r in rows]

    def job_left_queue(self, since: float, worker: str) -> list[int]:
        rows = self._read(
            "SELECT id FROM fq_jobs INDEXED BY fq_jobs_processing WHERE status = 'processing' AND lease_owner IS NOT ? "
            f"UNION ALL SELECT id FROM fq_jobs INDEXED BY fq_jobs_status_finished WHERE status IN ({FINISHED_SQL}) AND finished_at >= ?",
            (worker, since),
        )
        return [r[0] for r in rows]

    def job_counts(self, live: bool = False) -> dict[tuple[str, str, JobStatus], int]:
        if live:
            rows = self._read(LIVE_COUNTS)
        else:
            rows = self._read("SELECT org, kind, status, COUNT(*) FROM fq_jobs GROUP BY org, kind, status")
        return {(org, kind, JobStatus(status)): n for org, kind, status, n in rows}

    def job_claim(
        self,
        job_ids: Sequence[int],
        worker: str,
        lease_until: float,
        now: float,
        admission: Optional[Admission] = None,
    ) -> Claimed:
        if _unlimited(admission):
            return self._native_turn([], list(job_ids), worker, lease_until, now, admission)[1]
        # The write transaction is taken up front, so the cap counts cannot change
        # before the claim commits: every process's claims take turns.
        with self._transaction() as db:
            return self._claim(db, list(job_ids), worker, lease_until, now, admission)

    def job_finish_and_claim(
        self,
        finishes: Sequence[Finish],
        job_ids: Sequence[int],
        worker: str,
        lease_until: float,
        now: float,
        admission: Optional[Admission] = None,
    ) -> tuple[list[int], Claimed]:
        check_finishes(finishes)
        if not finishes and not job_ids:
            return [], Claimed()
        if _unlimited(admission):
            return self._native_turn(finishes, list(job_ids), worker, lease_until, now, admission)
        with self._transaction() as db:
            applied = self._finish(db, finishes)
            return applied, self._claim(db, list(job_ids), worker, lease_until, now, admission)

    def _native_turn(
        self,
        finishes: Sequence[Finish],
        asked: list[int],
        worker: str,
        lease_until: float,
        now: float,
        admission: Optional[Admission],
    ) -> tuple[list[int], Claimed]:
        """A turn whose claim has no caps, rate limits or pauses to check: the plain
        outcomes and the claim in one transaction of the Rust statements, then any
        other outcome (and a batch job's plain one, whose end may promote its org's
        held batches) through the Python ones, in a transaction of its own."""
        plain = [(f.job_id, f.worker, f.at, f.ran) for f in finishes if _is_plain(f)]
        version = None if admission is None else admission.version
        applied, rows, stale = self._native(lambda: self._turns.turn(plain, asked, worker, lease_until, now, version))
        if applied and self._finished.listening:
            self._finished.publish(applied)
        done = set(applied)
        rest = [f for f in finishes if f.job_id not in done]
        if rest:
            with self._transaction() as db:
                done.update(self._finish(db, rest))
        if stale:
            return [f.job_id for f in finishes if f.job_id in done], Claimed(stale=True)
        return [f.job_id for f in finishes if f.job_id in done], Claimed([_record(r) for r in rows])

    def job_turn_in_line(
        self,
        line: SlotLine,
        core: Dispatcher,
        worker: str,
        lease: float,
        version: Optional[int],
        max_attempts: int,
        retry_delay: float,
        until: float,
    ) -> LineTurn:
        applied, not_applied, started, orgs, grants, rows, stale = self._native(
            lambda: self._turns.worker_turns(line, core, worker, lease, version, max_attempts, retry_delay, until)
        )
        if applied and self._finished.listening:
            self._finished.publish([job_id for _, job_id in applied])
        return LineTurn(applied, not_applied, started, orgs, grants, Claimed([_record(r) for r in rows], stale=stale))

    def claimed_record(self, row: tuple[Any, ...]) -> JobRecord:
        return _record(row)

    def _claim(
        self,
        db: sqlite3.Connection,
        asked: list[int],
        worker: str,
        lease_until: float,
        now: float,
        admission: Optional[Admission],
    ) -> Claimed:
        # The write transaction (BEGIN IMMEDIATE) serialises this claim with every other
        # claim and settings change of every process: what it reads below cannot go stale.
        if not asked:
            return Claimed()
        if admission is not None and admission.version is not None:
            if admission.version != db.execute(_SETTINGS_VERSION).fetchone()[0]:
                return Claimed(stale=True)
        lines = self._lines(db, asked)
        candidates = [Candidate(job_id, *lines[job_id][:5]) for job_id in asked if job_id in lines and lines[job_id][5]]
        candidates += self._stand_ins(db, asked, lines, now)
        if admission is not None:
            admitted = admit(candidates, self._held(db, candidates, admission),
                             self._tats(db, candidates, admission), admission, now)  # fmt: skip
            if admitted.tats:
                db.executemany(
                    "INSERT INTO fq_rate_state (scope, tat) VALUES (?, ?) "
                    "ON CONFLICT (scope) DO UPDATE SET tat = excluded.tat",
                    [(rate_scope_text(scope), tat) for scope, tat in admitted.tats.items()],
                )
            ids, at_cap, rate_limited, paused = admitted.ids, admitted.at_cap, admitted.rate_limited, admitted.paused
        else:
            ids, at_cap, rate_limited, paused = [c.id for c in candidates], [], {}, []
        asked_set = set(asked)
        claimed: list[JobRecord] = []
        for start in range(0, len(ids), _CHUNK):
            chunk = ids[start : start + _CHUNK]
            marks = ", ".join("?" * len(chunk))
            rows = db.execute(
                f"UPDATE fq_jobs SET status = 'processing', lease_owner = ?, lease_expires_at = ?, "
                f"started_at = COALESCE(started_at, ?), attempts = attempts + 1 "
                f"WHERE id IN ({marks}) AND status = 'queued' RETURNING {_COLUMNS}",
                [worker, lease_until, now, *chunk],
            ).fetchall()
            claimed.extend(_record(r) for r in rows)
        order = {job_id: i for i, job_id in enumerate(ids)}
        return Claimed(
            sorted(claimed, key=lambda r: order[r.id]),
            [job_id for job_id in at_cap if job_id in asked_set],
            {job_id: at for job_id, at in rate_limited.items() if job_id in asked_set},
            paused=[job_id for job_id in paused if job_id in asked_set],
        )

    @staticmethod
    def _held(db: sqlite3.Connection, candidates: list[Candidate], admission: Admission) -> Held:
        """The processing jobs of each capped scope among ``candidates``."""
        pairs, orgs, keys = capped_scopes(candidates, admission)
        held = Held()
        for org, kind in pairs:
            held.pairs[(org, kind)] = db.execute(
                "SELECT COUNT(*) FROM fq_jobs WHERE status = 'processing' AND org = ? AND kind = ?", (org, kind)
            ).fetchone()[0]
        for org in orgs:
            held.orgs[org] = db.execute(
                "SELECT COUNT(*) FROM fq_jobs INDEXED BY fq_jobs_processing WHERE status = 'processing' AND org = ?",
                (org,),
            ).fetchone()[0]
        for org, key in keys:
            held.keys[(org, key)] = db.execute(
                "SELECT COUNT(*) FROM fq_jobs INDEXED BY fq_jobs_processing_key "
                "WHERE status = 'processing' AND org = ? AND key IS ?",
                (org, key),
            ).fetchone()[0]
        return held

    @staticmethod
    def _tats(db: sqlite3.Connection, candidates: list[Candidate], admission: Admission) -> dict[RateScope, float]:
        """The stored state of each rate-limited scope among ``candidates``."""
        tats: dict[RateScope, float] = {}
        for scope in rate_scopes(candidates, admission):
            row = db.execute("SELECT tat FROM fq_rate_state WHERE scope = ?", (rate_scope_text(scope),)).fetchone()
            if row is not None:
                tats[scope] = row[0]
        return tats

    @staticmethod
    def _lines(db: sqlite3.Connection, job_ids: list[int]) -> dict[int, tuple[str, str, Optional[str], int, str, bool]]:
        """Each stored job's (org, kind, key, cost, queue, still queued)."""
        found: dict[int, tuple[str, str, Optional[str], int, str, bool]] = {}
        for start in range(0, len(job_ids), _CHUNK):
            chunk = job_ids[start : start + _CHUNK]
            marks = ", ".join("?" * len(chunk))
            for row in db.execute(
                f"SELECT id, org, kind, key, cost, queue, status = 'queued' FROM fq_jobs WHERE id IN ({marks})", chunk
            ):
                found[row[0]] = (row[1], row[2], row[3], row[4], row[5], bool(row[6]))
        return found

    @staticmethod
    def _stand_ins(
        db: sqlite3.Connection,
        asked: list[int],
        lines: dict[int, tuple[str, str, Optional[str], int, str, bool]],
        now: float,
    ) -> list[Candidate]:
        """For each asked job another process took meanwhile, its line's highest-priority
        (then oldest) ready queued job that was not asked for (see
        :meth:`Storage.job_claim`): same org, kind, key and queue, so it falls under the
        same limits."""
        lost: dict[tuple[str, str, Optional[str], str], int] = {}
        for job_id in asked:
            if job_id in lines and not lines[job_id][5]:
                org, kind, key, _, queue, _ = lines[job_id]
                lost[(org, kind, key, queue)] = lost.get((org, kind, key, queue), 0) + 1
        if not lost:
            return []
        skip = set(asked)
        stand_ins: list[Candidate] = []
        for (org, kind, key, queue), n in lost.items():
            rows = db.execute(
                "SELECT id, cost FROM fq_jobs INDEXED BY fq_jobs_line_queued WHERE org = ? AND kind = ? AND key IS ? "
                "AND queue = ? AND status = 'queued' AND (run_at IS NULL OR run_at <= ?) ORDER BY priority DESC, id LIMIT ?",
                (org, kind, key, queue, now, n + len(skip)),
            )
            stand_ins += [Candidate(job_id, org, kind, key, cost, queue) for job_id, cost in rows if job_id not in skip][:n]
        return stand_ins

    def job_heartbeat(self, job_ids: Sequence[int], worker: str, lease_until: float) -> None:
        with self._transaction() as db:
            db.executemany(
                "UPDATE fq_jobs SET lease_expires_at = ? WHERE id = ? AND status = 'processing' AND lease_owner = ?",
                [(lease_until, job_id, worker) for job_id in job_ids],
            )

    def job_finish(self, finishes: Sequence[Finish]) -> list[int]:
        check_finishes(finishes)
        with self._transaction() as db:
            return self._finish(db, finishes)

    def _finish(self, db: sqlite3.Connection, finishes: Sequence[Finish]) -> list[int]:
        applied: list[int] = []
        # Plain successes (no error, no children) are the bulk: one statement per finish time.
        plain: dict[tuple[float, bool], list[Finish]] = {}
        rest: list[Finish] = []
        for f in finishes:
            if _is_plain(f):
                plain.setdefault((f.at, f.ran), []).append(f)
            else:
                rest.append(f)
        for (at, ran), group in plain.items():
            for start in range(0, len(group), _CHUNK):
                chunk = group[start : start + _CHUNK]
                conditions = " OR ".join("(id = ? AND lease_owner = ?)" for _ in chunk)
                owners = [value for f in chunk for value in (f.job_id, f.worker)]
                rows = db.execute(
                    f"UPDATE fq_jobs SET status = 'completed', finished_at = ?, lease_owner = NULL, "
                    f"lease_expires_at = NULL, handler_attempts = handler_attempts + ? "
                    f"WHERE status = 'processing' AND ({conditions}) RETURNING id, kind, org",
                    [at, ran, *owners],
                ).fetchall()
                applied.extend(r[0] for r in rows)
                for org in sorted({r[2] for r in rows if r[1] == "batch"}):
                    self._promote(db, org)
        retried = sum(f.status is JobStatus.QUEUED for f in rest)
        next_seq = self._take_ready_seqs(db, retried) if retried else 0
        for f in rest:
            attempt = (f.ran, f.attempt_error, f.attempt_error)
            if f.status is JobStatus.QUEUED:
                sql = (
                    "UPDATE fq_jobs SET status = 'queued', run_at = ?, lease_owner = NULL, lease_expires_at = NULL, "
                    "extended_status = ?, error_count = error_count + (? IS NOT NULL AND NOT ?), ready_seq = ?, "
                    f"attempts = MAX(attempts - ?, 0), {_ATTEMPT} WHERE id = ? AND status = 'processing' AND lease_owner = ?"
                )
                params: tuple[Any, ...] = (f.retry_at, f.error, f.error, f.given_back, next_seq, f.given_back,
                                           *attempt, f.job_id, f.worker)  # fmt: skip
                next_seq += 1
            else:
                sql = (
                    "UPDATE fq_jobs SET status = ?, finished_at = ?, lease_owner = NULL, lease_expires_at = NULL, "
                    "extended_status = COALESCE(?, extended_status), error_count = error_count + (? IS NOT NULL), "
                    f"result = ?, {_ATTEMPT} WHERE id = ? AND status = 'processing' AND lease_owner = ?"
                )
                params = (f.status.value, f.at, f.error, f.error, f.result, *attempt, f.job_id, f.worker)
            if not db.execute(sql, params).rowcount:
                continue
            applied.append(f.job_id)
            if f.progress is not None:
                self._apply_progress(db, f)
            self._insert_children(db, f)
            if f.status is not JobStatus.QUEUED:
                row = db.execute("SELECT kind, org FROM fq_jobs WHERE id = ?", (f.job_id,)).fetchone()
                if row["kind"] == "batch":
                    self._promote(db, row["org"])
        done = set(applied)
        if self._finished.listening:  # in-process waiters read once the commit lets go of the lock
            self._finished.publish([f.job_id for f in finishes if f.job_id in done and f.status is not JobStatus.QUEUED])
        return [f.job_id for f in finishes if f.job_id in done]

    @staticmethod
    def _apply_progress(db: sqlite3.Connection, f: Finish) -> None:
        p = f.progress
        assert p is not None
        db.execute(
            "UPDATE fq_jobs SET payload = ?, items_processed = ?, items_total = ?, error_count = ?, "
            "attempts = CASE WHEN status = 'queued' THEN 0 ELSE attempts END WHERE id = ?",
            (p.payload, p.items_processed, p.items_total, p.error_count, f.job_id),
        )
        db.executemany(
            "INSERT INTO fq_batch_errors (job_id, org, phase, chunk, record_ids, exception_type, message, traceback, at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [(e.job_id, e.org, e.phase, e.chunk, json.dumps(e.record_ids), e.exception_type, e.message, e.traceback, e.at)
             for e in p.errors],
        )  # fmt: skip

    def history_append(self, entries: Sequence[HistoryEntry]) -> None:
        with self._transaction() as db:
            db.executemany(
                "INSERT INTO fq_history (at, kind, org, value, figures) VALUES (?, ?, ?, ?, ?)",
                [(e.at, e.kind, e.org, e.value, json.dumps(e.figures)) for e in entries],
            )

    def history_read(self, since: float, kinds: Optional[Sequence[str]] = None) -> list[HistoryEntry]:
        rows = self._read("SELECT at, kind, org, value, figures FROM fq_history WHERE at >= ? ORDER BY at, id", (since,))
        return [HistoryEntry(r[0], r[1], r[2], r[3], json.loads(r[4])) for r in rows if kinds is None or r[1] in kinds]

    def job_waiting_facts(self, record: JobRecord, now: float, window: float) -> WaitingFacts:
        since = now - window
        with self._lock:
            try:
                counts = self._db.execute(
                    WAITING_FACTS,
                    (record.org, record.kind, record.id, record.id, now, since, record.org, record.kind, since, since),
                ).fetchone()
                holders = [r[0] for r in self._db.execute(
                    "SELECT id FROM fq_jobs WHERE status = 'processing' AND org = ? AND kind = ? ORDER BY id",
                    (record.org, record.kind),
                )]  # fmt: skip
            except sqlite3.Error as e:
                raise storage_error(e, self.path) from e
        return WaitingFacts(counts[0], counts[1], holders, counts[2], counts[3], counts[4], counts[5], counts[6])

    def flex_list(self, org: str) -> list[JobRecord]:
        rows = self._read(
            f"SELECT {', '.join('j.' + c for c in _COLUMNS.split(', '))} FROM fq_flex f JOIN fq_jobs j ON j.id = f.job_id "
            "WHERE f.org = ? ORDER BY f.position",
            (org,),
        )
        return [_record(r) for r in rows]

    def flex_move(self, job_id: int, org: str, *, before: Optional[int] = None, after: Optional[int] = None,
                  to: Optional[str] = None) -> list[int]:  # fmt: skip
        with self._transaction(durable=True) as db:
            current = [r[0] for r in db.execute("SELECT job_id FROM fq_flex WHERE org = ? ORDER BY position", (org,))]
            order = flex_order(current, job_id, before, after, to)
            db.executemany("UPDATE fq_flex SET position = ? WHERE job_id = ?", list(enumerate(order, start=1)))
            return order

    def batch_errors(self, job_id: int) -> list[BatchErrorEvent]:
        rows = self._read(
            "SELECT job_id, org, phase, chunk, record_ids, exception_type, message, traceback, at FROM fq_batch_errors "
            "WHERE job_id = ? ORDER BY id",
            (job_id,),
        )
        return [BatchErrorEvent(r[0], r[1], r[2], r[3], json.loads(r[4]), r[5], r[6], r[7], r[8]) for r in rows]

    def _insert_children(self, db: sqlite3.Connection, f: Finish) -> None:
        # A signature a live job holds, or an earlier child of this outcome, is taken.
        seen: set[str] = set()
        children, taken = [], []
        for c in f.children:
            signature = c.duplicate_signature
            if signature and (signature in seen or db.execute(
                f"SELECT 1 FROM fq_jobs WHERE duplicate_signature = ? AND status IN {_LIVE}", (signature,)
            ).fetchone()):  # fmt: skip
                taken.append(signature)
                continue
            if signature:
                seen.add(signature)
            children.append(c)
        if children:
            try:
                if f.daily_limits:
                    check_daily_limits(children, f.daily_limits, lambda org: self._usage_of(db, org, f.at), f.at)
                self._insert(db, children, f.at)
            except LimitExceeded as e:  # past the daily limit, or a batch child past a full flex queue
                db.execute("UPDATE fq_jobs SET extended_status = ? WHERE id = ?", (f"children not enqueued: {e}", f.job_id))
        if taken:
            db.execute(
                "UPDATE fq_jobs SET extended_status = ? WHERE id = ?",
                (f"child not enqueued: duplicate signature {taken!r} already queued or running", f.job_id),
            )

    def job_requeue_expired(self, now: float) -> list[int]:
        # Every worker asks every second: a read first, so a tick with nothing expired
        # takes no write lock from the other processes' claims.
        if not self._read(EXPIRED, (now,)):
            return []
        with self._transaction() as db:
            expired = [r["id"] for r in db.execute(EXPIRED, (now,))]
            if expired:
                first = self._take_ready_seqs(db, len(expired))
                db.executemany(
                    "UPDATE fq_jobs SET status = 'queued', lease_owner = NULL, lease_expires_at = NULL, "
                    "extended_status = 'lease expired; re-delivered', ready_seq = ? WHERE id = ?",
                    [(first + i, job_id) for i, job_id in enumerate(expired)],
                )
        return expired

    # ----- the worker registry ------------------------------------------------------------
    # A worker's proof of life is a lock file in the folder beside the store
    # (<store>-workers/<token>.lock, see lock_files): SQLite's workers share one host.

    def worker_register(self, worker: WorkerInfo, now: float) -> None:
        held = HeldLock(self._workers_folder)
        try:
            with self._transaction(durable=True) as db:
                row = db.execute("SELECT pid, host, lock_token FROM fq_workers WHERE name = ?", (worker.name,)).fetchone()
                if row is not None:
                    with probe(self._workers_folder, row["lock_token"]) as dead:
                        if not dead:
                            raise live_worker_named(worker.name, row["pid"], row["host"])
                        self._reap_one(db, worker.name, row["lock_token"], now, Reaped([], [], []))
                db.execute(_WORKER_INSERT, (*_worker_row(worker), now, held.token))
        except BaseException:
            held.release()
            raise
        self._registered[worker.name] = (worker, held)

    def worker_seen(self, name: str, now: float) -> bool:
        info, held = self._registered[name]
        intact = held.intact
        if not intact:
            # Someone deleted our lock file: nobody can see us alive. Take a new one.
            held.release()
            held = HeldLock(self._workers_folder)
            self._registered[name] = (info, held)
        with self._transaction() as db:
            seen = db.execute(
                "UPDATE fq_workers SET last_seen = ?, lock_token = ? WHERE name = ?", (now, held.token, name)
            ).rowcount
            if not seen:  # reaped meanwhile: register again
                db.execute(_WORKER_INSERT, (*_worker_row(info), now, held.token))
        return intact and bool(seen)

    def worker_alone(self, name: str, job_id: Optional[int]) -> None:
        with self._transaction() as db:
            db.execute("UPDATE fq_workers SET alone = ? WHERE name = ?", (job_id, name))

    def worker_list(self) -> list[WorkerRecord]:
        rows = self._read(
            "SELECT name, host, pid, mode, slots, started_at, queues, last_seen, lock_token FROM fq_workers ORDER BY name"
        )
        running: dict[str, int] = {r[0]: r[1] for r in self._read(
            "SELECT lease_owner, COUNT(*) FROM fq_jobs INDEXED BY fq_jobs_processing WHERE status = 'processing' "
            "GROUP BY lease_owner"
        )}  # fmt: skip
        records = []
        for r in rows:
            alive = r["name"] in self._registered
            if not alive:
                with probe(self._workers_folder, r["lock_token"]) as dead:
                    alive = not dead
            queues = None if r["queues"] is None else tuple(json.loads(r["queues"]))
            info = WorkerInfo(r["name"], r["host"], r["pid"], r["mode"], r["slots"], r["started_at"], queues)
            records.append(WorkerRecord(info, r["last_seen"], alive, running.get(r["name"], 0)))
        return records

    def worker_reap(self, now: float) -> Reaped:
        reaped = Reaped([], [], [])
        rows = self._read("SELECT name, lock_token FROM fq_workers")
        with ExitStack() as held:
            # Each dead worker's lock is held here until its reaping has committed.
            dead = [(r["name"], r["lock_token"]) for r in rows
                    if r["name"] not in self._registered and held.enter_context(probe(self._workers_folder, r["lock_token"]))]  # fmt: skip
            if dead:
                with self._transaction() as db:
                    for name, token in dead:
                        self._reap_one(db, name, token, now, reaped)
        return reaped

    def _reap_one(self, db: sqlite3.Connection, name: str, token: str, now: float, reaped: Reaped) -> None:
        """Removes dead worker ``name`` (registered with ``token``) and queues its jobs again."""
        row = db.execute(
            "DELETE FROM fq_workers WHERE name = ? AND lock_token = ? RETURNING mode, alone", (name, token)
        ).fetchone()
        if row is None:
            return  # another process reaped it first
        reaped.workers.append(name)
        jobs = db.execute(
            "SELECT id, org, kind, worker_deaths FROM fq_jobs INDEXED BY fq_jobs_processing "
            "WHERE status = 'processing' AND lease_owner = ? ORDER BY id",
            (name,),
        ).fetchall()
        first = self._take_ready_seqs(db, len(jobs)) if jobs else 0
        for i, job in enumerate(jobs):
            status, note, deaths = dead_worker_outcome(name, row["mode"], job["id"], job["worker_deaths"], row["alone"])
            if status is JobStatus.QUEUED:
                db.execute(
                    "UPDATE fq_jobs SET status = 'queued', lease_owner = NULL, lease_expires_at = NULL, "
                    "extended_status = ?, worker_deaths = ?, ready_seq = ? WHERE id = ?",
                    (note, deaths, first + i, job["id"]),
                )
                reaped.requeued.append(job["id"])
            else:
                db.execute(
                    "UPDATE fq_jobs SET status = 'failed', lease_owner = NULL, lease_expires_at = NULL, finished_at = ?, "
                    "extended_status = ?, worker_deaths = ?, error_count = error_count + 1 WHERE id = ?",
                    (now, note, deaths, job["id"]),
                )
                reaped.quarantined.append(job["id"])
                if job["kind"] == "batch":
                    self._promote(db, job["org"])

    def worker_leave(self, name: str) -> None:
        registered = self._registered.pop(name, None)
        if registered is None:
            return
        try:
            with self._transaction() as db:
                db.execute(
                    "DELETE FROM fq_workers WHERE name = ? AND NOT EXISTS (SELECT 1 FROM fq_jobs INDEXED BY "
                    "fq_jobs_processing WHERE status = 'processing' AND lease_owner = ?)",
                    (name, name),
                )
        finally:
            registered[1].release()

    # ----- alerts and the webhook outbox --------------------------------------------------

    def alert_episodes(self) -> dict[str, float]:
        return {row[0]: row[1] for row in self._read("SELECT key, opened_at FROM fq_alert_episodes WHERE open = 1")}

    def alert_episode_set(self, key: str, open: bool, now: float, event_id: str,
                          deliveries: Sequence[tuple[str, str]]) -> bool:  # fmt: skip
        # The one writer makes the read and the flip one step: of many workers, the first flips it.
        with self._transaction(durable=True) as db:
            row = db.execute("SELECT open FROM fq_alert_episodes WHERE key = ?", (key,)).fetchone()
            if (row is not None and bool(row[0])) == open:
                return False
            db.execute(
                "INSERT INTO fq_alert_episodes (key, open, opened_at, closed_at, last_event_id) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (key) DO UPDATE SET open = excluded.open, last_event_id = excluded.last_event_id, "
                "opened_at = coalesce(excluded.opened_at, opened_at), closed_at = excluded.closed_at",
                (key, int(open), now if open else None, None if open else now, event_id),
            )
            self._outbox_add(db, event_id, deliveries, now)
            return True

    def webhook_outbox_add(self, event_id: str, deliveries: Sequence[tuple[str, str]], now: float) -> None:
        with self._transaction(durable=True) as db:
            self._outbox_add(db, event_id, deliveries, now)

    @staticmethod
    def _outbox_add(db: sqlite3.Connection, event_id: str, deliveries: Sequence[tuple[str, str]], now: float) -> None:
        db.executemany(
            "INSERT INTO fq_webhook_outbox (event_id, url, body, next_attempt_at, created_at) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (event_id, url) DO NOTHING",
            [(event_id, url, body, now, now) for url, body in deliveries],
        )

    def webhook_outbox_claim(self, now: float, limit: int, hold: float) -> list[WebhookDelivery]:
        with self._transaction() as db:
            rows = db.execute(
                "UPDATE fq_webhook_outbox SET next_attempt_at = ? WHERE id IN (SELECT id FROM fq_webhook_outbox "
                "WHERE next_attempt_at <= ? ORDER BY next_attempt_at LIMIT ?) "
                "RETURNING id, event_id, url, body, attempts, created_at",
                (now + hold, now, limit),
            ).fetchall()
        return sorted((WebhookDelivery(*row) for row in rows), key=lambda d: d.id)

    def webhook_outbox_settle(self, delivery_id: int, now: float, error: Optional[str] = None,
                              retry_at: Optional[float] = None) -> None:  # fmt: skip
        with self._transaction() as db:
            db.execute(
                "UPDATE fq_webhook_outbox SET attempts = attempts + 1, next_attempt_at = ?, last_error = ?, "
                "delivered_at = ? WHERE id = ?",
                (retry_at if error is not None else None, error, now if error is None else None, delivery_id),
            )

    def webhook_outbox_prune(self, before: float, limit: int) -> int:
        with self._transaction() as db:
            return db.execute(
                "DELETE FROM fq_webhook_outbox WHERE id IN (SELECT id FROM fq_webhook_outbox "
                "WHERE next_attempt_at IS NULL AND created_at < ? ORDER BY id LIMIT ?)",
                (before, limit),
            ).rowcount

    # ----- tenant settings --------------------------------------------------------------------

    def settings_version(self) -> int:
        return int(self._read(_SETTINGS_VERSION)[0][0])

    def settings_read(self) -> tuple[int, list[SettingRow]]:
        # One read transaction: the rows and the version from one snapshot.
        with self._transaction() as db:
            version = int(db.execute(_SETTINGS_VERSION).fetchone()[0])
            rows = db.execute("SELECT scope, name, kind, key, vals, updated_at, updated_by FROM fq_settings").fetchall()
        return version, [SettingRow(r[0], r[1], r[2], r[3], json.loads(r[4]), r[5], r[6]) for r in rows]

    def rate_states(self, scopes: Sequence[RateScope]) -> dict[RateScope, float]:
        texts = {rate_scope_text(scope): scope for scope in scopes}
        marks = ", ".join("?" * len(texts))
        rows = self._read(f"SELECT scope, tat FROM fq_rate_state WHERE scope IN ({marks})", list(texts)) if texts else []
        return {texts[text]: tat for text, tat in rows}

    def settings_write(self, changes: Sequence[SettingChange], now: float, by: Optional[str] = None) -> int:
        with self._transaction(durable=True) as db:

            def current(where: tuple[str, str, str, str]) -> Optional[SettingRow]:
                row = db.execute(
                    "SELECT vals, updated_at, updated_by FROM fq_settings "
                    "WHERE scope = ? AND name = ? AND kind = ? AND key = ?",
                    where,
                ).fetchone()
                return None if row is None else SettingRow(*where, json.loads(row[0]), row[1], row[2])

            for change, merged in merge_settings(changes, current):
                where = (change.scope, change.name, change.kind, change.key)
                if merged:
                    db.execute(
                        "INSERT INTO fq_settings (scope, name, kind, key, vals, updated_at, updated_by) "
                        "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (scope, name, kind, key) "
                        "DO UPDATE SET vals = excluded.vals, updated_at = excluded.updated_at, updated_by = excluded.updated_by",
                        (*where, _JSON.encode(merged), now, by),
                    )
                else:
                    db.execute("DELETE FROM fq_settings WHERE scope = ? AND name = ? AND kind = ? AND key = ?", where)
            db.execute("UPDATE fq_settings_version SET version = version + 1 WHERE id = 1")
            return int(db.execute(_SETTINGS_VERSION).fetchone()[0])

    def job_rerun(self, job_ids: Sequence[int], now: float, org: Optional[str] = None) -> list[int]:
        ids = sorted(set(job_ids))
        queued: list[int] = []
        for start in range(0, len(ids), _CHUNK):
            chunk = ids[start : start + _CHUNK]
            marks = ", ".join("?" * len(chunk))
            with self._transaction(durable=True) as db:
                rows = db.execute(
                    f"SELECT id, status, extended_status FROM fq_jobs WHERE id IN ({marks}) AND status IN {_RERUNNABLE} "
                    f"AND kind <> 'batch' AND (? IS NULL OR org = ?) AND (duplicate_signature IS NULL OR NOT EXISTS "
                    f"(SELECT 1 FROM fq_jobs live WHERE live.duplicate_signature = fq_jobs.duplicate_signature "
                    f"AND live.status IN {_LIVE})) ORDER BY id",
                    (*chunk, org, org),
                ).fetchall()
                if not rows:
                    continue
                first = self._take_ready_seqs(db, len(rows))
                db.executemany(
                    "UPDATE fq_jobs SET status = 'queued', finished_at = NULL, run_at = NULL, handler_attempts = 0, "
                    "cancel_requested = 0, ready_seq = ?, extended_status = ? WHERE id = ?",
                    [(first + i, rerun_note(r["status"], r["extended_status"]), r["id"]) for i, r in enumerate(rows)],
                )
            queued += [r["id"] for r in rows]
        return queued

    def job_abort(self, job_id: int, now: float, org: Optional[str] = None) -> Optional[JobStatus]:
        with self._transaction(durable=True) as db:
            row = db.execute("SELECT org, kind, status FROM fq_jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None or (org is not None and row["org"] != org):
                return None
            status = JobStatus(row["status"])
            if status in (JobStatus.HOLDING, JobStatus.QUEUED):
                db.execute(
                    "UPDATE fq_jobs SET status = 'aborted', finished_at = ?, extended_status = 'aborted while waiting' "
                    "WHERE id = ?",
                    (now, job_id),
                )
                if status is JobStatus.HOLDING:
                    db.execute("DELETE FROM fq_flex WHERE job_id = ?", (job_id,))
                elif row["kind"] == "batch":
                    self._promote(db, row["org"])
                self._finished.publish((job_id,))
                return JobStatus.ABORTED
            if status in (JobStatus.PREPARING, JobStatus.PROCESSING):
                db.execute("UPDATE fq_jobs SET cancel_requested = 1 WHERE id = ?", (job_id,))
            return status

    def trigger_create(self, trigger: NewTrigger, now: float, max_per_org: int) -> int:
        with self._transaction(durable=True) as db:
            names = [r[0] for r in db.execute("SELECT name FROM fq_triggers WHERE org = ? AND state = 'waiting'", (trigger.org,))]
            if trigger.name in names:
                raise schedule_name_taken(trigger.org, trigger.name)
            if len(names) >= max_per_org:
                raise too_many_schedules(trigger.org, len(names), max_per_org)
            cursor = db.execute(
                "INSERT INTO fq_triggers (org, name, cron, timezone, handler, payload, state, created_at, next_fire_at, "
                "queue, priority, cost) VALUES (?, ?, ?, ?, ?, ?, 'waiting', ?, ?, ?, ?, ?)",
                (trigger.org, trigger.name, trigger.cron, trigger.timezone, trigger.handler, trigger.payload, now,
                 trigger.next_fire_at, trigger.queue, trigger.priority, trigger.cost),
            )  # fmt: skip
            assert cursor.lastrowid is not None
            return cursor.lastrowid

    def trigger_get(self, trigger_id: int) -> Optional[TriggerRecord]:
        rows = self._read(f"SELECT {_TRIGGER_COLUMNS} FROM fq_triggers WHERE id = ?", (trigger_id,))
        return _trigger(rows[0]) if rows else None

    def trigger_list(self, *, org: Optional[str] = None, state: Optional[TriggerState] = None) -> list[TriggerRecord]:
        sql = f"SELECT {_TRIGGER_COLUMNS} FROM fq_triggers WHERE (? IS NULL OR org = ?) AND (? IS NULL OR state = ?) ORDER BY id"
        value = state.value if state else None
        return [_trigger(r) for r in self._read(sql, (org, org, value, value))]

    def trigger_abort(self, trigger_id: int, org: Optional[str] = None) -> Optional[TriggerState]:
        with self._transaction(durable=True) as db:
            row = db.execute("SELECT org, state FROM fq_triggers WHERE id = ?", (trigger_id,)).fetchone()
            if row is None or (org is not None and row["org"] != org):
                return None
            db.execute(
                "UPDATE fq_triggers SET state = 'aborted', next_fire_at = NULL WHERE id = ? AND state = 'waiting'",
                (trigger_id,),
            )
            return TriggerState(row["state"])

    def trigger_fire_due(
        self, now: float, next_fire: NextFire, limit: int = 100, daily_limit: Optional[Callable[[str], int]] = None
    ) -> list[int]:
        fired: list[int] = []
        # Workers ask every second: a read first, so an idle tick takes no write lock and no fsync.
        if not self._read("SELECT 1 FROM fq_triggers WHERE state = 'waiting' AND next_fire_at <= ? LIMIT 1", (now,)):
            return fired
        # One write transaction: fires by other processes wait their turn and then no
        # longer find these schedules due.
        with self._transaction(durable=True) as db:
            rows = db.execute(
                f"SELECT {_TRIGGER_COLUMNS} FROM fq_triggers WHERE state = 'waiting' AND next_fire_at <= ? "
                "ORDER BY next_fire_at, id LIMIT ?",
                (now, limit),
            ).fetchall()
            due = [_trigger(row) for row in rows]
            refused = refused_fires(due, daily_limit, lambda org: self._usage_of(db, org, now), now)
            for trigger in due:
                job = scheduled_job(trigger)
                if trigger.id in refused:
                    job_id = db.execute(
                        "INSERT INTO fq_jobs (org, kind, handler, payload, status, created_at, finished_at, error_count, "
                        "extended_status, queue, priority, cost) VALUES (?, ?, ?, ?, 'failed', ?, ?, 1, ?, ?, ?, ?)",
                        (job.org, job.kind, job.handler, job.payload, now, now, refused[trigger.id], job.queue,
                         job.priority, job.cost),
                    ).lastrowid
                else:
                    [job_id] = self._insert(db, [job], now)
                    fired.append(job_id)
                following = next_fire(trigger, now)
                db.execute(
                    "UPDATE fq_triggers SET state = ?, next_fire_at = ?, previous_fire_at = next_fire_at, "
                    "times_fired = times_fired + 1, last_job_id = ? WHERE id = ?",
                    ("waiting" if following is not None else "complete", following, job_id, trigger.id),
                )
        return fired

    # ----- retention ------------------------------------------------------------------------
    # Deletes run in the worker's ordinary short write transactions (SQLite has one writer
    # at a time, so pruners of several processes simply take turns), each read first so an
    # idle tick takes no write lock.

    # A status's finished jobs, oldest first, through the index of finish times per status
    # (so pruning completed jobs never walks the failed ones kept longer).
    _PRUNE_JOBS = (
        "SELECT id FROM fq_jobs INDEXED BY fq_jobs_status_finished WHERE status = ? AND finished_at < ? "
        "ORDER BY finished_at LIMIT ?"
    )
    # Samples in [?, ?) beyond the highest of each (kind, org, minute), at most ? of them.
    _THIN = (
        "SELECT id FROM (SELECT id, ROW_NUMBER() OVER (PARTITION BY kind, org, CAST(at / 60.0 AS INTEGER) "
        "ORDER BY value DESC, at, id) AS rank FROM fq_history WHERE at >= ? AND at < ? "
        f"AND kind IN ({', '.join(repr(k) for k in SAMPLED_HISTORY)})) WHERE rank > 1 LIMIT ?"
    )
    # The oldest ? events (by id, which follows the order they were stored in), up to the
    # first one recorded at or after ?: reads ? rows at most, whatever the table holds.
    _OLD_BATCH_ERRORS = (
        "WITH first AS (SELECT id, at FROM fq_batch_errors ORDER BY id LIMIT ?) SELECT id FROM first "
        "WHERE id < COALESCE((SELECT MIN(id) FROM first WHERE at >= ?), 9223372036854775807)"
    )
    _INCREMENTAL = 2  # PRAGMA auto_vacuum's value for INCREMENTAL

    def job_prune(self, finished_before: Mapping[JobStatus, float], limit: int, dry_run: bool = False) -> int:
        order = prune_order(finished_before)

        def candidates(db: sqlite3.Connection) -> list[int]:
            ids: list[int] = []
            for status, cutoff in order:
                ids += [r[0] for r in db.execute(self._PRUNE_JOBS, (status.value, cutoff, limit - len(ids)))]
            return ids

        with self._lock:
            try:
                found = candidates(self._db)
            except sqlite3.Error as e:
                raise storage_error(e, self.path) from e
        if dry_run or not found:
            return len(found)
        with self._transaction() as db:
            ids = candidates(db)
            for start in range(0, len(ids), _CHUNK):
                chunk = ids[start : start + _CHUNK]
                marks = ", ".join("?" * len(chunk))
                for table, column in (("fq_batch_errors", "job_id"), ("fq_flex", "job_id"), ("fq_jobs", "id")):
                    db.execute(f"DELETE FROM {table} WHERE {column} IN ({marks})", chunk)
            return len(ids)

    def history_prune(self, before: Optional[float], downsample_before: Optional[float], limit: int,
                      dry_run: bool = False) -> int:  # fmt: skip
        if dry_run:
            with self._lock:
                try:
                    return self._history_prune(self._db, before, downsample_before, limit, True)
                except sqlite3.Error as e:
                    raise storage_error(e, self.path) from e
        with self._transaction() as db:
            return self._history_prune(db, before, downsample_before, limit, False)

    @staticmethod
    def _history_prune(
        db: sqlite3.Connection, before: Optional[float], downsample_before: Optional[float], limit: int, dry_run: bool
    ) -> int:
        n = 0
        if before is not None:
            old = "SELECT id FROM fq_history WHERE at < ? ORDER BY at LIMIT ?"
            sql = f"SELECT COUNT(*) FROM ({old})" if dry_run else f"DELETE FROM fq_history WHERE id IN ({old})"
            cursor = db.execute(sql, (before, limit))
            n = cursor.fetchone()[0] if dry_run else cursor.rowcount
        if downsample_before is None or n >= limit:
            return n
        # Thinned up to fq_meta's history_thinned (a whole minute): each call goes on from
        # there over at most ~limit entries, so it never re-reads what it thinned before.
        edge = math.floor(downsample_before / DOWNSAMPLE_STEP) * DOWNSAMPLE_STEP
        mark = db.execute("SELECT value FROM fq_meta WHERE key = 'history_thinned'").fetchone()
        starts = [float(mark[0])] if mark else []
        starts += [before] if before is not None else []
        if not starts:
            starts = [x for (x,) in db.execute("SELECT MIN(at) FROM fq_history") if x is not None]
        if not starts or max(starts) >= edge:
            return n
        low, room = max(starts), limit - n
        high = edge
        if not dry_run:
            row = db.execute("SELECT at FROM fq_history WHERE at >= ? AND at < ? ORDER BY at LIMIT 1 OFFSET ?",
                             (low, edge, room)).fetchone()  # fmt: skip
            if row is not None:
                floor_low = math.floor(low / DOWNSAMPLE_STEP) * DOWNSAMPLE_STEP
                high = max(math.floor(row[0] / DOWNSAMPLE_STEP) * DOWNSAMPLE_STEP, floor_low + DOWNSAMPLE_STEP)
        thin = SQLiteStorage._THIN
        sql = f"SELECT COUNT(*) FROM ({thin})" if dry_run else f"DELETE FROM fq_history WHERE id IN ({thin})"
        cursor = db.execute(sql, (low, high, room))
        thinned = cursor.fetchone()[0] if dry_run else cursor.rowcount
        if not dry_run and thinned < room:
            db.execute(
                "INSERT INTO fq_meta (key, value) VALUES ('history_thinned', ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (repr(high),),
            )
        return n + thinned

    def usage_prune(self, now: float, limit: int, dry_run: bool = False) -> int:
        old = "SELECT org, hour FROM fq_usage WHERE hour < ? ORDER BY hour, org LIMIT ?"
        params = (DailyUsage.window_start(now), limit)
        found = self._read(f"SELECT COUNT(*) FROM ({old})", params)[0][0]
        if dry_run or not found:
            return int(found)
        with self._transaction() as db:
            return db.execute(f"DELETE FROM fq_usage WHERE (org, hour) IN ({old})", params).rowcount

    def rate_state_prune(self, before: float, limit: int, dry_run: bool = False) -> int:
        old = "SELECT scope FROM fq_rate_state WHERE tat < ? LIMIT ?"
        found = self._read(f"SELECT COUNT(*) FROM ({old})", (before, limit))[0][0]
        if dry_run or not found:
            return int(found)
        with self._transaction() as db:
            # tat is checked again: a claim may have moved a state since the count.
            return db.execute(f"DELETE FROM fq_rate_state WHERE scope IN ({old}) AND tat < ?", (before, limit, before)).rowcount

    def batch_errors_prune(self, before: float, limit: int, dry_run: bool = False) -> int:
        old = self._OLD_BATCH_ERRORS
        found = self._read(f"SELECT COUNT(*) FROM ({old})", (limit, before))[0][0]
        if dry_run or not found:
            return int(found)
        with self._transaction() as db:
            return db.execute(f"DELETE FROM fq_batch_errors WHERE id IN ({old})", (limit, before)).rowcount

    def space_reclaim(self, limit: int) -> int:
        """See :meth:`Storage.space_reclaim`: ``PRAGMA incremental_vacuum`` on a store in
        incremental auto-vacuum mode (every store this fairqueue creates; an older one
        needs :meth:`vacuum` once), else 0. The pruner calls it before it deletes, so it
        returns the pages that stayed free a whole interval, never the ones the next
        inserts are about to reuse."""
        with self._lock:
            try:
                mode, free = (self._db.execute(f"PRAGMA {name}").fetchone()[0] for name in ("auto_vacuum", "freelist_count"))
            except sqlite3.Error as e:
                raise storage_error(e, self.path) from e
        if mode != self._INCREMENTAL or not free:
            return 0
        with self._lock:
            try:
                # executescript steps the pragma to its end (execute frees one page per call),
                # in a transaction of its own: none is open on this connection between calls.
                self._db.executescript(f"PRAGMA incremental_vacuum({min(free, limit):d})")
                return int(free - self._db.execute("PRAGMA freelist_count").fetchone()[0])
            except sqlite3.Error as e:
                raise storage_error(e, self.path) from e

    def vacuum(self) -> tuple[int, int]:
        """Rewrites the store's file compactly (``VACUUM``) in incremental auto-vacuum mode,
        so that from then on the pruner returns free space to the file system; returns the
        file's size in bytes before and after. It blocks writers while it copies the file
        (it needs about as much free disk as the file): run it once, with workers stopped."""
        with self._lock:
            try:
                # Sizes of the file alone, the write-ahead log checkpointed into it first.
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
                before = self.path.stat().st_size
                self._db.execute("PRAGMA auto_vacuum = INCREMENTAL")
                self._db.execute("VACUUM")
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
            except sqlite3.Error as e:
                raise storage_error(e, self.path) from e
            return before, self.path.stat().st_size

    def close(self) -> None:
        # Workers that never left are dead now: the next live worker reaps them.
        for _, held in self._registered.values():
            held.release()
        self._registered.clear()
        self._turns.close()
        with self._lock:
            self._db.close()
