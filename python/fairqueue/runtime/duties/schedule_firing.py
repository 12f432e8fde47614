"""Schedule firing: due schedules enqueue their job. Any number of workers may
fire; the store makes each fire happen once."""

from __future__ import annotations

from collections.abc import Callable

from fairqueue.cron import next_fire
from fairqueue.settings import QueueSettings
from fairqueue.storage import Storage

__all__ = ["ScheduleFiring"]


class ScheduleFiring:
    """Fires the store's due schedules, each within its org's daily limit.

    Args:
        store: where the schedules are.
        settings: the daily limits a fire is checked against.
        every: seconds between looks.
        on_fired: called when a fire queued a job (so the worker looks at once).
    """

    def __init__(self, store: Storage, settings: QueueSettings, every: float, on_fired: Callable[[], None]) -> None:
        self.store = store
        self.settings = settings
        self.every = every
        self.on_fired = on_fired

    def run(self, now: float) -> None:
        """Fires every schedule due at ``now``."""
        if self.store.trigger_fire_due(now, next_fire, daily_limit=self.settings.daily_limit):
            self.on_fired()
