"""Taken jobs: a worker's core forgets the queued jobs other workers took.

Every worker's core holds every queued job of the queues it serves. A job another
worker claims stays in this core until this core grants it and the claim finds it
gone: meanwhile it holds its line back. Under a constant stream the core's line
keeps every job the other workers ran ahead of its own grants, so it falls ever
further behind the store, priority aging compares against jobs that ran long ago,
and low-priority jobs wait without bound; each such grant also costs a claim that
misses. While other live workers share the store, this duty reads the jobs they
took (:meth:`Storage.job_left_queue`) every quarter second and takes them out of
the core, so the core's lines match the store's within that time.

Reading the jobs finished since the last look, not those finished since the last
look's commit, would miss a finish committed just after the look with a time just
before it: each look reads back ``MARGIN`` seconds further (the ids a core no
longer holds cost a dictionary lookup). Hosts' clocks may differ by that much on
PostgreSQL; a job a look misses is the same phantom as before, caught when the
core grants it.
"""

from __future__ import annotations

from fairqueue._core import Dispatcher
from fairqueue.storage import Storage

__all__ = ["TakenJobs"]

MARGIN = 1.0
"""Seconds each look reads back before the previous one."""
# Seconds between two reads of the registry (whether other live workers share the store).
_REGISTRY_EVERY = 2.0


class TakenJobs:
    """Takes the jobs other workers took out of ``core``.

    Args:
        store: the store the workers share.
        worker: this worker's name.
        core: its dispatcher.
    """

    every = 0.25

    def __init__(self, store: Storage, worker: str, core: Dispatcher) -> None:
        self.store = store
        self.worker = worker
        self.core = core
        self.removed = 0
        """Queued jobs taken out of the core, since the start."""
        self._since: float | None = None
        self._others = False
        self._registry_due = 0.0

    def run(self, now: float) -> None:
        if now >= self._registry_due:
            self._registry_due = now + _REGISTRY_EVERY
            self._others = any(w.alive and w.info.name != self.worker for w in self.store.worker_list())
        since, self._since = (now if self._since is None else self._since), now
        if not self._others:
            return  # alone: every job that left the queue was this worker's own grant
        for job_id in self.store.job_left_queue(since - MARGIN, self.worker):
            # abort() leaves a job running here alone (its lease lapsed, another took it:
            # its outcome will be refused) and removes a queued or delayed one.
            if self.core.holds(job_id) and self.core.abort(job_id) is None:
                self.removed += 1
