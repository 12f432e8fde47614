"""Batch jobs in the PostgreSQL store: each org's flex queue, batch progress and error events."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Optional

from fairqueue.records import BatchErrorEvent, Finish, JobRecord, JobStatus, NewJob
from fairqueue.storage.interface import FLEX_ACTIVE, flex_admit, flex_order

from .connection import LOCK_FLEX, Cursor, Database
from .rows import record

__all__ = [
    "admit",
    "batch_errors",
    "counts",
    "hold",
    "list_records",
    "lock",
    "move",
    "promote",
    "promote_stalled",
    "record_progress",
    "remove",
]


def lock(db: Database, cur: Cursor, orgs: Sequence[str]) -> None:
    """Takes turns with every other transaction that counts or changes these orgs' batches."""
    db.lock_orgs(cur, LOCK_FLEX, orgs)


def counts(db: Database, cur: Cursor, org: str) -> tuple[int, int]:
    """``org``'s (queued or processing, holding) batches."""
    cur.execute(db.sql["flex_counts"], (org, org, org))
    row = cur.fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def admit(db: Database, cur: Cursor, jobs: Sequence[NewJob]) -> list[JobStatus]:
    """The status each of ``jobs`` is stored in (:func:`~fairqueue.storage.flex_admit`):
    its batches' orgs locked (to commit), then counted."""
    batch_orgs = sorted({j.org for j in jobs if j.kind == "batch"})
    if not batch_orgs:
        return [JobStatus.QUEUED] * len(jobs)
    lock(db, cur, batch_orgs)
    return flex_admit(jobs, lambda org: counts(db, cur, org))


def hold(db: Database, cur: Cursor, job_id: int, org: str) -> None:
    """Puts holding batch ``job_id`` at the end of ``org``'s flex queue."""
    cur.execute(db.sql["flex_hold"], (job_id, org, org))


def remove(db: Database, cur: Cursor, job_id: int) -> None:
    """Takes ``job_id`` out of its org's flex queue."""
    cur.execute(db.sql["flex_remove"], (job_id,))


def promote(db: Database, cur: Cursor, orgs: Sequence[str]) -> None:
    """Starts each org's next holding batch if it has room for one."""
    lock(db, cur, orgs)
    for org in sorted(set(orgs)):
        if counts(db, cur, org)[0] >= FLEX_ACTIVE:
            continue
        cur.execute(db.sql["flex_take_first"], (org,))
        row = cur.fetchone()
        if row is not None:
            cur.execute(db.sql["flex_start"], (row[0],))
            db.notify(cur)


def promote_stalled(db: Database, cur: Cursor) -> None:
    """Starts what has room in every org's flex queue.

    A batch's outcome and the promotion it allows commit apart (see
    :func:`.claims.finish`): a crash in between would leave the org's flex queue
    waiting for an event that may never come, so each worker's lease sweep calls this.
    """
    cur.execute(db.sql["flex_stalled"], (FLEX_ACTIVE,))
    stalled = [r[0] for r in cur.fetchall()]
    if stalled:
        promote(db, cur, stalled)


def list_records(db: Database, org: str) -> list[JobRecord]:
    """See :meth:`Storage.flex_list`."""
    return [record(r) for r in db.read(db.sql["flex_list"], (org,))]


def move(
    db: Database, job_id: int, org: str, before: Optional[int], after: Optional[int], to: Optional[str]
) -> list[int]:
    """See :meth:`Storage.flex_move`."""

    def body(cur: Cursor) -> list[int]:
        lock(db, cur, [org])
        cur.execute(db.sql["flex_order"], (org,))
        order = flex_order([int(r[0]) for r in cur.fetchall()], job_id, before, after, to)
        cur.execute(db.sql["flex_reorder"], (order,))
        return order

    return db.transaction(body)


def record_progress(db: Database, cur: Cursor, f: Finish) -> None:
    """Stores the batch progress of outcome ``f`` (it applied) and its error events."""
    p = f.progress
    assert p is not None
    cur.execute(db.sql["batch_progress"], (p.payload, p.items_processed, p.items_total, p.error_count, f.job_id))
    if p.errors:
        cur.executemany(
            db.sql["batch_error_add"],
            [(e.job_id, e.org, e.phase, e.chunk, json.dumps(e.record_ids), e.exception_type, e.message, e.traceback,
              e.at) for e in p.errors],
        )  # fmt: skip


def batch_errors(db: Database, job_id: int) -> list[BatchErrorEvent]:
    """See :meth:`Storage.batch_errors`."""
    rows = db.read(db.sql["batch_errors"], (job_id,))
    return [BatchErrorEvent(r[0], r[1], r[2], r[3], json.loads(r[4]), r[5], r[6], r[7], r[8]) for r in rows]
