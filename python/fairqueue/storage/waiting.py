"""Waiting for jobs to finish without polling the store in a loop.

A store tells who listens when outcomes are stored
(:meth:`~fairqueue.storage.Storage.job_finished_subscribe`): PostgreSQL through a
NOTIFY on its completions channel, heard by every process on every host; the
in-memory and SQLite stores from inside their own process, when a worker there
stores an outcome (:class:`FinishedFanout`). :class:`FinishWaiters` holds the
threads and coroutines waiting for jobs of one store and wakes the ones whose job
was named. Between wake-ups a waiter reads its job only on a back-off: from 10 ms
doubling to 1 s where the store cannot hear every finish (a worker in another
process sharing a SQLite file), and from 1 s doubling to 30 s where it can, as a
safety net for outcomes stored without a notification (an abort or a dead
worker's job on PostgreSQL, a notification lost with its connection's process).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Optional

from fairqueue.records import JobRecord
from fairqueue.storage.interface import FinishedCallback, Storage

__all__ = ["FinishWaiters", "FinishedFanout", "backoff"]

log = logging.getLogger("fairqueue")

# Waiting where not every finish is heard: a job that finishes in another process is
# seen within about twice its run time, and a long wait reads once a second.
POLL_FIRST, POLL_MOST = 0.01, 1.0
# Waiting where every finish is heard: reads only as a safety net (module docstring).
SAFETY_FIRST, SAFETY_MOST = 1.0, 30.0


def backoff(first: float, most: float) -> Iterator[float]:
    """``first``, doubling up to ``most``, then ``most`` for ever."""
    pause = first
    while True:
        yield pause
        pause = min(pause * 2, most)


class FinishedFanout:
    """The callbacks of :meth:`Storage.job_finished_subscribe` for outcomes a store
    hears of inside its own process. ``publish`` runs them in the caller's thread,
    often with a store lock held: a callback must be quick and must not call the store."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._callbacks: dict[int, FinishedCallback] = {}
        self._next = 0

    @property
    def listening(self) -> bool:
        """True while anyone is subscribed (so a store skips the work when nobody is)."""
        return bool(self._callbacks)

    def subscribe(self, callback: FinishedCallback) -> Callable[[], None]:
        """Adds ``callback``; returns the function that removes it."""
        with self._lock:
            key = self._next
            self._next += 1
            self._callbacks[key] = callback

        def unsubscribe() -> None:
            with self._lock:
                self._callbacks.pop(key, None)

        return unsubscribe

    def publish(self, job_ids: Optional[Sequence[int]]) -> None:
        """Calls every callback with ``job_ids`` (see :data:`FinishedCallback`)."""
        with self._lock:
            callbacks = list(self._callbacks.values())
        for callback in callbacks:
            try:
                callback(job_ids)
            except Exception:  # one broken listener must not fail the outcome being stored
                log.exception("fairqueue: a job_finished callback failed")


class FinishWaiters:
    """The threads and coroutines waiting for jobs of one store to finish.

    It subscribes to the store once, on the first wait, and stays subscribed (on
    PostgreSQL: one LISTEN connection per store, shared by every waiter). It keeps
    no reference to the store, so it lives as long as the store's subscription does.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._subscribing = threading.Lock()
        self._wakers: dict[int, dict[int, Callable[[], None]]] = {}  # job id -> waiter key -> wake
        self._next = 0
        self._subscribed = False
        self._everywhere = False

    def _wake(self, job_ids: Optional[Sequence[int]]) -> None:
        with self._lock:
            if job_ids is None:
                wakers = [w for per_job in self._wakers.values() for w in per_job.values()]
            else:
                wakers = [w for job_id in job_ids for w in self._wakers.get(job_id, {}).values()]
        for wake in wakers:
            wake()

    @contextmanager
    def _watching(self, store: Storage, job_id: int, wake: Callable[[], None]) -> Iterator[Iterator[float]]:
        """Registers ``wake`` for ``job_id`` (before the waiter's first read, so no
        finish after that read is missed); yields the pauses between reads."""
        with self._lock:
            key = self._next
            self._next += 1
            self._wakers.setdefault(job_id, {})[key] = wake
        with self._subscribing:
            if not self._subscribed:
                heard = store.job_finished_subscribe(self._wake) is not None
                self._everywhere = heard and store.hears_every_finish
                self._subscribed = True
        try:
            yield backoff(SAFETY_FIRST, SAFETY_MOST) if self._everywhere else backoff(POLL_FIRST, POLL_MOST)
        finally:
            with self._lock:
                per_job = self._wakers[job_id]
                del per_job[key]
                if not per_job:
                    del self._wakers[job_id]

    def wait(self, store: Storage, job_id: int, timeout: float) -> JobRecord:
        """Blocks until job ``job_id`` of ``store`` has finished; returns its record.

        Raises:
            TimeoutError: it has not finished after ``timeout`` seconds.
            LookupError: there is no such job.
        """
        deadline = time.monotonic() + timeout
        woken = threading.Event()
        with self._watching(store, job_id, woken.set) as pauses:
            for pause in pauses:
                woken.clear()  # before the read: a finish after it sets the event again
                record = _found(job_id, store.job_get(job_id))
                left = deadline - time.monotonic()
                if record.status.finished:
                    return record
                if left <= 0:
                    raise _timed_out(record, timeout)
                woken.wait(min(pause, left))
        raise AssertionError("unreachable")  # pragma: no cover - the pauses never end

    async def wait_async(self, store: Storage, job_id: int, timeout: float) -> JobRecord:
        """:meth:`wait` for a coroutine: the event loop runs on while it waits, and
        the reads go through :meth:`Storage.job_get_async`."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        woken = asyncio.Event()

        def wake() -> None:  # from the thread that heard the finish
            try:
                loop.call_soon_threadsafe(woken.set)
            except RuntimeError:  # the loop has closed: nobody awaits this any more
                pass

        with self._watching(store, job_id, wake) as pauses:
            for pause in pauses:
                woken.clear()
                record = _found(job_id, await store.job_get_async(job_id))
                left = deadline - loop.time()
                if record.status.finished:
                    return record
                if left <= 0:
                    raise _timed_out(record, timeout)
                try:
                    await asyncio.wait_for(woken.wait(), min(pause, left))
                except asyncio.TimeoutError:
                    pass
        raise AssertionError("unreachable")  # pragma: no cover - the pauses never end


def _found(job_id: int, record: Optional[JobRecord]) -> JobRecord:
    if record is None:
        raise LookupError(f"there is no job {job_id} (never stored, or pruned)")
    return record


def _timed_out(record: JobRecord, timeout: float) -> TimeoutError:
    return TimeoutError(f"job {record.id} still {record.status.value} after {timeout} s")
