"""``Dispatcher(policy="peek_set")`` against a tiny pure-Python model of the same policy.

The model is written the way seed 001 states the rule, with plain lists and linear
scans: a free slot takes the first request of the peek set (the first N ready
requests) whose org is under cap for its kind; if every request in the peek set
belongs to an org at cap, the non-exempt ones move to the back with their kind's
extended delay, and the slot looks once more. Delayed requests that come due rejoin
the back of the queue in (due time, order delayed) order.

Hypothesis drives both with the same random enqueue / dispatch / ack / fail / retry
/ clock-advance sequences and every decision (which request, which org, which
attempt), every state and every counter must match exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

from hypothesis import given
from hypothesis import strategies as st

from fairqueue import Dispatcher
from fairqueue.errors import DuplicateRequest, UnknownLease

ORGS = ("org-a", "org-b", "org-c")
KINDS = ("future", "batch")
FUTURE_DELAY = 300
"""Extended delay of futures, in whole seconds; batch is exempt."""


@dataclass
class Request:
    id: int
    org: str
    kind: str
    attempts: int = 0


@dataclass
class PeekSetModel:
    """The peek_set policy with lists: ``ready`` in queue order, ``delayed`` unsorted."""

    slots: int
    cap: int
    peek_set: int
    now: int = 0
    ready: list[Request] = field(default_factory=list)
    delayed: list[tuple[int, int, Request]] = field(default_factory=list)  # (due, order, request)
    running: dict[int, Request] = field(default_factory=dict)  # lease -> request
    held: set[int] = field(default_factory=set)
    delay_order: int = 0
    next_lease: int = 1
    counters: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys(
            ("enqueued", "dispatched", "released", "acked", "failed", "retried", "extended_delays"), 0
        )
    )

    def _delay(self, r: Request, due: int) -> None:
        self.delayed.append((due, self.delay_order, r))
        self.delay_order += 1

    def _promote(self) -> None:
        due = sorted((d for d in self.delayed if d[0] <= self.now), key=lambda d: (d[0], d[1]))
        self.delayed = [d for d in self.delayed if d[0] > self.now]
        self.ready.extend(r for _, _, r in due)

    def _running_of(self, org: str, kind: str) -> int:
        return sum(1 for r in self.running.values() if r.org == org and r.kind == kind)

    def _first_under_cap(self) -> Optional[Request]:
        for r in self.ready[: self.peek_set]:
            if self._running_of(r.org, r.kind) < self.cap:
                return r
        return None

    def enqueue(self, id: int, org: str, kind: str, run_at: Optional[int]) -> None:
        if id in self.held:
            raise DuplicateRequest(id)
        self.held.add(id)
        self.counters["enqueued"] += 1
        r = Request(id, org, kind)
        if run_at is not None and run_at > self.now:
            self._delay(r, run_at)
        else:
            self.ready.append(r)

    def dispatch(self, max: int) -> list[tuple[int, str, str, int]]:
        self._promote()
        grants = []
        while len(grants) < max and len(self.running) < self.slots and self.ready:
            chosen = self._first_under_cap()
            if chosen is None:
                # The whole peek set belongs to capped orgs: move it back (batch stays).
                window = self.ready[: self.peek_set]
                moved = [r for r in window if r.kind == "future"]
                if not moved:
                    break
                self.ready = [r for r in self.ready if r not in moved]
                for r in moved:
                    self._delay(r, self.now + FUTURE_DELAY)
                self.counters["extended_delays"] += len(moved)
                chosen = self._first_under_cap()
                if chosen is None:
                    break
            self.ready.remove(chosen)
            chosen.attempts += 1
            self.running[self.next_lease] = chosen
            self.next_lease += 1
            self.counters["dispatched"] += 1
            grants.append((chosen.id, chosen.org, chosen.kind, chosen.attempts))
        return grants

    def release(self, lease: int, outcome: str, at: int = 0) -> int:
        if lease not in self.running:
            raise UnknownLease(lease)
        r = self.running.pop(lease)
        self.counters["released"] += 1
        if outcome == "retry":
            self.counters["retried"] += 1
            if at > self.now:
                self._delay(r, at)
            else:
                self.ready.append(r)
        else:
            self.counters["acked" if outcome == "ack" else "failed"] += 1
            self.held.discard(r.id)
        return r.id

    def state_of(self, id: int) -> str:
        if any(r.id == id for r in self.ready):
            return "queued"
        if any(r.id == id for _, _, r in self.delayed):
            return "delayed"
        return "running"


enqueue = st.tuples(
    st.just("enqueue"),
    st.sampled_from(ORGS),
    st.sampled_from(KINDS),
    st.one_of(st.none(), st.none(), st.none(), st.integers(0, 400)),
    st.integers(1, 6),
)
dispatch = st.tuples(st.just("dispatch"), st.integers(0, 6))
ops = st.lists(
    st.one_of(
        enqueue,
        enqueue,
        dispatch,
        dispatch,
        st.tuples(st.just("ack"), st.integers(0, 100)),
        st.tuples(st.just("fail"), st.integers(0, 100)),
        st.tuples(st.just("retry"), st.integers(0, 100), st.integers(0, 200)),
        st.tuples(st.just("ack_stale"), st.integers(1, 200)),
        st.tuples(st.just("advance"), st.sampled_from([1, 60, 299, 300, 301, 600])),
    ),
    min_size=40,
    max_size=150,
)


@given(
    slots=st.integers(1, 5),
    cap=st.integers(1, 3),
    peek_set=st.integers(1, 6),
    script=ops,
)
def test_peek_set_matches_the_reference_model(slots: int, cap: int, peek_set: int, script: list[tuple]) -> None:  # type: ignore[type-arg]
    d = Dispatcher(
        policy="peek_set",
        slots=slots,
        cap=cap,
        peek_set=peek_set,
        extended_delay={"future": float(FUTURE_DELAY), "batch": None},
        lease=10_000_000.0,
        virtual_time=0.0,
    )
    m = PeekSetModel(slots=slots, cap=cap, peek_set=peek_set)
    leases: list[int] = []  # active leases, in grant order (the model's lease numbers match)
    next_id = 1

    for op in script:
        name = op[0]
        if name == "enqueue":
            _, org, kind, run_at, count = op
            for _ in range(count):
                at = None if run_at is None else m.now + run_at
                d.enqueue(next_id, org, kind, None if at is None else float(at))
                m.enqueue(next_id, org, kind, at)
                next_id += 1
        elif name == "dispatch":
            got = [(g.id, g.org, g.kind, g.attempt) for g in d.dispatch(op[1])]
            before = m.next_lease
            expected = m.dispatch(op[1])
            assert got == expected
            leases.extend(range(before, m.next_lease))
        elif name in ("ack", "fail", "retry") and leases:
            lease = leases.pop(op[1] % len(leases))
            if name == "ack":
                assert d.ack(lease).id == m.release(lease, "ack")
            elif name == "fail":
                assert d.fail(lease).id == m.release(lease, "fail")
            else:
                at = m.now + op[2]
                assert d.retry(lease, float(at)).id == m.release(lease, "retry", at)
        elif name == "ack_stale" and op[1] not in leases:
            try:
                d.ack(op[1])
            except UnknownLease:
                pass
            else:
                raise AssertionError(f"lease {op[1]} is not active yet was acked")
        elif name == "advance":
            d.advance(float(op[1]))
            m.now += op[1]

        stats = d.stats()
        assert (stats["queued"], stats["delayed"], stats["running"]) == (
            len(m.ready),
            len(m.delayed),
            len(m.running),
        )
        assert {k: stats[k] for k in m.counters} == m.counters
        for i in m.held:
            assert d.locate(i)["state"] == m.state_of(i), f"request {i}"
    # Queue order too, not just counts.
    for position, r in enumerate(m.ready):
        assert d.locate(r.id)["ahead_in_queue"] == position
