"""Retention in the PostgreSQL store: the pruner's bounded deletes.

Every call is one short transaction (committed without waiting for the WAL flush: a
delete lost to a server crash is simply done again) that first *tries* the schema's
prune lock (:data:`~.connection.LOCK_PRUNE`): only one host deletes at a time, and a
host that finds it taken returns 0 at once instead of waiting, so pruning never
queues behind itself or holds a lock for long. Rows another transaction holds are
skipped (``SKIP LOCKED``). Deleting a bounded batch per transaction leaves dead rows
autovacuum clears as it goes, with no long-running transaction holding it back.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Optional

from fairqueue.records import JobStatus
from fairqueue.retention import DOWNSAMPLE_STEP, SAMPLED_HISTORY, prune_order
from fairqueue.storage.interface import DailyUsage

from .connection import LOCK_PRUNE, Cursor, Database

__all__ = ["batch_errors_prune", "history_prune", "job_prune", "usage_prune"]


def _locked(db: Database, cur: Cursor) -> bool:
    cur.execute(db.sql["prune_try_lock"], (LOCK_PRUNE, db.schema))
    row = cur.fetchone()
    return bool(row and row[0])


def _count(cur: Cursor) -> int:
    row = cur.fetchone()
    return int(row[0]) if row else 0


def job_prune(db: Database, finished_before: Mapping[JobStatus, float], limit: int, dry_run: bool) -> int:
    """See :meth:`Storage.job_prune`."""
    order = prune_order(finished_before)
    if not order:
        return 0
    params = ([s.value for s, _ in order], [c for _, c in order], limit, limit)

    def body(cur: Cursor) -> int:
        if dry_run:
            cur.execute(db.sql["job_prune_count"], params)
            return _count(cur)
        if not _locked(db, cur):
            return 0
        cur.execute(db.sql["job_prune"], params)
        return _count(cur)

    return db.transaction(body, durable=False)


def history_prune(db: Database, before: Optional[float], downsample_before: Optional[float], limit: int,
                  dry_run: bool) -> int:  # fmt: skip
    """See :meth:`Storage.history_prune`."""

    def body(cur: Cursor) -> int:
        if not dry_run and not _locked(db, cur):
            return 0
        n = 0
        if before is not None:
            cur.execute(db.sql["history_expire_count" if dry_run else "history_expire"], (before, limit))
            n = _count(cur) if dry_run else cur.rowcount
        if downsample_before is None or n >= limit:
            return n
        # Thinned up to fq_meta's history_thinned (a whole minute): each call goes on from
        # there over at most ~limit entries, so it never re-reads what it thinned before.
        edge = math.floor(downsample_before / DOWNSAMPLE_STEP) * DOWNSAMPLE_STEP
        cur.execute(db.sql["history_thinned"])
        mark = cur.fetchone()
        starts = [float(mark[0])] if mark else []
        starts += [before] if before is not None else []
        if not starts:
            cur.execute(db.sql["history_oldest"])
            oldest = cur.fetchone()
            starts = [oldest[0]] if oldest and oldest[0] is not None else []
        if not starts or max(starts) >= edge:
            return n
        low, room = max(starts), limit - n
        high = edge
        if not dry_run:
            cur.execute(db.sql["history_span"], (low, edge, room))
            row = cur.fetchone()
            if row is not None:
                floor_low = math.floor(low / DOWNSAMPLE_STEP) * DOWNSAMPLE_STEP
                high = max(math.floor(row[0] / DOWNSAMPLE_STEP) * DOWNSAMPLE_STEP, floor_low + DOWNSAMPLE_STEP)
        cur.execute(db.sql["history_thin_count" if dry_run else "history_thin"], (low, high, list(SAMPLED_HISTORY), room))
        thinned = _count(cur) if dry_run else cur.rowcount
        if not dry_run and thinned < room:
            cur.execute(db.sql["history_set_thinned"], (repr(high),))
        return n + thinned

    return db.transaction(body, durable=False)


def usage_prune(db: Database, now: float, limit: int, dry_run: bool) -> int:
    """See :meth:`Storage.usage_prune`."""
    params = (DailyUsage.window_start(now), limit)

    def body(cur: Cursor) -> int:
        if dry_run:
            cur.execute(db.sql["usage_prune_count"], params)
            return _count(cur)
        if not _locked(db, cur):
            return 0
        cur.execute(db.sql["usage_prune"], params)
        return cur.rowcount

    return db.transaction(body, durable=False)


def rate_state_prune(db: Database, before: float, limit: int, dry_run: bool) -> int:
    """See :meth:`Storage.rate_state_prune`. A claim moving a state meanwhile keeps it:
    the delete re-checks ``tat`` on the row's newest version."""
    params = (before, limit)

    def body(cur: Cursor) -> int:
        if dry_run:
            cur.execute(db.sql["rate_state_prune_count"], params)
            return _count(cur)
        if not _locked(db, cur):
            return 0
        cur.execute(db.sql["rate_state_prune"], (*params, before))
        return cur.rowcount

    return db.transaction(body, durable=False)


def batch_errors_prune(db: Database, before: float, limit: int, dry_run: bool) -> int:
    """See :meth:`Storage.batch_errors_prune`."""

    def body(cur: Cursor) -> int:
        if dry_run:
            cur.execute(db.sql["batch_errors_prune_count"], (limit, before))
            return _count(cur)
        if not _locked(db, cur):
            return 0
        cur.execute(db.sql["batch_errors_prune"], (limit, before))
        return cur.rowcount

    return db.transaction(body, durable=False)
