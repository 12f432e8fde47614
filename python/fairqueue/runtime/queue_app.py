"""What the runtime uses of an app.

The runtime sits below the app facade (``app.worker()`` and ``app.testing()``
build it), so it names the parts it needs rather than the facade: a
:class:`fairqueue.FairQueue` has every one of them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Optional, Protocol, runtime_checkable

from fairqueue.alerts import Alerts
from fairqueue.conservation import ResourceMonitor
from fairqueue.enqueue import Enqueuer
from fairqueue.records import BatchErrorEvent
from fairqueue.retention import Retention
from fairqueue.settings import QueueSettings
from fairqueue.storage import Storage

__all__ = ["QueueApp"]


@runtime_checkable
class QueueApp(Protocol):
    """The parts of an app that workers and test mode run on."""

    settings: QueueSettings
    alerts: Alerts
    enqueuer: Enqueuer
    conservation: Optional[ResourceMonitor]
    retention: Retention

    @property
    def storage(self) -> Storage:
        """The store jobs live in (test mode swaps it for an in-memory one)."""

    @storage.setter
    def storage(self, store: Storage) -> None: ...

    def publish_batch_errors(self, events: Sequence[BatchErrorEvent]) -> None:
        """Calls the app's ``on_batch_error`` callbacks with committed events."""
