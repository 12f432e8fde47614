"""The storage contract, the same for every backend."""

from __future__ import annotations

import pytest

from fairqueue.errors import DailyLimitExceeded, DuplicateSignature, InvalidArgument, LimitExceeded, StorageError
from fairqueue.records import (
    BatchErrorEvent,
    Finish,
    HistoryEntry,
    JobStatus,
    NewJob,
    NewTrigger,
    Progress,
    TriggerRecord,
    TriggerState,
)
from fairqueue.storage import USAGE_BUCKET, Storage

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


def test_a_bulk_enqueue_stores_each_job_exactly_as_given_in_order(store: Storage) -> None:
    # Runs of alike jobs and single ones mixed: each stored field for field, payload
    # text byte for byte (spaces, escapes, non-ASCII), ids and queue order as given.
    def new(i: int, org: str = "a", **kw: object) -> NewJob:
        payload = f'{{"args": [{i}], "note": "é \\\\ \\" ✓"}}'
        return NewJob(org=org, kind="future", handler="app.jobs:send", payload=payload, **kw)  # type: ignore[arg-type]

    jobs = [new(0), new(1), new(2), new(3, org="b"), new(4, run_at=NOW + 5), new(5, run_at=NOW + 5),
            new(6, duplicate_signature="only-one"), new(7, parent_id=3, chain_depth=1), new(8), new(9)]  # fmt: skip
    ids = store.job_enqueue(jobs, NOW)
    assert ids == list(range(ids[0], ids[0] + len(jobs)))
    for job_id, given in zip(ids, jobs):
        record = store.job_get(job_id)
        assert record is not None and record.status is JobStatus.QUEUED
        stored = (record.org, record.kind, record.handler, record.payload, record.run_at, record.parent_id,
                  record.chain_depth, record.duplicate_signature)  # fmt: skip
        assert stored == tuple(given)
    assert [p.id for p in store.job_pending()] == ids


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


def test_cancel_requested_lists_the_running_jobs_an_abort_asked_to_stop(store: Storage) -> None:
    a, b, c = store.job_enqueue([job(), job(), job()], NOW)
    store.job_claim([a, b], "w1", NOW + 30, NOW)
    assert store.job_cancel_requested([a, b, c]) == []
    assert store.job_abort(b, NOW) is JobStatus.PROCESSING
    store.job_abort(c, NOW)  # queued: aborted outright, nothing to ask
    assert store.job_cancel_requested([c, b, a, 999]) == [b]
    assert store.job_cancel_requested([]) == []


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


def test_finish_and_claim_stores_the_outcomes_first_so_their_slots_count_as_free(store: Storage) -> None:
    a = store.job_enqueue([job(org="a") for _ in range(4)], NOW)
    store.job_claim(a[:2], "w1", NOW + 30, NOW)
    caps = {("a", "future"): 2}
    assert list(store.job_claim([a[2]], "w1", NOW + 30, NOW, caps=caps)) == []  # a at its cap
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


def test_a_capped_claim_admits_up_to_the_cap_counting_every_workers_jobs(store: Storage) -> None:
    ids = store.job_enqueue([job(org="a") for _ in range(5)] + [job(org="b") for _ in range(2)], NOW)
    a, b = ids[:5], ids[5:]
    store.job_claim([a[0]], "other-host", NOW + 30, NOW)  # one of a's slots is held elsewhere
    caps = {("a", "future"): 3, ("b", "future"): 1}
    claim = store.job_claim([a[1], b[0], a[2], a[3], b[1], a[4]], "w1", NOW + 30, NOW, caps=caps)
    assert [r.id for r in claim] == [a[1], b[0], a[2]]
    assert claim.at_cap == [a[3], b[1], a[4]]
    assert {r.id for r in store.job_list(status=JobStatus.QUEUED)} == {a[3], a[4], b[1]}
    # A slot freed anywhere is free for everyone.
    store.job_finish([Finish(a[0], "other-host", JobStatus.COMPLETED, NOW + 1)])
    claim = store.job_claim([a[3], a[4]], "w1", NOW + 30, NOW + 1, caps=caps)
    assert [r.id for r in claim] == [a[3]] and claim.at_cap == [a[4]]


def test_a_capped_claim_leaves_other_kinds_and_uncapped_pairs_alone(store: Storage) -> None:
    ids = store.job_enqueue([job(org="a"), job(org="a"), job(org="a", kind="queueable"), job(org="z")], NOW)
    claim = store.job_claim(ids, "w1", NOW + 30, NOW, caps={("a", "future"): 1})
    assert [r.id for r in claim] == [ids[0], ids[2], ids[3]] and claim.at_cap == [ids[1]]


def test_a_capped_claim_skips_jobs_no_longer_queued_without_spending_the_cap(store: Storage) -> None:
    ids = store.job_enqueue([job(org="a") for _ in range(3)], NOW)
    store.job_abort(ids[0], NOW)
    claim = store.job_claim(ids, "w1", NOW + 30, NOW, caps={("a", "future"): 2})
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
    claim = store.job_claim([a[0]], "w1", NOW + 30, NOW, caps={("a", "future"): 3})
    assert list(claim) == [] and claim.at_cap == []
    assert store.job_get(c).status is JobStatus.QUEUED  # type: ignore[union-attr]


def test_daily_limit_admits_up_to_the_limit_and_refuses_the_next_without_storing_it(store: Storage) -> None:
    limits = {"a": 5}
    store.job_enqueue([job(org="a") for _ in range(4)], NOW, daily_limits=limits)
    store.job_enqueue([job(org="a")], NOW + 1, daily_limits=limits)  # the 5th: exactly at the limit
    with pytest.raises(DailyLimitExceeded) as refused:
        store.job_enqueue([job(org="b"), job(org="a")], NOW + 2, daily_limits=limits)
    e = refused.value
    assert (e.org, e.count, e.limit) == ("a", 5, 5)
    assert e.resets_at == (NOW // USAGE_BUCKET + 24) * USAGE_BUCKET
    assert "'a'" in str(e) and "5" in str(e)
    assert len(store.job_list()) == 5, "all or none: b's job was not stored either"
    assert store.usage_daily("a", NOW + 2).count == 5
    # Other orgs, and orgs without a limit, are not affected.
    store.job_enqueue([job(org="b") for _ in range(7)], NOW + 3, daily_limits=limits)
    assert store.usage_daily("b", NOW + 3).count == 7


def test_daily_limit_counts_a_rolling_24_hours(store: Storage) -> None:
    limits = {"a": 2}
    hour = NOW // USAGE_BUCKET * USAGE_BUCKET
    store.job_enqueue([job(org="a")], hour + 10, daily_limits=limits)
    store.job_enqueue([job(org="a")], hour + 5 * 3600, daily_limits=limits)
    with pytest.raises(DailyLimitExceeded):
        store.job_enqueue([job(org="a")], hour + 23 * 3600 + 3599, daily_limits=limits)
    # The first hour's execution leaves the window 24 hours after that hour began.
    assert store.usage_daily("a", hour + 24 * 3600).count == 1
    store.job_enqueue([job(org="a")], hour + 24 * 3600, daily_limits=limits)
    with pytest.raises(DailyLimitExceeded) as refused:
        store.job_enqueue([job(org="a")], hour + 24 * 3600 + 1, daily_limits=limits)
    assert refused.value.resets_at == hour + 29 * 3600


def test_children_stored_with_an_outcome_count_towards_the_daily_usage(store: Storage) -> None:
    [parent] = store.job_enqueue([job(org="a")], NOW)
    store.job_claim([parent], "w1", NOW + 30, NOW)
    store.job_finish([Finish(parent, "w1", JobStatus.COMPLETED, NOW + 1, children=(job(org="a"), job(org="a")))])
    assert store.usage_daily("a", NOW + 1).count == 3
    assert store.usage_daily("nobody", NOW + 1).count == 0 and store.usage_daily("nobody", NOW).resets_at is None


def test_children_past_the_daily_limit_are_not_stored_and_the_outcome_still_applies(store: Storage) -> None:
    # The handler's own check read the usage earlier; by the outcome other processes
    # may have used the room, so the store checks again in the outcome's transaction.
    a, b = store.job_enqueue([job(org="a"), job(org="a")], NOW)
    store.job_claim([a, b], "w1", NOW + 30, NOW)
    limits = {"a": 3}
    applied = store.job_finish([
        Finish(a, "w1", JobStatus.COMPLETED, NOW + 1, children=(job(org="a"),), daily_limits=limits),
        Finish(b, "w1", JobStatus.COMPLETED, NOW + 1, children=(job(org="a"),), daily_limits=limits),
    ])  # fmt: skip
    assert applied == [a, b]
    assert store.usage_daily("a", NOW + 1).count == 3 and len(store.job_list(org="a")) == 3
    refused = store.job_get(b)
    assert refused is not None and refused.status is JobStatus.COMPLETED
    assert (refused.extended_status or "").startswith("children not enqueued: org 'a' has 3 async executions")
    assert store.job_get(a).extended_status is None  # type: ignore[union-attr]


def trigger(org: str = "org-1", name: str = "nightly", next_fire_at: float = NOW + 60) -> NewTrigger:
    return NewTrigger(org=org, name=name, cron="0 * * * * ?", timezone="UTC", handler="app.jobs:Report",
                      payload='{"state": {}}', next_fire_at=next_fire_at)  # fmt: skip


def every_minute(t: TriggerRecord, now: float) -> float:
    """The first whole minute after ``now`` (what "0 * * * * ?" gives)."""
    return (now // 60 + 1) * 60


def test_a_schedule_is_stored_waiting_and_listed(store: Storage) -> None:
    a = store.trigger_create(trigger(), NOW, max_per_org=100)
    b = store.trigger_create(trigger(org="org-2"), NOW, max_per_org=100)
    record = store.trigger_get(a)
    assert record is not None
    assert (record.org, record.name, record.cron, record.timezone, record.state) == (
        "org-1", "nightly", "0 * * * * ?", "UTC", TriggerState.WAITING
    )  # fmt: skip
    assert (record.next_fire_at, record.previous_fire_at, record.times_fired, record.last_job_id) == (NOW + 60, None, 0, None)
    assert [t.id for t in store.trigger_list()] == [a, b]
    assert [t.id for t in store.trigger_list(org="org-2")] == [b]
    assert store.trigger_get(999) is None


def test_an_org_may_have_at_most_its_limit_of_schedules_and_unique_names(store: Storage) -> None:
    for i in range(3):
        store.trigger_create(trigger(name=f"s{i}"), NOW, max_per_org=3)
    with pytest.raises(LimitExceeded, match="already has 3 schedules, the most allowed \\(3\\)"):
        store.trigger_create(trigger(name="s3"), NOW, max_per_org=3)
    store.trigger_create(trigger(org="org-2", name="s3"), NOW, max_per_org=3)  # other orgs are not affected
    with pytest.raises(InvalidArgument, match="'org-2' already has a schedule named 's3'"):
        store.trigger_create(trigger(org="org-2", name="s3"), NOW, max_per_org=3)
    # An aborted schedule frees its name and its place.
    store.trigger_abort(store.trigger_list(org="org-1")[0].id)
    store.trigger_create(trigger(name="s0"), NOW, max_per_org=3)
    assert len(store.trigger_list(org="org-1", state=TriggerState.WAITING)) == 3


def test_due_schedules_fire_once_and_move_to_their_next_fire_time(store: Storage) -> None:
    due = store.trigger_create(trigger(next_fire_at=NOW - 1), NOW, max_per_org=100)
    later = store.trigger_create(trigger(name="later", next_fire_at=NOW + 3600), NOW, max_per_org=100)
    [job_id] = store.trigger_fire_due(NOW, every_minute)
    job_record = store.job_get(job_id)
    assert job_record is not None
    assert (job_record.org, job_record.kind, job_record.handler, job_record.status) == (
        "org-1", "scheduled", "app.jobs:Report", JobStatus.QUEUED
    )  # fmt: skip
    record = store.trigger_get(due)
    assert record is not None
    assert (record.times_fired, record.previous_fire_at, record.next_fire_at, record.last_job_id) == (
        1, NOW - 1, every_minute(record, NOW), job_id
    )  # fmt: skip
    assert store.trigger_fire_due(NOW, every_minute) == [], "nothing is due twice"
    assert store.trigger_get(later).times_fired == 0  # type: ignore[union-attr]
    assert store.usage_daily("org-1", NOW).count == 1


def test_a_fire_past_the_orgs_daily_limit_stores_a_failed_job_and_the_schedule_moves_on(store: Storage) -> None:
    # org-1 may run 2 a day and has 1 counted: of its two due schedules the first
    # fires, the second fails without running; org-2's fires as usual.
    store.job_enqueue([job()], NOW)
    first = store.trigger_create(trigger(name="first", next_fire_at=NOW - 2), NOW, max_per_org=100)
    second = store.trigger_create(trigger(name="second", next_fire_at=NOW - 1), NOW, max_per_org=100)
    other = store.trigger_create(trigger(org="org-2", name="other", next_fire_at=NOW - 1), NOW, max_per_org=100)
    limits = {"org-1": 2, "org-2": 2}
    fired = store.trigger_fire_due(NOW, every_minute, daily_limit=limits.__getitem__)
    records = [store.trigger_get(t) for t in (first, second, other)]
    moved_on = [r for r in records if r is not None and r.times_fired == 1 and r.next_fire_at == every_minute(r, NOW)]
    last_jobs = [r.last_job_id for r in moved_on]
    assert len(last_jobs) == 3 and None not in last_jobs
    assert sorted(fired) == [last_jobs[0], last_jobs[2]]
    refused = store.job_get(last_jobs[1])  # type: ignore[arg-type]
    assert refused is not None and refused.id not in fired
    assert (refused.org, refused.kind, refused.status, refused.finished_at) == ("org-1", "scheduled", JobStatus.FAILED, NOW)
    assert refused.extended_status is not None
    assert refused.extended_status.startswith("DailyLimitExceeded: org 'org-1' has used 2 of its daily limit of 2")
    assert "schedule 'second' did not run" in refused.extended_status
    assert [p.id for p in store.job_pending()] == [store.job_list(org="org-1")[-1].id, *sorted(fired)]
    assert store.usage_daily("org-1", NOW).count == 2 and store.usage_daily("org-2", NOW).count == 1


def test_after_downtime_a_schedule_that_missed_many_fires_fires_once(store: Storage) -> None:
    t = store.trigger_create(trigger(next_fire_at=NOW + 60), NOW, max_per_org=100)
    back = NOW + 60 + 10 * 3600  # down for ten hours: 600 fire times missed
    assert len(store.trigger_fire_due(back, every_minute)) == 1
    record = store.trigger_get(t)
    assert record is not None and record.times_fired == 1 and record.next_fire_at == every_minute(record, back)
    assert store.trigger_fire_due(back, every_minute) == []


def test_aborted_and_completed_schedules_never_fire(store: Storage) -> None:
    aborted = store.trigger_create(trigger(name="a", next_fire_at=NOW - 5), NOW, max_per_org=100)
    last = store.trigger_create(trigger(name="b", next_fire_at=NOW - 5), NOW, max_per_org=100)
    assert store.trigger_abort(aborted) is TriggerState.WAITING
    assert store.trigger_abort(aborted) is TriggerState.ABORTED
    assert store.trigger_abort(last, org="someone-else") is None
    assert len(store.trigger_fire_due(NOW, lambda t, now: None)) == 1
    assert store.trigger_get(last).state is TriggerState.COMPLETE  # type: ignore[union-attr]
    assert store.trigger_fire_due(NOW + 10**6, every_minute) == []
    assert store.trigger_get(aborted).next_fire_at is None  # type: ignore[union-attr]


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


def batch(org: str = "org-1") -> NewJob:
    return job(org=org, kind="batch")


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


def test_history_is_read_back_in_time_order_by_kind(store: Storage) -> None:
    store.history_append([HistoryEntry(NOW + 2, "pending", "a", 5, {}), HistoryEntry(NOW, "throttle_start", None, 0.5, {"worker": "w"})])
    store.history_append([HistoryEntry(NOW + 1, "extended_delay", "a", NOW + 300, {"kind": "future", "count": 3})])
    assert [e.kind for e in store.history_read(NOW)] == ["throttle_start", "extended_delay", "pending"]
    assert store.history_read(NOW + 1, ["pending"]) == [HistoryEntry(NOW + 2, "pending", "a", 5, {})]
    assert store.history_read(NOW, ["extended_delay"])[0].figures == {"kind": "future", "count": 3}
    assert store.history_read(NOW + 3) == []
