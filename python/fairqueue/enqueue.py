"""Putting work in the queue: one :class:`Enqueuer` owns transactions, the limit
checks made at enqueue, payload encoding and the store call.

Everything the app, a :class:`FutureFunction`, a handler's :class:`~fairqueue.jobs.Context`
and a :class:`~fairqueue.processor.AsyncProcessor` enqueue passes through it.
A job enqueued inside a transaction (a ``with app.transaction():`` block, or a
running handler) is held by that transaction and stored when it ends; any other
is stored at once. Either way it is durable in the store before its handle is
returned with an id.

Store reads made from a running handler's thread: a child with a
``duplicate_signature`` reads whether the signature is taken, and a child of a
running job reads its org's daily usage, so that the handler gets the refusal
while it can still react to it. The store checks both again when the job's
outcome is committed (another process may have used the room meanwhile).
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import threading
import time
import weakref
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from datetime import datetime, timedelta
from typing import Any, Generic, Optional, TypeVar, Union

from fairqueue import tracing
from fairqueue.alerts import AlertEvent, Alerts
from fairqueue.control import Control
from fairqueue.cron import CronSchedule
from fairqueue.errors import DailyLimitExceeded, DuplicateSignature, FlexQueueFull, InvalidArgument, LimitExceeded
from fairqueue.handlers import check_importable, import_path
from fairqueue.jobs import (
    INHERIT,
    AsyncOptions,
    Batchable,
    JobHandle,
    KeyOption,
    Queueable,
    Transaction,
    current_transaction,
    declared_flow,
    encode,
    queueable_state,
    running_context,
    state_of,
    transaction_scope,
)
from fairqueue.limits import DEFAULT_SCOPE, MAX_SCOPE
from fairqueue.records import JobRecord, JobStatus, NewJob, NewTrigger, TriggerRecord
from fairqueue.retry import RetryPolicy
from fairqueue.settings import QueueSettings
from fairqueue.storage import FLEX_ACTIVE, FLEX_HOLDING, Storage
from fairqueue.storage.waiting import FinishWaiters
from fairqueue.validate import (
    DEFAULT_COST,
    DEFAULT_PRIORITY,
    DEFAULT_QUEUE,
    check_flow_options,
    check_name,
    check_org,
    check_queue,
    check_seconds,
    shown,
)

__all__ = ["AwaitedTransaction", "Declared", "Enqueuer", "FutureCall", "FutureFunction", "batch_payload"]

R = TypeVar("R")
Delay = Union[None, float, timedelta]
Declared = tuple[str, int, int]
"""The queue, priority and cost a job's declaration gives it (its class, its ``@app.future``)."""


def batch_payload(job: Batchable, scope: int, max_bytes: int, *, single_chunk: bool = False) -> tuple[str, str]:
    """The import path and the initial payload of a batch, checked. ``single_chunk``:
    every record in one chunk, then ``finish``, in one delivery (an AsyncProcessor's
    queueable)."""
    if not isinstance(job, Batchable):
        raise InvalidArgument(f"invalid batch {shown(job)}: expected an instance of a fairqueue.Batchable subclass")
    if not single_chunk and (not isinstance(scope, int) or isinstance(scope, bool) or not 1 <= scope <= MAX_SCOPE):
        raise InvalidArgument(f"invalid scope {shown(scope)}: expected 1 to {MAX_SCOPE} records per chunk")
    path = import_path(type(job))
    check_importable(path, type(job))
    state = state_of(job)
    body = {"state": state, "carried": state, "scope": scope, "chunk": 0, "single_chunk": single_chunk}
    return path, encode(body, f"the state of {path}", max_bytes)


class FutureCall(Generic[R]):
    """A future with enqueue options (:meth:`FutureFunction.options`)."""

    def __init__(
        self, fn: FutureFunction[R], delay: Delay, run_at: Optional[datetime], *, key: KeyOption = INHERIT,
        priority: Optional[int] = None, cost: Optional[int] = None, queue: Optional[str] = None,
    ) -> None:  # fmt: skip
        self.fn = fn
        self.delay_by = delay
        self.run_at = run_at
        self.key = key
        self.priority = priority
        self.cost = cost
        self.queue = queue

    def _flow(self) -> dict[str, Any]:
        return {"declared": self.fn.declared, "key": self.key, "priority": self.priority, "cost": self.cost,
                "queue": self.queue}  # fmt: skip

    def delay(self, org: str, *args: Any, **kwargs: Any) -> JobHandle:
        """Enqueues one call for ``org`` with these options (see :meth:`FutureFunction.delay`)."""
        check_importable(self.fn.path, self.fn)
        self.fn.check_call(args, kwargs)
        return self.fn.enqueuer.future(self.fn.path, org, list(args), kwargs, self.delay_by, self.run_at, **self._flow())

    async def delay_async(self, org: str, *args: Any, **kwargs: Any) -> JobHandle:
        """:meth:`delay` for a coroutine (see :meth:`FutureFunction.delay_async`)."""
        check_importable(self.fn.path, self.fn)
        self.fn.check_call(args, kwargs)
        return await self.fn.enqueuer.future_async(self.fn.path, org, list(args), kwargs, self.delay_by, self.run_at,
                                                   **self._flow())  # fmt: skip


class FutureFunction(Generic[R]):
    """A function registered with ``@app.future``. Call ``.delay(org, *args, **kw)``
    to run it in the background; calling it directly runs it now."""

    def __init__(
        self, enqueuer: Enqueuer, fn: Callable[..., R], timeout: Optional[float], retry: Optional[RetryPolicy] = None,
        *, queue: str = DEFAULT_QUEUE, priority: int = DEFAULT_PRIORITY, cost: int = DEFAULT_COST,
    ) -> None:  # fmt: skip
        self.enqueuer = enqueuer
        self.fn = fn
        self.timeout = timeout
        self.retry = retry
        """Its retry policy (None: the future kind's, see :class:`fairqueue.Limits`)."""
        self.path = import_path(fn)
        self.declared: Declared = declared_flow(_Declaration(queue, priority, cost), f"@app.future {self.path}")
        """Its queue, priority and cost unless an enqueue gives others (``.options(…)``)."""
        functools.update_wrapper(self, fn)
        try:
            self._signature: Optional[inspect.Signature] = inspect.signature(fn)
        except (TypeError, ValueError):  # a callable Python cannot describe: nothing to check against
            self._signature = None
        self._fitting: set[tuple[int, tuple[str, ...]]] = set()

    def check_call(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> None:
        """Raises InvalidArgument unless the function can be called with ``args`` and
        ``kwargs`` (bound against its signature, as the worker will call it)."""
        shape = (len(args), tuple(kwargs))  # whether a call binds depends on its shape only
        if self._signature is None or shape in self._fitting:
            return
        try:
            self._signature.bind(*args, **kwargs)
        except TypeError as e:
            raise InvalidArgument(
                f"{self.path}{self._signature} cannot be called with {len(args)} positional argument(s)"
                f"{' and ' + ', '.join(map(repr, kwargs)) if kwargs else ''}: {e}. The first argument of "
                ".delay is the org; the rest go to the function"
            ) from None
        if len(self._fitting) < 64:
            self._fitting.add(shape)

    def __call__(self, *args: Any, **kwargs: Any) -> R:
        return self.fn(*args, **kwargs)

    def delay(self, org: str, *args: Any, **kwargs: Any) -> JobHandle:
        """Enqueues one call of the function for ``org``; returns its job handle.

        Every argument after ``org`` is the function's; enqueue options (a key, a
        priority, a cost, a delay) go through :meth:`options`."""
        check_importable(self.path, self)
        self.check_call(args, kwargs)
        return self.enqueuer.future(self.path, org, list(args), kwargs, declared=self.declared)

    def options(
        self,
        *,
        delay: Delay = None,
        run_at: Optional[datetime] = None,
        key: KeyOption = INHERIT,
        priority: Optional[int] = None,
        cost: Optional[int] = None,
        queue: Optional[str] = None,
    ) -> FutureCall[R]:
        """The function with enqueue options: ``fn.options(delay=3600).delay(org, …)``
        or ``fn.options(run_at=when).delay(org, …)`` (an aware datetime), up to
        ``Limits.max_delay["future"]`` (7 days by default) ahead;
        ``fn.options(key="user-42", priority=9, cost=3).delay(org, …)``.

        Args:
            key: its concurrency key within the org (a user, an integration…); by
                default a job enqueued from a running job of the same org takes that
                job's key (see :data:`fairqueue.jobs.INHERIT`), any other has none.
            priority: 0 to 9, higher starts sooner within the org's own line
                (default: the declaration's, 5 unless ``@app.future(priority=…)``).
            cost: the units its rate limits are charged (1 to 1,000,000).
            queue: the named queue it waits in instead of its declaration's.

        Under ``policy="peek_set"`` a key, a priority other than 5 and a cost other
        than 1 are refused (they are ``fair_share`` features).
        """
        return FutureCall(self, delay, run_at, key=key, priority=priority, cost=cost, queue=queue)

    async def delay_async(self, org: str, *args: Any, **kwargs: Any) -> JobHandle:
        """:meth:`delay` for a coroutine: the event loop keeps running while the job is
        stored (PostgreSQL: its async pool; SQLite and memory: a thread hop). Inside an
        open transaction (``async with app.transaction_async()``, a running job) it is
        held and stored with it, as :meth:`delay` is."""
        check_importable(self.path, self)
        self.check_call(args, kwargs)
        return await self.enqueuer.future_async(self.path, org, list(args), kwargs, declared=self.declared)

    def delay_many(
        self, org: str, calls: Iterable[Union[Sequence[Any], Mapping[str, Any]]], *, key: Optional[str] = None,
        priority: Optional[int] = None, cost: Optional[int] = None,
    ) -> list[JobHandle]:  # fmt: skip
        """Enqueues many calls for ``org`` in one durable write (bulk load).

        Each element is the positional arguments (a list or tuple) or the keyword
        arguments (a dict) of one call. Every call counts as its own transaction, so
        the per-transaction future limit does not apply; it may not be used inside
        a transaction or a running job. All or none. ``key``, ``priority`` and
        ``cost`` apply to every call (see :meth:`options`).
        """
        check_importable(self.path, self)
        return self.enqueuer.futures(self, org, calls, key=key, priority=priority, cost=cost)

    def __repr__(self) -> str:
        return f"<future {self.path}>"


class _Declaration:
    """Stands for a job class in :func:`~fairqueue.jobs.declared_flow` for a future's decorator options."""

    def __init__(self, queue: object, priority: object, cost: object) -> None:
        self.queue, self.priority, self.cost = queue, priority, cost


class AwaitedTransaction(Transaction):
    """A transaction of ``async with app.transaction_async()`` (or of one ``await …_async``
    enqueue), stored by an await when it ends. A duplicate signature is refused then,
    by the store, rather than at the enqueue call: a read there would block the event loop."""


def joined_transaction(connection: Optional[Any]) -> Optional[Transaction]:
    """The transaction already open here, which a new one joins (None if none is);
    refuses one on another connection than ``connection``."""
    outer = current_transaction()
    if outer is not None and connection is not None and connection is not outer.connection:
        raise InvalidArgument("a transaction on another connection is already open here: pass the same connection, or none")
    return outer


class Enqueuer:
    """Checks, encodes and stores new work (see the module docstring).

    Args:
        store: returns the store to write to (the app's current one).
        settings: the queue's settings: limits, per-org overrides, daily limits.
        alerts: told when an enqueue reaches a daily limit or a full flex queue.
        control: reads and aborts for the handles this returns.
    """

    def __init__(self, store: Callable[[], Storage], settings: QueueSettings, alerts: Alerts, control: Control) -> None:
        self.store = store
        self.settings = settings
        self.alerts = alerts
        self.control = control
        self.wakeup = threading.Event()
        """Set whenever this process stores new work, so an in-process worker looks at once."""
        # Who waits for jobs of each store (weak: a store dropped takes its waiters along).
        self._waiters: weakref.WeakKeyDictionary[Storage, FinishWaiters] = weakref.WeakKeyDictionary()
        self._waiters_lock = threading.Lock()

    # ----- transactions ------------------------------------------------------------------

    @contextmanager
    def transaction(self, *, connection: Optional[Any] = None) -> Iterator[Transaction]:
        """A synchronous transaction (see :meth:`fairqueue.FairQueue.transaction`)."""
        outer = joined_transaction(connection)
        if outer is not None:
            yield outer
            return
        if connection is not None:
            self.store().check_connection(connection)
        tx = Transaction(self.settings.limits, asynchronous=False, connection=connection)
        with transaction_scope(tx):
            yield tx
        self.commit(tx)

    def commit(self, tx: Transaction) -> None:
        """Stores what a synchronous transaction holds (in the caller's connection, if it gave one)."""
        if not tx.pending:
            return
        news = tx.news
        store = self.store()
        daily = self.settings.fresh().daily_limits(n.org for n in news)
        with self._alerting(store, news):
            if tx.connection is not None:
                ids = store.job_enqueue_in(tx.connection, news, time.time(), daily)
            else:
                ids = store.job_enqueue(news, time.time(), daily)
        tx.stored(ids)
        self.wakeup.set()

    def _submit(self, kind: str, new: NewJob) -> JobHandle:
        tracer = tracing.tracer()
        if tracer is None:
            return self._submit_untraced(kind, new)
        own = current_transaction() is None  # else the job is stored, and given its id, when the transaction ends
        with tracing.enqueue_span(tracer, [new]) as (span, carrying):
            handle = self._submit_untraced(kind, carrying[0])
            if own:
                tracing.stored(span, handle.id)
        return handle

    def _submit_untraced(self, kind: str, new: NewJob) -> JobHandle:
        tx = current_transaction()
        own = tx is None
        if tx is None:
            tx = Transaction(self.settings.limits, asynchronous=False)
        if (new.duplicate_signature and not isinstance(tx, AwaitedTransaction)
                and self.store().job_signature_taken(new.duplicate_signature)):  # fmt: skip
            raise DuplicateSignature(
                f"a job with duplicate signature {new.duplicate_signature!r} is already holding, queued or running"
            )
        if tx.asynchronous:
            # A running job's children are stored with its outcome (and counted then);
            # refuse now, while the handler can still react.
            self._check_daily_limit(new.org, 1 + sum(1 for n in tx.news if n.org == new.org))
        tx.count(kind)
        handle = JobHandle(self, None, new.org, kind)
        tx.add(new, handle)
        if own:
            self.commit(tx)
        return handle

    def _flow(
        self, org: str, declared: Declared, key: KeyOption, priority: Optional[int], cost: Optional[int],
        queue: Optional[str],
    ) -> dict[str, Any]:  # fmt: skip
        """The ``queue``, ``key``, ``priority`` and ``cost`` fields of a new job of
        ``org``: those given, checked, else its declaration's; ``key=INHERIT`` is the
        running job's key if the new job is its child of the same org (see
        :data:`fairqueue.jobs.INHERIT`), else none."""
        if key is INHERIT:
            parent = running_context()
            inside = parent is not None and current_transaction() is parent.transaction and parent.org == org
            key = parent.key if inside and parent is not None else None
        checked_key, checked_priority, checked_cost = check_flow_options(
            self.settings.policy, key, declared[1] if priority is None else priority, declared[2] if cost is None else cost
        )
        return {"queue": declared[0] if queue is None else check_queue(queue), "key": checked_key,
                "priority": checked_priority, "cost": checked_cost}  # fmt: skip

    def _check_daily_limit(self, org: str, adding: int) -> None:
        usage = self.store().usage_daily(org, time.time())
        limit = self.settings.fresh().daily_limit(org)
        if usage.count + adding > limit:
            resets_at = usage.resets_at if usage.resets_at is not None else time.time() + 24 * 3600
            raise DailyLimitExceeded(org, usage.count, adding, limit, resets_at)

    @contextmanager
    def _alerting(self, store: Storage, news: Sequence[NewJob]) -> Iterator[None]:
        """Tells alert subscribers when an enqueue reaches a daily limit or a full flex queue."""
        try:
            yield
        except (DailyLimitExceeded, FlexQueueFull) as e:
            self._alert_refused(e)
            raise
        if self.alerts.watching():
            self._alert_usage(store, news)

    def _alert_refused(self, e: Union[DailyLimitExceeded, FlexQueueFull]) -> None:
        if isinstance(e, DailyLimitExceeded):
            self.alerts.usage(e.org, e.limit, e.limit)
        else:
            self.alerts.emit(AlertEvent("flex_full", "once", e.org, str(e), {"active": FLEX_ACTIVE, "holding": FLEX_HOLDING}))

    def _alert_usage(self, store: Storage, news: Sequence[NewJob]) -> None:
        for org in sorted({n.org for n in news}):
            self.alerts.usage(org, store.usage_daily(org, time.time()).count, self.settings.fresh().daily_limit(org))

    # ----- the async client ------------------------------------------------------------------

    @asynccontextmanager
    async def transaction_async(self, *, connection: Optional[Any] = None) -> AsyncIterator[Transaction]:
        """:meth:`transaction` for a coroutine (see :meth:`fairqueue.FairQueue.transaction_async`)."""
        outer = joined_transaction(connection)
        if outer is not None:
            yield outer
            return
        if connection is not None:
            self.store().check_connection_async(connection)
        tx = AwaitedTransaction(self.settings.limits, asynchronous=False, connection=connection)
        with transaction_scope(tx):
            yield tx
        await self.commit_async(tx)

    async def commit_async(self, tx: Transaction) -> None:
        """:meth:`commit` by an await: through the store's async path (its async pool, or a thread hop)."""
        if not tx.pending:
            return
        news = tx.news
        store = self.store()
        daily = self.settings.fresh().daily_limits(n.org for n in news)
        try:
            if tx.connection is not None:
                ids = await store.job_enqueue_in_async(tx.connection, news, time.time(), daily)
            else:
                ids = await store.job_enqueue_async(news, time.time(), daily)
        except (DailyLimitExceeded, FlexQueueFull) as e:
            self._alert_refused(e)
            raise
        if self.alerts.watching():
            await asyncio.to_thread(self._alert_usage, store, news)
        tx.stored(ids)
        self.wakeup.set()

    async def future_async(
        self, path: str, org: str, args: list[Any], kwargs: dict[str, Any], delay: Delay = None,
        run_at: Optional[datetime] = None, *, declared: Declared = (DEFAULT_QUEUE, DEFAULT_PRIORITY, DEFAULT_COST),
        key: KeyOption = INHERIT, priority: Optional[int] = None, cost: Optional[int] = None,
        queue: Optional[str] = None,
    ) -> JobHandle:  # fmt: skip
        """:meth:`future` by an await: a transaction of its own, unless one is open."""
        async with self.transaction_async():
            return self.future(path, org, args, kwargs, delay, run_at, declared=declared, key=key, priority=priority,
                               cost=cost, queue=queue)  # fmt: skip

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
        """:meth:`enqueue` by an await (see :meth:`fairqueue.FairQueue.enqueue_async`)."""
        async with self.transaction_async(connection=connection):
            return self.enqueue(job, org=org, delay=delay, options=options, run_at=run_at, key=key, priority=priority,
                                cost=cost, queue=queue)  # fmt: skip

    # ----- waiting ---------------------------------------------------------------------------

    def _waiters_of(self, store: Storage) -> FinishWaiters:
        with self._waiters_lock:
            waiters = self._waiters.get(store)
            if waiters is None:
                waiters = self._waiters[store] = FinishWaiters()
            return waiters

    def wait(self, job_id: int, timeout: float) -> JobRecord:
        """Blocks until job ``job_id`` has finished (see :meth:`fairqueue.jobs.JobHandle.wait`)."""
        store = self.store()
        return self._waiters_of(store).wait(store, job_id, timeout)

    async def wait_async(self, job_id: int, timeout: float) -> JobRecord:
        """:meth:`wait` for a coroutine (see :meth:`fairqueue.jobs.JobHandle.wait_async`)."""
        store = self.store()
        return await self._waiters_of(store).wait_async(store, job_id, timeout)

    # ----- futures -------------------------------------------------------------------------

    def future(
        self, path: str, org: str, args: list[Any], kwargs: dict[str, Any], delay: Delay = None,
        run_at: Optional[datetime] = None, *, declared: Declared = (DEFAULT_QUEUE, DEFAULT_PRIORITY, DEFAULT_COST),
        key: KeyOption = INHERIT, priority: Optional[int] = None, cost: Optional[int] = None,
        queue: Optional[str] = None,
    ) -> JobHandle:  # fmt: skip
        """Enqueues one call of the future at ``path`` for ``org`` (not to start before
        ``delay`` seconds from now or ``run_at``, if given), in the queue and with the
        priority and cost given, else ``declared``, and the concurrency ``key``."""
        start = self._start(org, delay, "future", run_at) if delay is not None or run_at is not None else None
        check_org(org)
        flow = self._flow(org, declared, key, priority, cost, queue)
        payload = encode({"args": args, "kwargs": kwargs}, f"the arguments of {path}", self.settings.limits.max_payload_bytes)
        new = NewJob(org=org, kind="future", handler=path, payload=payload, run_at=start)
        return self._submit("future", new._replace(**flow))

    def futures(
        self, fn: FutureFunction[Any], org: str, calls: Iterable[Union[Sequence[Any], Mapping[str, Any]]], *,
        key: Optional[str] = None, priority: Optional[int] = None, cost: Optional[int] = None,
    ) -> list[JobHandle]:  # fmt: skip
        """Enqueues many calls of future ``fn`` in one durable write (see ``delay_many``)."""
        path = fn.path
        check_org(org)
        flow = self._flow(org, fn.declared, key, priority, cost, None)
        if current_transaction() is not None:
            raise InvalidArgument(
                f"{path}.delay_many cannot run inside a transaction or a job; call .delay there, or move the bulk load out"
            )
        news = []
        max_bytes = self.settings.limits.max_payload_bytes
        for i, call in enumerate(calls):
            if isinstance(call, (list, tuple)):
                body: dict[str, Any] = {"args": call, "kwargs": {}}
            elif isinstance(call, Mapping):
                body = {"args": [], "kwargs": call if isinstance(call, dict) else dict(call)}
            else:
                raise InvalidArgument(
                    f"call {i} of {path}.delay_many is {shown(call)}: expected a list/tuple of arguments or a dict"
                )
            try:
                fn.check_call(body["args"], body["kwargs"])
            except InvalidArgument as e:
                raise InvalidArgument(f"call {i} of {path}.delay_many: {e}") from None
            payload = encode(body, f"the arguments of call {i} of {path}", max_bytes)
            news.append(NewJob(org, "future", path, payload)._replace(**flow))
        tracer = tracing.tracer()
        if tracer is None or not news:
            ids = self._store_many(news)
        else:
            with tracing.enqueue_span(tracer, news) as (_, carrying):
                ids = self._store_many(carrying)
        return [JobHandle(self, job_id, org, "future") for job_id in ids]

    def _store_many(self, news: list[NewJob]) -> list[int]:
        store = self.store()
        with self._alerting(store, news):
            ids = store.job_enqueue(news, time.time(), self.settings.fresh().daily_limits(n.org for n in news))
        self.wakeup.set()
        return ids

    # ----- queueables and batches ------------------------------------------------------------

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
        """Enqueues a queueable (see :meth:`fairqueue.FairQueue.enqueue`)."""
        if connection is not None:
            with self.transaction(connection=connection):
                return self.enqueue(job, org=org, delay=delay, options=options, run_at=run_at, key=key,
                                    priority=priority, cost=cost, queue=queue)  # fmt: skip
        limits = self.settings.limits
        start = self._start(org, delay, "queueable", run_at)
        path, state = queueable_state(job)
        flow = self._flow(org, declared_flow(type(job), path), key, priority, cost, queue)
        options = options or AsyncOptions()
        parent = running_context()
        inside = parent if parent is not None and current_transaction() is parent.transaction else None
        depth = inside.chain_depth + 1 if inside else 0
        max_depth = options.max_depth if options.max_depth is not None else (inside.max_depth if inside else None)
        ceilings = [d for d in (max_depth, limits.max_chain_depth) if d is not None]
        if ceilings and depth > min(ceilings):
            raise LimitExceeded(f"chain depth {depth} is over the maximum depth of {min(ceilings)}")
        requeues = 0
        if inside and inside.in_finalizer:
            requeues = inside.finalizer_requeues + 1
            if requeues > limits.finalizer_requeues:
                raise LimitExceeded(
                    f"a finalizer re-enqueued {requeues} times in a row, over the limit of {limits.finalizer_requeues}"
                )
        body = {"state": state, "max_depth": max_depth, "finalizer_requeues": requeues}
        payload = encode(body, f"the state of {path}", limits.max_payload_bytes)
        return self._submit(
            "queueable",
            NewJob(
                org=org,
                kind="queueable",
                handler=path,
                payload=payload,
                run_at=start,
                parent_id=inside.job_id if inside else None,
                chain_depth=depth,
                duplicate_signature=options.duplicate_signature,
                **flow,
            ),
        )

    def _start(self, org: str, delay: Delay, kind: str, run_at: Optional[datetime]) -> Optional[float]:
        """When the job may start (None: now): ``run_at`` exactly, or ``delay`` from now."""
        seconds = self._checked_delay(org, delay, kind, run_at)
        if not seconds:
            return None
        return run_at.timestamp() if run_at is not None else time.time() + seconds

    def _checked_delay(self, org: str, delay: Delay, kind: str = "queueable", run_at: Optional[datetime] = None) -> float:
        """Seconds from now to the job's start (``delay``, or ``run_at``: one of them at
        most), once ``org`` and they are known to be valid and within the kind's limit."""
        check_org(org)
        seconds = check_seconds("delay", delay)
        if run_at is not None:
            if delay is not None:
                raise InvalidArgument("give delay= or run_at=, not both")
            if not isinstance(run_at, datetime):
                raise InvalidArgument(f"invalid run_at {shown(run_at)}: expected a datetime")
            if run_at.tzinfo is None or run_at.utcoffset() is None:
                raise InvalidArgument(
                    f"run_at {run_at.isoformat()} has no time zone: pass an aware datetime, "
                    "e.g. datetime.now(timezone.utc) + timedelta(hours=1)"
                )
            seconds = max(run_at.timestamp() - time.time(), 0.0)
        max_delay = self.settings.limits.max_delay[kind]  # type: ignore[index]
        if seconds > max_delay:
            raise LimitExceeded(
                f"a start {seconds:g} s from now is over the limit of {max_delay:g} s for a {kind} "
                f"(Limits.max_delay[{kind!r}]); for later starts use a schedule (app.schedule)"
            )
        return seconds

    def execute_batch(
        self, job: Batchable, *, org: str, scope: int = DEFAULT_SCOPE, delay: Delay = None, connection: Optional[Any] = None,
        key: KeyOption = INHERIT, priority: Optional[int] = None, cost: Optional[int] = None, queue: Optional[str] = None,
    ) -> JobHandle:  # fmt: skip
        """Starts a batch (see :meth:`fairqueue.FairQueue.execute_batch`)."""
        if connection is not None:
            with self.transaction(connection=connection):
                return self.execute_batch(job, org=org, scope=scope, delay=delay, key=key, priority=priority, cost=cost,
                                          queue=queue)  # fmt: skip
        flow = self._batch_flow(job, org, key, priority, cost, queue)
        return self._batch(job, org, scope, self._checked_delay(org, delay, "batch"), flow)

    def schedule_batch(
        self, job: Batchable, minutes: float, *, org: str, scope: int = DEFAULT_SCOPE, key: KeyOption = INHERIT,
        priority: Optional[int] = None, cost: Optional[int] = None, queue: Optional[str] = None,
    ) -> JobHandle:  # fmt: skip
        """Starts a batch ``minutes`` from now (0 to 525,600, a year)."""
        check_org(org)
        if not isinstance(minutes, (int, float)) or isinstance(minutes, bool) or not 0 <= minutes <= 525_600:
            raise InvalidArgument(f"invalid minutes {shown(minutes)}: expected 0 to 525600 (a year)")
        return self._batch(job, org, scope, minutes * 60.0, self._batch_flow(job, org, key, priority, cost, queue))

    def _batch_flow(
        self, job: Batchable, org: str, key: KeyOption, priority: Optional[int], cost: Optional[int], queue: Optional[str]
    ) -> dict[str, Any]:  # fmt: skip
        check_org(org)
        return self._flow(org, declared_flow(type(job), type(job).__qualname__), key, priority, cost, queue)

    def _batch(self, job: Batchable, org: str, scope: int, seconds: float, flow: dict[str, Any]) -> JobHandle:
        path, payload = batch_payload(job, scope, self.settings.limits.max_payload_bytes)
        run_at = time.time() + seconds if seconds else None
        return self._submit("batch", NewJob(org=org, kind="batch", handler=path, payload=payload, run_at=run_at, **flow))

    def enqueue_whole_batch(
        self, job: Batchable, *, org: str, key: KeyOption = INHERIT, priority: Optional[int] = None,
        cost: Optional[int] = None, queue: Optional[str] = None,
    ) -> JobHandle:  # fmt: skip
        """Runs a batch as one queueable: every record in one chunk, then ``finish``,
        in one delivery (how an AsyncProcessor under its threshold runs)."""
        flow = self._batch_flow(job, org, key, priority, cost, queue)
        path, payload = batch_payload(job, 1, self.settings.limits.max_payload_bytes, single_chunk=True)
        return self._submit("queueable", NewJob(org=org, kind="queueable", handler=path, payload=payload, **flow))

    # ----- schedules ------------------------------------------------------------------------

    def schedule(self, name: str, cron: str, job: Queueable, org: str, *, timezone: str = "UTC") -> TriggerRecord:
        """Creates a schedule (see :meth:`fairqueue.FairQueue.schedule`)."""
        check_org(org)
        check_name(name, "schedule name")
        if not isinstance(job, Queueable):
            raise InvalidArgument(f"app.schedule runs a Queueable instance, not {shown(job)}")
        queue, priority, cost = declared_flow(type(job), type(job).__qualname__)
        if not isinstance(cron, str):
            raise InvalidArgument(f"invalid cron expression {shown(cron)}: expected a str such as '0 0 2 * * ?'")
        schedule = CronSchedule(cron, timezone)
        now = time.time()
        first = schedule.next_after(now)
        if first is None:
            raise InvalidArgument(f"cron expression {cron!r} has no fire time after now: it would never run")
        limits = self.settings.limits
        path, state = queueable_state(job)
        body = {"state": state, "max_depth": None, "finalizer_requeues": 0}
        payload = encode(body, f"the state of {path}", limits.max_payload_bytes)
        new = NewTrigger(org=org, name=name, cron=schedule.expression, timezone=timezone, handler=path,
                         payload=payload, next_fire_at=first, queue=queue, priority=priority, cost=cost)  # fmt: skip
        store = self.store()
        trigger_id = store.trigger_create(new, now, limits.schedules_per_org)
        record = store.trigger_get(trigger_id)
        assert record is not None
        self.wakeup.set()
        return record

    # ----- what handles ask -------------------------------------------------------------------

    def get(self, job_id: int) -> Optional[JobRecord]:
        """The record of ``job_id``, or None."""
        return self.control.get(job_id)

    def abort(self, job_id: int) -> JobStatus:
        """Aborts ``job_id`` (see :meth:`fairqueue.control.Control.abort`)."""
        return self.control.abort(job_id)
