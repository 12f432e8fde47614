"""One enqueue + dispatch + ack cycle with 1,000,000 requests queued over 10,000 orgs.

Run: ``pytest benches/test_bench_dispatcher.py --benchmark-enable --benchmark-only``.

For each policy, the Rust core through the binding (``fairqueue.Dispatcher``) and
the pure-Python baseline of the same policy (``pure_python.py``, checked decision for
decision against the core by ``tests/unit/test_pure_python_baselines.py``) run the
same cycle on the same backlog, in the same run. Building the backlog is setup and
is not measured. The backlog stays at 1M: each cycle adds one request and runs one.
The clock moves 10 ms per cycle so that fair share charges run time.

Scenarios (as the criterion benchmark ``rust/benches/dispatcher.rs``):

- ``plain``: the 1M requests round-robin over the orgs, nothing running.
- ``capped_head``: an org at cap (12 of 13 slots, never released) holds 1,000 more
  requests at the front of the queue, inside the 2,000 peek set, so every dispatch
  must look past them (``peek_set``; ``fair_share`` skips the capped org's queue).
"""

from __future__ import annotations

import gc
from collections.abc import Callable
from typing import Any

import pytest

from conftest import CYCLE_MEDIANS
from fairqueue import Dispatcher
from pure_python import FairSharePy, PeekSetPy

ORGS = 10_000
BACKLOG = 1_000_000
ORG_NAMES = [f"org-{i:05}" for i in range(ORGS)]
LONG_LEASE = 10 * 365 * 24 * 3600.0
STEP = 0.010
"""Virtual seconds each request runs."""


def make(policy: str, implementation: str) -> Any:
    if implementation == "rust":
        return Dispatcher(policy=policy, lease=LONG_LEASE, virtual_time=1.0)
    cls = PeekSetPy if policy == "peek_set" else FairSharePy
    return cls(virtual_time=1.0)


def backlogged(policy: str, implementation: str, scenario: str) -> Any:
    d = make(policy, implementation)
    if scenario == "capped_head":
        d.enqueue_many([(2**63 - i, "flood", "future") for i in range(1_012)])
        assert len(d.dispatch(12)) == 12
    # In chunks: a 1M-tuple list on top of the backlog would double peak memory.
    for start in range(0, BACKLOG, 100_000):
        d.enqueue_many([(i, ORG_NAMES[i % ORGS], "future") for i in range(start, start + 100_000)])
    return d


def cycler(d: Any) -> Callable[[], None]:
    next_id = BACKLOG
    enqueue, dispatch, advance, ack = d.enqueue, d.dispatch, d.advance, d.ack

    def cycle() -> None:
        nonlocal next_id
        enqueue(next_id, ORG_NAMES[next_id % ORGS], "future")
        next_id += 1
        (grant,) = dispatch(1)
        advance(STEP)
        ack(grant.lease)

    return cycle


@pytest.mark.parametrize("implementation", ["rust", "python"])
@pytest.mark.parametrize("policy", ["peek_set", "fair_share"])
@pytest.mark.parametrize("scenario", ["plain", "capped_head"])
def test_cycle(benchmark: Any, scenario: str, policy: str, implementation: str) -> None:
    d = backlogged(policy, implementation, scenario)
    gc.collect()
    cycle = cycler(d)
    benchmark.group = f"cycle {scenario} {policy}"
    benchmark.extra_info.update(backlog=BACKLOG, orgs=ORGS, implementation=implementation)
    # Garbage collection stays on: its cost is part of what a Python implementation pays.
    benchmark.pedantic(cycle, setup=None, rounds=20, iterations=2_000, warmup_rounds=2)
    if benchmark.stats is not None:
        CYCLE_MEDIANS[(scenario, policy, implementation)] = benchmark.stats.stats.median
    if implementation == "rust":
        stats = d.stats()
        assert stats["queued"] == BACKLOG + (1_000 if scenario == "capped_head" else 0)
        assert stats["extended_delays"] == 0
    else:
        queued = len(d.queue) if policy == "peek_set" else sum(len(p.queue) for p in d.pairs.values())
        assert queued == BACKLOG + (1_000 if scenario == "capped_head" else 0)
