"""Dead workers: any live worker reaps the registered workers whose process died,
queuing their jobs again at once rather than after their leases lapse."""

from __future__ import annotations

import logging
from collections.abc import Callable

from fairqueue.storage import Storage

__all__ = ["DeadWorkers"]

log = logging.getLogger("fairqueue.worker")


class DeadWorkers:
    """Reaps dead workers (see :meth:`Storage.worker_reap`).

    Args:
        store: the store whose registry to sweep.
        every: seconds between sweeps.
        requeued: called when jobs were queued again (to look for them at once).
    """

    def __init__(self, store: Storage, every: float, requeued: Callable[[], None]) -> None:
        self.store = store
        self.every = every
        self.requeued_news = requeued
        self.workers = 0
        """Dead workers this sweep reaped."""
        self.requeued = 0
        """Their jobs it queued again."""
        self.quarantined = 0
        """Their jobs it failed as likely to have killed their workers."""

    def run(self, now: float) -> None:
        reaped = self.store.worker_reap(now)
        if not reaped.workers:
            return
        self.workers += len(reaped.workers)
        self.requeued += len(reaped.requeued)
        self.quarantined += len(reaped.quarantined)
        log.warning(
            "fairqueue: worker(s) %s died; %d of their jobs queued again: %s",
            ", ".join(reaped.workers), len(reaped.requeued), reaped.requeued,
            extra={"dead_workers": reaped.workers, "job_ids": reaped.requeued},
        )  # fmt: skip
        if reaped.quarantined:
            log.error(
                "fairqueue: %d jobs failed, not delivered again: thread-mode workers died twice while running "
                "each (run such jobs with mode='process'): %s",
                len(reaped.quarantined), reaped.quarantined, extra={"job_ids": reaped.quarantined},
            )  # fmt: skip
        if reaped.requeued:
            self.requeued_news()
