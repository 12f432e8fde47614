"""Job kinds and the context handlers run in (SPEC §3).

Job code is plain Python. Arguments and state travel as JSON — never pickle — and
handlers are found again by import path, so a worker in another process (or on
another host) can run them. Both are checked when a job is enqueued.
"""

from __future__ import annotations

import contextvars
import functools
import importlib
import inspect
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, Optional, TypeVar, Union

from fairqueue import _core
from fairqueue.errors import HandlerNotFound, InvalidArgument, LimitExceeded

if TYPE_CHECKING:
    from fairqueue.app import FairQueue, JobHandle

__all__ = [
    "AsyncOptions",
    "Context",
    "Finalizer",
    "FinalizerResult",
    "FutureFunction",
    "Queueable",
    "Retry",
    "current_context",
]

R = TypeVar("R")


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
        if self.max_depth is not None and (not isinstance(self.max_depth, int) or self.max_depth < 0):
            raise InvalidArgument(f"invalid max_depth {self.max_depth!r}: expected an integer >= 0 or None")
        if self.duplicate_signature is not None and not (
            isinstance(self.duplicate_signature, str) and 0 < len(self.duplicate_signature) <= 255
        ):
            raise InvalidArgument(
                f"invalid duplicate_signature {self.duplicate_signature!r}: expected a string of 1 to 255 characters"
            )


class Queueable:
    """Base class of a queueable job: subclass it and write ``execute(ctx)``.

    The instance's attributes are its state; they must be JSON-serialisable and are
    restored (without calling ``__init__``) in the worker. From ``execute`` a job may
    enqueue one child with ``ctx.enqueue`` (chaining) and attach a finalizer.
    """

    def execute(self, ctx: Context) -> Any:
        """Does the job's work. Override it (``def`` or ``async def``)."""
        raise NotImplementedError(f"{type(self).__qualname__} must define execute(self, ctx)")

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.execute is Queueable.execute:
            raise TypeError(f"{cls.__qualname__} subclasses Queueable but does not define execute(self, ctx)")


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


class FutureFunction(Generic[R]):
    """A function registered with ``@app.future``. Call ``.delay(org, *args, **kw)``
    to run it in the background; calling it directly runs it now."""

    def __init__(self, app: FairQueue, fn: Callable[..., R], timeout: Optional[float]) -> None:
        self.app = app
        self.fn = fn
        self.timeout = timeout
        self.path = import_path(fn)
        functools.update_wrapper(self, fn)

    def __call__(self, *args: Any, **kwargs: Any) -> R:
        return self.fn(*args, **kwargs)

    def delay(self, org: str, *args: Any, **kwargs: Any) -> JobHandle:
        """Enqueues one call of the function for ``org``; returns its job handle."""
        check_importable(self.path, self)
        return self.app._enqueue_future(self, org, list(args), kwargs)

    def delay_many(self, org: str, calls: Iterable[Union[Sequence[Any], Mapping[str, Any]]]) -> list[JobHandle]:
        """Enqueues many calls for ``org`` in one durable write (bulk load).

        Each element is the positional arguments (a list or tuple) or the keyword
        arguments (a dict) of one call. Every call counts as its own transaction, so
        the per-transaction future limit does not apply; it may not be used inside
        a transaction or a running job. All or none.
        """
        check_importable(self.path, self)
        return self.app._enqueue_futures(self, org, calls)

    def __repr__(self) -> str:
        return f"<future {self.path}>"


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
        app: FairQueue,
        job_id: int,
        org: str,
        kind: str,
        attempt: int,
        chain_depth: int,
        max_depth: Optional[int],
        finalizer_requeues: int = 0,
        in_finalizer: bool = False,
        cancel: Optional[CancelFlag] = None,
    ) -> None:
        self.app = app
        self.job_id = job_id
        self.org = org
        self.kind = kind
        self.attempt = attempt
        self.chain_depth = chain_depth
        self.max_depth = max_depth
        self.finalizer_requeues = finalizer_requeues
        self.in_finalizer = in_finalizer
        self._cancel = cancel or CancelFlag()
        self.transaction = Transaction(app, asynchronous=True, kind=kind, parent=self)
        self.finalizers: list[Finalizer] = []

    @property
    def cancelled(self) -> bool:
        """True once the job was aborted while running: stop at the next safe point."""
        return self._cancel.raised

    def enqueue(
        self, job: Queueable, *, delay: Optional[float] = None, options: Optional[AsyncOptions] = None
    ) -> JobHandle:
        """Chains ``job`` after this one (stored when this job finishes successfully)."""
        return self.app.enqueue(job, org=self.org, delay=delay, options=options)

    def attach_finalizer(self, finalizer: Finalizer) -> None:
        """Runs ``finalizer`` after this job with its result; one per job."""
        if not isinstance(finalizer, Finalizer):
            raise InvalidArgument(f"invalid finalizer {finalizer!r}: expected an instance of a fairqueue.Finalizer subclass")
        if self.finalizers:
            raise LimitExceeded(f"job {self.job_id} already has a finalizer attached; only one is allowed")
        self.finalizers.append(finalizer)


_current: contextvars.ContextVar[Optional[Context]] = contextvars.ContextVar("fairqueue_context", default=None)
_transaction: contextvars.ContextVar[Optional[Transaction]] = contextvars.ContextVar("fairqueue_transaction", default=None)


def current_context() -> Context:
    """The context of the job running in this thread or task."""
    ctx = _current.get()
    if ctx is None:
        raise RuntimeError("fairqueue.current_context() called outside a running job")
    return ctx


# ----- transactions ------------------------------------------------------------------------


class Transaction:
    """Counts what one transaction enqueued and holds it until the transaction ends.

    A transaction is a handler's execution (asynchronous) or a ``with
    app.transaction():`` block in the calling service (synchronous). Jobs enqueued
    in it are stored together when it ends, or not at all if it raised.
    """

    def __init__(
        self,
        app: FairQueue,
        *,
        asynchronous: bool,
        kind: Optional[str] = None,
        parent: Optional[Context] = None,
        connection: Optional[Any] = None,
    ):
        self.app = app
        self.connection = connection
        """The caller's database connection whose transaction the jobs join, if any."""
        self.asynchronous = asynchronous
        self.kind = kind
        self.parent = parent
        self.futures = 0
        self.queueables = 0
        self.pending: list[tuple[Any, JobHandle]] = []

    def count(self, kind: str) -> None:
        """Checks and counts one more job of ``kind``; raises LimitExceeded and counts nothing."""
        limits = self.app.limits
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


# ----- payloads and import paths ----------------------------------------------------------


encode = _core.encode_payload
"""``encode(payload, place, max_bytes)``: the payload's JSON text; raises NotSerializable
naming the first value JSON cannot carry (and where it sits), LimitExceeded over ``max_bytes``."""


@functools.lru_cache(maxsize=4096)
def _resolve(path: str) -> Any:
    module_name, _, qualname = path.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as e:
        raise HandlerNotFound(f"cannot import handler {path!r}: {e}") from e
    return obj


def resolve(path: str) -> Any:
    """The object at import path ``module:qualname``."""
    return _resolve(path)


def import_path(obj: Union[type, Callable[..., Any]]) -> str:
    """``module:qualname`` of a class or function, refusing ones a worker could never import.

    Call :func:`check_importable` once the module has finished importing to make
    sure the path leads back to the object.
    """
    module, qualname = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
    if not module or not qualname or "<locals>" in qualname or "<lambda>" in qualname:
        raise HandlerNotFound(
            f"{obj!r} is defined inside a function or is a lambda; workers find handlers by import path, "
            "so define it at module level"
        )
    if module == "__main__":
        raise HandlerNotFound(
            f"{qualname} is defined in the __main__ script, which a worker cannot import; move it into a module"
        )
    return f"{module}:{qualname}"


_importable: dict[str, Any] = {}


def check_importable(path: str, obj: Any) -> None:
    """Raises HandlerNotFound unless importing ``path`` gives back ``obj``."""
    if _importable.get(path) is obj:
        return
    if resolve(path) is not obj:
        raise HandlerNotFound(f"import path {path!r} does not lead back to {obj!r}; is the name rebound?")
    _importable[path] = obj


def queueable_state(job: Queueable) -> tuple[str, dict[str, Any]]:
    """The import path and JSON-ready state of a queueable instance."""
    if not isinstance(job, Queueable):
        raise InvalidArgument(f"invalid job {job!r}: expected an instance of a fairqueue.Queueable subclass")
    path = import_path(type(job))
    check_importable(path, type(job))
    return path, dict(vars(job))


def restore_queueable(cls: type[Queueable], state: dict[str, Any]) -> Queueable:
    """An instance of ``cls`` with ``state`` as its attributes, without calling ``__init__``."""
    job = cls.__new__(cls)
    vars(job).update(state)
    return job


def is_async(fn: Callable[..., Any]) -> bool:
    """True for ``async def`` functions and methods."""
    # Asked once per job run: remembered per function (a method by its class's function).
    key = getattr(fn, "__func__", fn)
    answer = _ASYNC.get(key)
    if answer is None:
        answer = _ASYNC[key] = inspect.iscoroutinefunction(fn)
    return answer


_ASYNC: dict[Any, bool] = {}


class Retry(Exception):
    """Raise from a handler to fail this attempt and deliver the job again later.

    Args:
        after: seconds to wait before the next delivery.
        reason: recorded in the job's extended status.
    """

    def __init__(self, after: float = 0.0, reason: str = "retry requested by the handler") -> None:
        if not isinstance(after, (int, float)) or not math.isfinite(after) or after < 0:
            raise InvalidArgument(f"invalid retry delay {after!r}: expected seconds >= 0")
        super().__init__(reason)
        self.after = float(after)
        self.reason = reason
