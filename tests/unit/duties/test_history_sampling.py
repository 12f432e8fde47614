"""History sampling: each org's pending and running jobs, sampled at most once
per interval across the workers sharing a store, and the entries other parts of
the worker report, written on the next run; a store error is logged, never raised
into the worker's loop."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from fairqueue.errors import StorageError
from fairqueue.records import Finish, HistoryEntry, JobStatus, NewJob
from fairqueue.runtime.duties.history_sampling import SAMPLE_EVERY, HistorySampling
from fairqueue.storage.memory import MemoryStorage

T0 = 1_700_000_000.0
"""The virtual clock's start (UNIX seconds)."""


def jobs(org: str, kind: str, n: int) -> list[NewJob]:
    return [NewJob(org, kind, "fq_batch_units:Noop", "{}") for _ in range(n)]


def samples(store: MemoryStorage) -> list[tuple[float, str, str | None, float]]:
    return [(e.at, e.kind, e.org, e.value) for e in store.history_read(0.0, ["pending", "running"])]


def test_samples_pending_and_running_per_org() -> None:
    store = MemoryStorage()
    acme = store.job_enqueue(jobs("acme", "future", 3), T0)
    store.job_claim(acme[:1], "w", T0 + 60, T0)
    store.job_enqueue(jobs("beta", "batch", 6), T0)  # five queued, one holding in its flex queue
    [done] = store.job_enqueue(jobs("gone", "future", 1), T0)
    store.job_claim([done], "w", T0 + 60, T0)
    store.job_finish([Finish(done, "w", JobStatus.COMPLETED, T0)])
    duty = HistorySampling(store, every=1.0)

    duty.run(T0 + 1)

    assert samples(store) == [
        (T0 + 1, "pending", "acme", 2),
        (T0 + 1, "running", "acme", 1),
        (T0 + 1, "pending", "beta", 6),
        (T0 + 1, "running", "beta", 0),
    ], "an org with nothing waiting or running is not sampled"


def test_samples_at_most_once_per_interval() -> None:
    store = MemoryStorage()
    store.job_enqueue(jobs("acme", "future", 2), T0)
    duty = HistorySampling(store, every=1.0)

    duty.run(T0)
    store.job_enqueue(jobs("acme", "future", 1), T0 + 1)
    duty.run(T0 + 1)
    duty.run(T0 + SAMPLE_EVERY - 0.5)
    assert samples(store) == [(T0, "pending", "acme", 2), (T0, "running", "acme", 0)]

    duty.run(T0 + SAMPLE_EVERY)
    assert samples(store)[2:] == [(T0 + SAMPLE_EVERY, "pending", "acme", 3), (T0 + SAMPLE_EVERY, "running", "acme", 0)]


def test_workers_sharing_a_store_take_turns() -> None:
    store = MemoryStorage()
    store.job_enqueue(jobs("acme", "future", 1), T0)
    a, b = HistorySampling(store, every=1.0), HistorySampling(store, every=1.0)

    a.run(T0)
    b.run(T0 + 1)  # its first sample is due, but a sampled within the interval
    a.run(T0 + SAMPLE_EVERY)
    b.run(T0 + SAMPLE_EVERY + 1)

    assert sorted({at for at, *_ in samples(store)}) == [T0, T0 + SAMPLE_EVERY]


def test_reported_entries_are_written_on_the_next_run() -> None:
    store = MemoryStorage()
    duty = HistorySampling(store, every=1.0)
    entry = HistoryEntry(T0, "extended_delay", "acme", T0 + 300, {"kind": "future", "count": 15})

    duty.record(entry)
    assert store.history_read(0.0) == [], "kept until the duty runs"
    duty.run(T0 + 0.5)
    assert store.history_read(0.0) == [entry]
    duty.run(T0 + 1)
    assert store.history_read(0.0) == [entry], "written once"


class FlakyStore(MemoryStorage):
    """A memory store one of whose history calls fails (a database outage) until ``failing`` is None."""

    def __init__(self, failing: str | None) -> None:
        super().__init__()
        self.failing = failing

    def history_append(self, entries: Sequence[HistoryEntry]) -> None:
        if self.failing == "history_append":
            raise StorageError("database is unreachable")
        super().history_append(entries)

    def history_read(self, since: float, kinds: Sequence[str] | None = None) -> list[HistoryEntry]:
        if self.failing == "history_read":
            raise StorageError("database is unreachable")
        return super().history_read(since, kinds)


@pytest.mark.parametrize("failing", ["history_read", "history_append"])
def test_a_store_error_is_logged_not_raised(failing: str, caplog: pytest.LogCaptureFixture) -> None:
    store = FlakyStore(failing)
    store.job_enqueue(jobs("acme", "future", 1), T0)
    duty = HistorySampling(store, every=1.0)
    duty.record(HistoryEntry(T0, "extended_delay", "acme", T0 + 300, {}))

    with caplog.at_level("ERROR", logger="fairqueue.worker"):
        duty.run(T0)  # a sample is due (its read fails) and an entry is to be written (its write fails)

    [logged] = caplog.records
    assert logged.getMessage() == "fairqueue worker: recording history failed"
    assert logged.exc_info is not None and logged.exc_info[0] is StorageError

    # The store is back: the duty goes on sampling and writing what is reported.
    store.failing = None
    later = HistoryEntry(T0 + SAMPLE_EVERY, "extended_delay", "beta", T0 + 305, {})
    duty.record(later)
    duty.run(T0 + SAMPLE_EVERY)
    assert later in store.history_read(0.0, ["extended_delay"])
    assert (T0 + SAMPLE_EVERY, "pending", "acme", 1) in samples(store)
