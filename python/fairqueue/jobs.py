"""What job code is written against (SPEC §3): the kinds users subclass, the
context a handler runs in, and the handle of a submitted job.

Job code is plain Python. Arguments and state travel as JSON — never pickle — and
handlers are found again by import path (:mod:`fairqueue.handlers`), so a worker
in another process (or on another host) can run them. Both are checked when a
job is enqueued.

This module is the bottom of the package's job layer: it imports no store, no
app and no runtime. What a context or a handle needs from the queue above it is
the :class:`JobQueue` protocol, which the enqueue layer's ``Enqueuer`` and the
app implement.
"""

from __future__ import annotations

import contextvars
import enum
import json
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, ClassVar, Final, Literal, Optional, Protocol, Union

from fairqueue import _core
from fairqueue.errors import InvalidArgument, JobFailed, LimitExceeded
from fairqueue.handlers import check_importable, import_path
from fairqueue.limits import Limits
from fairqueue.records import JobRecord, JobStatus, NewJob
from fairqueue.retry import RetryPolicy
from fairqueue.validate import (
    DEFAULT_COST,
    DEFAULT_PRIORITY,
    DEFAULT_QUEUE,
    MAX_ID,
    MAX_SECONDS,
    check_cost,
    check_int,
    check_name,
    check_number,
    check_priority,
    check_queue,
    shown,
)

__all__ = [
    "AsyncOptions",
    "Batchable",
    "CancelFlag",
    "Context",
    "Finalizer",
    "FinalizerResult",
    "INHERIT",
    "Inherit",
    "KeyOption",
    "JobHandle",
    "JobQueue",
    "Queueable",
    "Retry",
    "Transaction",
    "call_running",
    "current_context",
    "current_transaction",
    "declared_flow",
    "encode",
    "queueable_state",
    "restore_queueable",
    "running",
    "running_context",
    "state_of",
    "transaction_scope",
]

Delay = Union[None, float, timedelta]


class Inherit(enum.Enum):
    """The default of every ``key=``: see :data:`INHERIT`."""

    KEY = "the running job's key"


INHERIT: Final = Inherit.KEY
"""``key=INHERIT`` (the default of every enqueue): a job enqueued from a running job for
the same org takes that job's concurrency key; anything else has no key.

Why the key and nothing else: a key says whom the work is for (a user, an
integration), and a child of user-42's job is more of user-42's work, so it counts
against the same per-key cap and rate limit; were it keyless, chaining would be a way
around them. A queue, a priority and a cost describe the *kind* of work, so they come
from the child's own declaration (its class, its ``@app.future``), never its parent.
Pass ``key=None`` for a child that is nobody's in particular, or another key."""

KeyOption = Union[str, None, Literal[Inherit.KEY]]
"""What ``key=`` takes: a name, None (no key: the org's default key), or :data:`INHERIT`."""


def declared_flow(declaring: object, what: str) -> tuple[str, int, int]:
    """The queue, priority and cost a job class declares (class attributes ``queue``,
    ``priority``, ``cost``; the defaults where it has none), checked; ``what`` names it
    in the error."""
    queue, priority, cost = (getattr(declaring, name, default) for name, default in
                             (("queue", DEFAULT_QUEUE), ("priority", DEFAULT_PRIORITY), ("cost", DEFAULT_COST)))  # fmt: skip
    try:
        return check_queue(queue), check_priority(priority), check_cost(cost)
    except InvalidArgument as e:
        raise InvalidArgument(f"{what}: {e}") from None


@dataclass(frozen=True)
class AsyncOptions:
    """Options of an enqueued queueable.

    Args:
        max_depth: the deepest its chain may grow (this job is depth 0 when enqueued
            from a service, parent depth + 1 when chained). Children inherit it.
        duplicate_signature: refuse this job while another job with the same
            signature is holding, queued or running.
    """

    max_depth: Optional[int] = None
    duplicate_signature: Optional[str] = None

    def __post_init__(self) -> None:
        if self.max_depth is not None:
            check_int("max_depth", self.max_depth, 0, MAX_ID)
        if self.duplicate_signature is not None:
            check_name(self.duplicate_signature, "duplicate signature")


class Queueable:
    """Base class of a queueable job: subclass it and write ``execute(ctx)``.

    The instance's attributes are its state; they must be JSON-serialisable and are
    restored (without calling ``__init__``) in the worker. From ``execute`` a job may
    enqueue one child with ``ctx.enqueue`` (chaining) and attach a finalizer.
    """

    retry: ClassVar[Optional[RetryPolicy]] = None
    """This job's retry policy (None: its kind's, see :class:`fairqueue.Limits`)."""
    queue: ClassVar[str] = DEFAULT_QUEUE
    """The named queue its jobs wait in: only workers serving it run them (``Worker(queues=…)``)."""
    priority: ClassVar[int] = DEFAULT_PRIORITY
    """Its jobs' priority (0 to 9, higher first within its org's own line) unless an enqueue gives one."""
    cost: ClassVar[int] = DEFAULT_COST
    """The units its jobs' rate limits are charged unless an enqueue gives a cost."""

    def execute(self, ctx: Context) -> Any:
        """Does the job's work. Override it (``def`` or ``async def``); what it returns
        (JSON) is the job's result."""
        raise NotImplementedError(f"{type(self).__qualname__} must define execute(self, ctx)")

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.execute is Queueable.execute:
            raise TypeError(f"{cls.__qualname__} subclasses Queueable but does not define execute(self, ctx)")
        declared_flow(cls, cls.__qualname__)


class Batchable:
    """Base class of a batch job: subclass it and write ``start``, ``execute`` and
    (optionally) ``finish`` (see :mod:`fairqueue.runtime.batch_runner` for how a
    batch runs).

    The instance's attributes are its state (JSON). With ``stateful = True`` the
    state ``execute`` leaves behind is carried to the next chunk and to ``finish``;
    otherwise every chunk (and ``finish``) starts from the state the batch was
    enqueued with.
    """

    stateful: ClassVar[bool] = False
    retry: ClassVar[Optional[RetryPolicy]] = None
    """This batch's retry policy (None: the batch kind's)."""
    queue: ClassVar[str] = DEFAULT_QUEUE
    """The named queue it waits in, every chunk of it (see :attr:`Queueable.queue`)."""
    priority: ClassVar[int] = DEFAULT_PRIORITY
    """Its priority unless an enqueue gives one (see :attr:`Queueable.priority`)."""
    cost: ClassVar[int] = DEFAULT_COST
    """The units each of its deliveries is charged unless an enqueue gives a cost."""

    def start(self, ctx: Context) -> Iterable[Any]:
        """Returns the records: any iterable (a list, a generator, a DB-API cursor)."""
        raise NotImplementedError(f"{type(self).__qualname__} must define start(self, ctx)")

    def execute(self, ctx: Context, scope: list[Any]) -> None:
        """Processes one chunk of records."""
        raise NotImplementedError(f"{type(self).__qualname__} must define execute(self, ctx, scope)")

    def finish(self, ctx: Context) -> None:
        """Runs once after the last chunk (whatever failed)."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        for method in ("start", "execute"):
            if getattr(cls, method) is getattr(Batchable, method):
                raise TypeError(f"{cls.__qualname__} subclasses Batchable but does not define {method}()")
        declared_flow(cls, cls.__qualname__)


@dataclass(frozen=True)
class FinalizerResult:
    """How the job a finalizer is attached to ended."""

    job_id: int
    succeeded: bool
    exception_type: Optional[str] = None
    message: Optional[str] = None


class Finalizer:
    """Runs after the job it is attached to, whether the job succeeded or raised.

    Subclass it and write ``execute(ctx, result)``. A finalizer may enqueue one
    queueable (for instance to retry the job); at most
    ``Limits.finalizer_requeues`` (5) consecutive re-enqueues are allowed.
    """

    def execute(self, ctx: Context, result: FinalizerResult) -> None:
        """Override it."""
        raise NotImplementedError(f"{type(self).__qualname__} must define execute(self, ctx, result)")


class Retry(Exception):
    """Raise from a handler to fail this attempt and deliver the job again later.

    Args:
        after: seconds to wait before the next delivery.
        reason: recorded in the job's extended status.
    """

    def __init__(self, after: float = 0.0, reason: str = "retry requested by the handler") -> None:
        seconds = check_number("retry delay", after, most=MAX_SECONDS)
        super().__init__(reason)
        self.after = seconds
        self.reason = reason


# ----- the queue a context and a handle talk to -------------------------------------------


class JobQueue(Protocol):
    """What job code may ask of the queue: enqueue more work, read and abort a job.

    The enqueue layer's ``Enqueuer`` implements it, and so does the app
    (:class:`fairqueue.FairQueue`); a :class:`Context` and a :class:`JobHandle`
    hold one.
    """

    def enqueue(
        self, job: Queueable, *, org: str, delay: Delay = ..., options: Optional[AsyncOptions] = ...,
        key: KeyOption = ..., priority: Optional[int] = ..., cost: Optional[int] = ..., queue: Optional[str] = ...,
    ) -> JobHandle: ...

    def execute_batch(
        self, job: Batchable, *, org: str, scope: int = ..., delay: Delay = ..., key: KeyOption = ...,
        priority: Optional[int] = ..., cost: Optional[int] = ..., queue: Optional[str] = ...,
    ) -> JobHandle: ...

    def enqueue_whole_batch(
        self, job: Batchable, *, org: str, key: KeyOption = ..., priority: Optional[int] = ...,
        cost: Optional[int] = ..., queue: Optional[str] = ...,
    ) -> JobHandle: ...

    def get(self, job_id: int) -> Optional[JobRecord]: ...

    def abort(self, job_id: int) -> JobStatus: ...

    def wait(self, job_id: int, timeout: float) -> JobRecord: ...

    async def wait_async(self, job_id: int, timeout: float) -> JobRecord: ...


class JobHandle:
    """A submitted job. Its id is known once its transaction has stored it."""

    def __init__(self, queue: JobQueue, job_id: Optional[int], org: str, kind: str) -> None:
        self.queue = queue
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
        record = self.queue.get(self.id)
        if record is None:
            raise LookupError(f"job {self.id} is no longer in the store: its record was pruned (see fairqueue.Retention)")
        return record

    @property
    def status(self) -> JobStatus:
        """The job's current status."""
        return self.record().status

    def abort(self) -> JobStatus:
        """Aborts the job (see :meth:`fairqueue.FairQueue.abort`)."""
        return self.queue.abort(self.id)

    def wait(self, timeout: float = 30.0) -> JobRecord:
        """Blocks until the job has finished and returns its record, or raises
        TimeoutError after ``timeout`` seconds.

        It does not poll: it wakes when the store announces the outcome (PostgreSQL:
        from any host; SQLite and memory: from a worker in this process) and otherwise
        reads on a back-off (:mod:`fairqueue.storage.waiting`).
        """
        return self.queue.wait(self.id, check_number("timeout", timeout, most=MAX_SECONDS))

    async def wait_async(self, timeout: float = 30.0) -> JobRecord:
        """:meth:`wait` for a coroutine: the event loop keeps running while it waits
        (PostgreSQL reads through an async pool, the other stores on a thread)."""
        return await self.queue.wait_async(self.id, check_number("timeout", timeout, most=MAX_SECONDS))

    def result(self, timeout: float = 30.0) -> Any:
        """Waits for the job to finish and returns its handler's return value (decoded
        from the JSON stored with the outcome; None if it returned nothing).

        Raises:
            JobFailed: the job failed, was discarded or aborted (its error, type,
                message and traceback, from whichever process ran it).
            TimeoutError: it has not finished within ``timeout`` seconds.
        """
        return result_of(self.wait(timeout))

    async def result_async(self, timeout: float = 30.0) -> Any:
        """:meth:`result` for a coroutine: the event loop keeps running while it waits."""
        return result_of(await self.wait_async(timeout))

    def __repr__(self) -> str:
        return f"<JobHandle id={self._id} org={self.org!r} kind={self.kind}>"


def result_of(record: JobRecord) -> Any:
    """A finished job's result, or :class:`JobFailed` raised with its error."""
    if record.status is JobStatus.COMPLETED:
        return None if record.result is None else json.loads(record.result)
    errors = record.attempt_errors()
    last = errors[-1] if errors else {}
    raise JobFailed(record.id, record.status.value, record.extended_status or record.status.value, last.get("type"),
                    last.get("message"), last.get("traceback"))  # fmt: skip


# ----- transactions ------------------------------------------------------------------------


class Transaction:
    """Counts what one transaction enqueued and holds it until the transaction ends.

    A transaction is a handler's execution (asynchronous) or a ``with
    app.transaction():`` block in the calling service (synchronous). Jobs enqueued
    in it are stored together when it ends, or not at all if it raised.
    """

    def __init__(
        self,
        limits: Limits,
        *,
        asynchronous: bool,
        kind: Optional[str] = None,
        parent: Optional[Context] = None,
        connection: Optional[Any] = None,
    ):
        self.limits = limits
        self.connection = connection
        """The caller's database connection whose transaction the jobs join, if any."""
        self.asynchronous = asynchronous
        self.kind = kind
        self.parent = parent
        self.futures = 0
        self.queueables = 0
        self.pending: list[tuple[NewJob, JobHandle]] = []

    def count(self, kind: str) -> None:
        """Checks and counts one more job of ``kind``; raises LimitExceeded and counts nothing."""
        limits = self.limits
        if kind == "future":
            if self.asynchronous and self.kind == "future":
                raise LimitExceeded("a future may not enqueue a future; enqueue a Queueable instead")
            if self.futures >= limits.futures_per_transaction:
                raise LimitExceeded(
                    f"too many futures in one transaction: {self.futures + 1} > {limits.futures_per_transaction}"
                )
            self.futures += 1
        else:
            most = limits.queueables_per_async_transaction if self.asynchronous else limits.queueables_per_sync_transaction
            if self.queueables >= most:
                where = "a running job (chaining)" if self.asynchronous else "one synchronous transaction"
                raise LimitExceeded(f"too many queueables from {where}: {self.queueables + 1} > {most}")
            self.queueables += 1

    def add(self, new: NewJob, handle: JobHandle) -> None:
        """Holds one counted job until the transaction ends."""
        self.pending.append((new, handle))

    @property
    def news(self) -> list[NewJob]:
        """The jobs held so far, in the order they were enqueued."""
        return [new for new, _ in self.pending]

    def stored(self, ids: Iterable[int]) -> None:
        """The store gave the held jobs these ids (in order): their handles learn them."""
        for (_, handle), job_id in zip(self.pending, ids, strict=True):
            handle._id = job_id


# ----- the context ---------------------------------------------------------------------


class CancelFlag:
    """Set by the worker when a running job is aborted; read by the job through
    ``ctx.cancelled``. A plain attribute: handlers poll it, nobody waits on it."""

    __slots__ = ("raised",)

    def __init__(self) -> None:
        self.raised = False

    def set(self) -> None:
        """Asks the job to stop at its next safe point."""
        self.raised = True


class Context:
    """What a running handler knows and may do. Get it as ``ctx`` in
    ``Queueable.execute`` or from :func:`current_context` in a future."""

    def __init__(
        self,
        *,
        queue: JobQueue,
        limits: Limits,
        job_id: int,
        org: str,
        kind: str,
        attempt: int,
        chain_depth: int,
        max_depth: Optional[int],
        finalizer_requeues: int = 0,
        in_finalizer: bool = False,
        cancel: Optional[CancelFlag] = None,
        key: Optional[str] = None,
    ) -> None:
        self.queue = queue
        """Where ``ctx.enqueue`` sends a child (the app's queue)."""
        self.limits = limits
        self.job_id = job_id
        self.org = org
        self.kind = kind
        self.attempt = attempt
        self.chain_depth = chain_depth
        self.key = key
        """The running job's concurrency key (None: none); its children take it unless told otherwise."""
        self.max_depth = max_depth
        self.finalizer_requeues = finalizer_requeues
        self.in_finalizer = in_finalizer
        self.cancel = cancel or CancelFlag()
        """The flag the worker raises when the job is aborted (read it as :attr:`cancelled`)."""
        self._tx: Optional[Transaction] = None
        self.finalizers: list[Finalizer] = []

    @property
    def transaction(self) -> Transaction:
        """The running job's transaction: what it enqueues is held there, and stored with its outcome."""
        tx = self._tx
        if tx is None:
            # Made on the first enqueue, as most jobs enqueue nothing; under a lock, as threads the handler
            # started with its context (``asyncio.to_thread``) may enqueue at once, and must share one.
            with _TRANSACTION_MADE:
                tx = self._tx
                if tx is None:
                    tx = self._tx = Transaction(self.limits, asynchronous=True, kind=self.kind, parent=self)
        return tx

    def derive(self, *, kind: Optional[str] = None, in_finalizer: Optional[bool] = None) -> Context:
        """A fresh context (with a fresh transaction) for the same delivery: one per
        batch phase, so a failed chunk's enqueues are dropped alone, and one per
        finalizer. It shares this context's cancel flag."""
        return Context(
            queue=self.queue, limits=self.limits, job_id=self.job_id, org=self.org, kind=kind or self.kind,
            attempt=self.attempt, chain_depth=self.chain_depth, max_depth=self.max_depth,
            finalizer_requeues=self.finalizer_requeues,
            in_finalizer=self.in_finalizer if in_finalizer is None else in_finalizer, cancel=self.cancel,
            key=self.key,
        )  # fmt: skip

    @property
    def cancelled(self) -> bool:
        """True once the job was aborted while running: stop at the next safe point."""
        return self.cancel.raised

    @property
    def children(self) -> list[NewJob]:
        """What this context's handler enqueued so far (stored with its outcome)."""
        tx = self._tx
        return [] if tx is None else tx.news

    def enqueue(
        self,
        job: Queueable,
        *,
        delay: Optional[float] = None,
        options: Optional[AsyncOptions] = None,
        key: KeyOption = INHERIT,
        priority: Optional[int] = None,
        cost: Optional[int] = None,
        queue: Optional[str] = None,
    ) -> JobHandle:
        """Chains ``job`` after this one (stored when this job finishes successfully).

        It takes this job's concurrency key unless ``key`` says otherwise (see
        :data:`INHERIT` for why); its queue, priority and cost are its class's unless given."""
        return self.queue.enqueue(job, org=self.org, delay=delay, options=options, key=key, priority=priority,
                                  cost=cost, queue=queue)  # fmt: skip

    def attach_finalizer(self, finalizer: Finalizer) -> None:
        """Runs ``finalizer`` after this job with its result; one per job."""
        if not isinstance(finalizer, Finalizer):
            raise InvalidArgument(
                f"invalid finalizer {shown(finalizer)}: expected an instance of a fairqueue.Finalizer subclass"
            )
        if self.finalizers:
            raise LimitExceeded(f"job {self.job_id} already has a finalizer attached; only one is allowed")
        self.finalizers.append(finalizer)


_TRANSACTION_MADE = threading.Lock()
"""Held while a context makes its transaction (once per job that enqueues)."""

_current: contextvars.ContextVar[Optional[Context]] = contextvars.ContextVar("fairqueue_context", default=None)
# The open transaction: a Transaction, or the running job's Context, whose transaction is made when first asked for.
_transaction: contextvars.ContextVar[Union[Transaction, Context, None]] = contextvars.ContextVar("fairqueue_transaction", default=None)


def current_context() -> Context:
    """The context of the job running in this thread or task."""
    ctx = _current.get()
    if ctx is None:
        raise RuntimeError("fairqueue.current_context() called outside a running job")
    return ctx


def running_context() -> Optional[Context]:
    """The context of the job running in this thread or task, or None."""
    return _current.get()


def current_transaction() -> Optional[Transaction]:
    """The transaction open in this thread or task (a running job's, or a ``with
    app.transaction()`` block's), or None."""
    open_ = _transaction.get()
    return open_.transaction if isinstance(open_, Context) else open_


class running:  # lower case: it reads as a function, ``with running(ctx):``
    """Makes ``ctx`` the running job's context (and its transaction the open one)
    inside a ``with`` block. A class rather than a generator: it is entered once per
    job, and a generator-based context manager costs a few times more."""

    __slots__ = ("ctx", "tokens")

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    def __enter__(self) -> Context:
        self.tokens = (_current.set(self.ctx), _transaction.set(self.ctx))
        return self.ctx

    def __exit__(self, *exc: object) -> None:
        _transaction.reset(self.tokens[1])
        _current.reset(self.tokens[0])


def call_running(ctx: Context, fn: Callable[..., Any], args: list[Any], kwargs: dict[str, Any]) -> Any:
    """``fn(*args, **kwargs)`` called as :class:`running` would call it inside its block
    (half its cost, which a worker pays once per job: no object, no method calls)."""
    current, transaction = _current.set(ctx), _transaction.set(ctx)
    try:
        return fn(*args, **kwargs)
    finally:
        _transaction.reset(transaction)
        _current.reset(current)


@contextmanager
def transaction_scope(tx: Transaction) -> Iterator[Transaction]:
    """Makes ``tx`` the open transaction inside the block."""
    token = _transaction.set(tx)
    try:
        yield tx
    finally:
        _transaction.reset(token)


# ----- payloads ----------------------------------------------------------------------------


encode = _core.encode_payload
"""``encode(payload, place, max_bytes)``: the payload's JSON text; raises NotSerializable
naming the first value JSON cannot carry (and where it sits), LimitExceeded over ``max_bytes``."""


def queueable_state(job: Queueable) -> tuple[str, dict[str, Any]]:
    """The import path and JSON-ready state of a queueable instance."""
    if not isinstance(job, Queueable):
        raise InvalidArgument(f"invalid job {shown(job)}: expected an instance of a fairqueue.Queueable subclass")
    path = import_path(type(job))
    check_importable(path, type(job))
    return path, state_of(job)


def state_of(job: object) -> dict[str, Any]:
    """A job instance's attributes (its state, stored as JSON)."""
    try:
        return dict(vars(job))
    except TypeError:
        raise InvalidArgument(
            f"{type(job).__qualname__} instances have no attribute dict (__slots__?): a job's state is its "
            "instance attributes, so drop __slots__"
        ) from None


def restore_queueable(cls: type[Queueable], state: dict[str, Any]) -> Queueable:
    """An instance of ``cls`` with ``state`` as its attributes, without calling ``__init__``."""
    job = cls.__new__(cls)
    vars(job).update(state)
    return job
