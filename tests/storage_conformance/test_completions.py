"""Outcomes heard (``job_finished_subscribe``), waiting on them, and the async client's
store calls (``job_enqueue_async``, ``job_get_async``, ``job_enqueue_in_async``): the
same contract for every backend."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any, Optional

import pytest

from fairqueue.errors import DailyLimitExceeded, DuplicateSignature, InvalidArgument
from fairqueue.records import Finish, JobRecord, JobStatus
from fairqueue.storage import Storage
from fairqueue.storage.waiting import FinishWaiters

from .builders import NOW, batch, job


class Heard:
    """What a store's job_finished_subscribe callback was called with (any thread)."""

    def __init__(self) -> None:
        self.calls: list[Optional[list[int]]] = []
        self.changed = threading.Condition()

    def __call__(self, job_ids: Optional[Sequence[int]]) -> None:
        with self.changed:
            self.calls.append(None if job_ids is None else list(job_ids))
            self.changed.notify_all()

    def ids(self) -> list[int]:
        with self.changed:
            return [i for call in self.calls if call is not None for i in call]

    def listening(self, store: Storage, timeout: float = 10.0) -> None:
        """Returns once ``store`` listens: a store hearing other processes through a
        connection (PostgreSQL) says so with ``callback(None)``; until then an outcome
        may go unheard, which is why a waiter reads again on that call."""
        if type(store).__name__ != "PostgresStorage":
            return
        with self.changed:
            if not self.changed.wait_for(lambda: None in self.calls, timeout):
                pytest.fail(f"the store's LISTEN connection was not up within {timeout} s")

    def wait_for(self, job_id: int, timeout: float = 10.0) -> None:
        with self.changed:  # a Condition's lock is reentrant: ids() may take it again
            if not self.changed.wait_for(lambda: job_id in self.ids(), timeout):
                pytest.fail(f"job {job_id}'s outcome was not heard within {timeout} s (heard {self.calls})")


@pytest.fixture
def heard(store: Storage) -> Iterator[Heard]:
    callback = Heard()
    unsubscribe = store.job_finished_subscribe(callback)
    assert unsubscribe is not None, "every backend hears at least its own process's outcomes"
    callback.listening(store)
    yield callback
    unsubscribe()


def claimed(store: Storage, *jobs: Any) -> list[int]:
    ids = store.job_enqueue(list(jobs), NOW)
    store.job_claim(ids, "w1", NOW + 60, NOW)
    return ids


def test_outcomes_are_heard_and_retries_are_not(store: Storage, heard: Heard) -> None:
    retried, failed, done = claimed(store, job(), job(), job())
    store.job_finish([Finish(retried, "w1", JobStatus.QUEUED, NOW + 1, retry_at=NOW + 5, error="again")])
    store.job_finish([Finish(failed, "w1", JobStatus.FAILED, NOW + 1, error="boom")])
    store.job_finish_and_claim([Finish(done, "w1", JobStatus.COMPLETED, NOW + 2)], [], "w1", NOW + 60, NOW + 2)
    heard.wait_for(done)
    # Announcements of one process arrive in commit order: the retry came first, unheard.
    assert failed in heard.ids() and retried not in heard.ids()


def test_an_outcome_that_commits_with_a_claim_is_heard(store: Storage, heard: Heard) -> None:
    first, second = claimed(store, job(), job())
    [third] = store.job_enqueue([job()], NOW)
    store.job_finish_and_claim(
        [Finish(first, "w1", JobStatus.COMPLETED, NOW + 1), Finish(second, "w1", JobStatus.FAILED, NOW + 1, error="x")],
        [third], "w1", NOW + 60, NOW + 1,
    )  # fmt: skip
    heard.wait_for(first)
    heard.wait_for(second)


def test_an_abort_of_a_waiting_job_is_heard(store: Storage, heard: Heard) -> None:
    waiting, running = store.job_enqueue([job(), job()], NOW)
    store.job_claim([running], "w1", NOW + 60, NOW)
    assert store.job_abort(running, NOW) is JobStatus.PROCESSING  # only asked to stop: not an outcome yet
    assert store.job_abort(waiting, NOW) is JobStatus.ABORTED
    heard.wait_for(waiting)
    assert running not in heard.ids()


def test_unsubscribed_callbacks_hear_nothing(store: Storage) -> None:
    callback = Heard()
    unsubscribe = store.job_finished_subscribe(callback)
    assert unsubscribe is not None
    callback.listening(store)
    unsubscribe()
    still = Heard()
    stop = store.job_finished_subscribe(still)
    assert stop is not None
    try:
        [job_id] = claimed(store, job())
        store.job_finish([Finish(job_id, "w1", JobStatus.COMPLETED, NOW + 1)])
        still.wait_for(job_id)
        assert callback.ids() == [] and callback.calls.count(None) <= 1
    finally:
        stop()


class CountingReads:
    """Counts the reads a waiter makes, by wrapping the real store's job_get."""

    def __init__(self, store: Storage) -> None:
        self.store = store
        self.reads = 0
        real = store.job_get

        def job_get(job_id: int) -> Optional[JobRecord]:
            self.reads += 1
            return real(job_id)

        store.job_get = job_get  # type: ignore[method-assign]


def test_a_waiter_wakes_when_another_thread_stores_the_outcome(store: Storage) -> None:
    [job_id] = claimed(store, job())
    counting = CountingReads(store)
    waiters = FinishWaiters()

    def finish_once_waiting() -> None:
        wait_until(lambda: counting.reads >= 1)
        store.job_finish([Finish(job_id, "w1", JobStatus.COMPLETED, NOW + 1)])

    finisher = threading.Thread(target=finish_once_waiting)
    finisher.start()
    started = time.monotonic()
    record = waiters.wait(store, job_id, timeout=30)
    finisher.join()
    assert record.status is JobStatus.COMPLETED
    # Woken, not timed out: well before the first safety read (1 s) on a store that
    # hears every finish, and with far fewer reads than a 10 ms poll would make.
    assert time.monotonic() - started < 10
    if store.hears_every_finish:
        # The first read, perhaps one when the store's LISTEN connection came up, the read that found it.
        assert counting.reads <= 3, counting.reads


def test_a_wait_times_out_with_a_few_reads_not_a_poll(store: Storage) -> None:
    [job_id] = store.job_enqueue([job()], NOW)
    counting = CountingReads(store)
    started = time.monotonic()
    with pytest.raises(TimeoutError, match=f"job {job_id} still queued after 1.5 s"):
        FinishWaiters().wait(store, job_id, timeout=1.5)
    assert time.monotonic() - started >= 1.5
    # Hearing every finish: the first read, one safety read at 1 s, the last at the
    # deadline (and one when a LISTEN connection came up). Hearing only this process
    # (SQLite): reads 10 ms apart, doubling: about 8 in 1.5 s, where a 10 ms poll made 150.
    assert counting.reads <= (4 if store.hears_every_finish else 10), counting.reads


def test_waiting_for_an_unknown_job_says_so(store: Storage) -> None:
    with pytest.raises(LookupError, match="there is no job 424242"):
        FinishWaiters().wait(store, 424242, timeout=1)


def wait_until(predicate: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail("timed out")
        time.sleep(0.001)


# ----- the async client's store calls ----------------------------------------------------------


def test_an_async_enqueue_stores_what_a_sync_one_does(store: Storage) -> None:
    async def main() -> tuple[list[int], Optional[JobRecord]]:
        ids = await store.job_enqueue_async([job(run_at=NOW + 60, duplicate_signature="s"), job(org="b")], NOW, {"org-1": 9})
        return ids, await store.job_get_async(ids[0])

    ids, record = asyncio.run(main())
    assert len(ids) == 2 and ids == sorted(ids)
    assert record == store.job_get(ids[0])
    assert record is not None and (record.status, record.run_at, record.duplicate_signature) == (JobStatus.QUEUED, NOW + 60, "s")
    assert store.usage_daily("org-1", NOW).count == 1 and store.usage_daily("b", NOW).count == 1
    assert [p.id for p in store.job_pending()] == ids


def test_an_async_enqueue_refuses_duplicates_and_daily_limits_whole(store: Storage) -> None:
    store.job_enqueue([job(duplicate_signature="taken")], NOW)

    async def main() -> None:
        with pytest.raises(DuplicateSignature, match="taken"):
            await store.job_enqueue_async([job(org="x"), job(duplicate_signature="taken")], NOW)
        with pytest.raises(DailyLimitExceeded):
            await store.job_enqueue_async([job(org="y"), job(org="y"), job(org="y")], NOW, {"y": 2})

    asyncio.run(main())
    assert [r.org for r in store.job_list()] == ["org-1"]
    assert store.usage_daily("y", NOW).count == 0


def test_an_async_enqueue_of_batches_fills_the_flex_queue(store: Storage) -> None:
    async def main() -> list[int]:
        return await store.job_enqueue_async([batch() for _ in range(7)], NOW)

    ids = asyncio.run(main())
    statuses = [store.job_get(i).status for i in ids]  # type: ignore[union-attr]
    assert statuses == [JobStatus.QUEUED] * 5 + [JobStatus.HOLDING] * 2
    assert [r.id for r in store.flex_list("org-1")] == ids[5:]


def test_async_waiters_wake_without_blocking_the_loop(store: Storage) -> None:
    [job_id] = claimed(store, job())
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.001)

    async def main() -> JobRecord:
        tick = asyncio.create_task(ticker())
        waiting = asyncio.create_task(FinishWaiters().wait_async(store, job_id, timeout=30))
        before = ticks
        while ticks < before + 20:  # the loop runs on while the waiter waits
            await asyncio.sleep(0.001)
        await asyncio.to_thread(store.job_finish, [Finish(job_id, "w1", JobStatus.FAILED, NOW + 1, error="boom")])
        record = await asyncio.wait_for(waiting, 10)
        tick.cancel()
        return record

    assert asyncio.run(main()).status is JobStatus.FAILED


def test_only_postgres_joins_an_async_connection(store: Storage) -> None:
    if type(store).__name__ == "PostgresStorage":
        with pytest.raises(InvalidArgument, match="not a psycopg 3 AsyncConnection"):
            store.check_connection_async(object())
        return
    with pytest.raises(InvalidArgument, match="needs the PostgreSQL store"):
        store.check_connection_async(object())
    with pytest.raises(InvalidArgument, match="needs the PostgreSQL store"):
        asyncio.run(store.job_enqueue_in_async(object(), [job()], NOW))


# ----- PostgreSQL: the caller's AsyncConnection ---------------------------------------------


@pytest.fixture
def pg_store(pg_dsn: str, pg_schema: str) -> Iterator[Any]:
    from fairqueue.storage.postgres import PostgresStorage

    with PostgresStorage(pg_dsn, schema=pg_schema) as backend:
        yield backend


def test_an_async_connections_jobs_exist_once_it_commits(pg_dsn: str, pg_store: Any) -> None:
    import psycopg

    async def main() -> tuple[int, list[int]]:
        async with await psycopg.AsyncConnection.connect(pg_dsn) as conn:
            [kept] = await pg_store.job_enqueue_in_async(conn, [job(duplicate_signature="order-1")], NOW)
            assert pg_store.job_get(kept) is None  # not visible before the commit
            await conn.commit()
            lost = await pg_store.job_enqueue_in_async(conn, [job(), job()], NOW)
            await conn.rollback()
        return kept, lost

    kept, lost = asyncio.run(main())
    assert pg_store.job_get(kept) is not None and all(pg_store.job_get(i) is None for i in lost)
    assert pg_store.job_signature_taken("order-1")


def test_a_duplicate_on_an_async_connection_leaves_its_transaction_usable(pg_dsn: str, pg_store: Any) -> None:
    import psycopg

    pg_store.job_enqueue([job(duplicate_signature="sync")], NOW)

    async def main() -> int:
        async with await psycopg.AsyncConnection.connect(pg_dsn) as conn:
            await conn.execute("CREATE TEMP TABLE orders (id int)")
            await conn.execute("INSERT INTO orders VALUES (1)")
            with pytest.raises(DuplicateSignature, match="sync"):
                await pg_store.job_enqueue_in_async(conn, [job(org="other"), job(duplicate_signature="sync")], NOW)
            [job_id] = await pg_store.job_enqueue_in_async(conn, [job(org="other")], NOW)
            assert await (await conn.execute("SELECT count(*) FROM orders")).fetchone() == (1,)
            await conn.commit()
        async with await psycopg.AsyncConnection.connect(pg_dsn, autocommit=True) as conn:
            # Idle in autocommit: no transaction to join, so it commits at once.
            [at_once] = await pg_store.job_enqueue_in_async(conn, [job(org="third")], NOW)
            assert pg_store.job_get(at_once) is not None
        return job_id

    job_id = asyncio.run(main())
    assert [r.org for r in pg_store.job_list()] == ["third", "other", "org-1"]
    assert pg_store.job_get(job_id) is not None


def test_a_sync_connection_is_refused_for_the_async_path(pg_dsn: str, pg_store: Any) -> None:
    import psycopg

    with psycopg.connect(pg_dsn) as conn:
        with pytest.raises(InvalidArgument, match="a sync connection goes to app.transaction"):
            pg_store.check_connection_async(conn)
