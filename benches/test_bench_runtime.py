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


def _drain(benchmark: Any, fresh_store: Any, store: str, fair: bool, slots: int, layout: str, fn: Any = sample.noop) -> None:
    # "blocks": each of 4 orgs enqueued 10,000 jobs in one call, so a FIFO drains one
    # org's neighbouring rows at a time while fair dispatch takes from all four.
    # "interleaved": the 4 orgs took turns enqueueing 100 jobs, as orgs that enqueue
    # at the same time do, so both read and write rows spread alike.
    chunk = 10_000 if layout == "blocks" else 100
    # Outcomes the worker stores before every job is completed: one per job, and one
    # more per retried attempt (a retry is an outcome too: the job goes back to queued).
    outcomes = DRAIN_JOBS

    def setup() -> tuple[tuple[fq.Worker], dict[str, Any]]:
        nonlocal outcomes
        fresh_store(store)
        ids: list[int] = []
        for n, _ in enumerate(range(0, DRAIN_JOBS, chunk)):
            org = n % 4 if layout == "interleaved" else n
            ids += [h.id for h in fn.delay_many(f"org-{org}", [() for _ in range(chunk)])]
        outcomes = DRAIN_JOBS + (sum(fails_first_attempt(i) for i in ids) if fn is fails_once_in_ten else 0)
        dispatcher = None if fair else FifoDispatcher(slots)
        return (sample.app.worker(slots=slots, dispatcher=dispatcher),), {}

    def drain(worker: fq.Worker) -> None:
        worker.start()
        while worker.completed < outcomes:
            time.sleep(0.002)
        worker.stop()

    benchmark.pedantic(drain, setup=setup, rounds=3)
    rate(benchmark, DRAIN_JOBS)
    # Every job of the last round completed (none left queued behind a retry).
    counts = sample.app.storage.job_counts()
    assert sum(n for (_, _, status), n in counts.items() if status is fq.JobStatus.COMPLETED) == DRAIN_JOBS, counts


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


# The job lifecycle (issue #14): the interleaved fair drain again, with handlers that
# use it. `result`: each returns a small dict, stored as the job's result (JSON).
# `retry`: every tenth job raises on its first attempt and is retried at once (a
# policy of 2 attempts, no back-off, so the drain does not wait); the figure counts
# the 40,000 jobs, not the 44,000 attempts. `noop` is the same run with the no-op
# handler, side by side, so the three compare within one session.


@sample.app.future
def returns_result() -> dict[str, Any]:
    return {"ok": True, "rows": 3, "note": "done"}


def fails_first_attempt(job_id: int) -> bool:
    return job_id % 10 == 0


@sample.app.future(retry=fq.RetryPolicy(max_attempts=2, base=0.0, jitter=0.0))
def fails_once_in_ten() -> None:
    ctx = fq.current_context()
    if ctx.attempt == 1 and fails_first_attempt(ctx.job_id):
        raise RuntimeError("transient failure (benchmark)")


LIFECYCLE_HANDLERS = {"noop": sample.noop, "result": returns_result, "retry": fails_once_in_ten}


@pytest.mark.parametrize("handler", list(LIFECYCLE_HANDLERS))
@pytest.mark.parametrize("slots", SLOTS)
@pytest.mark.parametrize("store", ["sqlite", "memory"])
def test_drain_lifecycle(benchmark: Any, fresh_store: Any, store: str, slots: int, handler: str) -> None:
    """The fair interleaved drain with results stored, or with one job in ten retried once."""
    _drain(benchmark, fresh_store, store, fair=True, slots=slots, layout="interleaved", fn=LIFECYCLE_HANDLERS[handler])
    if handler == "result":
        job = sample.app.storage.job_get(1)
        assert job is not None and job.result == '{"ok":true,"rows":3,"note":"done"}', job
    if handler == "retry":
        job = sample.app.storage.job_get(10)
        assert job is not None and job.attempts == 2 and job.handler_attempts == 2, job


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
