"""The lease sweep: a job whose worker stopped heartbeating is queued again, its
redelivery visible; a job whose lease is live is left with its worker."""

from __future__ import annotations

from fairqueue.records import JobStatus, NewJob
from fairqueue.runtime.duties.lease_sweep import LeaseSweep
from fairqueue.storage.memory import MemoryStorage

T0 = 1_700_000_000.0
"""The virtual clock's start (UNIX seconds)."""


def test_sweep_requeues_lapsed_leases_only() -> None:
    store = MemoryStorage()
    lapsed, live = store.job_enqueue([NewJob("acme", "future", "fq_batch_units:Noop", "{}")] * 2, T0)
    seen = max(p.ready_seq for p in store.job_pending())  # what the workers have picked up so far
    store.job_claim([lapsed], "worker-dead", T0 + 10, T0)
    store.job_claim([live], "worker-live", T0 + 100, T0)
    sweep = LeaseSweep(store, every=1.0)

    sweep.run(T0 + 5)
    assert sweep.requeued == 0, "no lease has lapsed yet"

    sweep.run(T0 + 50)

    assert sweep.requeued == 1
    record = store.job_get(lapsed)
    assert record is not None
    assert (record.status, record.lease_owner, record.lease_expires_at) == (JobStatus.QUEUED, None, None)
    assert record.extended_status == "lease expired; re-delivered"
    assert record.attempts == 1, "the lapsed delivery counts as an attempt"
    untouched = store.job_get(live)
    assert untouched is not None
    assert (untouched.status, untouched.lease_owner, untouched.lease_expires_at) == (
        JobStatus.PROCESSING, "worker-live", T0 + 100
    )  # fmt: skip

    # Every worker sees the re-queued job as new work, and its next delivery is attempt 2.
    assert [(p.id, p.attempts) for p in store.job_pending(after_seq=seen)] == [(lapsed, 1)]
    [again] = store.job_claim([lapsed], "worker-live", T0 + 110, T0 + 50)
    assert again.attempts == 2

    sweep.run(T0 + 51)
    assert sweep.requeued == 1, "nothing lapsed since"
    sweep.run(T0 + 101)
    assert sweep.requeued == 2, "the second job's lease has lapsed now"
    record = store.job_get(live)
    assert record is not None and record.status is JobStatus.QUEUED
