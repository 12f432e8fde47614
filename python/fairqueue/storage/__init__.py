"""Storage: one interface (:mod:`fairqueue.storage.interface`), implemented by every
backend — :mod:`~fairqueue.storage.memory`, :mod:`~fairqueue.storage.sqlite` and
:mod:`~fairqueue.storage.postgres` — and :func:`open_storage`, which picks one.

The store is the truth; the dispatcher core is rebuilt from it at start-up.
Methods are named noun-first (``job_enqueue``, ``job_claim``, …); workers reach
storage only through this interface. ``tests/storage_conformance`` runs the same
suite against every backend.
"""

from __future__ import annotations

from fairqueue.storage.interface import (
    FEW_STATUSES,
    FLEX_ACTIVE,
    FLEX_HOLDING,
    LIVE_STATUSES,
    RERUNNABLE,
    SCHEMA_VERSION,
    USAGE_BUCKET,
    DailyUsage,
    NextFire,
    Storage,
    admit,
    check_daily_limits,
    check_finishes,
    flex_admit,
    flex_full,
    flex_order,
    job_filter,
    refused_fires,
    schedule_name_taken,
    scheduled_job,
    too_many_schedules,
    usage_hour,
)

__all__ = [
    "DailyUsage",
    "FEW_STATUSES",
    "FLEX_ACTIVE",
    "FLEX_HOLDING",
    "LIVE_STATUSES",
    "RERUNNABLE",
    "NextFire",
    "SCHEMA_VERSION",
    "Storage",
    "USAGE_BUCKET",
    "admit",
    "check_daily_limits",
    "check_finishes",
    "flex_admit",
    "flex_full",
    "flex_order",
    "job_filter",
    "refused_fires",
    "schedule_name_taken",
    "scheduled_job",
    "too_many_schedules",
    "usage_hour",
    "open_storage",
]


def open_storage(url: str) -> Storage:
    """Opens the store named by ``url``.

    ``":memory:"`` is the in-memory store; a ``postgresql://`` or ``postgres://``
    URL is the PostgreSQL store (``pip install fairqueue[postgres]``), in schema
    ``fairqueue`` or the URL's ``?schema=``, created or migrated on open; anything
    else is a SQLite file path.
    """
    if url == ":memory:":
        from fairqueue.storage.memory import MemoryStorage

        return MemoryStorage()
    if url.startswith(("postgresql://", "postgres://")):
        from fairqueue.storage.postgres import PostgresStorage

        return PostgresStorage.from_url(url)
    from fairqueue.storage.sqlite import SQLiteStorage

    return SQLiteStorage(url)
