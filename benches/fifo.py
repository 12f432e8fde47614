"""A plain FIFO dispatcher in pure Python: the baseline the runtime benchmarks
compare fair dispatch against. It speaks the few calls the worker makes of
``fairqueue.Dispatcher`` and ignores orgs, kinds, caps and run-at times."""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Optional


@dataclass(frozen=True)
class FifoGrant:
    lease: int
    id: int
    org: str
    kind: str
    attempt: int = 1


class FifoDispatcher:
    """First in, first out, up to ``slots`` at once."""

    def __init__(self, slots: int) -> None:
        self.slots = slots
        self.queue: deque[tuple[int, str, str]] = deque()
        self.held: set[int] = set()
        self.running: dict[int, int] = {}
        self.next_lease = 1

    def enqueue_many(self, requests: Sequence[tuple[Any, ...]], *, skip_held: bool = False) -> int:
        fresh = [r for r in requests if not (skip_held and r[0] in self.held)]
        for r in fresh:
            self.queue.append((r[0], r[1], r[2]))
            self.held.add(r[0])
        return len(fresh)

    def dispatch(self, max: Optional[int] = None) -> list[FifoGrant]:
        grants = []
        while self.queue and len(self.running) < self.slots and (max is None or len(grants) < max):
            job_id, org, kind = self.queue.popleft()
            lease, self.next_lease = self.next_lease, self.next_lease + 1
            self.running[lease] = job_id
            grants.append(FifoGrant(lease, job_id, org, kind))
        return grants

    def ack(self, lease: int) -> None:
        self.held.discard(self.running.pop(lease))

    def heartbeat(self, lease: int) -> float:
        return 0.0

    def next_wakeup(self) -> Optional[float]:
        return None

    def limits(self, org: str, kind: str) -> dict[str, int]:
        # No caps: the baseline dispatches in arrival order whatever the org.
        return {"cap": 1 << 30}

    def take_events(self) -> list[dict[str, object]]:
        return []

    def set_limits(self, *args: Any, **kwargs: Any) -> None:
        """Caps do not exist in a plain FIFO."""
