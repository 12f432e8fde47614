"""Schedules in the PostgreSQL store: create, read, list, abort, and fire the due ones."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Optional

from fairqueue.records import NewTrigger, TriggerRecord, TriggerState
from fairqueue.storage.interface import (
    NextFire,
    refused_fires,
    schedule_name_taken,
    scheduled_job,
    too_many_schedules,
)

from . import jobs, usage
from .connection import LOCK_TRIGGERS, Cursor, Database
from .rows import floats

__all__ = ["abort", "create", "fire_due", "get", "list_records"]


def _trigger(row: Sequence[Any]) -> TriggerRecord:
    values = list(row)
    values[7] = TriggerState(values[7])
    return TriggerRecord(*values)


def create(db: Database, trigger: NewTrigger, now: float, max_per_org: int) -> int:
    """See :meth:`Storage.trigger_create`; creates for one org take turns (an advisory lock)."""

    def body(cur: Cursor) -> int:
        db.lock_orgs(cur, LOCK_TRIGGERS, [trigger.org])
        cur.execute(db.sql["trigger_names"], (trigger.org,))
        names = [r[0] for r in cur.fetchall()]
        if trigger.name in names:
            raise schedule_name_taken(trigger.org, trigger.name)
        if len(names) >= max_per_org:
            raise too_many_schedules(trigger.org, len(names), max_per_org)
        cur.execute(
            db.sql["trigger_insert"],
            (trigger.org, trigger.name, trigger.cron, trigger.timezone, trigger.handler, trigger.payload, now,
             trigger.next_fire_at, trigger.queue, trigger.priority, trigger.cost),
        )  # fmt: skip
        row = cur.fetchone()
        assert row is not None
        return int(row[0])

    return db.transaction(body)


def get(db: Database, trigger_id: int) -> Optional[TriggerRecord]:
    """See :meth:`Storage.trigger_get`."""
    rows = db.read(db.sql["trigger_get"], (trigger_id,))
    return _trigger(rows[0]) if rows else None


def list_records(db: Database, org: Optional[str], state: Optional[TriggerState]) -> list[TriggerRecord]:
    """See :meth:`Storage.trigger_list`."""
    value = state.value if state else None
    return [_trigger(r) for r in db.read(db.sql["trigger_list"], (org, org, value, value))]


def abort(db: Database, trigger_id: int, org: Optional[str]) -> Optional[TriggerState]:
    """See :meth:`Storage.trigger_abort`."""

    def body(cur: Cursor) -> Optional[TriggerState]:
        cur.execute(db.sql["trigger_abort_lock"], (trigger_id,))
        row = cur.fetchone()
        if row is None or (org is not None and row[0] != org):
            return None
        cur.execute(db.sql["trigger_abort"], (trigger_id,))
        return TriggerState(row[1])

    return db.transaction(body)


def fire_due(
    db: Database, now: float, next_fire: NextFire, limit: int, daily_limit: Optional[Callable[[str], int]]
) -> list[int]:
    """See :meth:`Storage.trigger_fire_due`.

    Due schedules are locked with ``FOR UPDATE SKIP LOCKED``: hosts firing at
    the same moment split them, and one that waited on a lock re-checks the
    row and finds it no longer due.
    """

    def body(cur: Cursor) -> list[int]:
        cur.execute(db.sql["trigger_lock_due"], (now, limit))
        due = [_trigger(r) for r in cur.fetchall()]
        if not due:
            return []
        refused: dict[int, str] = {}
        if daily_limit is not None:
            # As an enqueue with daily limits: the orgs' usage locked, then counted.
            usage.lock(db, cur, [t.org for t in due])
            refused = refused_fires(due, daily_limit, lambda org: usage.counted(db, cur, org, now), now)
        # One insert for all: its usage rows are locked in one order (see jobs.insert_rows).
        run = [t for t in due if t.id not in refused]
        rows = jobs.insert_rows(db, cur, [scheduled_job(t) for t in run], now, skip_taken=False) if run else []
        fired = sorted(int(r[0]) for r in rows)  # identity ids follow the jobs' order
        job_ids = dict(zip((t.id for t in run), fired))
        for t in due:
            if t.id in refused:
                job = scheduled_job(t)
                cur.execute(
                    db.sql["trigger_refused_job"],
                    (job.org, job.kind, job.handler, job.payload, now, now, refused[t.id], job.queue, job.priority, job.cost),
                )
                job_ids[t.id] = cur.fetchone()[0]  # type: ignore[index]
        following = [next_fire(t, now) for t in due]
        cur.execute(
            db.sql["trigger_advance"],
            (
                [t.id for t in due],
                ["waiting" if f is not None else "complete" for f in following],
                floats(following),
                [job_ids[t.id] for t in due],
            ),
        )
        return fired

    if not db.read(db.sql["trigger_any_due"], (now,)):
        return []
    return db.transaction(body)
