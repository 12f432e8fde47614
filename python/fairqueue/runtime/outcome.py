"""How one delivery of a job ended, as a handler slot hands it back to the loop."""

from __future__ import annotations

from typing import NamedTuple, Optional

from fairqueue.records import JobStatus, NewJob, Progress

__all__ = ["COMPLETED", "Outcome"]


class Outcome(NamedTuple):
    """How one delivery of a job ended (a named tuple: one is built per job)."""

    status: JobStatus
    error: Optional[str] = None
    retry_at: Optional[float] = None
    children: tuple[NewJob, ...] = ()
    progress: Optional[Progress] = None
    """A batch delivery's progress (see :class:`fairqueue.records.Progress`)."""
    given_back: bool = False
    """The job did not run to an outcome because its worker stopped (see
    :attr:`fairqueue.records.Finish.given_back`)."""
    ran: bool = False
    """The handler ran to this outcome (a handler attempt, see :attr:`fairqueue.records.Finish.ran`)."""
    result: Optional[str] = None
    """The handler's return value as JSON text."""
    attempt_error: Optional[str] = None
    """The attempt's error as a JSON object, kept on the record."""


COMPLETED = Outcome(JobStatus.COMPLETED, ran=True)
"""The outcome of most jobs: completed, with nothing to store but its end. A slot
hands it back as ``(lease, job id)`` through the worker's line, not as an object."""
