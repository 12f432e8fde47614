"""Presence: a worker tells the registry it is alive, every second, and takes its
proof of life again if it was lost (see :meth:`Storage.worker_seen`)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection

from fairqueue.records import JobStatus
from fairqueue.runtime.task import Task
from fairqueue.storage import Storage

__all__ = ["Presence"]

log = logging.getLogger("fairqueue.worker")


class Presence:
    """Marks ``worker`` as seen; after a lost proof of life, cancels the running jobs
    that were re-delivered meanwhile (their outcomes would be refused anyway).

    Args:
        store: the store whose registry lists the worker (already registered).
        worker: the worker's name.
        every: seconds between heartbeats (a dead worker is noticed a few of them later).
        running: the worker's running tasks now.
    """

    def __init__(self, store: Storage, worker: str, every: float, running: Callable[[], Collection[Task]]) -> None:
        self.store = store
        self.worker = worker
        self.every = every
        self.running = running
        self.lost = 0
        """Times the proof of life was found lost and taken again."""

    def run(self, now: float) -> None:
        if self.store.worker_seen(self.worker, now):
            return
        self.lost += 1
        gone = []
        for task in self.running():
            record = self.store.job_get(task.record.id)
            if record is None or record.status is not JobStatus.PROCESSING or record.lease_owner != self.worker:
                task.cancel.set()
                gone.append(task.record.id)
        log.warning(
            "fairqueue worker %s: lost its proof of life in the store (its lock connection dropped) and took it again; "
            "%d running jobs were re-delivered meanwhile and are cancelled here (their outcomes would be refused): %s",
            self.worker, len(gone), gone, extra={"worker": self.worker, "job_ids": gone},
        )  # fmt: skip
