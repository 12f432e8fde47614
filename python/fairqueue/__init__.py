"""fairqueue: a multi-tenant, fair, durable background-job system with a Rust core.

The public API is re-exported here; ``fairqueue._core`` is private.
"""

from __future__ import annotations

from fairqueue._core import Dispatcher, Grant, Release
from fairqueue.errors import (
    DuplicateRequest,
    FairQueueError,
    InvalidArgument,
    UnknownKind,
    UnknownLease,
    UnknownPolicy,
    UnknownRequest,
)

__all__ = [
    "Dispatcher",
    "Grant",
    "Release",
    "FairQueueError",
    "InvalidArgument",
    "UnknownKind",
    "UnknownPolicy",
    "DuplicateRequest",
    "UnknownRequest",
    "UnknownLease",
    "KINDS",
    "POLICIES",
]

KINDS = ("future", "queueable", "batch", "scheduled")
"""The request kinds; limits are kept per org and per kind."""

POLICIES = ("fair_share", "peek_set")
"""The flow-control policies; ``fair_share`` is the default."""
