"""Cancel requests: a running job aborted through the store (from any process)
sees ``ctx.cancelled``."""

from __future__ import annotations

from collections.abc import Callable, Collection

from fairqueue.runtime.task import Task
from fairqueue.storage import Storage

__all__ = ["CancelRequests"]


class CancelRequests:
    """Raises the cancel flag of every running task whose job was aborted.

    Args:
        store: where aborts are requested.
        every: seconds between looks.
        running: the worker's running tasks now.
    """

    def __init__(self, store: Storage, every: float, running: Callable[[], Collection[Task]]) -> None:
        self.store = store
        self.every = every
        self.running = running

    def run(self, now: float) -> None:
        """Looks up the running jobs' cancel requests and raises their flags."""
        by_id = {task.record.id: task for task in self.running()}
        if not by_id:
            return
        for job_id in self.store.job_cancel_requested(list(by_id)):
            by_id[job_id].cancel.set()
