"""Each dispatcher policy written in plain Python, as a Python team would write it.

The baselines the dispatcher benchmarks compare the Rust core against. They speak
the subset of ``fairqueue.Dispatcher``'s API the benchmarks use (``enqueue``,
``enqueue_many``, ``dispatch``, ``ack``, ``advance``) on a virtual clock, with the
same rules:

- :class:`PeekSetPy`: one deque of ready requests; a free slot takes the head if its
  (org, kind) is under cap, otherwise scans the first ``peek_set`` requests for the
  first one under cap; if the whole peek set is capped, its non-exempt requests move
  to the back with the extended delay (a heap of due times).
- :class:`FairSharePy`: a deque per (org, kind) and a heap of backlogged, under-cap
  pairs keyed by virtual time (start-time fair queuing), charged the estimated run
  time at dispatch and corrected to the measured run time at release, with the same
  moving estimate (alpha 0.2) as the Rust core.

Both keep an id index (duplicate ids are refused) and a lease table, as any real
dispatcher must. ``tests/unit/test_pure_python_baselines.py`` checks that they make
the same decisions as the Rust core.
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Optional

ESTIMATE_ALPHA = 0.2
DEFAULT_EXTENDED_DELAY = {"future": 300.0, "queueable": 300.0, "scheduled": 300.0, "batch": None}


@dataclass(frozen=True)
class GrantPy:
    lease: int
    id: int
    org: str
    kind: str
    attempt: int


class _Request:
    __slots__ = ("id", "org", "kind", "attempts", "seq")

    def __init__(self, id: int, org: str, kind: str) -> None:
        self.id = id
        self.org = org
        self.kind = kind
        self.attempts = 0
        self.seq = 0


class _Base:
    def __init__(self, *, slots: int = 13, cap: int = 12, virtual_time: float = 0.0) -> None:
        self.slots = slots
        self.cap = cap
        # Integer nanoseconds, as in the Rust core, so run times and charges round alike.
        self.now = round(virtual_time * 1e9)
        self.held: dict[int, _Request] = {}
        self.leases: dict[int, tuple[_Request, int, float]] = {}  # lease -> (request, dispatched at, charge)
        self.running: dict[tuple[str, str], int] = {}
        self.next_lease = 1
        self.delayed: list[tuple[int, int, _Request]] = []
        self._delay_order = itertools.count()

    def advance(self, seconds: float) -> None:
        self.now += round(seconds * 1e9)

    def enqueue(self, id: int, org: str, kind: str = "future", run_at: Optional[float] = None) -> None:
        if id in self.held:
            raise ValueError(f"duplicate request id {id}")
        r = self.held[id] = _Request(id, org, kind)
        due = None if run_at is None else round(run_at * 1e9)
        if due is not None and due > self.now:
            heapq.heappush(self.delayed, (due, next(self._delay_order), r))
        else:
            self._ready(r)

    def enqueue_many(self, requests: Iterable[tuple[int, str, str]]) -> int:
        n = 0
        for id, org, kind in requests:
            self.enqueue(id, org, kind)
            n += 1
        return n

    def _promote(self) -> None:
        while self.delayed and self.delayed[0][0] <= self.now:
            self._ready(heapq.heappop(self.delayed)[2])

    def _grant(self, r: _Request, charge: float = 0.0) -> GrantPy:
        key = (r.org, r.kind)
        self.running[key] = self.running.get(key, 0) + 1
        r.attempts += 1
        lease = self.next_lease
        self.next_lease += 1
        self.leases[lease] = (r, self.now, charge)
        return GrantPy(lease, r.id, r.org, r.kind, r.attempts)

    def ack(self, lease: int) -> int:
        r, dispatched_at, charge = self.leases.pop(lease)
        key = (r.org, r.kind)
        self.running[key] -= 1
        self._released(r, float(self.now - dispatched_at), charge)
        del self.held[r.id]
        return r.id

    def _ready(self, r: _Request) -> None:
        raise NotImplementedError

    def _released(self, r: _Request, run: float, charge: float) -> None:
        """Policy hook after a slot frees."""


class PeekSetPy(_Base):
    """The reference platform's peek-set flow control, with a deque and a scan."""

    def __init__(
        self,
        *,
        slots: int = 13,
        cap: int = 12,
        peek_set: int = 2000,
        extended_delay: Optional[dict[str, Optional[float]]] = None,
        virtual_time: float = 0.0,
    ) -> None:
        super().__init__(slots=slots, cap=cap, virtual_time=virtual_time)
        self.peek_set = peek_set
        self.extended_delay = dict(DEFAULT_EXTENDED_DELAY, **(extended_delay or {}))
        self.queue: deque[_Request] = deque()

    def _ready(self, r: _Request) -> None:
        self.queue.append(r)

    def _under_cap(self, r: _Request) -> bool:
        return self.running.get((r.org, r.kind), 0) < self.cap

    def _find(self) -> Optional[int]:
        for i, r in enumerate(itertools.islice(self.queue, self.peek_set)):
            if self._under_cap(r):
                return i
        return None

    def dispatch(self, max: Optional[int] = None) -> list[GrantPy]:
        self._promote()
        grants: list[GrantPy] = []
        while self.queue and len(self.leases) < self.slots and (max is None or len(grants) < max):
            i = self._find()
            if i is None:
                # Every request in the peek set belongs to a capped org: move them back.
                window = list(itertools.islice(self.queue, self.peek_set))
                moved = [r for r in window if self.extended_delay[r.kind] is not None]
                if not moved:
                    break
                keep = [r for r in window if self.extended_delay[r.kind] is None]
                for _ in window:
                    self.queue.popleft()
                self.queue.extendleft(reversed(keep))
                for r in moved:
                    delay = round(self.extended_delay[r.kind] * 1e9)  # type: ignore[operator]
                    heapq.heappush(self.delayed, (self.now + delay, next(self._delay_order), r))
                i = self._find()
                if i is None:
                    break
            if i == 0:
                r = self.queue.popleft()
            else:
                r = self.queue[i]
                del self.queue[i]
            grants.append(self._grant(r))
        return grants


class _Pair:
    __slots__ = ("org", "kind", "queue", "tag", "estimate", "weight", "min", "version")

    def __init__(self, org: str, kind: str) -> None:
        self.org = org
        self.kind = kind
        self.queue: deque[_Request] = deque()
        self.tag = 0.0
        self.estimate: Optional[float] = None
        self.weight = 1.0
        self.min = 0
        self.version = 0


def _blend(estimate: Optional[float], sample: float) -> float:
    return sample if estimate is None else estimate + ESTIMATE_ALPHA * (sample - estimate)


class FairSharePy(_Base):
    """Start-time fair queuing over (org, kind) pairs, charged by measured run time."""

    def __init__(self, *, slots: int = 13, cap: int = 12, virtual_time: float = 0.0) -> None:
        super().__init__(slots=slots, cap=cap, virtual_time=virtual_time)
        self.pairs: dict[tuple[str, str], _Pair] = {}
        # (tier, tag, head seq, version, pair): stale entries are skipped by version.
        self.heap: list[tuple[int, float, int, int, _Pair]] = []
        self.vtime = 0.0
        self.kind_estimate: dict[str, float] = {}
        self._seq = itertools.count()

    def _refile(self, p: _Pair) -> None:
        p.version += 1
        if not p.queue:
            return
        running = self.running.get((p.org, p.kind), 0)
        if running >= self.cap:
            return
        tier = 0 if running < p.min else 1
        heapq.heappush(self.heap, (tier, max(p.tag, 0.0), p.queue[0].seq, p.version, p))

    def _ready(self, r: _Request) -> None:
        key = (r.org, r.kind)
        p = self.pairs.get(key)
        if p is None:
            p = self.pairs[key] = _Pair(r.org, r.kind)
        r.seq = next(self._seq)
        p.queue.append(r)
        if len(p.queue) == 1:
            p.tag = max(p.tag, self.vtime)
            self._refile(p)

    def dispatch(self, max: Optional[int] = None) -> list[GrantPy]:
        self._promote()
        grants: list[GrantPy] = []
        while self.heap and len(self.leases) < self.slots and (max is None or len(grants) < max):
            _, _, _, version, p = heapq.heappop(self.heap)
            if version != p.version:
                continue
            r = p.queue.popleft()
            self.vtime = self.vtime if self.vtime > p.tag else p.tag
            charge = p.estimate if p.estimate is not None else self.kind_estimate.get(p.kind, 0.0)
            p.tag += charge / p.weight
            grants.append(self._grant(r, charge))
            self._refile(p)
        return grants

    def _released(self, r: _Request, run: float, charge: float) -> None:
        p = self.pairs[(r.org, r.kind)]
        p.tag = max(p.tag + (run - charge) / p.weight, 0.0)
        p.estimate = _blend(p.estimate, run)
        self.kind_estimate[p.kind] = _blend(self.kind_estimate.get(p.kind), run)
        self._refile(p)
