"""The async client end to end: an ASGI endpoint that enqueues while its event loop
keeps serving, ``wait_async`` on PostgreSQL woken by the completion's NOTIFY with no
read in between, and the sync ``wait`` that no longer polls."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Optional

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

import fq_sample_jobs as sample
from conftest import wait_until
from fairqueue.records import Finish, JobRecord, JobStatus
from fairqueue.storage import Storage
from fairqueue.storage.memory import MemoryStorage
from fairqueue.storage.sqlite import SQLiteStorage


def counting(base: type[Storage]) -> Any:
    """``base`` with its job reads counted: a subclass of the real store, used only here."""

    class Counting(base):  # type: ignore[valid-type, misc]
        reads = 0

        def job_get(self, job_id: int) -> Optional[JobRecord]:
            type(self).reads += 1
            return super().job_get(job_id)

        async def job_get_async(self, job_id: int) -> Optional[JobRecord]:
            type(self).reads += 1
            return await super().job_get_async(job_id)

    return Counting


def opened(request: pytest.FixtureRequest, tmp_path: Path, kind: str) -> Storage:
    if kind == "memory":
        return counting(MemoryStorage)()  # type: ignore[no-any-return]
    if kind == "sqlite":
        return counting(SQLiteStorage)(tmp_path / "fq.db")  # type: ignore[no-any-return]
    from fairqueue.storage.postgres import PostgresStorage

    pg = counting(PostgresStorage)
    return pg(request.getfixturevalue("pg_dsn"), schema=request.getfixturevalue("pg_schema"))  # type: ignore[no-any-return]


def used_by_the_sample_app(backend: Storage) -> Iterator[Any]:
    original = sample.app.storage
    sample.app.storage = backend
    sample.runs.clear()
    try:
        yield backend
    finally:
        sample.app.storage = original
        backend.close()


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """The sample app on a store of each kind whose job reads are counted."""
    yield from used_by_the_sample_app(opened(request, tmp_path, request.param))


@pytest.fixture
def pg_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """The sample app on a PostgreSQL store whose job reads are counted."""
    yield from used_by_the_sample_app(opened(request, tmp_path, "postgres"))


class Ticker:
    """A coroutine that counts the turns of its event loop: it stands still while
    anything blocks the loop."""

    def __init__(self) -> None:
        self.ticks = 0

    async def run(self) -> None:
        while True:
            self.ticks += 1
            await asyncio.sleep(0)


def test_an_asgi_endpoint_enqueues_while_its_loop_serves_others(store: Any) -> None:
    ticker = Ticker()

    async def enqueue(request: Request) -> JSONResponse:
        before = ticker.ticks
        handle = await sample.record.delay_async(request.path_params["org"], "from-asgi")
        queued = await sample.app.org(request.path_params["org"]).enqueue_async(sample.Chain(0, 0))
        return JSONResponse({"ids": [handle.id, queued.id], "ticks": ticker.ticks - before})

    async def ping(request: Request) -> JSONResponse:
        return JSONResponse({"ticks": ticker.ticks})

    web = Starlette(routes=[Route("/enqueue/{org}", enqueue, methods=["POST"]), Route("/ping", ping)])

    async def main() -> tuple[list[Any], list[Any]]:
        ticking = asyncio.create_task(ticker.run())
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=web), base_url="http://app") as client:
            enqueues = [client.post(f"/enqueue/org-{i % 3}") for i in range(12)]
            pings = [client.get("/ping") for _ in range(12)]
            answers = await asyncio.gather(*enqueues, *pings)
        ticking.cancel()
        return [a.json() for a in answers[:12]], [a.json() for a in answers[12:]]

    enqueued, pinged = asyncio.run(main())
    # Every enqueue awaited its store: the ticker ran during each one (a blocking call
    # would have held the loop, and the ticker, still until it returned).
    assert all(e["ticks"] >= 1 for e in enqueued), enqueued
    assert len(pinged) == 12 and all(p["ticks"] >= 0 for p in pinged)
    ids = [i for e in enqueued for i in e["ids"]]
    assert len(set(ids)) == 24
    records = [store.job_get(i) for i in ids]
    assert all(r is not None and r.status is JobStatus.QUEUED for r in records)
    assert sorted({r.org for r in records}) == ["org-0", "org-1", "org-2"]


def test_an_async_transaction_stores_all_or_none(store: Any) -> None:
    async def main() -> tuple[list[int], int]:
        async with sample.app.transaction_async():
            first = sample.record.delay("org-1", "a")
            second = await sample.record.delay_async("org-1", "b")
            assert first._id is None and second._id is None  # held until the block ends
        count_before = len(store.job_list())
        with pytest.raises(RuntimeError, match="the service failed"):
            async with sample.app.transaction_async():
                await sample.record.delay_async("org-1", "lost")
                raise RuntimeError("the service failed")
        return [first.id, second.id], count_before

    ids, count = asyncio.run(main())
    assert count == 2 and len(store.job_list()) == 2
    assert [store.job_get(i).payload for i in ids] == ['{"args":["a"],"kwargs":{}}', '{"args":["b"],"kwargs":{}}']


def test_wait_async_returns_the_record_a_worker_stored(store: Any) -> None:
    async def main() -> JobRecord:
        handle = await sample.record.delay_async("org-1", "waited")
        return await handle.wait_async(timeout=30)

    with sample.app.worker(slots=2):
        record = asyncio.run(main())
    assert record.status is JobStatus.COMPLETED and ("waited", "org-1", record.id) in sample.runs


def finish_later(store: Any, job_id: int, after_reads: int) -> tuple[threading.Thread, list[float]]:
    """Stores job ``job_id``'s outcome from another thread once the waiter has read it
    ``after_reads`` times in all; the list gets the time the outcome was committed."""
    committed: list[float] = []

    def run() -> None:
        wait_until(lambda: type(store).reads >= after_reads, what="the waiter's first read")
        time.sleep(0.2)  # the waiter is asleep on its wake-up by now (nothing reads meanwhile)
        store.job_finish([Finish(job_id, "w1", JobStatus.COMPLETED, time.time())])
        committed.append(time.monotonic())

    thread = threading.Thread(target=run)
    thread.start()
    return thread, committed


def test_wait_async_on_postgres_wakes_on_the_notify_with_no_read_in_between(pg_store: Any) -> None:
    store = pg_store
    latencies = []

    async def one_wait() -> None:
        handle = await sample.record.delay_async("org-1", "x")
        store.job_claim([handle.id], "w1", time.time() + 60, time.time())
        reads = type(store).reads
        thread, committed = finish_later(store, handle.id, reads + 1)
        record = await handle.wait_async(timeout=30)
        woke = time.monotonic()
        thread.join()
        assert record.status is JobStatus.COMPLETED
        # Two reads: the first, and the one after the notification. No poll in between.
        assert type(store).reads - reads == 2, type(store).reads - reads
        latencies.append(woke - committed[0])

    async def main() -> None:
        # The first wait of a store starts its LISTEN connection (and reads once more
        # when it is up): let that happen before measuring.
        first = await sample.record.delay_async("org-1", "warm-up")
        store.job_claim([first.id], "w1", time.time() + 60, time.time())
        thread, _ = finish_later(store, first.id, type(store).reads + 1)
        await first.wait_async(timeout=30)
        thread.join()
        for _ in range(5):
            await one_wait()

    asyncio.run(main())
    # Woken by the NOTIFY, well before the first safety read (1 s after the last read);
    # the best of five within 50 ms of the commit (one slow turn of a shared machine aside).
    assert max(latencies) < 1.0, latencies
    assert min(latencies) < 0.05, latencies


def test_sync_wait_no_longer_polls(store: Any) -> None:
    handle = sample.record.delay("org-1", "t")
    job_id = handle.id
    store.job_claim([job_id], "w1", time.time() + 60, time.time())
    reads = type(store).reads
    thread, _ = finish_later(store, job_id, reads + 1)
    started = time.monotonic()
    record = handle.wait(timeout=30)
    elapsed = time.monotonic() - started
    thread.join()
    assert record.status is JobStatus.COMPLETED
    made = type(store).reads - reads
    # A 10 ms poll would have read about 20 times in the 0.2 s the outcome took. The
    # outcome is stored in this process, so every store wakes the waiter at once; the
    # memory and PostgreSQL stores read only twice (first, after the wake-up; once more
    # on PostgreSQL when its LISTEN connection came up), SQLite also on its back-off
    # (10, 20, 40, 80, 160 ms ...).
    if store.hears_every_finish:
        assert made <= 3, made
    else:
        assert made <= 2 + sum(1 for n in range(10) if sum(0.01 * 2**k for k in range(n + 1)) < elapsed), made
