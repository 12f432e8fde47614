"""The storage contract, the same for every backend."""

from __future__ import annotations

import pytest

from fairqueue.errors import DuplicateSignature, StorageError
from fairqueue.records import Finish, JobStatus, NewJob
from fairqueue.storage import Storage

NOW = 1_700_000_000.0


def job(org: str = "org-1", kind: str = "future", **kw: object) -> NewJob:
    return NewJob(org=org, kind=kind, handler="app.jobs:send", payload='{"args": [1]}', **kw)  # type: ignore[arg-type]


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


def test_pending_lists_queued_jobs_oldest_first(store: Storage) -> None:
    ids = store.job_enqueue([job(org=f"o{i}") for i in range(6)], NOW)
    store.job_claim([ids[1]], "w1", NOW + 30, NOW)
    store.job_abort(ids[2], NOW)
    assert [p.id for p in store.job_pending()] == [ids[0], ids[3], ids[4], ids[5]]
    after = store.job_pending()[1].ready_seq
    assert [p.id for p in store.job_pending(after_seq=after)] == [ids[4], ids[5]]
    assert [p.id for p in store.job_pending(limit=2)] == [ids[0], ids[3]]
    assert store.job_pending()[0].org == "o0"


def test_a_job_is_claimed_by_one_worker_only(store: Storage) -> None:
    ids = store.job_enqueue([job(), job()], NOW)
    claimed = store.job_claim(ids, "w1", NOW + 30, NOW)
    assert [r.id for r in claimed] == ids
    assert all(r.status is JobStatus.PROCESSING and r.lease_owner == "w1" and r.attempts == 1 for r in claimed)
    assert all(r.started_at == NOW and r.lease_expires_at == NOW + 30 for r in claimed)
    assert store.job_claim(ids, "w2", NOW + 30, NOW) == []


def test_finish_applies_only_for_the_lease_owner(store: Storage) -> None:
    a, b, c = store.job_enqueue([job(), job(), job()], NOW)
    store.job_claim([a, b, c], "w1", NOW + 30, NOW)
    applied = store.job_finish(
        [
            Finish(a, "w1", JobStatus.COMPLETED, NOW + 1),
            Finish(b, "w1", JobStatus.FAILED, NOW + 2, error="ValueError: boom"),
            Finish(c, "intruder", JobStatus.COMPLETED, NOW + 3),
        ]
    )
    assert applied == [a, b]
    ra, rb, rc = (store.job_get(i) for i in (a, b, c))
    assert ra is not None and ra.status is JobStatus.COMPLETED and ra.finished_at == NOW + 1
    assert rb is not None and rb.status is JobStatus.FAILED and rb.error_count == 1
    assert rb.extended_status == "ValueError: boom"
    assert rc is not None and rc.status is JobStatus.PROCESSING


def test_retry_puts_the_job_back_with_its_run_at(store: Storage) -> None:
    [job_id] = store.job_enqueue([job()], NOW)
    store.job_claim([job_id], "w1", NOW + 30, NOW)
    store.job_finish([Finish(job_id, "w1", JobStatus.QUEUED, NOW + 1, error="timeout", retry_at=NOW + 90)])
    record = store.job_get(job_id)
    assert record is not None and record.status is JobStatus.QUEUED and record.run_at == NOW + 90
    assert record.lease_owner is None and record.error_count == 1
    [again] = store.job_claim([job_id], "w2", NOW + 200, NOW + 100)
    assert again.attempts == 2


def test_finish_refuses_a_status_that_is_not_an_outcome(store: Storage) -> None:
    [job_id] = store.job_enqueue([job()], NOW)
    store.job_claim([job_id], "w1", NOW + 30, NOW)
    with pytest.raises(StorageError, match="holding"):
        store.job_finish([Finish(job_id, "w1", JobStatus.HOLDING, NOW)])
    assert store.job_get(job_id).status is JobStatus.PROCESSING  # type: ignore[union-attr]


def test_expired_leases_are_requeued_and_the_old_owner_loses_the_job(store: Storage) -> None:
    a, b = store.job_enqueue([job(), job()], NOW)
    store.job_claim([a], "w1", NOW + 10, NOW)
    store.job_claim([b], "w1", NOW + 100, NOW)
    store.job_heartbeat([b], "w1", NOW + 300)
    assert store.job_requeue_expired(NOW + 50) == [a]
    record = store.job_get(a)
    assert record is not None and record.status is JobStatus.QUEUED and record.lease_owner is None
    assert store.job_finish([Finish(a, "w1", JobStatus.COMPLETED, NOW + 60)]) == []
    assert store.job_requeue_expired(NOW + 200) == []
    assert store.job_requeue_expired(NOW + 301) == [b]


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


def test_list_filters_and_pages_newest_first(store: Storage) -> None:
    ids = store.job_enqueue([job(org="a"), job(org="b", kind="queueable"), job(org="a"), job(org="a")], NOW)
    store.job_claim([ids[2]], "w1", NOW + 30, NOW)
    assert [r.id for r in store.job_list(org="a")] == [ids[3], ids[2], ids[0]]
    assert [r.id for r in store.job_list(kind="queueable")] == [ids[1]]
    assert [r.id for r in store.job_list(org="a", status=JobStatus.QUEUED)] == [ids[3], ids[0]]
    assert [r.id for r in store.job_list(before_id=ids[2], limit=1)] == [ids[1]]


def test_every_return_to_the_queue_is_seen_after_the_last_seq(store: Storage) -> None:
    a, b, c = store.job_enqueue([job(), job(), job()], NOW)
    seen = max(p.ready_seq for p in store.job_pending())
    store.job_claim([a, b], "w1", NOW + 10, NOW)
    store.job_finish([Finish(a, "w1", JobStatus.QUEUED, NOW + 1, error="boom", retry_at=NOW + 5)])
    assert store.job_requeue_expired(NOW + 20) == [b]
    fresh = store.job_pending(after_seq=seen)
    assert [p.id for p in fresh] == [a, b]
    assert fresh[0].run_at == NOW + 5 and fresh[0].attempts == 1
    assert all(p.ready_seq > seen for p in fresh)


def test_children_are_stored_with_the_outcome_and_only_if_it_applies(store: Storage) -> None:
    parent, other = store.job_enqueue([job(), job(duplicate_signature="busy")], NOW)
    store.job_claim([parent], "w1", NOW + 30, NOW)
    child = job(kind="queueable", parent_id=parent, chain_depth=1)
    dup = job(kind="queueable", duplicate_signature="busy")
    assert store.job_finish([Finish(parent, "intruder", JobStatus.COMPLETED, NOW + 1, children=(child,))]) == []
    assert len(store.job_list()) == 2
    assert store.job_finish([Finish(parent, "w1", JobStatus.COMPLETED, NOW + 1, children=(child, dup))]) == [parent]
    [stored] = store.job_list(kind="queueable")
    assert (stored.parent_id, stored.chain_depth, stored.status) == (parent, 1, JobStatus.QUEUED)
    record = store.job_get(parent)
    assert record is not None and record.status is JobStatus.COMPLETED
    assert "busy" in (record.extended_status or "")


def test_signature_taken_follows_the_jobs_life(store: Storage) -> None:
    [job_id] = store.job_enqueue([job(duplicate_signature="sig")], NOW)
    assert store.job_signature_taken("sig") and not store.job_signature_taken("other")
    store.job_abort(job_id, NOW)
    assert not store.job_signature_taken("sig")


def test_counts_per_org_kind_and_status(store: Storage) -> None:
    a, _, _ = store.job_enqueue([job(org="a"), job(org="a"), job(org="b", kind="queueable")], NOW)
    store.job_claim([a], "w1", NOW + 30, NOW)
    assert store.job_counts() == {
        ("a", "future", JobStatus.PROCESSING): 1,
        ("a", "future", JobStatus.QUEUED): 1,
        ("b", "queueable", JobStatus.QUEUED): 1,
    }
