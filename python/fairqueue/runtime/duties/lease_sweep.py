"""The lease sweep: jobs whose lease lapsed (their worker died or stalled) are
queued again, their redelivery recorded."""

from __future__ import annotations

from fairqueue.storage import Storage

__all__ = ["LeaseSweep"]


class LeaseSweep:
    """Re-queues the store's jobs whose lease has expired.

    Args:
        store: the store to sweep.
        every: seconds between sweeps.
    """

    def __init__(self, store: Storage, every: float) -> None:
        self.store = store
        self.every = every
        self.requeued = 0
        """Jobs this sweep has queued again."""

    def run(self, now: float) -> None:
        """Re-queues every job whose lease expired before ``now``."""
        self.requeued += len(self.store.job_requeue_expired(now))
