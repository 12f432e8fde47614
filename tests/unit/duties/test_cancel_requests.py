"""Cancel requests: aborting a running job through the store (from any process)
raises the cancel flag of exactly that job's task, which its context reads."""

from __future__ import annotations

from fairqueue.jobs import Context
from fairqueue.limits import Limits
from fairqueue.records import JobStatus, NewJob
from fairqueue.runtime.duties.cancel_requests import CancelRequests
from fairqueue.runtime.task import Task
from fairqueue.storage.memory import MemoryStorage

T0 = 1_700_000_000.0
"""The virtual clock's start (UNIX seconds)."""


class NoQueue:
    """A context's queue for a test that never enqueues (every method refuses)."""

    def enqueue(self, *args: object, **kwargs: object) -> None:
        raise AssertionError("this test does not enqueue")

    execute_batch = enqueue_whole_batch = get = abort = enqueue


def test_abort_raises_the_flag_of_that_task_only() -> None:
    store = MemoryStorage()
    ids = store.job_enqueue([NewJob("acme", "future", "fq_batch_units:Noop", "{}") for _ in range(4)], T0)
    running = [Task(lease, record, 300.0) for lease, record in enumerate(store.job_claim(ids[:3], "w", T0 + 60, T0))]
    duty = CancelRequests(store, 1.0, lambda: running)

    duty.run(T0 + 1)
    assert [t.cancel.raised for t in running] == [False, False, False], "nothing was aborted"

    assert store.job_abort(ids[1], T0 + 2) is JobStatus.PROCESSING, "a running job is asked to stop"
    assert store.job_abort(ids[3], T0 + 2) is JobStatus.ABORTED, "a queued one is aborted at once"
    duty.run(T0 + 3)

    assert [t.cancel.raised for t in running] == [False, True, False]
    # What the job's code reads: the runner gives the task's flag to the job's context.
    ctx = Context(queue=NoQueue(), limits=Limits(), job_id=ids[1], org="acme", kind="future", attempt=1,  # type: ignore[arg-type]
                  chain_depth=0, max_depth=None, cancel=running[1].cancel)  # fmt: skip
    assert ctx.cancelled and ctx.derive().cancelled
