"""Daily usage in the PostgreSQL store: each org's async executions per hour, and its daily limit."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from fairqueue.records import NewJob
from fairqueue.storage.interface import DailyUsage, check_daily_limits, usage_hour

from .connection import LOCK_USAGE, Cursor, Database

__all__ = ["add", "add_params", "check_limits", "counted", "daily", "lock"]


def counted(db: Database, cur: Cursor, org: str, now: float) -> DailyUsage:
    """``org``'s executions in the window at ``now``, read on ``cur``."""
    cur.execute(db.sql["usage_counted"], (org, DailyUsage.window_start(now)))
    row = cur.fetchone()
    assert row is not None
    return DailyUsage(org, int(row[0]), row[1])


def daily(db: Database, org: str, now: float) -> DailyUsage:
    """See :meth:`Storage.usage_daily`."""
    return db.transaction(lambda cur: counted(db, cur, org, now), block=False)


def lock(db: Database, cur: Cursor, orgs: Sequence[str]) -> None:
    """Locks the orgs' usage (to commit): two hosts cannot both take an org's last executions."""
    db.lock_orgs(cur, LOCK_USAGE, orgs)


def check_limits(db: Database, cur: Cursor, jobs: Sequence[NewJob], limits: Mapping[str, int], now: float) -> None:
    """Raises DailyLimitExceeded if ``jobs`` would take an org past its limit. The
    orgs' usage is locked first (to commit), so two hosts cannot both take an org's
    last executions."""
    lock(db, cur, [j.org for j in jobs if j.org in limits])
    check_daily_limits(jobs, limits, lambda org: counted(db, cur, org, now), now)


def add(db: Database, cur: Cursor, rows: Sequence[tuple[Any, ...]], now: float) -> None:
    """Counts the stored jobs ``rows`` (``(id, signature, org, status)``) in their orgs' usage at ``now``."""
    cur.execute(db.sql["usage_add"], add_params(rows, now))


def add_params(rows: Sequence[tuple[Any, ...]], now: float) -> tuple[list[str], list[int], list[int]]:
    """The parameters of ``usage_add`` for :func:`add` (and its async twin in :mod:`.jobs`)."""
    per_org: dict[str, int] = {}
    for _, _, org, _ in sorted(rows, key=lambda r: r[2]):
        # In org order, so concurrent transactions lock usage rows in one order.
        per_org[org] = per_org.get(org, 0) + 1
    return list(per_org), [usage_hour(now)] * len(per_org), list(per_org.values())
