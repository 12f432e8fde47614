"""Jobs in the PostgreSQL store: enqueue (in our transaction or the caller's), read, list, count, abort."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Optional

import psycopg
from psycopg.pq import TransactionStatus
from psycopg.rows import tuple_row

from fairqueue.errors import DailyLimitExceeded, DuplicateSignature, InvalidArgument, StorageError
from fairqueue.records import JobRecord, JobStatus, NewJob, WaitingFacts
from fairqueue.storage.interface import (
    FEW_STATUSES,
    FINISHED_SQL,
    LIVE_STATUSES,
    RERUNNABLE,
    DailyUsage,
    check_daily_limits,
    flex_admit,
    job_filter,
    rerun_note,
)

from . import completions, flex, usage
from .async_connection import AsyncDatabase
from .connection import LOCK_FLEX, LOCK_PUBLISH, LOCK_USAGE, Cursor, Database
from .errors import translate
from .queries import QUERIES
from .rows import COLUMNS, floats, record

__all__ = [
    "abort",
    "rerun",
    "cancel_requested",
    "check_async_connection",
    "check_connection",
    "counts",
    "enqueue",
    "enqueue_async",
    "enqueue_in",
    "enqueue_in_async",
    "get",
    "get_async",
    "insert",
    "insert_async",
    "insert_published",
    "published_ids",
    "published_params",
    "left_queue",
    "insert_params",
    "insert_rows",
    "list_records",
    "list_sql",
    "missing",
    "signature_taken",
    "waiting_facts",
]

assert all(f"status = '{status.value}'" in QUERIES["job_counts_live"] for status in LIVE_STATUSES), (
    "job_counts_live counts every status of LIVE_STATUSES"
)
assert all(f"status IN ({FINISHED_SQL}) AND finished_at" in QUERIES[name] for name in ("job_left_queue", "job_waiting_facts")), (
    "the reads of jobs finished since a time name every finished status"
)


def insert(
    db: Database,
    conn: psycopg.Connection[Any],
    jobs: Sequence[NewJob],
    now: float,
    daily_limits: Optional[Mapping[str, int]] = None,
) -> list[int]:
    """Inserts ``jobs`` as queued and notifies :attr:`Database.channel`, in ``conn``'s current transaction.

    Commits nothing, so it runs in one of ours or in the caller's own
    (:func:`enqueue_in`). Returns the new ids in the jobs' order. A live
    duplicate signature raises psycopg's ``UniqueViolation``. With
    ``daily_limits``, each org's usage is locked (an advisory lock per org,
    in one order, held to commit) before it is checked, so two hosts cannot
    both take an org's last executions.
    """
    with conn.cursor(row_factory=tuple_row) as cur:
        if daily_limits:
            usage.check_limits(db, cur, jobs, daily_limits, now)
        rows = insert_rows(db, cur, jobs, now, skip_taken=False)
    # The identity column draws ids in insertion order, which is the jobs' order.
    return sorted(r[0] for r in rows)


def insert_rows(db: Database, cur: Cursor, jobs: Sequence[NewJob], now: float, *, skip_taken: bool) -> list[tuple[Any, ...]]:
    """Inserts ``jobs`` and notifies; returns (id, duplicate_signature, org, status) of each stored.

    With ``skip_taken`` a job whose signature is live is left out instead of
    failing the statement (and with it the transaction).
    """
    statuses = flex.admit(db, cur, jobs)
    cur.execute(db.sql["job_insert_skip_taken" if skip_taken else "job_insert"], insert_params(jobs, now, statuses))
    rows = cur.fetchall()
    for job_id, _, org, status in sorted(rows):
        if status == "holding":
            flex.hold(db, cur, job_id, org)
    if rows:
        db.notify(cur)
        usage.add(db, cur, rows, now)
    return rows


def insert_params(jobs: Sequence[NewJob], now: float, statuses: Sequence[JobStatus]) -> tuple[Any, ...]:
    """The parameters of ``job_insert`` (and ``job_insert_skip_taken``) for ``jobs``."""
    return (
        float(now),
        [j.org for j in jobs],
        [j.kind for j in jobs],
        [j.handler for j in jobs],
        [j.payload for j in jobs],
        floats(j.run_at for j in jobs),
        [None if j.parent_id is None else int(j.parent_id) for j in jobs],
        [int(j.chain_depth) for j in jobs],
        [j.duplicate_signature for j in jobs],
        [status.value for status in statuses],
        [j.queue for j in jobs],
        [j.key for j in jobs],
        [int(j.priority) for j in jobs],
        [int(j.cost) for j in jobs],
    )


def missing(jobs: Sequence[NewJob], stored: list[Optional[str]]) -> list[str]:
    """The signatures of ``jobs`` that were not stored (a multiset difference)."""
    left = [s for s in stored if s is not None]
    absent = []
    for j in jobs:
        if j.duplicate_signature is None:
            continue
        if j.duplicate_signature in left:
            left.remove(j.duplicate_signature)
        else:
            absent.append(j.duplicate_signature)
    return absent


def enqueue(
    db: Database, jobs: Sequence[NewJob], now: float, daily_limits: Optional[Mapping[str, int]] = None
) -> list[int]:
    """See :meth:`Storage.job_enqueue`; committed (durably) before it returns."""
    if not jobs:
        return []
    if any(j.kind == "batch" for j in jobs):
        # A batch's status depends on its org's flex queue, read (locked) first.
        return db.transaction(lambda cur: insert(db, cur.connection, jobs, now, daily_limits), jobs=jobs)
    return db.statement(lambda cur: insert_published(db, cur, jobs, now, daily_limits), jobs=jobs)


def insert_published(
    db: Database, cur: Cursor, jobs: Sequence[NewJob], now: float, daily_limits: Optional[Mapping[str, int]]
) -> list[int]:
    """Stores ``jobs``, with no batch among them, already published (final
    ``ready_seq``) in one statement, ``job_insert_published``, which is its own
    transaction on an autocommit connection (one round trip): it locks the limited
    orgs' usage and reads it under the locks, takes the publish lock shared,
    refuses the lot if an org's daily limit would be passed, and otherwise stores
    the jobs, adds their usage and sends the wake-up. Returns the new ids in the
    jobs' order, or raises the refusal. The publish lock is held from that
    statement to its commit, on the server alone, so :func:`.claims.pending` waits
    for no client.
    """
    cur.execute(db.sql["job_insert_published"], published_params(db, jobs, now, daily_limits))
    return published_ids(cur.fetchall(), jobs, now, daily_limits)


def published_params(
    db: Database, jobs: Sequence[NewJob], now: float, daily_limits: Optional[Mapping[str, int]]
) -> tuple[Any, ...]:
    """The parameters of ``job_insert_published`` (:func:`insert_published` and its
    async twin). With no batch every job is stored queued and, failing on a live
    duplicate signature, every job or none is stored, so the usage it adds is known
    beforehand."""
    limited = sorted({j.org for j in jobs if daily_limits and j.org in daily_limits})
    adding = {org: 0 for org in limited}
    for j in jobs:
        if j.org in adding:
            adding[j.org] += 1
    limits = [int(daily_limits[org]) for org in limited] if daily_limits else []
    orgs, hours, added = usage.add_params([(None, None, j.org, JobStatus.QUEUED.value) for j in jobs], now)
    return (LOCK_USAGE, db.schema, limited, DailyUsage.window_start(now), limited, limits, [adding[org] for org in limited],
            LOCK_PUBLISH, db.schema, *insert_params(jobs, now, [JobStatus.QUEUED] * len(jobs)),
            orgs, hours, added, db.channel)  # fmt: skip


def published_ids(
    rows: Sequence[tuple[Any, ...]], jobs: Sequence[NewJob], now: float, daily_limits: Optional[Mapping[str, int]]
) -> list[int]:
    """The ids ``job_insert_published`` stored, in the jobs' order (``rows``, its
    result); raises :class:`DailyLimitExceeded` if it refused them."""
    ids: list[int] = []
    counted: dict[str, DailyUsage] = {}
    for job_id, org, count, first_hour in rows:
        if job_id is not None:
            ids.append(int(job_id))
        else:
            counted[org] = DailyUsage(org, int(count), first_hour)
    if not ids and daily_limits:
        # Refused in the statement, by the same figures: nothing was stored.
        check_daily_limits(jobs, daily_limits, counted.__getitem__, now)
        raise AssertionError(f"job_insert_published stored none of {len(jobs)} jobs, within their daily limits")
    # The identity column draws ids in insertion order, which is the jobs' order.
    return sorted(ids)


def check_connection(connection: Any) -> None:
    """Raises :class:`InvalidArgument` unless ``connection`` is an open psycopg 3 connection."""
    if not isinstance(connection, psycopg.Connection):
        raise InvalidArgument(
            f"connection {connection!r} is not a psycopg 3 connection: pass the psycopg.Connection "
            "whose transaction the jobs should join"
        )
    if connection.closed:
        raise InvalidArgument("connection is closed: pass an open psycopg connection")


def enqueue_in(
    db: Database,
    conn: psycopg.Connection[Any],
    jobs: Sequence[NewJob],
    now: float,
    daily_limits: Optional[Mapping[str, int]] = None,
) -> list[int]:
    """See :meth:`PostgresStorage.job_enqueue_in <fairqueue.storage.postgres.PostgresStorage.job_enqueue_in>`."""
    check_connection(conn)
    if not jobs:
        return []
    status = conn.info.transaction_status
    if status == TransactionStatus.INERROR:
        raise StorageError("cannot enqueue: the connection's transaction has already failed; roll it back first")
    if conn.autocommit and status == TransactionStatus.IDLE:
        try:
            with conn.transaction():
                return insert(db, conn, jobs, now, daily_limits)
        except psycopg.Error as e:
            raise translate(e, db.where, jobs=jobs) from e
    # A savepoint rather than conn.transaction(): on an idle non-autocommit
    # connection psycopg's block would BEGIN and COMMIT on its own, while here
    # the statement opens the caller's implicit transaction and leaves it open.
    with conn.cursor(row_factory=tuple_row) as cur:
        try:
            cur.execute(db.sql["enqueue_savepoint"])
            ids = insert(db, conn, jobs, now, daily_limits)
            cur.execute(db.sql["enqueue_savepoint_release"])
            return ids
        except DailyLimitExceeded:
            cur.execute(db.sql["enqueue_savepoint_rollback"])
            cur.execute(db.sql["enqueue_savepoint_release"])
            raise
        except psycopg.Error as e:
            error = translate(e, db.where, jobs=jobs)
            if isinstance(error, DuplicateSignature):
                # Only the insert failed: the caller's transaction goes on without it.
                cur.execute(db.sql["enqueue_savepoint_rollback"])
                cur.execute(db.sql["enqueue_savepoint_release"])
            raise error from e


def get(db: Database, job_id: int) -> Optional[JobRecord]:
    """See :meth:`Storage.job_get`."""
    rows = db.read(db.sql["job_get"], (job_id,))
    return record(rows[0]) if rows else None


def list_sql(db: Database, where: str, status: Optional[JobStatus]) -> str:
    """The listing of :func:`list_records` for the condition ``where`` (:func:`~fairqueue.storage.job_filter`)."""
    # "id + 0" keeps the planner off the primary key's order, so a status of
    # FEW_STATUSES is read through its partial index and sorted (see FEW_STATUSES).
    order = "id + 0" if status in FEW_STATUSES else "id"
    return f"SELECT {COLUMNS} FROM {db.s}.fq_jobs WHERE {where} ORDER BY {order} DESC LIMIT %s"


def list_records(
    db: Database,
    org: Optional[str],
    kind: Optional[str],
    status: Optional[JobStatus],
    before_id: Optional[int],
    limit: int,
) -> list[JobRecord]:
    """See :meth:`Storage.job_list`."""
    where, params = job_filter("%s", org, kind, status, before_id)
    return [record(r) for r in db.read(list_sql(db, where, status), [*params, limit])]


def signature_taken(db: Database, signature: str) -> bool:
    """See :meth:`Storage.job_signature_taken`."""
    return bool(db.read(db.sql["job_signature_taken"], (signature,)))


def left_queue(db: Database, since: float, worker: str) -> list[int]:
    """See :meth:`Storage.job_left_queue`."""
    return [r[0] for r in db.read(db.sql["job_left_queue"], (worker, float(since)))]


def cancel_requested(db: Database, job_ids: Sequence[int]) -> list[int]:
    """See :meth:`Storage.job_cancel_requested`."""
    if not job_ids:
        return []
    return [r[0] for r in db.read(db.sql["job_cancel_requested"], (list(job_ids),))]


def counts(db: Database, live: bool) -> dict[tuple[str, str, JobStatus], int]:
    """See :meth:`Storage.job_counts`."""
    rows = db.read(db.sql["job_counts_live" if live else "job_counts"])
    return {(org, kind, JobStatus(status)): int(n) for org, kind, status, n in rows}


def waiting_facts(db: Database, job: JobRecord, now: float, window: float) -> WaitingFacts:
    """See :meth:`Storage.job_waiting_facts`."""
    since = now - window
    [facts] = db.read(
        db.sql["job_waiting_facts"],
        (job.org, job.kind, job.id, job.id, now, job.org, job.kind, since, since, since),
    )
    holders = [r[0] for r in db.read(db.sql["job_holders"], (job.org, job.kind))]
    return WaitingFacts(facts[0], facts[1], holders, facts[2], facts[3], facts[4], facts[5], facts[6])


def abort(db: Database, job_id: int, now: float, org: Optional[str]) -> Optional[JobStatus]:
    """See :meth:`Storage.job_abort`."""

    def body(cur: Cursor) -> Optional[JobStatus]:
        cur.execute(db.sql["job_abort_lock"], (job_id,))
        row = cur.fetchone()
        if row is None or (org is not None and row[0] != org):
            return None
        status = JobStatus(row[1])
        if status in (JobStatus.HOLDING, JobStatus.QUEUED):
            cur.execute(db.sql["job_abort_waiting"], (float(now), job_id))
            completions.notify(db, cur, [job_id])
            if status is JobStatus.HOLDING:
                flex.remove(db, cur, job_id)
            elif row[2] == "batch":
                flex.promote(db, cur, [row[0]])
            return JobStatus.ABORTED
        if status in (JobStatus.PREPARING, JobStatus.PROCESSING):
            cur.execute(db.sql["job_request_cancel"], (job_id,))
        return status

    return db.transaction(body)


# ----- the async client (psycopg's AsyncConnection) ---------------------------------------
# psycopg's sync cursor code cannot run on an async connection, so the insert has an
# async twin: the same statements, in the same order, with the same rules (flex_admit,
# check_daily_limits); the conformance suite runs both.


def check_async_connection(connection: Any) -> None:
    """Raises :class:`InvalidArgument` unless ``connection`` is an open psycopg 3 ``AsyncConnection``."""
    if not isinstance(connection, psycopg.AsyncConnection):
        hint = " (a sync connection goes to app.transaction / app.enqueue)" if isinstance(connection, psycopg.Connection) else ""
        raise InvalidArgument(
            f"connection {connection!r} is not a psycopg 3 AsyncConnection: pass the psycopg.AsyncConnection "
            f"whose transaction the jobs should join{hint}"
        )
    if connection.closed:
        raise InvalidArgument("connection is closed: pass an open psycopg AsyncConnection")


async def insert_async(
    db: Database,
    conn: psycopg.AsyncConnection[Any],
    jobs: Sequence[NewJob],
    now: float,
    daily_limits: Optional[Mapping[str, int]] = None,
) -> list[int]:
    """:func:`insert` on an async connection, in its current transaction."""
    async with conn.cursor(row_factory=tuple_row) as cur:
        limited = sorted({j.org for j in jobs if j.org in (daily_limits or {})})
        if daily_limits and limited:
            await cur.execute(db.sql["lock_orgs"], (LOCK_USAGE, db.schema, limited))
            counted: dict[str, DailyUsage] = {}
            for org in limited:
                await cur.execute(db.sql["usage_counted"], (org, DailyUsage.window_start(now)))
                row = await cur.fetchone()
                assert row is not None
                counted[org] = DailyUsage(org, int(row[0]), row[1])
            check_daily_limits(jobs, daily_limits, counted.__getitem__, now)
        batch_orgs = sorted({j.org for j in jobs if j.kind == "batch"})
        flex_counts: dict[str, tuple[int, int]] = {}
        if batch_orgs:
            await cur.execute(db.sql["lock_orgs"], (LOCK_FLEX, db.schema, batch_orgs))
            for org in batch_orgs:
                await cur.execute(db.sql["flex_counts"], (org, org, org))
                row = await cur.fetchone()
                assert row is not None
                flex_counts[org] = (int(row[0]), int(row[1]))
        statuses = flex_admit(jobs, flex_counts.__getitem__)
        await cur.execute(db.sql["job_insert"], insert_params(jobs, now, statuses))
        rows = await cur.fetchall()
        for job_id, _, org, status in sorted(rows):
            if status == "holding":
                await cur.execute(db.sql["flex_hold"], (job_id, org, org))
        if rows:
            await cur.execute(db.sql["notify"], (db.channel,))
            await cur.execute(db.sql["usage_add"], usage.add_params(rows, now))
    return sorted(r[0] for r in rows)


async def enqueue_async(
    adb: AsyncDatabase, jobs: Sequence[NewJob], now: float, daily_limits: Optional[Mapping[str, int]] = None
) -> list[int]:
    """:func:`enqueue` through the running loop's async pool."""
    if not jobs:
        return []
    if any(j.kind == "batch" for j in jobs):
        return await adb.transaction(lambda cur: insert_async(adb.db, cur.connection, jobs, now, daily_limits), jobs=jobs)
    sql, params = adb.db.sql["job_insert_published"], published_params(adb.db, jobs, now, daily_limits)
    return published_ids(await adb.statement(sql, params, jobs=jobs), jobs, now, daily_limits)


async def enqueue_in_async(
    db: Database,
    conn: psycopg.AsyncConnection[Any],
    jobs: Sequence[NewJob],
    now: float,
    daily_limits: Optional[Mapping[str, int]] = None,
) -> list[int]:
    """:func:`enqueue_in` on the caller's ``AsyncConnection`` (the same rules: its
    transaction, a savepoint around the insert, autocommit commits at once)."""
    check_async_connection(conn)
    if not jobs:
        return []
    status = conn.info.transaction_status
    if status == TransactionStatus.INERROR:
        raise StorageError("cannot enqueue: the connection's transaction has already failed; roll it back first")
    if conn.autocommit and status == TransactionStatus.IDLE:
        try:
            async with conn.transaction():
                return await insert_async(db, conn, jobs, now, daily_limits)
        except psycopg.Error as e:
            raise translate(e, db.where, jobs=jobs) from e
    async with conn.cursor(row_factory=tuple_row) as cur:
        try:
            await cur.execute(db.sql["enqueue_savepoint"])
            ids = await insert_async(db, conn, jobs, now, daily_limits)
            await cur.execute(db.sql["enqueue_savepoint_release"])
            return ids
        except DailyLimitExceeded:
            await cur.execute(db.sql["enqueue_savepoint_rollback"])
            await cur.execute(db.sql["enqueue_savepoint_release"])
            raise
        except psycopg.Error as e:
            error = translate(e, db.where, jobs=jobs)
            if isinstance(error, DuplicateSignature):
                await cur.execute(db.sql["enqueue_savepoint_rollback"])
                await cur.execute(db.sql["enqueue_savepoint_release"])
            raise error from e


async def get_async(adb: AsyncDatabase, job_id: int) -> Optional[JobRecord]:
    """:func:`get` through the running loop's async pool."""
    rows = await adb.read(adb.db.sql["job_get"], (job_id,))
    return record(rows[0]) if rows else None


def rerun(db: Database, job_ids: Sequence[int], org: Optional[str]) -> list[int]:
    """See :meth:`Storage.job_rerun`; one transaction, committed durably."""

    def body(cur: Cursor) -> list[int]:
        cur.execute(db.sql["job_rerun_lock"], (sorted(set(job_ids)), [s.value for s in RERUNNABLE], org, org))
        rows = cur.fetchall()
        if rows:
            cur.execute(db.sql["job_rerun"], ([r[0] for r in rows], [rerun_note(r[1], r[2]) for r in rows]))
            db.notify(cur)
        return [r[0] for r in rows]

    return db.transaction(body)

