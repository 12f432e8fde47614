"""The application object: where jobs are declared, enqueued, listed and aborted."""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, ContextManager, Literal, Optional, TypeVar, Union, overload

from fairqueue import jobs as _jobs
from fairqueue.conservation import ResourceMonitor
from fairqueue.alerts import AlertEvent, Alerts
from fairqueue.errors import DailyLimitExceeded, DuplicateSignature, FlexQueueFull, InvalidArgument, LimitExceeded
from fairqueue.jobs import AsyncOptions, FutureFunction, Queueable, Transaction
from fairqueue.limits import KINDS, Limits
from fairqueue.observe import Explanation, explain
from fairqueue.cron import CronSchedule
from fairqueue.batch import DEFAULT_SCOPE, Batchable, batch_payload
from fairqueue.records import BatchErrorEvent, JobRecord, JobStatus, NewJob, NewTrigger, TriggerRecord, TriggerState
from fairqueue.storage import FLEX_ACTIVE, FLEX_HOLDING, DailyUsage, Storage, open_storage

if TYPE_CHECKING:
    from fairqueue.testing import TestRun
    from fairqueue.worker import Worker

__all__ = ["FairQueue", "JobHandle", "OrgView"]

log = logging.getLogger("fairqueue")

R = TypeVar("R")

Policy = Literal["fair_share", "peek_set"]
POLICIES: tuple[Policy, ...] = ("fair_share", "peek_set")


def check_org(org: object) -> str:
    """Returns ``org`` if it can name a tenant: a str of 1 to 255 characters, none a control character."""
    if not isinstance(org, str) or not 0 < len(org) <= 255 or any(ord(c) < 32 or ord(c) == 127 for c in org):
        raise InvalidArgument(f"invalid org {org!r}: expected a string of 1 to 255 characters with no control characters")
    return org


def _seconds(name: str, value: Union[None, float, timedelta]) -> float:
    seconds = value.total_seconds() if isinstance(value, timedelta) else value
    if seconds is None:
        return 0.0
    if not isinstance(seconds, (int, float)) or isinstance(seconds, bool) or not math.isfinite(seconds) or seconds < 0:
        raise InvalidArgument(f"invalid {name} {value!r}: expected seconds >= 0 or a timedelta")
    return float(seconds)


def _trigger_state(state: Union[None, str, TriggerState]) -> Optional[TriggerState]:
    try:
        return TriggerState(state) if state is not None else None
    except ValueError:
        raise InvalidArgument(
            f"invalid schedule state {state!r}: expected one of {', '.join(s.value for s in TriggerState)}"
        ) from None


class JobHandle:
    """A submitted job. Its id is known once its transaction has stored it."""

    def __init__(self, app: FairQueue, job_id: Optional[int], org: str, kind: str) -> None:
        self.app = app
        self._id = job_id
        self.org = org
        self.kind = kind

    @property
    def id(self) -> int:
        """The job id."""
        if self._id is None:
            raise RuntimeError("this job is stored when its transaction ends; its id is known from then on")
        return self._id

    def record(self) -> JobRecord:
        """The job's current record."""
        record = self.app.get(self.id)
        assert record is not None, "a stored job always has a record"
        return record

    @property
    def status(self) -> JobStatus:
        """The job's current status."""
        return self.record().status

    def abort(self) -> JobStatus:
        """Aborts the job (see :meth:`FairQueue.abort`)."""
        return self.app.abort(self.id)

    def wait(self, timeout: float = 30.0, interval: float = 0.01) -> JobRecord:
        """Blocks until the job has finished, or raises TimeoutError after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            record = self.record()
            if record.status.finished:
                return record
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {self.id} still {record.status.value} after {timeout} s")
            time.sleep(interval)

    def __repr__(self) -> str:
        return f"<JobHandle id={self._id} org={self.org!r} kind={self.kind}>"


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
    """

    def __init__(
        self,
        store: Union[str, Path, Storage] = "fairqueue.db",
        *,
        policy: Policy = "fair_share",
        limits: Optional[Limits] = None,
        conservation: Optional[ResourceMonitor] = None,
    ) -> None:
        if policy not in POLICIES:
            raise InvalidArgument(f"invalid policy {policy!r}: expected one of {', '.join(POLICIES)}")
        self.policy = policy
        self.limits = limits or Limits()
        self.conservation = conservation
        self._store_spec = store
        self._storage: Optional[Storage] = store if isinstance(store, Storage) else None
        self.org_limits: dict[tuple[str, str], dict[str, Any]] = {}
        self.daily_limits: dict[str, int] = {}
        self._batch_error_callbacks: list[Callable[[BatchErrorEvent], Any]] = []
        self.alerts = Alerts(self)
        """Alert subscriptions and thresholds (see :mod:`fairqueue.alerts`)."""
        """Per-org overrides of ``limits.daily_executions`` (see :meth:`set_daily_limit`)."""
        self._futures: dict[str, FutureFunction[Any]] = {}
        self.wakeup = threading.Event()
        """Set whenever this process stores new work, so an in-process worker looks at once."""

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

    # ----- declaring ---------------------------------------------------------------------

    @overload
    def future(self, fn: Callable[..., R]) -> FutureFunction[R]: ...

    @overload
    def future(self, fn: None = None, *, timeout: Optional[float] = None) -> Callable[[Callable[..., R]], FutureFunction[R]]: ...

    def future(self, fn: Optional[Callable[..., R]] = None, *, timeout: Optional[float] = None) -> Any:
        """Declares a future: ``@app.future`` or ``@app.future(timeout=30)``.

        The function must live at module level (workers import it by path) and take
        JSON-serialisable arguments. ``def`` and ``async def`` both work.
        """
        if timeout is not None:
            _seconds("timeout", timeout)

        def register(fn: Callable[..., R]) -> FutureFunction[R]:
            if not callable(fn):
                raise InvalidArgument(f"@app.future decorates a function, not {fn!r}")
            path = f"{fn.__module__}:{fn.__qualname__}"
            if path in self._futures:
                raise InvalidArgument(f"future {path!r} is already registered; give the function another name")
            future = FutureFunction(self, fn, timeout)
            self._futures[path] = future
            return future

        return register(fn) if fn is not None else register

    # ----- enqueueing ----------------------------------------------------------------------

    @contextmanager
    def transaction(self, *, connection: Optional[Any] = None) -> Iterator[Transaction]:
        """A synchronous transaction: jobs enqueued inside are stored together when the
        block ends (up to 50 queueables and 50 futures), or not at all if it raises.

        With ``connection`` (a psycopg 3 connection to the PostgreSQL store's
        database), the jobs are written inside that connection's own transaction
        when the block ends: they exist once the caller commits it and never
        existed if it rolls back. Futures, queueables and batches all follow it.
        """
        outer = _jobs._transaction.get()
        if outer is not None:
            if connection is not None and connection is not outer.connection:
                raise InvalidArgument(
                    "a transaction on another connection is already open here: pass the same connection, or none"
                )
            yield outer
            return
        if connection is not None:
            self.storage.check_connection(connection)
        tx = Transaction(self, asynchronous=False, connection=connection)
        token = _jobs._transaction.set(tx)
        try:
            yield tx
        finally:
            _jobs._transaction.reset(token)
        self._store(tx)

    def _store(self, tx: Transaction) -> None:
        if not tx.pending:
            return
        news = [new for new, _ in tx.pending]
        daily = self._daily_limits_for(news)
        with self._alerting(news):
            if tx.connection is not None:
                ids = self.storage.job_enqueue_in(tx.connection, news, time.time(), daily)
            else:
                ids = self.storage.job_enqueue(news, time.time(), daily)
        for (_, handle), job_id in zip(tx.pending, ids):
            handle._id = job_id
        self.wakeup.set()

    def _submit(self, kind: str, new: NewJob) -> JobHandle:
        tx = _jobs._transaction.get()
        own = tx is None
        if tx is None:
            tx = Transaction(self, asynchronous=False)
        if new.duplicate_signature and self.storage.job_signature_taken(new.duplicate_signature):
            raise DuplicateSignature(
                f"a job with duplicate signature {new.duplicate_signature!r} is already holding, queued or running"
            )
        if tx.asynchronous:
            # A running job's children are stored with its outcome (and counted then);
            # refuse now, while the handler can still react.
            self._check_daily_limit(new.org, 1 + sum(1 for n, _ in tx.pending if n.org == new.org))
        tx.count(kind)
        handle = JobHandle(self, None, new.org, kind)
        tx.pending.append((new, handle))
        if own:
            self._store(tx)
        return handle

    def _enqueue_futures(
        self, fn: FutureFunction[Any], org: str, calls: Iterable[Union[Sequence[Any], Mapping[str, Any]]]
    ) -> list[JobHandle]:
        check_org(org)
        if _jobs._transaction.get() is not None:
            raise InvalidArgument(
                f"{fn.path}.delay_many cannot run inside a transaction or a job; call .delay there, or move the bulk load out"
            )
        news = []
        path, max_bytes = fn.path, self.limits.max_payload_bytes
        for i, call in enumerate(calls):
            if isinstance(call, (list, tuple)):
                body: dict[str, Any] = {"args": call, "kwargs": {}}
            elif isinstance(call, Mapping):
                body = {"args": [], "kwargs": call if isinstance(call, dict) else dict(call)}
            else:
                raise InvalidArgument(f"call {i} of {path}.delay_many is {call!r}: expected a list/tuple of arguments or a dict")
            payload = _jobs.encode(body, f"the arguments of call {i} of {path}", max_bytes)
            news.append(NewJob(org, "future", path, payload))
        with self._alerting(news):
            ids = self.storage.job_enqueue(news, time.time(), self._daily_limits_for(news))
        self.wakeup.set()
        return [JobHandle(self, job_id, org, "future") for job_id in ids]

    @contextmanager
    def _alerting(self, news: Sequence[NewJob]) -> Iterator[None]:
        """Tells alert subscribers when an enqueue reaches a daily limit or a full flex queue."""
        try:
            yield
        except DailyLimitExceeded as e:
            self.alerts.usage(e.org, e.limit, e.limit)
            raise
        except FlexQueueFull as e:
            self.alerts.emit(AlertEvent("flex_full", "once", e.org, str(e), {"active": FLEX_ACTIVE, "holding": FLEX_HOLDING}))
            raise
        if self.alerts.watching():
            for org in sorted({n.org for n in news}):
                self.alerts.usage(org, self.storage.usage_daily(org, time.time()).count, self.daily_limit(org))

    def _enqueue_future(self, fn: FutureFunction[Any], org: str, args: list[Any], kwargs: dict[str, Any]) -> JobHandle:
        check_org(org)
        payload = _jobs.encode({"args": args, "kwargs": kwargs}, f"the arguments of {fn.path}", self.limits.max_payload_bytes)
        return self._submit("future", NewJob(org=org, kind="future", handler=fn.path, payload=payload))

    def enqueue(
        self,
        job: Queueable,
        *,
        org: str,
        delay: Union[None, float, timedelta] = None,
        options: Optional[AsyncOptions] = None,
        connection: Optional[Any] = None,
    ) -> JobHandle:
        """Enqueues a queueable for ``org``, not to run before ``delay`` (0 to 10 minutes).

        ``connection``: write it inside that psycopg connection's transaction
        (PostgreSQL store only; see :meth:`transaction`).
        """
        if connection is not None:
            with self.transaction(connection=connection):
                handle = self.enqueue(job, org=org, delay=delay, options=options)
            return handle
        seconds = self._checked_delay(org, delay)
        path, state = _jobs.queueable_state(job)
        options = options or AsyncOptions()
        parent = _jobs._current.get()
        inside = parent is not None and _jobs._transaction.get() is parent.transaction
        depth = parent.chain_depth + 1 if inside and parent else 0
        max_depth = options.max_depth if options.max_depth is not None else (parent.max_depth if inside and parent else None)
        ceilings = [d for d in (max_depth, self.limits.max_chain_depth) if d is not None]
        if ceilings and depth > min(ceilings):
            raise LimitExceeded(f"chain depth {depth} is over the maximum depth of {min(ceilings)}")
        requeues = 0
        if inside and parent and parent.in_finalizer:
            requeues = parent.finalizer_requeues + 1
            if requeues > self.limits.finalizer_requeues:
                raise LimitExceeded(
                    f"a finalizer re-enqueued {requeues} times in a row, over the limit of {self.limits.finalizer_requeues}"
                )
        body = {"state": state, "max_depth": max_depth, "finalizer_requeues": requeues}
        payload = _jobs.encode(body, f"the state of {path}", self.limits.max_payload_bytes)
        return self._submit(
            "queueable",
            NewJob(
                org=org,
                kind="queueable",
                handler=path,
                payload=payload,
                run_at=time.time() + seconds if seconds else None,
                parent_id=parent.job_id if inside and parent else None,
                chain_depth=depth,
                duplicate_signature=options.duplicate_signature,
            ),
        )

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

    def set_limits(
        self,
        org: str,
        kind: str,
        *,
        cap: Optional[int] = None,
        min: Optional[int] = None,
        weight: Optional[float] = None,
    ) -> None:
        """Overrides one (org, kind) pair's cap, reserved minimum or weight for workers
        started from this app (they apply it live)."""
        check_org(org)
        if kind not in KINDS:
            raise InvalidArgument(f"invalid kind {kind!r}: expected one of {', '.join(KINDS)}")
        current = {"cap": self.limits.cap, "min": self.limits.min, "weight": self.limits.weight}
        merged = {**current, **self.org_limits.get((org, kind), {})}
        merged.update({k: v for k, v in (("cap", cap), ("min", min), ("weight", weight)) if v is not None})
        # Limits validates the same three values with the same messages.
        Limits(cap=merged["cap"], min=merged["min"], weight=merged["weight"])
        self.org_limits[(org, kind)] = merged

    def _checked_delay(self, org: str, delay: Union[None, float, timedelta]) -> float:
        """``delay`` in seconds, once ``org`` and ``delay`` are known to be valid."""
        check_org(org)
        seconds = _seconds("delay", delay)
        if seconds > self.limits.max_delay:
            raise LimitExceeded(f"delay of {seconds:g} s is over the limit of {self.limits.max_delay:g} s")
        return seconds

    # ----- batches --------------------------------------------------------------------------

    def execute_batch(
        self,
        job: Batchable,
        *,
        org: str,
        scope: int = DEFAULT_SCOPE,
        delay: Union[None, float, timedelta] = None,
        connection: Optional[Any] = None,
    ) -> JobHandle:
        """Starts a batch (the reference platform's ``Database.executeBatch``):
        ``job.start`` yields the records, ``job.execute`` runs on each chunk of
        ``scope`` records (1 to 2,000) as a request of its own through the fair
        dispatcher, ``job.finish`` runs at the end. See :mod:`fairqueue.batch`.

        A chunk that raises records a :class:`~fairqueue.records.BatchErrorEvent`
        (``app.batch_errors(job_id)``, and every ``app.on_batch_error`` callback in
        the worker) and the batch goes on; it ends ``completed`` with
        ``error_count`` failed chunks. ``connection``: as for :meth:`enqueue`.
        """
        if connection is not None:
            with self.transaction(connection=connection):
                handle = self.execute_batch(job, org=org, scope=scope, delay=delay)
            return handle
        seconds = self._checked_delay(org, delay)
        return self._submit_batch(job, org, scope, seconds)

    def schedule_batch(self, job: Batchable, minutes: float, *, org: str, scope: int = DEFAULT_SCOPE) -> JobHandle:
        """Starts a batch ``minutes`` from now (the reference ``System.scheduleBatch``;
        0 to 525,600, a year). It takes its place among ``org``'s batches (and in its
        flex queue) now."""
        check_org(org)
        if not isinstance(minutes, (int, float)) or isinstance(minutes, bool) or not 0 <= minutes <= 525_600:
            raise InvalidArgument(f"invalid minutes {minutes!r}: expected 0 to 525600 (a year)")
        return self._submit_batch(job, org, scope, minutes * 60.0)

    def _submit_batch(self, job: Batchable, org: str, scope: int, seconds: float) -> JobHandle:
        path, payload = batch_payload(job, scope, self.limits.max_payload_bytes)
        run_at = time.time() + seconds if seconds else None
        return self._submit("batch", NewJob(org=org, kind="batch", handler=path, payload=payload, run_at=run_at))

    def flex_queue(self, org: str) -> list[JobRecord]:
        """``org``'s holding batch jobs, the next to start first. An org runs at most
        5 batch jobs at once (queued or running); the next 100 hold here, and one more
        is refused with :class:`~fairqueue.errors.LimitExceeded`."""
        check_org(org)
        return self.storage.flex_list(org)

    def move_to_front(self, job_id: int) -> list[int]:
        """Moves a holding batch to the front of its org's flex queue; returns the new order."""
        return self._flex_move(job_id, to="front")

    def move_to_end(self, job_id: int) -> list[int]:
        """Moves a holding batch to the end of its org's flex queue; returns the new order."""
        return self._flex_move(job_id, to="end")

    def move_before(self, job_id: int, other_id: int) -> list[int]:
        """Moves a holding batch just before another of its org's; returns the new order."""
        return self._flex_move(job_id, before=other_id)

    def move_after(self, job_id: int, other_id: int) -> list[int]:
        """Moves a holding batch just after another of its org's; returns the new order."""
        return self._flex_move(job_id, after=other_id)

    def _flex_move(self, job_id: int, org: Optional[str] = None, **where: Any) -> list[int]:
        record = self.storage.job_get(job_id)
        if record is None or (org is not None and record.org != org):
            raise LookupError(f"no job with id {job_id}" + (f" for org {org!r}" if org else ""))
        return self.storage.flex_move(job_id, record.org, **where)

    def on_batch_error(self, callback: Callable[[BatchErrorEvent], Any]) -> Callable[[BatchErrorEvent], Any]:
        """Calls ``callback`` with each batch error event once it is committed, in the
        worker process that ran the failing phase (usable as a decorator). A callback
        that raises is logged and does not affect the batch."""
        if not callable(callback):
            raise InvalidArgument(f"on_batch_error takes a callable, not {callback!r}")
        self._batch_error_callbacks.append(callback)
        return callback

    def batch_errors(self, job_id: int) -> list[BatchErrorEvent]:
        """The error events of batch ``job_id``, oldest first."""
        return self.storage.batch_errors(job_id)

    def _publish_batch_errors(self, events: Sequence[BatchErrorEvent]) -> None:
        for event in events:
            for callback in list(self._batch_error_callbacks):
                try:
                    callback(event)
                except Exception:
                    log.exception("on_batch_error callback %r failed on batch %d", callback, event.job_id)

    # ----- seeing ----------------------------------------------------------------------------

    def explain(self, job_id: int) -> Explanation:
        """Why job ``job_id`` has not started (or what delayed it): its line, its org's
        cap and who holds it, the flex queue, its run-at time, and an estimated start
        with its basis (see :mod:`fairqueue.observe`). ``print(app.explain(42).render())``.

        Raises:
            LookupError: there is no such job.
        """
        return explain(self, job_id)

    def cap_of(self, org: str, kind: str) -> int:
        """The most ``kind`` slots ``org`` may hold at once, across every worker."""
        cap: int = self.org_limits.get((org, kind), {}).get("cap", self.limits.cap)
        return cap

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
            job: a :class:`Queueable` instance; its state is stored as JSON.
            org: whose job it is.
            timezone: the IANA zone the cron expression's times are in.

        Raises:
            InvalidArgument: a malformed name, expression or zone, an expression with
                no fire time left, or a name ``org`` already uses.
            LimitExceeded: ``org`` already has ``limits.schedules_per_org`` (100) schedules.
        """
        check_org(org)
        if not isinstance(name, str) or not name.strip() or len(name) > 255:
            raise InvalidArgument(f"invalid schedule name {name!r}: expected 1 to 255 characters")
        if not isinstance(job, Queueable):
            raise InvalidArgument(f"app.schedule runs a Queueable instance, not {job!r}")
        schedule = CronSchedule(cron, timezone)
        now = time.time()
        first = schedule.next_after(now)
        if first is None:
            raise InvalidArgument(f"cron expression {cron!r} has no fire time after now: it would never run")
        path, state = _jobs.queueable_state(job)
        body = {"state": state, "max_depth": None, "finalizer_requeues": 0}
        payload = _jobs.encode(body, f"the state of {path}", self.limits.max_payload_bytes)
        new = NewTrigger(org=org, name=name, cron=schedule.expression, timezone=timezone, handler=path,
                         payload=payload, next_fire_at=first)  # fmt: skip
        trigger_id = self.storage.trigger_create(new, now, self.limits.schedules_per_org)
        record = self.storage.trigger_get(trigger_id)
        assert record is not None
        self.wakeup.set()
        return record

    def schedules(self, *, org: Optional[str] = None, state: Union[None, str, TriggerState] = None) -> list[TriggerRecord]:
        """Schedules (optionally one org's, in one state), oldest first."""
        if org is not None:
            check_org(org)
        wanted = _trigger_state(state)
        return self.storage.trigger_list(org=org, state=wanted)

    def unschedule(self, trigger_id: int) -> TriggerState:
        """Aborts a schedule: it never fires again. Returns the state it was in.

        Raises:
            LookupError: there is no such schedule.
        """
        state = self.storage.trigger_abort(trigger_id)
        if state is None:
            raise LookupError(f"no schedule with id {trigger_id}")
        return state

    # ----- daily limits ---------------------------------------------------------------------

    def set_daily_limit(self, org: str, executions: int) -> None:
        """Sets how many async executions ``org`` may have in any rolling 24 hours
        (default ``limits.daily_executions``, 250,000; e.g. licences × 200).

        Enqueues beyond it raise :class:`~fairqueue.errors.DailyLimitExceeded`. The
        store checks and counts in the enqueue's own transaction, so the limit holds
        across every process and host that shares the store and sets the same limit.
        """
        check_org(org)
        if not isinstance(executions, int) or isinstance(executions, bool) or executions < 0:
            raise InvalidArgument(f"invalid daily limit {executions!r} for org {org!r}: expected an integer >= 0")
        self.daily_limits[org] = executions

    def daily_limit(self, org: str) -> int:
        """The most async executions ``org`` may have in any rolling 24 hours."""
        return self.daily_limits.get(org, self.limits.daily_executions)

    def daily_usage(self, org: str) -> DailyUsage:
        """``org``'s async executions counted in the rolling 24 hours, and when the oldest leave."""
        check_org(org)
        return self.storage.usage_daily(org, time.time())

    def _daily_limits_for(self, news: Iterable[NewJob]) -> dict[str, int]:
        return {org: self.daily_limit(org) for org in {n.org for n in news}}

    def _check_daily_limit(self, org: str, adding: int) -> None:
        usage = self.storage.usage_daily(org, time.time())
        limit = self.daily_limit(org)
        if usage.count + adding > limit:
            resets_at = usage.resets_at if usage.resets_at is not None else time.time() + 24 * 3600
            raise DailyLimitExceeded(org, usage.count, adding, limit, resets_at)

    # ----- records and control ---------------------------------------------------------------

    def get(self, job_id: int) -> Optional[JobRecord]:
        """The record of ``job_id``, or None."""
        return self.storage.job_get(job_id)

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
        if kind is not None and kind not in KINDS:
            raise InvalidArgument(f"invalid kind {kind!r}: expected one of {', '.join(KINDS)}")
        try:
            wanted = JobStatus(status) if status is not None else None
        except ValueError:
            raise InvalidArgument(
                f"invalid status {status!r}: expected one of {', '.join(s.value for s in JobStatus)}"
            ) from None
        if not isinstance(limit, int) or limit < 1:
            raise InvalidArgument(f"invalid limit {limit!r}: expected an integer >= 1")
        return self.storage.job_list(org=org, kind=kind, status=wanted, before_id=before_id, limit=limit)

    def abort(self, job_id: int) -> JobStatus:
        """Aborts a job: a queued job never runs; a running one sees ``ctx.cancelled``.

        Returns the status after the call; raises LookupError for an unknown id.
        """
        status = self.storage.job_abort(job_id, time.time())
        if status is None:
            raise LookupError(f"no job with id {job_id}")
        return status

    def org(self, org: str) -> OrgView:
        """A view that sees and aborts only ``org``'s jobs."""
        return OrgView(self, check_org(org))

    def testing(self, *, max_jobs: int = 10_000) -> ContextManager[TestRun]:
        """Test mode: ``with app.testing() as run:`` — jobs enqueued inside go to a fresh
        in-memory store and all run synchronously, in dispatch order, when the block
        ends (children, finalizers and retries included; delays on a virtual clock).
        Read the outcome from ``run.jobs()`` afterwards. See :mod:`fairqueue.testing`."""
        from fairqueue.testing import run_test_mode

        return run_test_mode(self, max_jobs=max_jobs)

    def worker(self, **options: Any) -> Worker:
        """A worker for this app; see :class:`fairqueue.worker.Worker` for the options."""
        from fairqueue.worker import Worker

        return Worker(self, **options)

    def close(self) -> None:
        """Closes the store."""
        self.storage.close()


class OrgView:
    """One org's window on the queue: it cannot see or touch another org's jobs."""

    def __init__(self, app: FairQueue, org: str) -> None:
        self.app = app
        self.org = org

    def jobs(
        self, *, kind: Optional[str] = None, status: Union[None, str, JobStatus] = None, limit: int = 100
    ) -> list[JobRecord]:
        """This org's job records, newest first."""
        return self.app.jobs(org=self.org, kind=kind, status=status, limit=limit)

    def get(self, job_id: int) -> Optional[JobRecord]:
        """The record of ``job_id`` if it is this org's, else None."""
        record = self.app.get(job_id)
        return record if record is not None and record.org == self.org else None

    def abort(self, job_id: int) -> JobStatus:
        """Aborts one of this org's jobs; another org's id is reported as unknown."""
        status = self.app.storage.job_abort(job_id, time.time(), org=self.org)
        if status is None:
            raise LookupError(f"org {self.org!r} has no job with id {job_id}")
        return status

    def schedule(self, name: str, cron: str, job: Queueable, *, timezone: str = "UTC") -> TriggerRecord:
        """Schedules ``job`` for this org (see :meth:`FairQueue.schedule`)."""
        return self.app.schedule(name, cron, job, self.org, timezone=timezone)

    def schedules(self, *, state: Union[None, str, TriggerState] = None) -> list[TriggerRecord]:
        """This org's schedules, oldest first."""
        return self.app.schedules(org=self.org, state=state)

    def unschedule(self, trigger_id: int) -> TriggerState:
        """Aborts one of this org's schedules; another org's id is reported as unknown."""
        state = self.app.storage.trigger_abort(trigger_id, org=self.org)
        if state is None:
            raise LookupError(f"org {self.org!r} has no schedule with id {trigger_id}")
        return state

    def flex_queue(self) -> list[JobRecord]:
        """This org's holding batch jobs, the next to start first."""
        return self.app.flex_queue(self.org)

    def move_to_front(self, job_id: int) -> list[int]:
        """Moves one of this org's holding batches to the front of its flex queue."""
        return self.app._flex_move(job_id, self.org, to="front")

    def move_to_end(self, job_id: int) -> list[int]:
        """Moves one of this org's holding batches to the end of its flex queue."""
        return self.app._flex_move(job_id, self.org, to="end")

    def move_before(self, job_id: int, other_id: int) -> list[int]:
        """Moves one of this org's holding batches just before another."""
        return self.app._flex_move(job_id, self.org, before=other_id)

    def move_after(self, job_id: int, other_id: int) -> list[int]:
        """Moves one of this org's holding batches just after another."""
        return self.app._flex_move(job_id, self.org, after=other_id)

    def daily_usage(self) -> DailyUsage:
        """This org's async executions in the rolling 24 hours (see :meth:`FairQueue.daily_usage`)."""
        return self.app.daily_usage(self.org)

    def enqueue(self, job: Queueable, **options: Any) -> JobHandle:
        """Enqueues a queueable for this org."""
        return self.app.enqueue(job, org=self.org, **options)
