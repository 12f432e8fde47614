"""Rows to records and values to parameters, shared by the PostgreSQL store's operation modules."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Optional

from fairqueue.records import JobRecord, JobStatus

__all__ = ["COLUMNS", "FIELDS", "floats", "record"]

FIELDS = (
    "id", "org", "kind", "handler", "payload", "status", "created_at", "run_at", "started_at", "finished_at",
    "attempts", "items_processed", "items_total", "error_count", "extended_status", "parent_id", "chain_depth",
    "duplicate_signature", "lease_owner", "lease_expires_at", "cancel_requested", "handler_attempts", "result", "errors",
    "worker_deaths", "queue", "key", "priority", "cost",
)  # fmt: skip
"""A job record's columns, in the order every statement that reads records lists them."""

COLUMNS = ", ".join(FIELDS)
""":data:`FIELDS` as a select list, for the statements put together in Python."""

def record(row: Sequence[Any]) -> JobRecord:
    """The job record of a row of :data:`FIELDS`."""
    # Built field by field rather than through __init__, as the SQLite store does:
    # the worker reads many records per second and the values come from our schema.
    job = JobRecord.__new__(JobRecord)
    values = job.__dict__
    values.update(zip(FIELDS, row))
    values["status"] = JobStatus(values["status"])
    return job


def floats(values: Iterable[Optional[float]]) -> list[Optional[float]]:
    """``values`` as floats (None kept), for a ``float8[]`` parameter."""
    # psycopg types a list by its elements; an int among floats must not turn the array into int8[].
    return [None if v is None else float(v) for v in values]
