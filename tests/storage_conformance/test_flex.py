"""Batch jobs: the flex queue, progress and error events; the storage contract, the same for every backend."""

from __future__ import annotations

import pytest

from fairqueue.errors import InvalidArgument, LimitExceeded
from fairqueue.records import BatchErrorEvent, Finish, JobStatus, Progress
from fairqueue.storage import Storage

from .builders import NOW, batch, job


def test_flex_queue_five_active_then_a_hundred_holding_in_order_then_refused(store: Storage) -> None:
    active = store.job_enqueue([batch() for _ in range(5)], NOW)
    holding = store.job_enqueue([batch() for _ in range(60)], NOW) + store.job_enqueue([batch() for _ in range(40)], NOW)
    assert [store.job_get(i).status for i in active] == [JobStatus.QUEUED] * 5  # type: ignore[union-attr]
    assert [r.id for r in store.flex_list("org-1")] == holding
    assert all(r.status is JobStatus.HOLDING for r in store.flex_list("org-1"))
    assert {p.id for p in store.job_pending()} == set(active), "holding jobs are not offered to workers"
    with pytest.raises(LimitExceeded, match="'org-1' has 5 batch jobs queued or running and 100 holding"):
        store.job_enqueue([job(org="org-1"), batch()], NOW)
    assert len(store.job_list(limit=1000)) == 105, "the refused enqueue stored nothing"
    # Other orgs and other kinds are not affected.
    store.job_enqueue([batch(org="org-2"), job(org="org-1")], NOW)
    assert store.flex_list("org-2") == []


def test_a_finished_or_aborted_batch_lets_the_first_holding_one_start(store: Storage) -> None:
    active = store.job_enqueue([batch() for _ in range(5)], NOW)
    holding = store.job_enqueue([batch() for _ in range(4)], NOW)
    store.job_claim([active[0]], "w1", NOW + 30, NOW)
    store.job_finish([Finish(active[0], "w1", JobStatus.COMPLETED, NOW + 1)])
    assert store.job_get(holding[0]).status is JobStatus.QUEUED  # type: ignore[union-attr]
    assert holding[0] in {p.id for p in store.job_pending()}, "a promoted job is offered to workers"
    store.job_claim([active[1]], "w1", NOW + 30, NOW)
    store.job_finish([Finish(active[1], "w1", JobStatus.FAILED, NOW + 1, error="boom")])
    assert store.job_abort(active[2], NOW) is JobStatus.ABORTED
    assert store.job_abort(holding[3], NOW) is JobStatus.ABORTED, "aborting a holding job just removes it"
    assert [r.id for r in store.flex_list("org-1")] == []
    assert [store.job_get(i).status for i in holding] == [JobStatus.QUEUED] * 3 + [JobStatus.ABORTED]  # type: ignore[union-attr]
    # Re-queued between chunks a batch stays active: nothing is promoted.
    more = store.job_enqueue([batch()], NOW)
    store.job_claim([active[3]], "w1", NOW + 30, NOW)
    store.job_finish([Finish(active[3], "w1", JobStatus.QUEUED, NOW + 1)])
    assert store.job_get(more[0]).status is JobStatus.HOLDING  # type: ignore[union-attr]


def test_flex_queue_moves(store: Storage) -> None:
    store.job_enqueue([batch() for _ in range(5)], NOW)
    a, b, c, d = store.job_enqueue([batch() for _ in range(4)], NOW)
    assert store.flex_move(d, "org-1", to="front") == [d, a, b, c]
    assert store.flex_move(d, "org-1", to="end") == [a, b, c, d]
    assert store.flex_move(a, "org-1", after=c) == [b, c, a, d]
    assert store.flex_move(d, "org-1", before=b) == [d, b, c, a]
    assert [r.id for r in store.flex_list("org-1")] == [d, b, c, a]
    with pytest.raises(InvalidArgument, match="is not holding"):
        store.flex_move(1, "org-1", to="front")  # an active batch
    with pytest.raises(InvalidArgument, match="is not holding"):
        store.flex_move(a, "org-2", to="front")  # another org's queue
    with pytest.raises(InvalidArgument, match="exactly one of"):
        store.flex_move(a, "org-1", before=b, to="end")
    with pytest.raises(InvalidArgument, match="itself"):
        store.flex_move(a, "org-1", before=a)
    # Promotion follows the moved order.
    store.job_abort(1, NOW)
    assert store.job_get(d).status is JobStatus.QUEUED  # type: ignore[union-attr]
    assert [r.id for r in store.flex_list("org-1")] == [b, c, a]


def test_batch_progress_is_stored_with_the_outcome_and_only_if_it_applies(store: Storage) -> None:
    [job_id] = store.job_enqueue([job(kind="batch")], NOW)
    store.job_claim([job_id], "w1", NOW + 30, NOW)
    event = BatchErrorEvent(job_id, "org-1", "EXECUTE", 0, [1, "b"], "ValueError", "bad", "Traceback…", NOW + 1)
    progress = Progress('{"chunk": 1}', items_processed=200, items_total=None, error_count=1, errors=(event,))
    assert store.job_finish([Finish(job_id, "w1", JobStatus.QUEUED, NOW + 1, progress=progress)]) == [job_id]
    record = store.job_get(job_id)
    assert record is not None
    assert (record.status, record.payload, record.items_processed, record.error_count, record.attempts) == (
        JobStatus.QUEUED, '{"chunk": 1}', 200, 1, 0
    )  # fmt: skip
    assert store.batch_errors(job_id) == [event]
    # A worker that lost the lease changes nothing.
    store.job_claim([job_id], "w2", NOW + 30, NOW + 2)
    late = Progress('{"chunk": 9}', 999, 999, 9, errors=(event,))
    assert store.job_finish([Finish(job_id, "w1", JobStatus.COMPLETED, NOW + 3, progress=late)]) == []
    done = Progress('{"chunk": 2}', items_processed=350, items_total=350, error_count=1)
    assert store.job_finish([Finish(job_id, "w2", JobStatus.COMPLETED, NOW + 3, progress=done)]) == [job_id]
    record = store.job_get(job_id)
    assert record is not None
    assert (record.status, record.items_processed, record.items_total, record.error_count) == (JobStatus.COMPLETED, 350, 350, 1)
    assert len(store.batch_errors(job_id)) == 1 and store.batch_errors(job_id + 1) == []
