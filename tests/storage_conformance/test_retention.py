"""Retention: the bounded deletes of the pruner; the storage contract, the same for every backend."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from fairqueue.errors import InvalidArgument
from fairqueue.records import BatchErrorEvent, Finish, HistoryEntry, JobStatus, NewJob, Progress
from fairqueue.storage import Storage
from fairqueue.storage.interface import USAGE_BUCKET
from fairqueue.storage.sqlite import SQLiteStorage

from .builders import NOW, batch, job

HOUR = 3600.0


def finish(store: Storage, status: JobStatus, at: float, n: int = 1, **kw: object) -> list[int]:
    """``n`` new jobs of ``org-1`` that ended in ``status`` at ``at``."""
    ids = store.job_enqueue([job(**kw) for _ in range(n)], NOW)
    store.job_claim(ids, "w", at + 60, NOW)
    assert store.job_finish([Finish(i, "w", status, at, error=None if status is JobStatus.COMPLETED else "boom")
                             for i in ids]) == ids  # fmt: skip
    return ids


def kept(store: Storage) -> set[int]:
    return {r.id for r in store.job_list(limit=10_000)}


def test_finished_jobs_go_by_their_status_cutoff_and_live_ones_never(store: Storage) -> None:
    old_done = finish(store, JobStatus.COMPLETED, NOW + 10, n=3)
    new_done = finish(store, JobStatus.COMPLETED, NOW + 100)
    old_failed = finish(store, JobStatus.FAILED, NOW + 10)
    [aborted] = store.job_enqueue([job()], NOW)
    assert store.job_abort(aborted, NOW + 10) is JobStatus.ABORTED
    queued = store.job_enqueue([job()], NOW)
    running = store.job_enqueue([job()], NOW)
    store.job_claim(running, "w", NOW + 600, NOW)
    batches = store.job_enqueue([batch("org-9") for _ in range(6)], NOW)  # 5 queued, 1 holding
    everything = kept(store)

    # Completed jobs before NOW + 50, failed ones before NOW + 5 (none): the failed and aborted stay.
    cutoffs = {JobStatus.COMPLETED: NOW + 50, JobStatus.FAILED: NOW + 5}
    assert store.job_prune(cutoffs, 1000, dry_run=True) == 3
    assert kept(store) == everything, "a dry run deletes nothing"
    assert store.job_prune(cutoffs, 2) == 2, "at most limit per call"
    assert store.job_prune(cutoffs, 2) == 1
    assert store.job_prune(cutoffs, 2) == 0
    assert kept(store) == everything - set(old_done)
    # Every finished status at once, with cutoffs far in the future: live jobs stay, whatever their age.
    far = {s: NOW + 10**6 for s in JobStatus if s.finished}
    assert store.job_prune(far, 1000) == len(new_done + old_failed) + 1
    assert kept(store) == set(queued + running + batches)
    assert store.job_get(aborted) is None
    assert store.job_prune(far, 1000) == 0


def test_the_oldest_finished_go_first_within_a_status(store: Storage) -> None:
    late = finish(store, JobStatus.COMPLETED, NOW + 30)
    early = finish(store, JobStatus.COMPLETED, NOW + 10)
    assert store.job_prune({JobStatus.COMPLETED: NOW + 40}, 1) == 1
    assert kept(store) == set(late), "the job that finished first went first, whatever its id"
    assert early


def test_only_finished_statuses_can_be_pruned(store: Storage) -> None:
    for status in (JobStatus.QUEUED, JobStatus.PROCESSING, JobStatus.HOLDING):
        with pytest.raises(InvalidArgument, match=f"cannot prune '{status.value}' jobs"):
            store.job_prune({status: NOW}, 10)


def test_a_pruned_jobs_batch_error_events_go_with_it(store: Storage) -> None:
    [gone, stays] = store.job_enqueue([batch(), batch()], NOW)
    store.job_claim([gone, stays], "w", NOW + 60, NOW)
    events = [BatchErrorEvent(i, "org-1", "EXECUTE", 0, [1], "ValueError", "bad", "tb", NOW + 1) for i in (gone, stays)]
    store.job_finish([
        Finish(gone, "w", JobStatus.COMPLETED, NOW + 1, progress=Progress("{}", 1, 1, 1, errors=(events[0],))),
        Finish(stays, "w", JobStatus.COMPLETED, NOW + 5, progress=Progress("{}", 1, 1, 1, errors=(events[1],))),
    ])  # fmt: skip
    assert store.job_prune({JobStatus.COMPLETED: NOW + 2}, 10) == 1
    assert store.batch_errors(gone) == []
    assert store.batch_errors(stays) == [events[1]]


def test_pruning_a_parent_leaves_its_live_children_working(store: Storage) -> None:
    [parent] = store.job_enqueue([job()], NOW)
    store.job_claim([parent], "w", NOW + 60, NOW)
    child = NewJob("org-1", "queueable", "app.jobs:Next", "{}", parent_id=parent, chain_depth=1)
    store.job_finish([Finish(parent, "w", JobStatus.COMPLETED, NOW + 1, children=(child,))])
    [kid] = [r.id for r in store.job_list() if r.id != parent]
    assert store.job_prune({JobStatus.COMPLETED: NOW + 2}, 10) == 1
    assert store.job_get(parent) is None
    assert kid in {p.id for p in store.job_pending()}, "the child is still offered to workers"
    assert [r.id for r in store.job_claim([kid], "w", NOW + 60, NOW + 2)] == [kid]
    assert store.job_finish([Finish(kid, "w", JobStatus.COMPLETED, NOW + 3)]) == [kid]
    record = store.job_get(kid)
    assert record is not None and record.parent_id == parent and record.status is JobStatus.COMPLETED


def test_pruning_finished_batches_leaves_running_and_holding_ones_and_the_flex_queue_working(store: Storage) -> None:
    active = store.job_enqueue([batch() for _ in range(5)], NOW)
    holding = store.job_enqueue([batch() for _ in range(2)], NOW)
    store.job_claim(active[:2], "w", NOW + 60, NOW)
    # One batch moves on to its next chunk (queued again: live), the other completes.
    store.job_finish([
        Finish(active[0], "w", JobStatus.QUEUED, NOW + 1, progress=Progress('{"chunk": 1}', 200, None, 0)),
        Finish(active[1], "w", JobStatus.COMPLETED, NOW + 1),
    ])  # fmt: skip
    assert store.job_get(holding[0]).status is JobStatus.QUEUED  # type: ignore[union-attr]
    assert store.job_prune({s: NOW + 10**6 for s in JobStatus if s.finished}, 100) == 1
    assert store.job_get(active[1]) is None
    assert store.job_get(active[0]).status is JobStatus.QUEUED, "a batch between chunks is live"  # type: ignore[union-attr]
    assert [r.id for r in store.flex_list("org-1")] == holding[1:]
    # The flex queue goes on: the next finished batch still promotes the holding one.
    store.job_claim([active[2]], "w", NOW + 60, NOW + 2)
    store.job_finish([Finish(active[2], "w", JobStatus.COMPLETED, NOW + 3)])
    assert store.job_get(holding[1]).status is JobStatus.QUEUED  # type: ignore[union-attr]
    assert store.flex_list("org-1") == []


def samples(store: Storage) -> list[tuple[float, str, object, float]]:
    return [(e.at, e.kind, e.org, e.value) for e in store.history_read(0)]


def test_history_before_the_cutoff_is_deleted_oldest_first(store: Storage) -> None:
    store.history_append([HistoryEntry(NOW + t, "pending", "a", t, {}) for t in range(10)])
    assert store.history_prune(NOW + 5, None, 100, dry_run=True) == 5
    assert len(samples(store)) == 10
    assert store.history_prune(NOW + 5, None, 3) == 3
    assert [at - NOW for at, *_ in samples(store)] == [3, 4, 5, 6, 7, 8, 9]
    assert store.history_prune(NOW + 5, None, 3) == 2
    assert store.history_prune(NOW + 5, None, 3) == 0


M = 60.0 * (NOW // 60)  # a whole minute


def test_old_samples_thin_to_each_minutes_highest_per_kind_and_org_events_stay(store: Storage) -> None:
    entries = []
    for minute in range(3):
        for s, value in ((0, 4.0), (5, 9.0), (10, 9.0), (15, 1.0)):
            at = M + 60 * minute + s
            entries += [HistoryEntry(at, "pending", "a", value, {}), HistoryEntry(at, "running", "a", value + 1, {}),
                        HistoryEntry(at, "pending", "b", 20 - value, {})]  # fmt: skip
    entries += [HistoryEntry(M + 1, "throttle_start", None, 0.5, {"worker": "w1"}),
                HistoryEntry(M + 2, "throttle_start", None, 0.5, {"worker": "w2"}),
                HistoryEntry(M + 3, "extended_delay", "a", M + 300, {"kind": "future", "count": 3})]  # fmt: skip
    store.history_append(entries)
    # Thinned before M + 150: minutes 0 and 1 (a minute is thinned only whole), 3 x 3 samples each go.
    assert store.history_prune(None, M + 150, 1000, dry_run=True) == 18
    assert store.history_prune(None, M + 150, 1000) == 18
    left = samples(store)
    for minute in (0, 1):
        start = M + 60 * minute
        assert [x for x in left if start <= x[0] < start + 60 and x[1] in ("pending", "running")] == [
            (start + 5, "pending", "a", 9.0), (start + 5, "running", "a", 10.0), (start + 15, "pending", "b", 19.0),
        ], "the minute's highest, the earliest of equals"  # fmt: skip
    assert len([x for x in left if x[0] >= M + 120]) == 12, "the recent minute is kept whole"
    assert [x[1] for x in left if x[1] not in ("pending", "running")] == ["throttle_start", "throttle_start", "extended_delay"]
    assert store.history_prune(None, M + 150, 1000) == 0, "thinning again changes nothing"


def test_thinning_in_small_batches_ends_where_one_large_call_would(store: Storage) -> None:
    entries = [HistoryEntry(M + 5 * i, "pending", org, (i * 7 + len(org)) % 11, {}) for i in range(120) for org in ("a", "b")]
    store.history_append(entries)
    deleted = []
    while (n := store.history_prune(None, M + 600, 7)) > 0:
        assert n <= 7
        deleted.append(n)
    assert sum(deleted) == 2 * 10 * 11, "10 minutes of 12 samples per org thinned to one each"
    left = samples(store)
    for org in ("a", "b"):
        for minute in range(10):
            start = M + 60 * minute
            mine = [e.value for e in entries if e.org == org and start <= e.at < start + 60]
            assert [x[3] for x in left if x[2] == org and start <= x[0] < start + 60] == [max(mine)]


def test_expiry_comes_before_thinning_and_shares_the_limit(store: Storage) -> None:
    store.history_append([HistoryEntry(M + s, "pending", "a", 1.0, {}) for s in range(0, 180, 5)])
    # 12 before M + 60 expire; minute 1 (12 samples) thins to one; minute 2 stays.
    assert store.history_prune(M + 60, M + 120, 1000, dry_run=True) == 12 + 11
    assert store.history_prune(M + 60, M + 120, 12) == 12, "the limit is spent on expiry first"
    assert store.history_prune(M + 60, M + 120, 1000) == 11
    assert [x[0] - M for x in samples(store)] == [60, *range(120, 180, 5)]


def test_usage_counters_older_than_the_daily_window_go(store: Storage) -> None:
    now = NOW + 3 * 24 * HOUR
    store.job_enqueue([job(org="a"), job(org="b")], now - 2 * 24 * HOUR)
    store.job_enqueue([job(org="a")], now - 30 * HOUR)
    store.job_enqueue([job(org="a"), job(org="a")], now - HOUR)
    store.job_enqueue([job(org="b")], now)
    before = [store.usage_daily(org, now) for org in ("a", "b")]
    assert store.usage_prune(now, 100, dry_run=True) == 3
    assert store.usage_prune(now, 2) == 2
    assert store.usage_prune(now, 2) == 1
    assert store.usage_prune(now, 2) == 0
    assert [store.usage_daily(org, now) for org in ("a", "b")] == before, "the window's counts are untouched"
    assert before[0].count == 2 and before[1].count == 1
    # An hour goes once it leaves the window (the current hour and the 23 before it).
    assert store.usage_prune(now + USAGE_BUCKET * 22, 100) == 0
    assert store.usage_prune(now + USAGE_BUCKET * 23, 100) == 1


def test_old_batch_error_events_go_oldest_first_even_while_their_job_is_kept(store: Storage) -> None:
    [job_id] = store.job_enqueue([batch()], NOW)
    at = [NOW + 1, NOW + 2, NOW + 3, NOW + 50]
    for t in at:
        store.job_claim([job_id], "w", NOW + 600, t)
        event = BatchErrorEvent(job_id, "org-1", "EXECUTE", 0, [t], "ValueError", "bad", "tb", t)
        store.job_finish([Finish(job_id, "w", JobStatus.QUEUED, t, progress=Progress("{}", 1, None, 1, errors=(event,)))])
    assert store.batch_errors_prune(NOW + 10, 100, dry_run=True) == 3
    assert store.batch_errors_prune(NOW + 10, 2) == 2
    assert [e.at for e in store.batch_errors(job_id)] == at[2:]
    assert store.batch_errors_prune(NOW + 10, 2) == 1
    assert store.batch_errors_prune(NOW + 10, 2) == 0
    assert [e.at for e in store.batch_errors(job_id)] == [NOW + 50]
    assert store.job_get(job_id) is not None


def test_space_reclaim_hands_back_at_most_limit_pages_then_none(store: Storage) -> None:
    store.job_enqueue([NewJob("org-1", "future", "app.jobs:send", '{"pad": "%s"}' % ("x" * 2000)) for _ in range(200)], NOW)
    store.job_claim([r.id for r in store.job_list(limit=1000)], "w", NOW + 60, NOW)
    store.job_finish([Finish(r.id, "w", JobStatus.COMPLETED, NOW) for r in store.job_list(limit=1000)])
    assert store.job_prune({JobStatus.COMPLETED: NOW + 1}, 1000) == 200
    first = store.space_reclaim(10)
    assert first == (10 if isinstance(store, SQLiteStorage) else 0), "a new SQLite store is in incremental auto-vacuum mode"
    store.space_reclaim(10_000)
    assert store.space_reclaim(10_000) == 0, "nothing is left to hand back"


def test_an_older_sqlite_store_reclaims_nothing_until_vacuumed_once(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE made_before (x)")  # a store created before incremental mode was the default
    with SQLiteStorage(path) as store:
        finish(store, JobStatus.COMPLETED, NOW, n=300, org="org-1")
        store.job_prune({JobStatus.COMPLETED: NOW + 1}, 1000)
        assert store.space_reclaim(10_000) == 0, "auto-vacuum cannot be switched on once tables exist"
        before, after = store.vacuum()
        assert after < before
        assert store.job_enqueue([job()], NOW), "the store works on after VACUUM"
        finish(store, JobStatus.COMPLETED, NOW, n=300)
        store.job_prune({JobStatus.COMPLETED: NOW + 1}, 1000)
        assert store.space_reclaim(10_000) > 0, "and now hands pages back"


def test_one_postgres_pruner_at_a_time_the_others_skip_their_turn(pg_dsn: str, pg_schema: str) -> None:
    import psycopg

    from fairqueue.storage.postgres import PostgresStorage
    from fairqueue.storage.postgres.connection import LOCK_PRUNE

    with PostgresStorage(pg_dsn, schema=pg_schema) as store:
        finish(store, JobStatus.COMPLETED, NOW, n=3)
        store.history_append([HistoryEntry(NOW, "pending", "a", 1, {})])
        [batch_job] = store.job_enqueue([batch()], NOW)
        store.job_claim([batch_job], "w", NOW + 60, NOW)
        event = BatchErrorEvent(batch_job, "org-1", "EXECUTE", 0, [1], "ValueError", "bad", "tb", NOW)
        store.job_finish([Finish(batch_job, "w", JobStatus.QUEUED, NOW, progress=Progress("{}", 1, None, 1, errors=(event,)))])
        done = {JobStatus.COMPLETED: NOW + 1}
        with psycopg.connect(pg_dsn) as other:  # another host's prune transaction, open
            assert other.execute("SELECT pg_try_advisory_xact_lock(%s, hashtext(%s))", (LOCK_PRUNE, pg_schema)).fetchone() == (True,)
            assert store.job_prune(done, 100) == 0
            assert store.history_prune(NOW + 1, None, 100) == 0
            assert store.usage_prune(NOW + 10 * 24 * HOUR, 100) == 0
            assert store.batch_errors_prune(NOW + 1, 100) == 0
            assert store.job_prune(done, 100, dry_run=True) == 3, "a dry run needs no lock"
            other.rollback()
        assert store.job_prune(done, 100) == 3
        assert store.history_prune(NOW + 1, None, 100) == 1
        assert store.usage_prune(NOW + 10 * 24 * HOUR, 100) == 1
        assert store.batch_errors_prune(NOW + 1, 100) == 1
