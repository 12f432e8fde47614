"""The pruner: finished jobs, history, usage and batch error events past the app's
retention go, in batches; a run that stops at its time budget goes on a second later,
a run that caught up waits its interval; a failing store is logged, not fatal."""

from __future__ import annotations

import logging

import pytest

from fairqueue.errors import StorageUnavailable
from fairqueue.records import Finish, HistoryEntry, JobStatus, NewJob
from fairqueue.retention import Retention
from fairqueue.runtime.duties.pruning import Pruning, prune
from fairqueue.storage.memory import MemoryStorage

T0 = 1_700_000_000.0
"""The virtual clock's start (UNIX seconds)."""


def finished(store: MemoryStorage, n: int, status: JobStatus, at: float) -> list[int]:
    ids = store.job_enqueue([NewJob("acme", "future", "fq_units:Noop", "{}")] * n, T0)
    store.job_claim(ids, "w", at + 60, T0)
    store.job_finish([Finish(i, "w", status, at) for i in ids])
    return ids


def test_a_run_deletes_what_retention_no_longer_keeps_and_nothing_else() -> None:
    store = MemoryStorage()
    retention = Retention(completed=60, failed=3600, history=600, history_full=None)
    done = finished(store, 30, JobStatus.COMPLETED, T0)
    failed = finished(store, 5, JobStatus.FAILED, T0)
    live = store.job_enqueue([NewJob("acme", "future", "fq_units:Noop", "{}")] * 3, T0)
    store.history_append([HistoryEntry(T0, "pending", "acme", 3, {}), HistoryEntry(T0 + 500, "pending", "acme", 3, {})])
    pruning = Pruning(store, retention, every=1.0, interval=30.0, batch=7)

    pruning.run(T0 + 59)
    assert pruning.total.rows == 0, "nothing is old enough yet"
    pruning.run(T0 + 80)
    assert pruning.total.rows == 0, "the next run is an interval (30 s) later"
    pruning.run(T0 + 700)
    assert (pruning.total.jobs, pruning.total.history) == (30, 1)
    assert {r.id for r in store.job_list(limit=100)} == set(failed + live)
    pruning.run(T0 + 3700)
    assert {r.id for r in store.job_list(limit=100)} == set(live), "failed jobs go after their own retention"
    assert store.job_get(done[0]) is None


def test_a_run_that_stops_at_its_budget_goes_on_a_second_later() -> None:
    store = MemoryStorage()
    finished(store, 25, JobStatus.COMPLETED, T0)
    pruning = Pruning(store, Retention(completed=1), every=1.0, interval=30.0, batch=10, budget=0.0)
    pruning.run(T0 + 10)
    assert (pruning.total.jobs, pruning.total.done) == (10, False), "one batch, then the budget is spent"
    pruning.run(T0 + 10.5)
    assert pruning.total.jobs == 10, "not before a second has passed"
    pruning.run(T0 + 11)
    pruning.run(T0 + 12)
    assert (pruning.total.jobs, pruning.total.done) == (25, True)
    finished(store, 5, JobStatus.COMPLETED, T0 + 12)
    pruning.run(T0 + 20)
    assert pruning.total.jobs == 25, "caught up: the next run waits its interval"
    pruning.run(T0 + 42)
    assert pruning.total.jobs == 30


def test_a_dry_run_counts_per_status_and_deletes_nothing() -> None:
    store = MemoryStorage()
    finished(store, 4, JobStatus.COMPLETED, T0)
    finished(store, 2, JobStatus.FAILED, T0)
    store.job_enqueue([NewJob("acme", "future", "fq_units:Noop", "{}")], T0 - 3 * 86400)  # an old usage hour
    counted = prune(store, Retention(completed=10, failed=10), T0 + 3 * 86400, dry_run=True)
    assert counted.by_status == {"completed": 4, "failed": 2, "aborted": 0,
                                 **({"discarded": 0} if hasattr(JobStatus, "DISCARDED") else {})}  # fmt: skip
    assert (counted.jobs, counted.usage) == (6, 2)
    assert len(store.job_list(limit=100)) == 7
    assert prune(store, Retention(completed=10, failed=10), T0 + 3 * 86400).rows == 8


def test_none_keeps_forever() -> None:
    store = MemoryStorage()
    finished(store, 3, JobStatus.COMPLETED, T0)
    store.history_append([HistoryEntry(T0, "pending", "acme", 3, {})])
    keep = Retention(completed=None, discarded=None, failed=None, aborted=None, history=None, history_full=None,
                     batch_errors=None)  # fmt: skip
    assert prune(store, keep, T0 + 10**8).rows == 1, "only the usage counters, which the daily limit no longer reads"
    assert len(store.job_list()) == 3 and len(store.history_read(0)) == 1


class Unavailable(MemoryStorage):
    def job_prune(self, *args: object, **kw: object) -> int:
        raise StorageUnavailable("the database is restarting")


def test_a_failing_store_is_logged_and_tried_again_an_interval_later(caplog: pytest.LogCaptureFixture) -> None:
    store = Unavailable()
    finished(store, 3, JobStatus.COMPLETED, T0)
    pruning = Pruning(store, Retention(completed=1), every=1.0, interval=30.0)
    with caplog.at_level(logging.ERROR, logger="fairqueue.worker"):
        pruning.run(T0 + 10)
    assert "pruning the store failed" in caplog.text and "the database is restarting" in caplog.text
    caplog.clear()
    pruning.run(T0 + 20)
    assert caplog.text == ""
    pruning.run(T0 + 40)
    assert "pruning the store failed" in caplog.text
