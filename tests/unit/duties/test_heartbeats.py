"""Heartbeats: a worker extends its running jobs' leases in the store and in its
core, so a live worker's jobs are never re-delivered (and only its own are
extended)."""

from __future__ import annotations

from fairqueue import Dispatcher
from fairqueue.limits import Limits
from fairqueue.records import JobStatus, NewJob
from fairqueue.runtime.core import build_dispatcher
from fairqueue.runtime.duties.heartbeats import Heartbeats
from fairqueue.runtime.task import Task
from fairqueue.settings import QueueSettings
from fairqueue.storage.memory import MemoryStorage

T0 = 1_700_000_000.0
"""The virtual clock's start (UNIX seconds)."""
LEASE = 30.0
WORKER = "worker-a"


def core_for(slots: int) -> Dispatcher:
    return build_dispatcher(QueueSettings(limits=Limits(lease=LEASE)), slots, virtual_time=T0)


def start_jobs(store: MemoryStorage, core: Dispatcher, n: int) -> list[Task]:
    """Enqueues ``n`` jobs, lets the core grant them and claims them as the worker does, at T0."""
    store.job_enqueue([NewJob("acme", "future", "fq_batch_units:Noop", "{}") for _ in range(n)], T0)
    core.enqueue_many([p[:4] for p in store.job_pending()])
    grants = core.dispatch()
    claimed = {r.id: r for r in store.job_claim([g.id for g in grants], WORKER, T0 + LEASE, T0)}
    assert sorted(claimed) == sorted(g.id for g in grants)
    return [Task(g.lease, claimed[g.id], timeout=300.0) for g in grants]


def test_heartbeat_extends_running_leases_in_the_store_and_the_core() -> None:
    store, core = MemoryStorage(), core_for(2)
    kept, forgotten = start_jobs(store, core, 2)
    duty = Heartbeats(store, core, WORKER, LEASE, lambda: [kept])
    assert duty.every == LEASE / 3, "three heartbeats per lease"

    now = T0 + 20
    core.set_time(now)
    duty.run(now)

    record = store.job_get(kept.record.id)
    assert record is not None and record.lease_expires_at == now + LEASE
    other = store.job_get(forgotten.record.id)
    assert other is not None and other.lease_expires_at == T0 + LEASE, "a job not running here is left alone"

    # Past the old deadline: the heartbeated job is still running in both; the other one lapses in both.
    later = T0 + LEASE + 5
    core.set_time(later)
    redelivered = core.dispatch()
    assert [g.id for g in redelivered] == [forgotten.record.id]
    assert core.locate(kept.record.id) == {
        "state": "running", "lease": kept.lease, "dispatched_at": T0, "expires_at": now + LEASE
    }  # fmt: skip
    assert [e["id"] for e in core.take_events() if e["event"] == "lease_expired"] == [forgotten.record.id]
    assert store.job_requeue_expired(later) == [forgotten.record.id]
    record = store.job_get(kept.record.id)
    assert record is not None and (record.status, record.lease_owner) == (JobStatus.PROCESSING, WORKER)


def test_heartbeat_with_nothing_running_writes_nothing() -> None:
    store, core = MemoryStorage(), core_for(1)
    (task,) = start_jobs(store, core, 1)
    duty = Heartbeats(store, core, WORKER, LEASE, lambda: [])

    core.set_time(T0 + 20)
    duty.run(T0 + 20)

    record = store.job_get(task.record.id)
    assert record is not None and record.lease_expires_at == T0 + LEASE
    assert core.locate(task.record.id)["expires_at"] == T0 + LEASE


def test_heartbeat_does_not_extend_a_lease_another_worker_took_over() -> None:
    # Our lease lapsed (the loop stalled), the sweep re-queued the job and worker b claimed it;
    # our task has not noticed yet and still heartbeats it.
    store, core = MemoryStorage(), core_for(1)
    (task,) = start_jobs(store, core, 1)
    assert store.job_requeue_expired(T0 + LEASE + 1) == [task.record.id]
    store.job_claim([task.record.id], "worker-b", T0 + LEASE + 1 + LEASE, T0 + LEASE + 1)
    duty = Heartbeats(store, core, WORKER, LEASE, lambda: [task])

    core.set_time(T0 + 40)
    duty.run(T0 + 40)

    record = store.job_get(task.record.id)
    assert record is not None
    assert (record.lease_owner, record.lease_expires_at) == ("worker-b", T0 + LEASE + 1 + LEASE)


def test_a_core_lease_that_lapsed_in_a_stall_does_not_stop_the_heartbeats() -> None:
    # A loop stalled past the lease: its next turn dispatches first, so the core expires the
    # running jobs' leases. The duty must not raise into the loop, and the store's leases of
    # both jobs are still extended.
    lease = 30.0
    store = MemoryStorage()
    core = build_dispatcher(QueueSettings(limits=Limits(lease=lease)), 2, virtual_time=T0)
    store.job_enqueue([NewJob("acme", "future", "fq_batch_units:Noop", "{}")] * 2, T0)
    core.enqueue_many([p[:4] for p in store.job_pending()])
    grants = core.dispatch()
    records = {r.id: r for r in store.job_claim([g.id for g in grants], "w", T0 + lease, T0)}
    tasks = [Task(g.lease, records[g.id], 300.0) for g in grants]
    duty = Heartbeats(store, core, "w", lease, lambda: tasks)
    core.set_time(T0 + lease + 5)
    core.dispatch()
    duty.run(T0 + lease + 5)
    for task in tasks:
        record = store.job_get(task.record.id)
        assert record is not None and record.lease_expires_at == T0 + 2 * lease + 5
