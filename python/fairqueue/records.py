"""Job records: what a user submitted, its status and its history (SPEC §5)."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import NamedTuple, Optional

__all__ = ["JobStatus", "NewJob", "JobRecord", "PendingJob", "Finish"]


class JobStatus(str, enum.Enum):
    """Where a job is in its life, as the reference ``AsyncApexJob`` names it."""

    HOLDING = "holding"
    QUEUED = "queued"
    PREPARING = "preparing"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"
    ABORTED = "aborted"

    @property
    def finished(self) -> bool:
        """True for the statuses a job never leaves."""
        return self in _FINISHED


_FINISHED = frozenset({JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.ABORTED})


@dataclass(frozen=True)
class NewJob:
    """A job to enqueue. ``payload`` is JSON text, already validated by the caller."""

    org: str
    kind: str
    handler: str
    payload: str
    run_at: Optional[float] = None
    parent_id: Optional[int] = None
    chain_depth: int = 0
    duplicate_signature: Optional[str] = None


@dataclass(frozen=True)
class JobRecord:
    """One job's record (SPEC §5). Times are UNIX seconds."""

    id: int
    org: str
    kind: str
    handler: str
    payload: str
    status: JobStatus
    created_at: float
    run_at: Optional[float]
    started_at: Optional[float]
    finished_at: Optional[float]
    attempts: int
    items_processed: int
    items_total: Optional[int]
    error_count: int
    extended_status: Optional[str]
    parent_id: Optional[int]
    chain_depth: int
    duplicate_signature: Optional[str]
    lease_owner: Optional[str]
    lease_expires_at: Optional[float]
    cancel_requested: bool


@dataclass(frozen=True)
class PendingJob:
    """What the dispatcher core needs of a queued job to rebuild its queue.

    ``ready_seq`` grows every time any job becomes queued (enqueued, retried, its
    lease expired), so a worker that remembers the largest it has seen picks up
    exactly what changed since, whichever process changed it.
    """

    id: int
    org: str
    kind: str
    run_at: Optional[float]
    attempts: int
    ready_seq: int


class Finish(NamedTuple):
    """How a claimed job ended.

    ``status`` is ``completed`` or ``failed``, or ``queued`` to deliver it again at
    ``retry_at`` (None: as soon as possible). ``worker`` must be the job's current
    lease owner, so a worker whose lease expired cannot overwrite the outcome of
    the re-delivery. ``children`` are the jobs the handler enqueued; they are
    stored in the same transaction, only if the outcome applies.

    A named tuple rather than a dataclass: the worker builds one per job.
    """

    job_id: int
    worker: str
    status: JobStatus
    at: float
    error: Optional[str] = None
    retry_at: Optional[float] = None
    children: tuple[NewJob, ...] = ()
