"""A claimed job on its way through a worker: from the loop to a slot and back."""

from __future__ import annotations

import time
from typing import Optional

from fairqueue.jobs import CancelFlag
from fairqueue.records import JobRecord

__all__ = ["Task"]


class Task:
    """A claimed job a worker runs (a slotted class: one per job).

    Args:
        lease: the dispatcher core's lease of the job's slot.
        record: the job's record as claimed.
        timeout: seconds the handler may run.
        started: ``time.monotonic()`` when it starts (default: now); a loop starting
            many jobs in one turn reads the clock once for all of them.
    """

    __slots__ = ("lease", "record", "timeout", "cancel", "started", "deadline", "timed_out")

    def __init__(self, lease: int, record: JobRecord, timeout: float, started: Optional[float] = None) -> None:
        self.lease = lease
        self.record = record
        self.timeout = timeout
        """Seconds the handler may run (its clock starts at ``started``)."""
        self.cancel = CancelFlag()
        self.started = time.monotonic() if started is None else started
        self.deadline = self.started + timeout
        """When the handler is overdue (``time.monotonic()``); infinite once it has
        returned, however long its outcome then waits for the store."""
        self.timed_out = False
