"""Testing helpers: the in-memory store and test mode.

Test mode is the reference platform's ``Test.startTest()`` / ``Test.stopTest()``:
everything enqueued inside ``with app.testing():`` runs synchronously when the block
ends — in dispatch order, through the same dispatcher policy, with the same limits,
chaining, finalizers and retries — so jobs can be unit-tested without a worker or a
database. Delays do not make the test wait: the dispatcher runs on a virtual clock
that jumps to the next run-at time.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Optional, Union

from fairqueue.errors import LimitExceeded
from fairqueue.records import BatchErrorEvent, Finish, JobRecord, JobStatus, SettingChange
from fairqueue.runtime.core import CoreSettings, build_dispatcher
from fairqueue.runtime.queue_app import QueueApp
from fairqueue.runtime.runner import Runner
from fairqueue.storage.memory import MemoryStorage

__all__ = ["MemoryStorage", "TestRun", "run_test_mode"]

_WORKER = "test-mode"


class TestRun:
    """What a ``with app.testing()`` block ran; read it after the block."""

    __test__ = False  # not a pytest test class, despite the name

    def __init__(self, storage: MemoryStorage) -> None:
        self.storage = storage
        self.order: list[int] = []
        """Job ids in the order they ran (a retried job appears once per run)."""

    def jobs(self, *, org: Optional[str] = None, status: Union[None, str, JobStatus] = None) -> list[JobRecord]:
        """Records of the jobs the block enqueued (and their children), oldest first."""
        wanted = JobStatus(status) if status is not None else None
        return list(reversed(self.storage.job_list(org=org, status=wanted, limit=1_000_000)))

    def get(self, job_id: int) -> Optional[JobRecord]:
        """The record of one job."""
        return self.storage.job_get(job_id)

    def batch_errors(self, job_id: int) -> list[BatchErrorEvent]:
        """The error events of one batch."""
        return self.storage.batch_errors(job_id)


@contextmanager
def run_test_mode(app: QueueApp, *, max_jobs: int = 10_000) -> Iterator[TestRun]:
    """The body of :meth:`FairQueue.testing`: swaps in a fresh in-memory store, then
    runs what the block enqueued when it ends (nothing, if the block raised)."""
    storage = MemoryStorage()
    # The tenant settings the app has loaded go along (limits, tiers, pauses, rate limits):
    # test mode behaves as the app's workers would, without opening the app's store.
    loaded = app.settings.rows()
    if loaded:
        storage.settings_write([SettingChange(*where, values=values) for where, values in loaded.items()], time.time())
    original = app.storage
    app.storage = storage
    app.settings.forget()
    run = TestRun(storage)
    try:
        yield run
        _drain(app, run, max_jobs)
    finally:
        app.storage = original
        app.settings.forget()


def _drain(app: QueueApp, run: TestRun, max_jobs: int) -> None:
    settings = app.settings.fresh()
    limits = settings.limits
    core = build_dispatcher(settings, 1, virtual_time=time.time())
    CoreSettings(core, settings).apply()
    runner = Runner(app)
    seen = 0
    try:
        while True:
            pending = run.storage.job_pending(after_seq=seen)
            if pending:
                # The core's request tuple: id, org, kind, run_at, key, priority, cost, as a worker feeds it.
                # Paused jobs stay queued: the block's end leaves them so.
                core.enqueue_many([p[:7] for p in pending if settings.paused(p.org, p.kind, p.key, p.queue) is None],
                                  skip_held=True)  # fmt: skip
                seen = pending[-1].ready_seq
            grants = core.dispatch(1)
            if not grants:
                wake = core.next_wakeup()
                if wake is None:
                    return
                core.set_time(wake)
                continue
            grant = grants[0]
            now = core.now()
            claimed = run.storage.job_claim([grant.id], _WORKER, now + limits.lease, now)
            if claimed:
                if len(run.order) >= max_jobs:
                    raise LimitExceeded(
                        f"test mode ran {max_jobs} jobs and more are queued; does a chain never end? "
                        "(raise max_jobs if this is intended)"
                    )
                run.order.append(grant.id)
                outcome = runner.execute(claimed[0], now=core.now())
                finish = Finish(grant.id, _WORKER, outcome.status, core.now(), outcome.error, outcome.retry_at,
                                outcome.children, outcome.progress, settings.daily_limits(c.org for c in outcome.children),
                                outcome.given_back, outcome.ran, outcome.result, outcome.attempt_error)  # fmt: skip
                if run.storage.job_finish([finish]) and outcome.progress and outcome.progress.errors:
                    app.publish_batch_errors(list(outcome.progress.errors))
            core.ack(grant.lease)
    finally:
        runner.close()
