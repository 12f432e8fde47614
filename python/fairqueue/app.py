"""The application object: where jobs are declared, enqueued, listed and aborted.

:class:`FairQueue` is a facade: each method checks nothing and decides nothing
itself but hands the call to the object below that does — the
:class:`~fairqueue.enqueue.Enqueuer` for new work, the
:class:`~fairqueue.control.Control` for existing jobs and schedules, the
:class:`~fairqueue.settings.QueueSettings` for limits, and the runtime for
workers and test mode.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager, AbstractContextManager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Optional, TypeVar, Union, overload

from fairqueue.alerts import Alerts
from fairqueue.conservation import ResourceMonitor
from fairqueue.control import Control
from fairqueue.enqueue import Enqueuer, FutureFunction
from fairqueue.errors import InvalidArgument
from fairqueue.jobs import INHERIT, AsyncOptions, Batchable, JobHandle, KeyOption, Queueable, Transaction
from fairqueue.kinds import Policy
from fairqueue.limits import DEFAULT_SCOPE, Limits
from fairqueue.observe import Explanation
from fairqueue.records import BatchErrorEvent, JobRecord, JobStatus, TriggerRecord, TriggerState
from fairqueue.retention import Retention
from fairqueue.retry import RetryPolicy
from fairqueue.runtime import Worker
from fairqueue.settings import QueueSettings
from fairqueue.storage import DailyUsage, Storage, open_storage
from fairqueue.tenants import Tenants
from fairqueue.testing import TestRun, run_test_mode
from fairqueue.validate import (
    DEFAULT_COST,
    DEFAULT_PRIORITY,
    DEFAULT_QUEUE,
    MAX_SECONDS,
    check_number,
    check_org,
    check_policy,
    shown,
)

__all__ = ["FairQueue", "JobHandle", "OrgView"]

log = logging.getLogger("fairqueue")

R = TypeVar("R")
Delay = Union[None, float, timedelta]


class FairQueue:
    """A fair, durable job queue.

    Args:
        store: where jobs live: a SQLite file path (the default ``fairqueue.db``;
            created on first use), ``":memory:"``, or a :class:`Storage`.
        policy: ``"fair_share"`` (default) or ``"peek_set"``.
        limits: every limit of SPEC §4; the reference defaults if omitted.
        conservation: a :class:`~fairqueue.conservation.ResourceMonitor` that
            throttles this app's workers when the host or process is busy
            (SPEC §2.3); None (default) never throttles.
        retention: how long finished jobs, history and usage counters are kept
            (:class:`~fairqueue.retention.Retention`; its defaults if omitted): every
            worker of this app prunes the store by it.
    """

    def __init__(
        self,
        store: Union[str, Path, Storage] = "fairqueue.db",
        *,
        policy: Policy = "fair_share",
        limits: Optional[Limits] = None,
        conservation: Optional[ResourceMonitor] = None,
        retention: Optional[Retention] = None,
    ) -> None:
        if retention is not None and not isinstance(retention, Retention):
            raise InvalidArgument(f"invalid retention {shown(retention)}: expected a fairqueue.Retention")
        self.retention = retention if retention is not None else Retention()
        """What this app's workers keep, and for how long (see :mod:`fairqueue.runtime.duties.pruning`)."""
        self.settings = QueueSettings(policy, limits)
        """The policy, limits and per-org overrides every part of this app reads."""
        self.conservation = conservation
        self._store_spec = store
        self._storage: Optional[Storage] = store if isinstance(store, Storage) else None
        self.control = Control(lambda: self.storage, self.settings)
        self.alerts = Alerts(lambda: self.storage, self.settings)
        """Alert subscriptions and thresholds (see :mod:`fairqueue.alerts`)."""
        self.tenants = Tenants(lambda: self.storage, self.settings)
        """Tenant settings that live in the store (limits, tiers, pauses; see :mod:`fairqueue.tenants`)."""
        self.settings.follow(self.tenants.refresh)
        self.enqueuer = Enqueuer(lambda: self.storage, self.settings, self.alerts, self.control)
        self.wakeup = self.enqueuer.wakeup
        """Set whenever this process stores new work, so an in-process worker looks at once."""
        self._futures: dict[str, FutureFunction[Any]] = {}
        self._batch_error_callbacks: list[Callable[[BatchErrorEvent], Any]] = []

    @property
    def storage(self) -> Storage:
        """The store, opened on first use (so importing a module that declares an app
        touches no file). Assign a :class:`Storage` to point the app elsewhere."""
        if self._storage is None:
            self._storage = open_storage(str(self._store_spec))
        return self._storage

    @storage.setter
    def storage(self, store: Storage) -> None:
        self._storage = store

    @property
    def policy(self) -> Policy:
        """``"fair_share"`` or ``"peek_set"``: how workers started from now on dispatch."""
        return self.settings.policy

    @policy.setter
    def policy(self, policy: Policy) -> None:
        self.settings.policy = check_policy(policy)

    @property
    def limits(self) -> Limits:
        """The queue's limits (per-org overrides aside)."""
        return self.settings.limits

    # ----- declaring ---------------------------------------------------------------------

    @overload
    def future(self, fn: Callable[..., R]) -> FutureFunction[R]: ...

    @overload
    def future(
        self, fn: None = None, *, timeout: Optional[float] = None, retry: Optional[RetryPolicy] = None,
        queue: str = DEFAULT_QUEUE, priority: int = DEFAULT_PRIORITY, cost: int = DEFAULT_COST,
    ) -> Callable[[Callable[..., R]], FutureFunction[R]]: ...

    def future(
        self, fn: Optional[Callable[..., R]] = None, *, timeout: Optional[float] = None, retry: Optional[RetryPolicy] = None,
        queue: str = DEFAULT_QUEUE, priority: int = DEFAULT_PRIORITY, cost: int = DEFAULT_COST,
    ) -> Any:  # fmt: skip
        """Declares a future: ``@app.future``, ``@app.future(timeout=30)``,
        ``@app.future(retry=fq.RetryPolicy(max_attempts=5))`` or
        ``@app.future(queue="reports", priority=7, cost=2)``: its calls wait in the named
        queue (only workers serving it run them), with that priority and cost unless
        ``fn.options(…)`` gives others.

        The function must live at module level (workers import it by path) and take
        JSON-serialisable arguments. ``def`` and ``async def`` both work. What it
        returns (JSON) is the job's result (``handle.result()``).
        """
        if timeout is not None:
            check_number("timeout", timeout, above=True, most=MAX_SECONDS)
        if retry is not None and not isinstance(retry, RetryPolicy):
            raise InvalidArgument(f"invalid retry {shown(retry)}: expected a fairqueue.RetryPolicy")

        def register(fn: Callable[..., R]) -> FutureFunction[R]:
            if not callable(fn):
                raise InvalidArgument(f"@app.future decorates a function, not {shown(fn)}")
            future = FutureFunction(self.enqueuer, fn, timeout, retry, queue=queue, priority=priority, cost=cost)
            if future.path in self._futures:
                raise InvalidArgument(f"future {future.path!r} is already registered; give the function another name")
            self._futures[future.path] = future
            return future

        return register(fn) if fn is not None else register

    # ----- enqueueing ----------------------------------------------------------------------

    def transaction(self, *, connection: Optional[Any] = None) -> AbstractContextManager[Transaction]:
        """A synchronous transaction: jobs enqueued inside are stored together when the
        block ends (up to 50 queueables and 50 futures), or not at all if it raises.

        With ``connection`` (a psycopg 3 connection to the PostgreSQL store's
        database), the jobs are written inside that connection's own transaction
        when the block ends: they exist once the caller commits it and never
        existed if it rolls back. Futures, queueables and batches all follow it.
        """
        return self.enqueuer.transaction(connection=connection)

    def enqueue(
        self,
        job: Queueable,
        *,
        org: str,
        delay: Delay = None,
        options: Optional[AsyncOptions] = None,
        connection: Optional[Any] = None,
        run_at: Optional[datetime] = None,
        key: KeyOption = INHERIT,
        priority: Optional[int] = None,
        cost: Optional[int] = None,
        queue: Optional[str] = None,
    ) -> JobHandle:
        """Enqueues a queueable for ``org``, not to run before ``delay`` seconds from now
        or ``run_at`` (an aware datetime), at most ``Limits.max_delay["queueable"]``
        (10 minutes by default) ahead.

        ``connection``: write it inside that psycopg connection's transaction
        (PostgreSQL store only; see :meth:`transaction`).

        ``key`` (its concurrency key within the org: a user, an integration…),
        ``priority`` (0 to 9, higher first within the org's own line), ``cost`` (the
        units its rate limits are charged) and ``queue`` (instead of its class's
        ``queue``): see :meth:`fairqueue.enqueue.FutureFunction.options`. By default
        it has its class's queue, priority and cost, and, enqueued from a running job
        of the same org, that job's key (:data:`fairqueue.jobs.INHERIT`).
        """
        return self.enqueuer.enqueue(job, org=org, delay=delay, options=options, connection=connection, run_at=run_at,
                                     key=key, priority=priority, cost=cost, queue=queue)  # fmt: skip

    def transaction_async(self, *, connection: Optional[Any] = None) -> AbstractAsyncContextManager[Transaction]:
        """:meth:`transaction` for async code: ``async with app.transaction_async():``.

        The jobs enqueued inside (``fn.delay``, ``await fn.delay_async``, ``app.enqueue``)
        are stored by an await when the block ends, so the event loop runs on meanwhile:
        on PostgreSQL through psycopg's async pool, on SQLite and memory on a thread.
        With ``connection`` (a psycopg 3 ``AsyncConnection`` to the PostgreSQL store's
        database) they join that connection's own transaction, as in :meth:`transaction`.
        A duplicate signature is refused when the block ends (all or none), not at the call.
        """
        return self.enqueuer.transaction_async(connection=connection)

    async def enqueue_async(
        self,
        job: Queueable,
        *,
        org: str,
        delay: Delay = None,
        options: Optional[AsyncOptions] = None,
        connection: Optional[Any] = None,
        run_at: Optional[datetime] = None,
        key: KeyOption = INHERIT,
        priority: Optional[int] = None,
        cost: Optional[int] = None,
        queue: Optional[str] = None,
    ) -> JobHandle:
        """:meth:`enqueue` for async code: ``await app.enqueue_async(job, org=…)``; the
        event loop keeps running while it is stored (see :meth:`transaction_async`)."""
        return await self.enqueuer.enqueue_async(job, org=org, delay=delay, options=options, connection=connection,
                                                 run_at=run_at, key=key, priority=priority, cost=cost,
                                                 queue=queue)  # fmt: skip

    def execute_batch(
        self,
        job: Batchable,
        *,
        org: str,
        scope: int = DEFAULT_SCOPE,
        delay: Delay = None,
        connection: Optional[Any] = None,
        key: KeyOption = INHERIT,
        priority: Optional[int] = None,
        cost: Optional[int] = None,
        queue: Optional[str] = None,
    ) -> JobHandle:
        """Starts a batch (the reference platform's ``Database.executeBatch``):
        ``job.start`` yields the records, ``job.execute`` runs on each chunk of
        ``scope`` records (1 to 2,000) as a request of its own through the fair
        dispatcher, ``job.finish`` runs at the end. See :mod:`fairqueue.runtime.batch_runner`.

        A chunk that raises records a :class:`~fairqueue.records.BatchErrorEvent`
        (``app.batch_errors(job_id)``, and every ``app.on_batch_error`` callback in
        the worker) and the batch goes on; it ends ``completed`` with
        ``error_count`` failed chunks. ``connection``, ``key``, ``priority``, ``cost``
        and ``queue``: as for :meth:`enqueue` (each chunk is a delivery of the same job:
        its queue, key and priority, charged ``cost`` each).
        """
        return self.enqueuer.execute_batch(job, org=org, scope=scope, delay=delay, connection=connection, key=key,
                                           priority=priority, cost=cost, queue=queue)  # fmt: skip

    def schedule_batch(
        self, job: Batchable, minutes: float, *, org: str, scope: int = DEFAULT_SCOPE, key: KeyOption = INHERIT,
        priority: Optional[int] = None, cost: Optional[int] = None, queue: Optional[str] = None,
    ) -> JobHandle:  # fmt: skip
        """Starts a batch ``minutes`` from now (the reference ``System.scheduleBatch``;
        0 to 525,600, a year). It takes its place among ``org``'s batches (and in its
        flex queue) now. ``key``, ``priority``, ``cost``, ``queue``: as for :meth:`enqueue`."""
        return self.enqueuer.schedule_batch(job, minutes, org=org, scope=scope, key=key, priority=priority, cost=cost,
                                            queue=queue)  # fmt: skip

    def enqueue_whole_batch(
        self, job: Batchable, *, org: str, key: KeyOption = INHERIT, priority: Optional[int] = None,
        cost: Optional[int] = None, queue: Optional[str] = None,
    ) -> JobHandle:  # fmt: skip
        """Runs a batch as one queueable: all its records in one chunk, then ``finish``,
        in one delivery (what an :class:`~fairqueue.processor.AsyncProcessor` under its
        threshold does). ``key``, ``priority``, ``cost``, ``queue``: as for :meth:`enqueue`."""
        return self.enqueuer.enqueue_whole_batch(job, org=org, key=key, priority=priority, cost=cost, queue=queue)

    # ----- limits ---------------------------------------------------------------------------

    def report_load(self, level: float, ttl: float, *, source: str = "default") -> None:
        """Lets this service's interactive work claim priority over async work in this process.

        For ``ttl`` seconds, this process's workers fill at most ``1 - level`` of
        their slots (see :meth:`fairqueue.conservation.ResourceMonitor.report_load`).

        Raises:
            InvalidArgument: no ``conservation`` monitor is configured, or a bad value.
        """
        if self.conservation is None:
            raise InvalidArgument("report_load needs a monitor: FairQueue(..., conservation=ResourceMonitor())")
        self.conservation.report_load(level, ttl, source=source)

    def set_limits(self, org: str, kind: Optional[str] = None, *, key: Optional[str] = None, **values: Any) -> int:
        """Stores ``org``'s limits (of one ``kind`` of it, or of one concurrency ``key``
        of it): every worker on every host applies them within a second, and no job
        starts beyond a lowered cap once the change commits. Returns the settings
        version. E.g. ``set_limits("acme", cap=12, per_key_cap=2)``,
        ``set_limits("acme", "future", cap=3)``, ``set_limits("acme", key="user-42",
        rate=fq.RateLimit(10))``. See :meth:`fairqueue.tenants.Tenants.set_limits`."""
        return self.tenants.set_limits(org, kind, key=key, **values)

    def cap_of(self, org: str, kind: str) -> Optional[int]:
        """The most ``kind`` slots ``org`` may hold at once, across every worker (None:
        no cap, ``fair_share``'s default: shares decide)."""
        return self.settings.fresh().cap(org, kind)

    def set_daily_limit(self, org: str, executions: int) -> int:
        """Stores how many async executions ``org`` may have in any rolling 24 hours
        (default ``limits.daily_executions``, 250,000; e.g. licences × 200).

        Enqueues beyond it raise :class:`~fairqueue.errors.DailyLimitExceeded`. The
        store checks and counts in the enqueue's own transaction, so the limit holds
        across every process and host that shares the store.
        """
        return self.tenants.set_limits(org, daily_limit=executions)

    def set_tier(self, name: str, kind: Optional[str] = None, **values: Any) -> int:
        """Stores a tier: settings every org assigned it takes unless it has its own
        (``"default"``: every org assigned none). See :meth:`fairqueue.tenants.Tenants.set_tier`."""
        return self.tenants.set_tier(name, kind, **values)

    def assign_tier(self, org: str, tier: Optional[str]) -> int:
        """Puts ``org`` in ``tier`` (None: back to the default tier)."""
        return self.tenants.assign_tier(org, tier)

    def pause(self, org: Optional[str] = None, kind: Optional[str] = None, *, key: Optional[str] = None,
              queue: Optional[str] = None, by: Optional[str] = None) -> int:
        """Pauses an org, a kind or key of it, or a named ``queue``: its jobs stay queued,
        none starts until :meth:`resume`; running ones finish."""
        return self.tenants.pause(org, kind, key=key, queue=queue, by=by)

    def resume(self, org: Optional[str] = None, kind: Optional[str] = None, *, key: Optional[str] = None,
               queue: Optional[str] = None, by: Optional[str] = None) -> int:
        """Ends a pause made by :meth:`pause` with the same arguments."""
        return self.tenants.resume(org, kind, key=key, queue=queue, by=by)

    def daily_limit(self, org: str) -> int:
        """The most async executions ``org`` may have in any rolling 24 hours."""
        return self.settings.daily_limit(org)

    def daily_usage(self, org: str) -> DailyUsage:
        """``org``'s async executions counted in the rolling 24 hours, and when the oldest leave."""
        return self.control.daily_usage(org)

    # ----- the flex queue and batch errors -------------------------------------------------------

    def flex_queue(self, org: str) -> list[JobRecord]:
        """``org``'s holding batch jobs, the next to start first. An org runs at most
        5 batch jobs at once (queued or running); the next 100 hold here, and one more
        is refused with :class:`~fairqueue.errors.LimitExceeded`."""
        return self.control.flex_queue(org)

    def move_to_front(self, job_id: int) -> list[int]:
        """Moves a holding batch to the front of its org's flex queue; returns the new order."""
        return self.control.flex_move(job_id, to="front")

    def move_to_end(self, job_id: int) -> list[int]:
        """Moves a holding batch to the end of its org's flex queue; returns the new order."""
        return self.control.flex_move(job_id, to="end")

    def move_before(self, job_id: int, other_id: int) -> list[int]:
        """Moves a holding batch just before another of its org's; returns the new order."""
        return self.control.flex_move(job_id, before=other_id)

    def move_after(self, job_id: int, other_id: int) -> list[int]:
        """Moves a holding batch just after another of its org's; returns the new order."""
        return self.control.flex_move(job_id, after=other_id)

    def on_batch_error(self, callback: Callable[[BatchErrorEvent], Any]) -> Callable[[BatchErrorEvent], Any]:
        """Calls ``callback`` with each batch error event once it is committed, in the
        worker process that ran the failing phase (usable as a decorator). A callback
        that raises is logged and does not affect the batch."""
        if not callable(callback):
            raise InvalidArgument(f"on_batch_error takes a callable, not {shown(callback)}")
        self._batch_error_callbacks.append(callback)
        return callback

    def publish_batch_errors(self, events: Sequence[BatchErrorEvent]) -> None:
        """Calls every ``on_batch_error`` callback with each committed event (workers do)."""
        for event in events:
            for callback in list(self._batch_error_callbacks):
                try:
                    callback(event)
                except Exception:
                    log.exception("on_batch_error callback %r failed on batch %d", callback, event.job_id)

    def batch_errors(self, job_id: int) -> list[BatchErrorEvent]:
        """The error events of batch ``job_id``, oldest first."""
        return self.control.batch_errors(job_id)

    # ----- seeing ----------------------------------------------------------------------------

    def explain(self, job_id: int) -> Explanation:
        """Why job ``job_id`` has not started (or what delayed it): its line, its org's
        cap and who holds it, the flex queue, its run-at time, and an estimated start
        with its basis (see :mod:`fairqueue.observe`). ``print(app.explain(42).render())``.

        Raises:
            LookupError: there is no such job.
        """
        return self.control.explain(job_id)

    # ----- schedules ------------------------------------------------------------------------

    def schedule(self, name: str, cron: str, job: Queueable, org: str, *, timezone: str = "UTC") -> TriggerRecord:
        """Runs ``job`` for ``org`` at every fire time of ``cron`` (the reference
        platform's ``System.schedule``): each fire enqueues a copy of ``job`` as a
        ``scheduled`` job. Workers fire due schedules; any number of workers on any
        number of hosts fire each one exactly once, and after downtime a schedule
        that missed fire times fires once, not once per missed time.

        Args:
            name: unique among ``org``'s waiting schedules.
            cron: ``"seconds minutes hours day-of-month month day-of-week [year]"``
                (``? * , - / L W #``; day-of-week 1 = Sunday) or the 5-field form
                (see :mod:`fairqueue.cron`).
            job: a :class:`Queueable` instance; its state is stored as JSON. Its
                fires wait in its class's ``queue`` with its ``priority`` and
                ``cost``, as the schedule stored them.
            org: whose job it is.
            timezone: the IANA zone the cron expression's times are in.

        Raises:
            InvalidArgument: a malformed name, expression or zone, an expression with
                no fire time left, or a name ``org`` already uses.
            LimitExceeded: ``org`` already has ``limits.schedules_per_org`` (100) schedules.
        """
        return self.enqueuer.schedule(name, cron, job, org, timezone=timezone)

    def schedules(self, *, org: Optional[str] = None, state: Union[None, str, TriggerState] = None) -> list[TriggerRecord]:
        """Schedules (optionally one org's, in one state), oldest first."""
        return self.control.schedules(org=org, state=state)

    def unschedule(self, trigger_id: int) -> TriggerState:
        """Aborts a schedule: it never fires again. Returns the state it was in.

        Raises:
            LookupError: there is no such schedule.
        """
        return self.control.unschedule(trigger_id)

    # ----- records and control ---------------------------------------------------------------

    def get(self, job_id: int) -> Optional[JobRecord]:
        """The record of ``job_id``, or None."""
        return self.control.get(job_id)

    def jobs(
        self,
        *,
        org: Optional[str] = None,
        kind: Optional[str] = None,
        status: Union[None, str, JobStatus] = None,
        limit: int = 100,
        before_id: Optional[int] = None,
    ) -> list[JobRecord]:
        """Job records, newest first, filtered by org, kind and status."""
        return self.control.jobs(org=org, kind=kind, status=status, limit=limit, before_id=before_id)

    def wait(self, job_id: int, timeout: float = 30.0) -> JobRecord:
        """Blocks until job ``job_id`` has finished; returns its record (see :meth:`JobHandle.wait`)."""
        return self.enqueuer.wait(job_id, timeout)

    async def wait_async(self, job_id: int, timeout: float = 30.0) -> JobRecord:
        """:meth:`wait` for async code (see :meth:`JobHandle.wait_async`)."""
        return await self.enqueuer.wait_async(job_id, timeout)

    def abort(self, job_id: int) -> JobStatus:
        """Aborts a job: a queued job never runs; a running one sees ``ctx.cancelled``.

        Returns the status after the call; raises LookupError for an unknown id.
        """
        return self.control.abort(job_id)

    def retry(self, job_id: int) -> JobStatus:
        """Queues a failed, discarded or aborted job again, as a new delivery of the same
        record with a fresh retry budget (its attempts and errors keep their history).
        LookupError for an unknown id; InvalidArgument for a job in another status."""
        return self.control.retry(job_id)

    def retry_jobs(self, status: Any = None, **filters: Any) -> list[int]:
        """Queues again every failed, discarded and aborted job (of ``status`` only, if
        given) matching the filters — ``org``, ``kind``, ``handler`` (an import path),
        ``since`` and ``until`` (aware datetimes, on the creation time) — and returns
        their ids: ``app.retry_jobs("discarded", handler="myservice.jobs:send_invoice")``."""
        return self.control.retry_jobs(status, **filters)

    def abort_jobs(self, status: Any = None, **filters: Any) -> dict[int, JobStatus]:
        """Aborts every holding, queued and processing job (of ``status`` only, if given)
        matching the filters (as for :meth:`retry_jobs`); returns each one's status after
        the call (``aborted``, or ``processing`` with its cancel flag set)."""
        return self.control.abort_jobs(status, **filters)

    def org(self, org: str) -> OrgView:
        """A view that sees and aborts only ``org``'s jobs."""
        return OrgView(self, check_org(org))

    # ----- running ----------------------------------------------------------------------------

    def testing(self, *, max_jobs: int = 10_000) -> AbstractContextManager[TestRun]:
        """Test mode: ``with app.testing() as run:`` — jobs enqueued inside go to a fresh
        in-memory store and all run synchronously, in dispatch order, when the block
        ends (children, finalizers and retries included; delays on a virtual clock).
        Read the outcome from ``run.jobs()`` afterwards. See :mod:`fairqueue.testing`."""
        return run_test_mode(self, max_jobs=max_jobs)

    def worker(self, **options: Any) -> Worker:
        """A worker for this app; see :class:`fairqueue.runtime.Worker` for the options."""
        return Worker(self, **options)

    def close(self) -> None:
        """Closes the store."""
        self.storage.close()


class OrgView:
    """One org's window on the queue: it cannot see or touch another org's jobs."""

    def __init__(self, app: FairQueue, org: str) -> None:
        self.app = app
        self.org = org
        self._control = app.control

    def jobs(
        self, *, kind: Optional[str] = None, status: Union[None, str, JobStatus] = None, limit: int = 100
    ) -> list[JobRecord]:
        """This org's job records, newest first."""
        return self._control.jobs(org=self.org, kind=kind, status=status, limit=limit)

    def get(self, job_id: int) -> Optional[JobRecord]:
        """The record of ``job_id`` if it is this org's, else None."""
        return self._control.get(job_id, org=self.org)

    def abort(self, job_id: int) -> JobStatus:
        """Aborts one of this org's jobs; another org's id is reported as unknown."""
        return self._control.abort(job_id, org=self.org)

    def retry(self, job_id: int) -> JobStatus:
        """Re-runs one of this org's jobs (see :meth:`FairQueue.retry`); another org's id is unknown."""
        return self._control.retry(job_id, org=self.org)

    def retry_jobs(self, status: Any = None, **filters: Any) -> list[int]:
        """:meth:`FairQueue.retry_jobs` over this org's jobs only."""
        return self._control.retry_jobs(status, org=self.org, **filters)

    def abort_jobs(self, status: Any = None, **filters: Any) -> dict[int, JobStatus]:
        """:meth:`FairQueue.abort_jobs` over this org's jobs only."""
        return self._control.abort_jobs(status, org=self.org, **filters)

    def explain(self, job_id: int) -> Explanation:
        """Why one of this org's jobs waits; another org's id is reported as unknown."""
        return self._control.explain(job_id, org=self.org)

    def schedule(self, name: str, cron: str, job: Queueable, *, timezone: str = "UTC") -> TriggerRecord:
        """Schedules ``job`` for this org (see :meth:`FairQueue.schedule`)."""
        return self.app.schedule(name, cron, job, self.org, timezone=timezone)

    def schedules(self, *, state: Union[None, str, TriggerState] = None) -> list[TriggerRecord]:
        """This org's schedules, oldest first."""
        return self._control.schedules(org=self.org, state=state)

    def unschedule(self, trigger_id: int) -> TriggerState:
        """Aborts one of this org's schedules; another org's id is reported as unknown."""
        return self._control.unschedule(trigger_id, org=self.org)

    def flex_queue(self) -> list[JobRecord]:
        """This org's holding batch jobs, the next to start first."""
        return self._control.flex_queue(self.org)

    def move_to_front(self, job_id: int) -> list[int]:
        """Moves one of this org's holding batches to the front of its flex queue."""
        return self._control.flex_move(job_id, org=self.org, to="front")

    def move_to_end(self, job_id: int) -> list[int]:
        """Moves one of this org's holding batches to the end of its flex queue."""
        return self._control.flex_move(job_id, org=self.org, to="end")

    def move_before(self, job_id: int, other_id: int) -> list[int]:
        """Moves one of this org's holding batches just before another."""
        return self._control.flex_move(job_id, org=self.org, before=other_id)

    def move_after(self, job_id: int, other_id: int) -> list[int]:
        """Moves one of this org's holding batches just after another."""
        return self._control.flex_move(job_id, org=self.org, after=other_id)

    def daily_usage(self) -> DailyUsage:
        """This org's async executions in the rolling 24 hours (see :meth:`FairQueue.daily_usage`)."""
        return self._control.daily_usage(self.org)

    def enqueue(self, job: Queueable, **options: Any) -> JobHandle:
        """Enqueues a queueable for this org."""
        return self.app.enqueue(job, org=self.org, **options)

    async def enqueue_async(self, job: Queueable, **options: Any) -> JobHandle:
        """Enqueues a queueable for this org, by an await (see :meth:`FairQueue.enqueue_async`)."""
        return await self.app.enqueue_async(job, org=self.org, **options)
