"""Runtime throughput: durable enqueue and drain, fair dispatch against a plain FIFO.

Run: ``pytest benches/test_bench_runtime.py --benchmark-enable --benchmark-only``.
No-op handlers, so what is measured is fairqueue's own cost. Figures and how to
read them: benches/README.md.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import fairqueue as fq
import fq_sample_jobs as sample
from fairqueue.storage import Storage
from fairqueue.storage.memory import MemoryStorage
from fairqueue.storage.sqlite import SQLiteStorage
from fifo import FifoDispatcher

DRAIN_JOBS = 40_000
BULK_JOBS = 100_000
SINGLE_JOBS = 1_000
ORGS = 100
# The reference platform's 13 slots, and 64: no-op jobs finish at once, so a turn's
# batch (one commit) is the worker's free slots.
SLOTS = [13, 64]


@pytest.fixture
def fresh_store(tmp_path: Path) -> Iterator[Any]:
    stores: list[Storage] = []

    def make(kind: str) -> Storage:
        store: Storage = MemoryStorage() if kind == "memory" else SQLiteStorage(tmp_path / f"fq-{len(stores)}.db")
        stores.append(store)
        sample.app.storage = store
        return store

    yield make
    for store in stores:
        store.close()


def rate(benchmark: Any, jobs: int) -> None:
    benchmark.extra_info["jobs_per_second"] = round(jobs / benchmark.stats.stats.mean)


def test_durable_enqueue_single(benchmark: Any, fresh_store: Any) -> None:
    """One job per call, each its own durable (fsynced) transaction."""
    fresh_store("sqlite")

    def enqueue() -> None:
        for i in range(SINGLE_JOBS):
            sample.noop.delay(f"org-{i % ORGS}")

    benchmark.pedantic(enqueue, rounds=3)
    rate(benchmark, SINGLE_JOBS)


def test_durable_enqueue_bulk(benchmark: Any, fresh_store: Any) -> None:
    """``delay_many`` in calls of 10,000 jobs: one durable write per call."""
    fresh_store("sqlite")
    calls = [() for _ in range(10_000)]

    def enqueue() -> None:
        for i in range(BULK_JOBS // len(calls)):
            sample.noop.delay_many(f"org-{i % ORGS}", calls)

    benchmark.pedantic(enqueue, rounds=3)
    rate(benchmark, BULK_JOBS)


def _drain(benchmark: Any, fresh_store: Any, store: str, fair: bool, slots: int, layout: str) -> None:
    # "blocks": each of 4 orgs enqueued 10,000 jobs in one call, so a FIFO drains one
    # org's neighbouring rows at a time while fair dispatch takes from all four.
    # "interleaved": the 4 orgs took turns enqueueing 100 jobs, as orgs that enqueue
    # at the same time do, so both read and write rows spread alike.
    chunk = 10_000 if layout == "blocks" else 100

    def setup() -> tuple[tuple[fq.Worker], dict[str, Any]]:
        fresh_store(store)
        for n, _ in enumerate(range(0, DRAIN_JOBS, chunk)):
            org = n % 4 if layout == "interleaved" else n
            sample.noop.delay_many(f"org-{org}", [() for _ in range(chunk)])
        dispatcher = None if fair else FifoDispatcher(slots)
        return (sample.app.worker(slots=slots, dispatcher=dispatcher),), {}

    def drain(worker: fq.Worker) -> None:
        worker.start()
        while worker.completed < DRAIN_JOBS:
            time.sleep(0.002)
        worker.stop()

    benchmark.pedantic(drain, setup=setup, rounds=3)
    rate(benchmark, DRAIN_JOBS)


@pytest.mark.parametrize("layout", ["blocks", "interleaved"])
@pytest.mark.parametrize("slots", SLOTS)
@pytest.mark.parametrize("store", ["sqlite", "memory"])
def test_drain_fair(benchmark: Any, fresh_store: Any, store: str, slots: int, layout: str) -> None:
    """One worker (13 or 64 thread slots) drains no-op jobs through the Rust fair dispatcher."""
    _drain(benchmark, fresh_store, store, fair=True, slots=slots, layout=layout)


@pytest.mark.parametrize("layout", ["blocks", "interleaved"])
@pytest.mark.parametrize("slots", SLOTS)
@pytest.mark.parametrize("store", ["sqlite", "memory"])
def test_drain_fifo_baseline(benchmark: Any, fresh_store: Any, store: str, slots: int, layout: str) -> None:
    """The same worker, store and jobs with a plain pure-Python FIFO instead."""
    _drain(benchmark, fresh_store, store, fair=False, slots=slots, layout=layout)


def test_reload_a_million_request_backlog(benchmark: Any, fresh_store: Any) -> None:
    """A worker starting on a store with 1,000,000 queued jobs over 100 orgs: the time
    until its dispatcher holds all of them (the store is the truth; the core is rebuilt)."""
    store = fresh_store("sqlite")
    calls = [() for _ in range(10_000)]
    for i in range(100):
        sample.noop.delay_many(f"org-{i}", calls)

    def setup() -> tuple[tuple[fq.Worker], dict[str, Any]]:
        return (sample.app.worker(slots=13),), {}

    def reload(worker: fq.Worker) -> None:
        worker.pick_up()
        assert worker.core.stats()["queued"] == 1_000_000

    benchmark.pedantic(reload, setup=setup, rounds=2)
    benchmark.extra_info["requests"] = 1_000_000
    assert store is sample.app.storage
