"""The embedded default store: one SQLite file in WAL mode.

Why SQLite: it ships with Python (nothing to install or start), one file holds
everything, WAL lets readers run beside the single writer, several processes on
one machine can share the file safely, and ``synchronous=FULL`` makes a commit
durable before it returns. Outcomes are written in batches (group commit) so
durability does not cost one fsync per job.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Optional, Union

from fairqueue.errors import DuplicateSignature, SchemaVersionError, StorageError
from fairqueue.records import Finish, JobRecord, JobStatus, NewJob, PendingJob
from fairqueue.storage import SCHEMA_VERSION, Storage

__all__ = ["SQLiteStorage"]

_LIVE = "('holding', 'queued', 'preparing', 'processing')"

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
CREATE INDEX IF NOT EXISTS fq_jobs_leases ON fq_jobs (lease_expires_at) WHERE status = 'processing';
CREATE INDEX IF NOT EXISTS fq_jobs_org ON fq_jobs (org, id);
CREATE UNIQUE INDEX IF NOT EXISTS fq_jobs_signature ON fq_jobs (duplicate_signature)
    WHERE duplicate_signature IS NOT NULL AND status IN {_LIVE};
"""

_COLUMNS = (
    "id, org, kind, handler, payload, status, created_at, run_at, started_at, finished_at, attempts, "
    "items_processed, items_total, error_count, extended_status, parent_id, chain_depth, "
    "duplicate_signature, lease_owner, lease_expires_at, cancel_requested"
)

# SQLite's default limit on bound parameters is 32,766; stay far below it.
_CHUNK = 500


_FIELDS = tuple(name.strip() for name in _COLUMNS.split(","))


def _record(row: sqlite3.Row) -> JobRecord:
    # Built field by field rather than through __init__: the worker reads many
    # records per second and the values come from our own schema.
    record = JobRecord.__new__(JobRecord)
    values = record.__dict__
    values.update(zip(_FIELDS, row))
    values["status"] = JobStatus(values["status"])
    values["cancel_requested"] = bool(values["cancel_requested"])
    return record


class SQLiteStorage(Storage):
    """A store in one local SQLite file (created on first use).

    Args:
        path: the database file; its directory must exist.
    """

    def __init__(self, path: Union[str, Path]) -> None:
        self.path = Path(path)
        if not self.path.parent.is_dir():
            raise StorageError(f"cannot create store {str(self.path)!r}: directory {str(self.path.parent)!r} does not exist")
        self._lock = threading.Lock()
        try:
            self._db = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False, timeout=30.0)
        except sqlite3.Error as e:
            raise StorageError(f"cannot open store {str(self.path)!r}: {e}") from e
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode = WAL")
        self._db.execute("PRAGMA synchronous = FULL")
        self._durable = True
        self._db.execute("PRAGMA busy_timeout = 30000")
        try:
            self._create_or_check_schema()
        except BaseException:
            self._db.close()
            raise

    def _create_or_check_schema(self) -> None:
        with self._transaction(durable=True) as db:
            for statement in filter(str.strip, _SCHEMA.split(";")):
                db.execute(statement)
            row = db.execute("SELECT value FROM fq_meta WHERE key = 'schema_version'").fetchone()
            if row is None:
                db.execute("INSERT INTO fq_meta (key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
                db.execute("INSERT INTO fq_meta (key, value) VALUES ('ready_seq', '0')")
            elif int(row["value"]) > SCHEMA_VERSION:
                raise SchemaVersionError(
                    f"store {str(self.path)!r} has schema version {row['value']}, newer than this fairqueue's "
                    f"{SCHEMA_VERSION}: upgrade fairqueue to use it"
                )

    @contextmanager
    def _transaction(self, durable: bool = False) -> Iterator[sqlite3.Connection]:
        """One write transaction, taken up front so it never fails half-way on a lock upgrade.

        ``durable`` transactions (enqueues) fsync before they return. The others
        (claims, outcomes, lease changes) survive a killed process but may be lost
        to a power cut; losing one only makes a job run again, which at-least-once
        delivery allows, so they skip the fsync.
        """
        with self._lock:
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

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        with self._lock:
            return self._db.execute(sql, params).fetchall()

    @staticmethod
    def _take_ready_seqs(db: sqlite3.Connection, n: int) -> int:
        """Reserves ``n`` ready sequence numbers; returns the first. Call inside a write transaction."""
        last = int(db.execute("SELECT value FROM fq_meta WHERE key = 'ready_seq'").fetchone()[0])
        db.execute("UPDATE fq_meta SET value = ? WHERE key = 'ready_seq'", (str(last + n),))
        return last + 1

    @classmethod
    def _insert(cls, db: sqlite3.Connection, jobs: Sequence[NewJob], now: float) -> list[int]:
        first_seq = cls._take_ready_seqs(db, len(jobs))
        rows = [
            (j.org, j.kind, j.handler, j.payload, "queued", now, j.run_at, j.parent_id, j.chain_depth,
             j.duplicate_signature, first_seq + i)
            for i, j in enumerate(jobs)
        ]  # fmt: skip
        db.executemany(
            "INSERT INTO fq_jobs (org, kind, handler, payload, status, created_at, run_at, parent_id, "
            "chain_depth, duplicate_signature, ready_seq) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
        # AUTOINCREMENT hands out consecutive ids inside one write transaction.
        last = db.execute("SELECT last_insert_rowid()").fetchone()[0]
        return list(range(last - len(rows) + 1, last + 1))

    def job_enqueue(self, jobs: Sequence[NewJob], now: float) -> list[int]:
        if not jobs:
            return []
        try:
            with self._transaction(durable=True) as db:
                return self._insert(db, jobs, now)
        except sqlite3.IntegrityError as e:
            signatures = [j.duplicate_signature for j in jobs if j.duplicate_signature]
            raise DuplicateSignature(
                f"a job with duplicate signature among {signatures!r} is already holding, queued or running; "
                "nothing was enqueued"
            ) from e

    def job_signature_taken(self, signature: str) -> bool:
        sql = f"SELECT 1 FROM fq_jobs WHERE duplicate_signature = ? AND status IN {_LIVE}"
        return bool(self._read(sql, (signature,)))

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
        where: list[str] = ["1 = 1"]
        params: list[Any] = []
        for column, value in (("org", org), ("kind", kind), ("status", status.value if status else None)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        if before_id is not None:
            where.append("id < ?")
            params.append(before_id)
        params.append(limit)
        sql = f"SELECT {_COLUMNS} FROM fq_jobs WHERE {' AND '.join(where)} ORDER BY id DESC LIMIT ?"
        return [_record(r) for r in self._read(sql, params)]

    def job_pending(self, after_seq: int = 0, limit: Optional[int] = None) -> list[PendingJob]:
        rows = self._read(
            "SELECT id, org, kind, run_at, attempts, ready_seq FROM fq_jobs "
            "WHERE status = 'queued' AND ready_seq > ? ORDER BY ready_seq LIMIT ?",
            (after_seq, -1 if limit is None else limit),
        )
        return [PendingJob(*r) for r in rows]

    def job_counts(self) -> dict[tuple[str, str, JobStatus], int]:
        rows = self._read("SELECT org, kind, status, COUNT(*) FROM fq_jobs GROUP BY org, kind, status")
        return {(org, kind, JobStatus(status)): n for org, kind, status, n in rows}

    def job_claim(self, job_ids: Sequence[int], worker: str, lease_until: float, now: float) -> list[JobRecord]:
        claimed: list[JobRecord] = []
        with self._transaction() as db:
            for start in range(0, len(job_ids), _CHUNK):
                chunk = list(job_ids[start : start + _CHUNK])
                marks = ", ".join("?" * len(chunk))
                rows = db.execute(
                    f"UPDATE fq_jobs SET status = 'processing', lease_owner = ?, lease_expires_at = ?, "
                    f"started_at = COALESCE(started_at, ?), attempts = attempts + 1 "
                    f"WHERE id IN ({marks}) AND status = 'queued' RETURNING {_COLUMNS}",
                    [worker, lease_until, now, *chunk],
                ).fetchall()
                claimed.extend(_record(r) for r in rows)
        order = {job_id: i for i, job_id in enumerate(job_ids)}
        return sorted(claimed, key=lambda r: order[r.id])

    def job_heartbeat(self, job_ids: Sequence[int], worker: str, lease_until: float) -> None:
        with self._transaction() as db:
            db.executemany(
                "UPDATE fq_jobs SET lease_expires_at = ? WHERE id = ? AND status = 'processing' AND lease_owner = ?",
                [(lease_until, job_id, worker) for job_id in job_ids],
            )

    def job_finish(self, finishes: Sequence[Finish]) -> list[int]:
        for f in finishes:
            if f.status not in (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.QUEUED):
                raise StorageError(f"cannot finish job {f.job_id} as {f.status.value!r}: expected completed, failed or queued")
        applied: list[int] = []
        # Plain successes (no error, no children) are the bulk: one statement per finish time.
        plain: dict[float, list[Finish]] = {}
        rest: list[Finish] = []
        for f in finishes:
            if f.status is JobStatus.COMPLETED and f.error is None and not f.children:
                plain.setdefault(f.at, []).append(f)
            else:
                rest.append(f)
        with self._transaction() as db:
            for at, group in plain.items():
                for start in range(0, len(group), _CHUNK):
                    chunk = group[start : start + _CHUNK]
                    conditions = " OR ".join("(id = ? AND lease_owner = ?)" for _ in chunk)
                    owners = [value for f in chunk for value in (f.job_id, f.worker)]
                    rows = db.execute(
                        f"UPDATE fq_jobs SET status = 'completed', finished_at = ?, lease_owner = NULL, "
                        f"lease_expires_at = NULL WHERE status = 'processing' AND ({conditions}) RETURNING id",
                        [at, *owners],
                    ).fetchall()
                    applied.extend(r[0] for r in rows)
            retried = sum(f.status is JobStatus.QUEUED for f in rest)
            next_seq = self._take_ready_seqs(db, retried) if retried else 0
            for f in rest:
                if f.status is JobStatus.QUEUED:
                    sql = (
                        "UPDATE fq_jobs SET status = 'queued', run_at = ?, lease_owner = NULL, lease_expires_at = NULL, "
                        "extended_status = ?, error_count = error_count + (? IS NOT NULL), ready_seq = ? "
                        "WHERE id = ? AND status = 'processing' AND lease_owner = ?"
                    )
                    params: tuple[Any, ...] = (f.retry_at, f.error, f.error, next_seq, f.job_id, f.worker)
                    next_seq += 1
                else:
                    sql = (
                        "UPDATE fq_jobs SET status = ?, finished_at = ?, lease_owner = NULL, lease_expires_at = NULL, "
                        "extended_status = COALESCE(?, extended_status), error_count = error_count + (? IS NOT NULL) "
                        "WHERE id = ? AND status = 'processing' AND lease_owner = ?"
                    )
                    params = (f.status.value, f.at, f.error, f.error, f.job_id, f.worker)
                if not db.execute(sql, params).rowcount:
                    continue
                applied.append(f.job_id)
                self._insert_children(db, f)
        done = set(applied)
        return [f.job_id for f in finishes if f.job_id in done]

    def _insert_children(self, db: sqlite3.Connection, f: Finish) -> None:
        taken = [
            c.duplicate_signature
            for c in f.children
            if c.duplicate_signature
            and db.execute(
                f"SELECT 1 FROM fq_jobs WHERE duplicate_signature = ? AND status IN {_LIVE}", (c.duplicate_signature,)
            ).fetchone()
        ]
        children = [c for c in f.children if c.duplicate_signature not in taken]
        if children:
            self._insert(db, children, f.at)
        if taken:
            db.execute(
                "UPDATE fq_jobs SET extended_status = ? WHERE id = ?",
                (f"child not enqueued: duplicate signature {taken!r} already queued or running", f.job_id),
            )

    def job_requeue_expired(self, now: float) -> list[int]:
        with self._transaction() as db:
            expired = [
                r["id"]
                for r in db.execute(
                    "SELECT id FROM fq_jobs WHERE status = 'processing' AND lease_expires_at < ? ORDER BY id", (now,)
                )
            ]
            if expired:
                first = self._take_ready_seqs(db, len(expired))
                db.executemany(
                    "UPDATE fq_jobs SET status = 'queued', lease_owner = NULL, lease_expires_at = NULL, "
                    "extended_status = 'lease expired; re-delivered', ready_seq = ? WHERE id = ?",
                    [(first + i, job_id) for i, job_id in enumerate(expired)],
                )
        return expired

    def job_abort(self, job_id: int, now: float, org: Optional[str] = None) -> Optional[JobStatus]:
        with self._transaction(durable=True) as db:
            row = db.execute("SELECT org, status FROM fq_jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None or (org is not None and row["org"] != org):
                return None
            status = JobStatus(row["status"])
            if status in (JobStatus.HOLDING, JobStatus.QUEUED):
                db.execute(
                    "UPDATE fq_jobs SET status = 'aborted', finished_at = ?, extended_status = 'aborted while waiting' "
                    "WHERE id = ?",
                    (now, job_id),
                )
                return JobStatus.ABORTED
            if status in (JobStatus.PREPARING, JobStatus.PROCESSING):
                db.execute("UPDATE fq_jobs SET cancel_requested = 1 WHERE id = ?", (job_id,))
            return status

    def close(self) -> None:
        with self._lock:
            self._db.close()
