"""Pending jobs, claims, outcomes, heartbeats and re-deliveries: the storage contract, the same for every backend."""

from __future__ import annotations

import pytest

from fairqueue.errors import StorageError
from fairqueue.records import Admission, Finish, JobStatus
from fairqueue.storage import Storage

from .builders import NOW, job


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


def test_a_delivery_given_back_by_a_stopping_worker_does_not_count(store: Storage) -> None:
    [job_id] = store.job_enqueue([job()], NOW)
    for n in range(3):  # three rolling restarts, each stopping the worker mid-job
        [claimed] = store.job_claim([job_id], f"w{n}", NOW + 100 + n, NOW + n)
        assert claimed.attempts == 1
        stop = Finish(job_id, f"w{n}", JobStatus.QUEUED, NOW + n, error="re-queued: worker stopped", given_back=True)
        assert store.job_finish([stop]) == [job_id]
        record = store.job_get(job_id)
        assert record is not None and record.status is JobStatus.QUEUED and record.attempts == 0
        assert record.error_count == 0 and record.extended_status == "re-queued: worker stopped"
    assert [p.attempts for p in store.job_pending()] == [0]


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


def test_every_return_to_the_queue_is_seen_after_the_last_seq(store: Storage) -> None:
    a, b, _ = store.job_enqueue([job(), job(), job()], NOW)
    seen = max(p.ready_seq for p in store.job_pending())
    store.job_claim([a, b], "w1", NOW + 10, NOW)
    store.job_finish([Finish(a, "w1", JobStatus.QUEUED, NOW + 1, error="boom", retry_at=NOW + 5)])
    assert store.job_requeue_expired(NOW + 20) == [b]
    fresh = store.job_pending(after_seq=seen)
    assert [p.id for p in fresh] == [a, b]
    assert fresh[0].run_at == NOW + 5 and fresh[0].attempts == 1
    assert all(p.ready_seq > seen for p in fresh)


def test_children_are_stored_with_the_outcome_and_only_if_it_applies(store: Storage) -> None:
    parent, _ = store.job_enqueue([job(), job(duplicate_signature="busy")], NOW)
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


def test_finish_and_claim_stores_the_outcomes_first_so_their_slots_count_as_free(store: Storage) -> None:
    a = store.job_enqueue([job(org="a") for _ in range(4)], NOW)
    store.job_claim(a[:2], "w1", NOW + 30, NOW)
    caps = Admission(pair_caps={("a", "future"): 2})
    assert list(store.job_claim([a[2]], "w1", NOW + 30, NOW, admission=caps)) == []  # a at its cap
    applied, claim = store.job_finish_and_claim(
        [Finish(a[0], "w1", JobStatus.COMPLETED, NOW + 1), Finish(a[1], "intruder", JobStatus.COMPLETED, NOW + 1)],
        [a[2], a[3]], "w1", NOW + 31, NOW + 1, caps,
    )  # fmt: skip
    assert applied == [a[0]]
    assert [r.id for r in claim] == [a[2]] and claim.at_cap == [a[3]]
    assert [store.job_get(i).status for i in a] == [  # type: ignore[union-attr]
        JobStatus.COMPLETED, JobStatus.PROCESSING, JobStatus.PROCESSING, JobStatus.QUEUED
    ]  # fmt: skip
    with pytest.raises(StorageError, match="processing"):
        store.job_finish_and_claim([Finish(a[2], "w1", JobStatus.PROCESSING, NOW + 2)], [a[3]], "w1", NOW + 32, NOW + 2)
    assert store.job_get(a[3]).status is JobStatus.QUEUED  # type: ignore[union-attr]
    assert store.job_finish_and_claim([], [], "w1", NOW + 32, NOW + 2) == ([], [])


def test_a_capped_claim_admits_up_to_the_cap_counting_every_workers_jobs(store: Storage) -> None:
    ids = store.job_enqueue([job(org="a") for _ in range(5)] + [job(org="b") for _ in range(2)], NOW)
    a, b = ids[:5], ids[5:]
    store.job_claim([a[0]], "other-host", NOW + 30, NOW)  # one of a's slots is held elsewhere
    caps = Admission(pair_caps={("a", "future"): 3, ("b", "future"): 1})
    claim = store.job_claim([a[1], b[0], a[2], a[3], b[1], a[4]], "w1", NOW + 30, NOW, admission=caps)
    assert [r.id for r in claim] == [a[1], b[0], a[2]]
    assert claim.at_cap == [a[3], b[1], a[4]]
    assert {r.id for r in store.job_list(status=JobStatus.QUEUED)} == {a[3], a[4], b[1]}
    # A slot freed anywhere is free for everyone.
    store.job_finish([Finish(a[0], "other-host", JobStatus.COMPLETED, NOW + 1)])
    claim = store.job_claim([a[3], a[4]], "w1", NOW + 30, NOW + 1, admission=caps)
    assert [r.id for r in claim] == [a[3]] and claim.at_cap == [a[4]]


def test_a_capped_claim_leaves_other_kinds_and_uncapped_pairs_alone(store: Storage) -> None:
    ids = store.job_enqueue([job(org="a"), job(org="a"), job(org="a", kind="queueable"), job(org="z")], NOW)
    claim = store.job_claim(ids, "w1", NOW + 30, NOW, admission=Admission(pair_caps={("a", "future"): 1}))
    assert [r.id for r in claim] == [ids[0], ids[2], ids[3]] and claim.at_cap == [ids[1]]


def test_a_capped_claim_skips_jobs_no_longer_queued_without_spending_the_cap(store: Storage) -> None:
    ids = store.job_enqueue([job(org="a") for _ in range(3)], NOW)
    store.job_abort(ids[0], NOW)
    claim = store.job_claim(ids, "w1", NOW + 30, NOW, admission=Admission(pair_caps={("a", "future"): 2}))
    assert [r.id for r in claim] == ids[1:] and claim.at_cap == []


def test_a_claim_takes_its_pairs_next_job_for_one_another_worker_took(shared_store: Storage) -> None:
    store = shared_store
    a = store.job_enqueue([job(org="a") for _ in range(4)], NOW)
    [b] = store.job_enqueue([job(org="b")], NOW)
    store.job_claim([a[0]], "w2", NOW + 30, NOW)
    # w1's dispatcher chose a[0] too: the oldest queued job of (a, future) it did not ask for stands in.
    claim = store.job_claim([a[0], b, a[2]], "w1", NOW + 30, NOW)
    assert [r.id for r in claim] == [b, a[2], a[1]]
    assert all(r.status is JobStatus.PROCESSING and r.lease_owner == "w1" for r in claim)
    assert claim.at_cap == []
    assert [r.id for r in store.job_list(status=JobStatus.QUEUED)] == [a[3]]


def test_a_stand_in_is_ready_of_the_same_pair_and_within_its_cap(shared_store: Storage) -> None:
    store = shared_store
    a = store.job_enqueue([job(org="a"), job(org="a"), job(org="a", run_at=NOW + 60), job(org="a")], NOW)
    store.job_enqueue([job(org="b"), job(org="a", kind="queueable")], NOW)
    store.job_claim([a[0]], "w2", NOW + 30, NOW)
    store.job_claim([a[1]], "w3", NOW + 30, NOW)
    # a[2] is not due yet: a[3] stands in for a[0]; nothing of another pair does.
    claim = store.job_claim([a[0]], "w1", NOW + 30, NOW)
    assert [r.id for r in claim] == [a[3]]
    assert store.job_claim([a[1]], "w1", NOW + 30, NOW) == []
    # At the pair's cap a stand-in is not taken, and it is not reported as at cap either.
    [c] = store.job_enqueue([job(org="a")], NOW)
    claim = store.job_claim([a[0]], "w1", NOW + 30, NOW, admission=Admission(pair_caps={("a", "future"): 3}))
    assert list(claim) == [] and claim.at_cap == []
    assert store.job_get(c).status is JobStatus.QUEUED  # type: ignore[union-attr]


def test_jobs_that_left_the_queue_are_others_running_ones_and_recent_finishes(store: Storage) -> None:
    running, finished, old, queued = store.job_enqueue([job() for _ in range(4)], NOW)
    store.job_claim([running, finished, old], "w1", NOW + 30, NOW)
    store.job_finish([Finish(old, "w1", JobStatus.COMPLETED, NOW + 1)])
    store.job_finish([Finish(finished, "w1", JobStatus.FAILED, NOW + 5, error="boom")])
    assert sorted(store.job_left_queue(NOW + 3, "w2")) == [running, finished]
    assert sorted(store.job_left_queue(NOW + 3, "w1")) == [finished]
    assert sorted(store.job_left_queue(NOW, "w2")) == [running, finished, old]
    assert queued not in store.job_left_queue(0.0, "w2")
