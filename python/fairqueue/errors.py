"""Exceptions raised by fairqueue.

Every error names the offending value and the limit or form it broke. The native
core raises these same classes (it imports them from here), so one ``except``
clause covers both layers.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Optional

__all__ = [
    "FairQueueError",
    "InvalidArgument",
    "UnknownKind",
    "UnknownPolicy",
    "DuplicateRequest",
    "UnknownRequest",
    "UnknownLease",
    "StorageError",
    "SchemaVersionError",
    "StorageCorrupt",
    "StorageFull",
    "StorageUnavailable",
    "MalformedRecord",
    "DuplicateSignature",
    "LimitExceeded",
    "DailyLimitExceeded",
    "FlexQueueFull",
    "NotSerializable",
    "HandlerNotFound",
]


class FairQueueError(Exception):
    """Base class of every error fairqueue raises on purpose."""


class InvalidArgument(FairQueueError, ValueError):
    """An argument is outside its allowed range or malformed."""


class UnknownKind(InvalidArgument):
    """A kind name other than ``future``, ``queueable``, ``batch`` or ``scheduled``."""


class UnknownPolicy(InvalidArgument):
    """A policy name other than ``fair_share`` or ``peek_set``."""


class DuplicateRequest(FairQueueError, ValueError):
    """A request id that is already queued, delayed or running."""


class UnknownRequest(FairQueueError, LookupError):
    """A request id the dispatcher does not hold."""


class UnknownLease(FairQueueError, LookupError):
    """A lease that is not active: never issued, already released, or expired."""


class StorageError(FairQueueError):
    """The store refused or could not complete an operation; nothing was half-done."""


class StorageFull(StorageError):
    """The store's disk (or quota) is full: nothing was written. It heals when space
    returns; a worker waits and retries."""


class StorageUnavailable(StorageError):
    """The store could not be reached or was busy (connection lost, server shutting
    down, pool exhausted, a lock held too long): nothing was written. It heals; a
    worker waits and retries."""


class StorageCorrupt(StorageError):
    """The store's file or database is damaged: fairqueue will not read or write it.
    Restore it from a backup (or move it away to start empty); this does not heal."""


class SchemaVersionError(StorageError):
    """The store was written by a newer fairqueue than this one; upgrade fairqueue."""


class MalformedRecord(StorageError):
    """A stored job row holds a value fairqueue never writes (edited by hand, or
    corrupted): the job fails with this error; no other job is affected."""


class DuplicateSignature(FairQueueError, ValueError):
    """A job with the same duplicate signature is already holding, queued or running."""


class LimitExceeded(FairQueueError):
    """An enqueue would break a limit of SPEC §4; nothing was enqueued."""


class DailyLimitExceeded(LimitExceeded):
    """An org's async executions in the last 24 hours would exceed its daily limit.

    ``org``, ``count`` (counted in the window), ``limit`` and ``resets_at`` (Unix
    time at which the oldest counted executions leave the window, so capacity
    returns) say which and until when.
    """

    def __init__(self, org: str, count: int, adding: int, limit: int, resets_at: float) -> None:
        self.org = org
        self.count = count
        self.limit = limit
        self.resets_at = resets_at
        when = datetime.fromtimestamp(resets_at, timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        super().__init__(
            f"org {org!r} has {count:,} async executions in the last 24 hours; {adding:,} more would exceed "
            f"its daily limit of {limit:,}. Capacity returns at {when}, or raise the limit "
            "(app.set_daily_limit); nothing was enqueued"
        )


class FlexQueueFull(LimitExceeded):
    """An org's flex queue is full: 5 batch jobs queued or running and 100 holding."""

    def __init__(self, org: str, message: str) -> None:
        self.org = org
        super().__init__(message)


class NotSerializable(InvalidArgument, TypeError):
    """A job's arguments or state are not JSON-serialisable (fairqueue never pickles)."""


class HandlerNotFound(FairQueueError, LookupError):
    """A job's handler cannot be imported by its import path, so no worker could run it."""


class JobFailed(FairQueueError):
    """A job whose result was asked for did not complete: it failed, was discarded
    after its retries, or was aborted. Carries what its last attempt raised, in the
    process that ran it (type name, message, traceback text).

    Attributes:
        job_id: the job.
        status: its final status (``"failed"``, ``"discarded"`` or ``"aborted"``).
        reason: its extended status (why it ended so).
        error_type: the exception's type name, if a handler raised.
        error_message: the exception's message.
        remote_traceback: the traceback, as the worker formatted it.
    """

    def __init__(self, job_id: int, status: str, reason: str, error_type: Optional[str], error_message: Optional[str],
                 remote_traceback: Optional[str]) -> None:  # fmt: skip
        super().__init__(f"job {job_id} {status}: {reason}")
        self.job_id = job_id
        self.status = status
        self.reason = reason
        self.error_type = error_type
        self.error_message = error_message
        self.remote_traceback = remote_traceback
