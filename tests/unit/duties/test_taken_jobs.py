"""Taken jobs: a worker's core forgets the queued jobs other workers took, so its
lines match the store's; alone in its store it reads nothing."""

from __future__ import annotations

import os

from fairqueue.limits import Limits
from fairqueue.records import Finish, JobStatus, NewJob, WorkerInfo
from fairqueue.runtime.core import build_dispatcher
from fairqueue.runtime.duties.taken_jobs import MARGIN, TakenJobs
from fairqueue.settings import QueueSettings
from fairqueue.storage.memory import MemoryStorage

T0 = 1_700_000_000.0
SETTINGS = QueueSettings("fair_share", Limits(slots=4))


def worker(name: str) -> WorkerInfo:
    return WorkerInfo(name, "test-host", os.getpid(), "thread", 4, T0)


def fed(store: MemoryStorage, n: int) -> tuple[list[int], object]:
    """``n`` queued jobs of one org, all held by a fresh core (as a worker's pick-up leaves them)."""
    ids = store.job_enqueue([NewJob("org-1", "future", "m:f", "{}") for _ in range(n)], T0)
    core = build_dispatcher(SETTINGS, 4, virtual_time=T0)
    core.enqueue_many([p[:7] for p in store.job_pending()])
    return ids, core


def test_jobs_other_workers_took_leave_the_core() -> None:
    store = MemoryStorage()
    store.worker_register(worker("w1"), T0)
    store.worker_register(worker("w2"), T0)
    ids, core = fed(store, 6)
    duty = TakenJobs(store, "w1", core)  # type: ignore[arg-type]
    duty.run(T0)
    assert duty.removed == 0

    store.job_claim(ids[:2], "w2", T0 + 60, T0 + 1)  # running there
    store.job_claim(ids[2:3], "w2", T0 + 60, T0 + 1)
    store.job_finish([Finish(ids[2], "w2", JobStatus.COMPLETED, T0 + 1)])  # ran there already
    duty.run(T0 + 1.25)

    assert duty.removed == 3
    assert [core.holds(i) for i in ids] == [False, False, False, True, True, True]
    granted = core.dispatch()
    assert sorted(g.id for g in granted) == ids[3:]  # no grant for a job another worker took


def test_a_finish_committed_after_a_look_with_an_earlier_time_is_still_caught() -> None:
    store = MemoryStorage()
    store.worker_register(worker("w1"), T0)
    store.worker_register(worker("w2"), T0)
    ids, core = fed(store, 2)
    duty = TakenJobs(store, "w1", core)  # type: ignore[arg-type]
    duty.run(T0 + 10)
    store.job_claim(ids[:1], "w2", T0 + 60, T0 + 9.5)
    # Timed before the look, stored after it: the next look reads MARGIN seconds back.
    store.job_finish([Finish(ids[0], "w2", JobStatus.COMPLETED, T0 + 10 - MARGIN / 2)])
    duty.run(T0 + 10.25)
    assert not core.holds(ids[0]) and core.holds(ids[1])


def test_a_job_running_here_stays_and_a_worker_alone_reads_nothing() -> None:
    store = MemoryStorage()
    store.worker_register(worker("w1"), T0)
    ids, core = fed(store, 3)
    [grant, *_] = core.dispatch(1)
    duty = TakenJobs(store, "w1", core)  # type: ignore[arg-type]
    store.job_claim([ids[2]], "w9", T0 + 60, T0)  # not a live registered worker's: the duty does not look
    duty.run(T0 + 1)
    assert duty.removed == 0 and core.holds(ids[2])

    store.worker_register(worker("w2"), T0 + 2)
    store.job_claim([grant.id], "w2", T0 + 60, T0 + 2)  # this core's lease of it lapsed, say
    duty.run(T0 + 3)  # the registry is read again every 2 s
    assert core.holds(grant.id), "a job running here is left to its task"
    assert not core.holds(ids[2])
    assert duty.removed == 1
