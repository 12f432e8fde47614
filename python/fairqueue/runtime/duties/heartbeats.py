"""Heartbeats: a worker extends the leases of the jobs it runs, in the store and
in its core, so that a live worker's jobs are never re-delivered."""

from __future__ import annotations

from collections.abc import Callable, Collection

from fairqueue._core import Dispatcher
from fairqueue.errors import UnknownLease
from fairqueue.runtime.task import Task
from fairqueue.storage import Storage

__all__ = ["Heartbeats"]


class Heartbeats:
    """Extends the leases of the running jobs three times per lease.

    Args:
        store: where the leases are kept.
        core: the worker's dispatcher, whose leases are extended too.
        worker: the worker's name (the leases' owner).
        lease: seconds a lease lasts.
        running: the worker's running tasks now.
    """

    def __init__(
        self, store: Storage, core: Dispatcher, worker: str, lease: float, running: Callable[[], Collection[Task]]
    ) -> None:
        self.store = store
        self.core = core
        self.worker = worker
        self.lease = lease
        self.running = running
        self.every = lease / 3

    def run(self, now: float) -> None:
        """Extends every running task's lease to ``now + lease``."""
        tasks = self.running()
        if not tasks:
            return
        self.store.job_heartbeat([t.record.id for t in tasks], self.worker, now + self.lease)
        for task in tasks:
            try:
                self.core.heartbeat(task.lease)
            except UnknownLease:
                # The core's lease lapsed while the loop stalled: the core put the request
                # back, and the store, whose lease this run extended, keeps it ours.
                continue
