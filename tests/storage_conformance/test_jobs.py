"""Enqueue, read, list, count and abort jobs: the storage contract, the same for every backend."""

from __future__ import annotations

import pytest

from fairqueue.errors import DuplicateSignature
from fairqueue.records import Finish, JobStatus, NewJob
from fairqueue.storage import Storage

from .builders import NOW, job


def test_enqueue_persists_every_field_as_queued(store: Storage) -> None:
    ids = store.job_enqueue([job(run_at=NOW + 60, parent_id=7, chain_depth=2, duplicate_signature="s")], NOW)
    record = store.job_get(ids[0])
    assert record is not None
    assert (record.org, record.kind, record.handler, record.payload) == ("org-1", "future", "app.jobs:send", '{"args": [1]}')
    assert record.status is JobStatus.QUEUED
    assert (record.created_at, record.run_at, record.parent_id, record.chain_depth) == (NOW, NOW + 60, 7, 2)
    assert (record.attempts, record.started_at, record.finished_at, record.cancel_requested) == (0, None, None, False)


def test_enqueue_returns_increasing_ids_in_order(store: Storage) -> None:
    first = store.job_enqueue([job(), job()], NOW)
    second = store.job_enqueue([job(org=f"o{i}") for i in range(5)], NOW)
    assert first == sorted(first) and second == sorted(second)
    assert len(set(first + second)) == 7 and max(first) < min(second)
    assert [store.job_get(i).org for i in second] == [f"o{i}" for i in range(5)]  # type: ignore[union-attr]


def test_a_bulk_enqueue_stores_each_job_exactly_as_given_in_order(store: Storage) -> None:
    # Runs of alike jobs and single ones mixed: each stored field for field, payload
    # text byte for byte (spaces, escapes, non-ASCII), ids and queue order as given.
    def new(i: int, org: str = "a", **kw: object) -> NewJob:
        payload = f'{{"args": [{i}], "note": "é \\\\ \\" ✓"}}'
        return NewJob(org=org, kind="future", handler="app.jobs:send", payload=payload, **kw)  # type: ignore[arg-type]

    jobs = [new(0), new(1), new(2), new(3, org="b"), new(4, run_at=NOW + 5), new(5, run_at=NOW + 5),
            new(6, duplicate_signature="only-one"), new(7, parent_id=3, chain_depth=1), new(8, key="user-1"),
            new(9, key="user-1"), new(10, queue="reports", priority=9, cost=3), new(11, priority=0)]  # fmt: skip
    ids = store.job_enqueue(jobs, NOW)
    assert ids == list(range(ids[0], ids[0] + len(jobs)))
    for job_id, given in zip(ids, jobs):
        record = store.job_get(job_id)
        assert record is not None and record.status is JobStatus.QUEUED
        stored = (record.org, record.kind, record.handler, record.payload, record.run_at, record.parent_id,
                  record.chain_depth, record.duplicate_signature, record.queue, record.key, record.priority,
                  record.cost)  # fmt: skip
        assert stored == tuple(given)
    pending = store.job_pending()
    assert [p.id for p in pending] == ids
    assert [(p.key, p.priority, p.cost, p.queue) for p in pending] == [(j.key, j.priority, j.cost, j.queue) for j in jobs]
    assert [p.id for p in store.job_pending(queues=["reports"])] == [ids[10]]
    assert [p.id for p in store.job_pending(queues=["default", "gpu"])] == ids[:10] + ids[11:]


def test_duplicate_signature_refuses_the_whole_batch(store: Storage) -> None:
    store.job_enqueue([job(duplicate_signature="sync:org-1")], NOW)
    with pytest.raises(DuplicateSignature, match="sync:org-1"):
        store.job_enqueue([job(org="other"), job(duplicate_signature="sync:org-1")], NOW)
    with pytest.raises(DuplicateSignature):
        store.job_enqueue([job(duplicate_signature="x"), job(duplicate_signature="x")], NOW)
    assert len(store.job_list()) == 1


def test_duplicate_signature_is_free_again_once_the_job_finishes(store: Storage) -> None:
    [job_id] = store.job_enqueue([job(duplicate_signature="sig")], NOW)
    store.job_claim([job_id], "w1", NOW + 30, NOW)
    store.job_finish([Finish(job_id, "w1", JobStatus.COMPLETED, NOW + 1)])
    assert len(store.job_enqueue([job(duplicate_signature="sig")], NOW)) == 1


def test_signature_taken_follows_the_jobs_life(store: Storage) -> None:
    [job_id] = store.job_enqueue([job(duplicate_signature="sig")], NOW)
    assert store.job_signature_taken("sig") and not store.job_signature_taken("other")
    store.job_abort(job_id, NOW)
    assert not store.job_signature_taken("sig")


def test_abort_queued_never_runs_and_running_gets_a_cancel_flag(store: Storage) -> None:
    a, b = store.job_enqueue([job(), job()], NOW)
    store.job_claim([b], "w1", NOW + 30, NOW)
    assert store.job_abort(a, NOW + 1) is JobStatus.ABORTED
    assert store.job_claim([a], "w1", NOW + 30, NOW) == []
    assert store.job_abort(b, NOW + 1) is JobStatus.PROCESSING
    record = store.job_get(b)
    assert record is not None and record.cancel_requested
    assert store.job_abort(999_999, NOW) is None


def test_abort_through_an_org_cannot_touch_another_orgs_job(store: Storage) -> None:
    [job_id] = store.job_enqueue([job(org="acme")], NOW)
    assert store.job_abort(job_id, NOW, org="globex") is None
    assert store.job_get(job_id).status is JobStatus.QUEUED  # type: ignore[union-attr]
    assert store.job_abort(job_id, NOW, org="acme") is JobStatus.ABORTED


def test_cancel_requested_lists_the_running_jobs_an_abort_asked_to_stop(store: Storage) -> None:
    a, b, c = store.job_enqueue([job(), job(), job()], NOW)
    store.job_claim([a, b], "w1", NOW + 30, NOW)
    assert store.job_cancel_requested([a, b, c]) == []
    assert store.job_abort(b, NOW) is JobStatus.PROCESSING
    store.job_abort(c, NOW)  # queued: aborted outright, nothing to ask
    assert store.job_cancel_requested([c, b, a, 999]) == [b]
    assert store.job_cancel_requested([]) == []


def test_list_filters_and_pages_newest_first(store: Storage) -> None:
    ids = store.job_enqueue([job(org="a"), job(org="b", kind="queueable"), job(org="a"), job(org="a")], NOW)
    store.job_claim([ids[2]], "w1", NOW + 30, NOW)
    assert [r.id for r in store.job_list(org="a")] == [ids[3], ids[2], ids[0]]
    assert [r.id for r in store.job_list(kind="queueable")] == [ids[1]]
    assert [r.id for r in store.job_list(org="a", status=JobStatus.QUEUED)] == [ids[3], ids[0]]
    assert [r.id for r in store.job_list(before_id=ids[2], limit=1)] == [ids[1]]


def test_counts_per_org_kind_and_status(store: Storage) -> None:
    a, _, _ = store.job_enqueue([job(org="a"), job(org="a"), job(org="b", kind="queueable")], NOW)
    store.job_claim([a], "w1", NOW + 30, NOW)
    assert store.job_counts() == {
        ("a", "future", JobStatus.PROCESSING): 1,
        ("a", "future", JobStatus.QUEUED): 1,
        ("b", "queueable", JobStatus.QUEUED): 1,
    }


def test_live_counts_leave_out_finished_jobs(store: Storage) -> None:
    a, b, c, d, _ = store.job_enqueue([job(org="a") for _ in range(5)], NOW)
    store.job_claim([a, b, c], "w1", NOW + 30, NOW)
    store.job_finish(
        [Finish(a, "w1", JobStatus.COMPLETED, NOW + 1), Finish(b, "w1", JobStatus.FAILED, NOW + 1, error="E: x")]
    )
    store.job_abort(d, NOW + 1)
    store.job_enqueue([job(org="f", kind="batch") for _ in range(6)], NOW)  # the 6th waits in the flex queue
    assert store.job_counts(live=True) == {
        ("a", "future", JobStatus.PROCESSING): 1,
        ("a", "future", JobStatus.QUEUED): 1,
        ("f", "batch", JobStatus.QUEUED): 5,
        ("f", "batch", JobStatus.HOLDING): 1,
    }
    everything = store.job_counts()
    assert everything[("a", "future", JobStatus.COMPLETED)] == everything[("a", "future", JobStatus.ABORTED)] == 1


def test_waiting_facts_count_the_line_the_queue_and_the_recent_window(store: Storage) -> None:
    a = store.job_enqueue([job(org="a") for _ in range(6)], NOW - 100)
    store.job_enqueue([job(org="b"), job(org="b", run_at=NOW + 60)], NOW - 100)
    store.job_enqueue([job(org="a", kind="queueable")], NOW - 100)
    store.job_claim([a[0], a[1], a[2]], "w1", NOW + 30, NOW - 90)
    # a[0] finished long ago (outside a 60 s window); a[1] inside it.
    store.job_finish(
        [Finish(a[0], "w1", JobStatus.COMPLETED, NOW - 80), Finish(a[1], "w1", JobStatus.COMPLETED, NOW - 30)]
    )
    [last] = store.job_enqueue([job(org="a")], NOW - 1)
    facts = store.job_waiting_facts(store.job_get(last), NOW, 60.0)  # type: ignore[arg-type]
    assert facts.ahead_in_line == 3  # a[3], a[4], a[5]
    assert facts.ahead_in_queue == 5  # a[3..5], b's first and the queueable; b's second is not due
    assert facts.holders == [a[2]]
    assert (facts.finished_in_line, facts.finished_in_queue, facts.processing) == (1, 1, 1)
    assert facts.first_finished_at == NOW - 30
    assert facts.active_lines == 3  # (a, future), (b, future), (a, queueable)
