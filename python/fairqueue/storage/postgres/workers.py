"""The worker registry in the PostgreSQL store: who is alive, proved by the server.

Each registered worker holds a session-level advisory lock (class
:data:`~.connection.LOCK_WORKER`, a random key recorded in its row) on a connection
of its own, outside the pools. The server releases it the moment that session ends:
at once when the worker's process dies on a live host (the kernel closes its
socket), within seconds of silence when the host or the network fails (the
session's TCP keepalives: 2 s idle, then 3 probes 1 s apart). A stopped or paused
worker keeps its session, so it is never declared dead — its leases still lapse
as before if it stays stopped. ``pg_locks`` shows which keys are held; a sweep
takes a dead worker's key (to commit) while it reaps it, so each dead worker is
reaped once and a worker that took a new key since is left alone.

A worker partitioned from the server is declared dead once the server drops its
session; its jobs are queued again, and when it comes back its outcomes for them
are refused (an outcome applies only under the lease it was claimed with), and it
takes a new lock and registers again. The connection must reach the server
directly: a transaction-pooling proxy (PgBouncer's transaction mode) cannot hold a
session lock.
"""

from __future__ import annotations

import json
import secrets
import select
from collections.abc import Sequence
from typing import Any, Optional

import psycopg

from fairqueue.records import JobStatus, Reaped, WorkerInfo, WorkerRecord
from fairqueue.storage.interface import dead_worker_outcome, live_worker_named

from . import completions, flex
from .connection import LOCK_WORKER, Cursor, Database
from .errors import translate

__all__ = ["WorkerLock", "alone", "insert", "leave", "listed", "reap", "register", "seen", "served"]

# Seconds a worker whose lock is free must have been silent before it is reaped: a
# live worker whose lock connection dropped takes the lock again at its next
# heartbeat (a second later), so only a dead one stays silent this long.
_SILENT = 2.0
# Seconds after a server start for workers not seen since to come back first: the
# restart dropped every worker's lock, and a worker may still be backing off (at
# most 30 s between tries, see the worker's store retry).
_RESTART = 45.0


class WorkerLock:
    """One worker's session advisory lock, on a connection of its own.

    Raises:
        StorageError: the server cannot be reached.
    """

    def __init__(self, db: Database) -> None:
        self.db = db
        try:
            self.conn: psycopg.Connection[tuple[Any, ...]] = psycopg.connect(
                db.dsn, autocommit=True, connect_timeout=max(1, round(db.connect_timeout)),
                keepalives=1, keepalives_idle=2, keepalives_interval=1, keepalives_count=3, tcp_user_timeout=5000,
            )  # fmt: skip
            self.conn.execute(db.sql["worker_keepalive"])
            while True:
                self.key = secrets.randbelow(2**31)
                row = self.conn.execute(db.sql["worker_lock"], (LOCK_WORKER, self.key)).fetchone()
                if row is not None and row[0]:
                    break  # else another worker drew the same key: draw again
        except psycopg.Error as e:
            self.release()
            raise translate(e, db.where) from e

    @property
    def intact(self) -> bool:
        """False once the session is gone (the lock with it).

        Costs no round trip while the connection is quiet: nothing is ever sent to
        this session, so anything to read means the server ended it (or is about to
        say why); only then is it asked.
        """
        if self.conn.closed or self.conn.broken:
            return False
        try:
            readable, _, _ = select.select([self.conn.fileno()], [], [], 0)
            if readable:
                self.conn.execute("SELECT 1")
        except (psycopg.Error, OSError, ValueError):
            return False
        return not self.conn.broken

    def release(self) -> None:
        """Closes the session, which releases the lock (idempotent; needs no server)."""
        conn = getattr(self, "conn", None)
        if conn is not None:
            conn.close()


def register(db: Database, worker: WorkerInfo, now: float) -> WorkerLock:
    """See :meth:`Storage.worker_register`; the lock is the caller's to keep."""
    lock = WorkerLock(db)

    def body(cur: Cursor) -> None:
        cur.execute(db.sql["worker_find"], (worker.name,))
        row = cur.fetchone()
        if row is not None:
            cur.execute(db.sql["worker_take_dead"], (LOCK_WORKER, row[2]))
            taken = cur.fetchone()
            if not (taken and taken[0]):
                raise live_worker_named(worker.name, row[1], row[0])
            reap_one(db, cur, worker.name, row[2], now, Reaped([], [], []))
        insert(db, cur, worker, lock)

    try:
        db.transaction(body)
    except BaseException:
        lock.release()
        raise
    return lock


def insert(db: Database, cur: Cursor, worker: WorkerInfo, lock: WorkerLock) -> None:
    """Adds ``worker``'s registry row, seen now, under ``lock``'s key."""
    queues = None if worker.queues is None else json.dumps(list(worker.queues))
    cur.execute(db.sql["worker_insert"], (worker.name, worker.host, worker.pid, worker.mode, worker.slots,
                                          worker.started_at, lock.key, queues))  # fmt: skip


def seen(db: Database, worker: WorkerInfo, lock: WorkerLock) -> tuple[WorkerLock, bool]:
    """See :meth:`Storage.worker_seen`: the worker's lock (a new one if it was lost) and
    whether it had held throughout."""
    intact = lock.intact
    if not intact:
        lock.release()
        lock = WorkerLock(db)

    def body(cur: Cursor) -> bool:
        cur.execute(db.sql["worker_seen"], (lock.key, worker.name))
        if cur.rowcount:
            return True
        insert(db, cur, worker, lock)
        return False

    try:
        held = db.transaction(body, durable=False)
    except BaseException:
        if not intact:
            lock.release()
        raise
    return lock, intact and held


def alone(db: Database, name: str, job_id: Optional[int]) -> None:
    """See :meth:`Storage.worker_alone`."""
    db.transaction(lambda cur: cur.execute(db.sql["worker_alone"], (job_id, name)), durable=False)


def listed(db: Database) -> list[WorkerRecord]:
    """See :meth:`Storage.worker_list`."""
    return [
        WorkerRecord(WorkerInfo(r[0], r[1], r[2], r[3], r[4], r[5], served(r[9])), r[6], bool(r[7]), int(r[8]))
        for r in db.read(db.sql["worker_list"], (LOCK_WORKER,))
    ]


def served(queues: Optional[str]) -> Optional[tuple[str, ...]]:
    """The queues of a registry row's ``queues`` column (a JSON list; NULL: every queue)."""
    return None if queues is None else tuple(json.loads(queues))


def reap(db: Database, own: Sequence[str], now: float) -> Reaped:
    """See :meth:`Storage.worker_reap` (``own``: the workers of this store object, alive)."""
    reaped = Reaped([], [], [])
    dead_query = db.sql["worker_dead"]
    candidates = db.read(dead_query, (list(own), _SILENT, _RESTART, LOCK_WORKER))
    if not candidates:
        return reaped

    def body(cur: Cursor) -> None:
        for name, key in candidates:
            cur.execute(db.sql["worker_take_dead"], (LOCK_WORKER, key))
            taken = cur.fetchone()
            if taken and taken[0]:
                reap_one(db, cur, name, key, now, reaped)

    db.transaction(body, durable=False)
    return reaped


def reap_one(db: Database, cur: Cursor, name: str, key: int, now: float, reaped: Reaped) -> None:
    """Removes dead worker ``name`` (registered with lock ``key``, taken by the caller's
    transaction) and queues its jobs again, or fails those that killed it twice."""
    cur.execute(db.sql["worker_delete"], (name, key))
    row = cur.fetchone()
    if row is None:
        return  # reaped by another sweep first, or registered again
    reaped.workers.append(name)
    cur.execute(db.sql["worker_jobs"], (name,))
    ended_batches, failed = [], []
    for job_id, org, kind, deaths in cur.fetchall():
        status, note, deaths = dead_worker_outcome(name, row[0], job_id, deaths, row[1])
        if status is JobStatus.QUEUED:
            cur.execute(db.sql["worker_job_requeue"], (note, deaths, job_id))
            reaped.requeued.append(job_id)
        else:
            cur.execute(db.sql["worker_job_quarantine"], (now, note, deaths, job_id))
            reaped.quarantined.append(job_id)
            failed.append(job_id)
            if kind == "batch":
                ended_batches.append(org)
    if reaped.requeued:
        db.notify(cur)
    completions.notify(db, cur, failed)  # their waiters hear the outcome
    if ended_batches:
        flex.promote(db, cur, ended_batches)


def leave(db: Database, name: str, lock: WorkerLock) -> None:
    """See :meth:`Storage.worker_leave`."""
    try:
        db.transaction(lambda cur: cur.execute(db.sql["worker_leave"], (name,)), durable=False)
    finally:
        lock.release()
