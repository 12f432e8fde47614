"""Running one job: its context, its handler, its finalizer, its outcome.

Shared by thread slots, process slots and test mode; it does no storage I/O of
its own (what a handler's enqueue reads is said in :mod:`fairqueue.enqueue`).
What a handler enqueued comes back as the outcome's children, to be committed
with it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
import traceback
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Optional

from fairqueue import tracing
from fairqueue.enqueue import FutureFunction
from fairqueue.errors import HandlerNotFound, MalformedRecord
from fairqueue.handlers import is_async, resolve
from fairqueue.jobs import (
    CancelFlag,
    Context,
    FinalizerResult,
    Queueable,
    Retry,
    call_running,
    restore_queueable,
    running,
)
from fairqueue.records import JobRecord, JobStatus, NewJob
from fairqueue.retry import RetryPolicy
from fairqueue.runtime.batch_runner import BatchRunner
from fairqueue.runtime.outcome import COMPLETED, Outcome
from fairqueue.runtime.queue_app import QueueApp

if TYPE_CHECKING:
    from opentelemetry.trace import Span

__all__ = ["Runner"]

log = logging.getLogger("fairqueue.worker")


# json.loads checks its argument's type and matches whitespace before and after the document around
# decoding it: most of its cost on a payload as short as most jobs'. The decoder's raw_decode does the
# decoding alone, which is all a payload fairqueue encoded needs (text, no whitespace around it).
_decode = json.JSONDecoder().raw_decode


def _payload(record: JobRecord) -> dict[str, Any]:
    text = record.payload
    try:
        body, end = _decode(text)
        if end != len(text):  # whitespace after it (or more than one document): loads says which
            body = json.loads(text)
    except (ValueError, TypeError):
        try:  # whitespace before it, bytes from a damaged row, or no JSON at all: loads takes it or says why
            body = json.loads(text)
        except ValueError as e:
            raise MalformedRecord(f"job {record.id}'s stored payload is not JSON ({e})") from None
    if not isinstance(body, dict):
        raise MalformedRecord(f"job {record.id}'s stored payload is {type(body).__name__}, not a JSON object")
    return body


class Runner:
    """Runs jobs of one app; ``async def`` handlers share one event loop thread."""

    def __init__(self, app: QueueApp) -> None:
        self.app = app
        self._queue = app.enqueuer
        self._limits = app.settings.limits
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._loop_thread: Optional[threading.Thread] = None
        self._loop_lock = threading.Lock()
        self._batch = BatchRunner(self.in_context, app.settings.limits.max_payload_bytes, self.policy)
        # Each handler path's checked handler and whether it is async, found on its first job: a path a
        # job names is a module-level definition of the app's code, so these grow no further than it.
        self._futures: dict[str, tuple[Callable[..., Any], bool]] = {}
        self._queueables: dict[str, tuple[type[Queueable], bool]] = {}

    def execute(self, record: JobRecord, cancel: Optional[CancelFlag] = None, now: Optional[float] = None) -> Outcome:
        """Runs one delivery of ``record``; never raises for the job's own failures.

        ``now`` (default: the wall clock after the handler returns) times a retry and
        the attempt's error; test mode passes its virtual clock."""
        try:
            body = _payload(record)
        except MalformedRecord as e:
            return Outcome(JobStatus.FAILED, error=f"MalformedRecord: {e}")
        tracer = tracing.tracer()
        if tracer is None:
            return self._execute(record, body, cancel, now, None)
        with tracing.run_span(tracer, record, body) as span:
            outcome = self._execute(record, body, cancel, now, span)
            tracing.finished(span, outcome.status.value, outcome.error)
            return outcome

    def _execute(self, record: JobRecord, body: dict[str, Any], cancel: Optional[CancelFlag], now: Optional[float],
                 span: Optional[Span]) -> Outcome:  # fmt: skip
        ctx = Context(
            queue=self._queue,
            limits=self._limits,
            job_id=record.id,
            org=record.org,
            kind=record.kind,
            attempt=record.attempts,
            chain_depth=record.chain_depth,
            max_depth=body.get("max_depth"),
            finalizer_requeues=body.get("finalizer_requeues", 0),
            cancel=cancel,
            key=record.key,
        )
        if record.kind == "batch" or body.get("single_chunk"):
            try:
                return self._batch.execute(ctx, record, body)
            except BaseException as e:  # a batch that cannot even be loaded fails as a whole
                tracing.failed(span, e)
                return Outcome(JobStatus.FAILED, error=f"{type(e).__name__}: {e}")
        error: Optional[BaseException] = None
        value: Any = None
        try:
            value = self._call(ctx, record, body)
        except Retry as r:
            return self._asked_retry(record, r, time.time() if now is None else now)
        except BaseException as e:  # the job's failure is its own; the worker goes on
            error = e
            tracing.failed(span, e)
        if error is None and value is None and not ctx.finalizers and not ctx.children:
            return COMPLETED  # most jobs: nothing to store but the status
        at = time.time() if now is None else now
        if error is not None:
            retry = self._retry(record, error, at)
            if retry is not None:
                return retry  # its enqueues are rolled back; finalizers wait for the last attempt
        # A failed job's own enqueues are rolled back, as its transaction is.
        children = ctx.children if error is None else []
        finalizer_note = ""
        if ctx.finalizers:
            result = FinalizerResult(
                job_id=record.id,
                succeeded=error is None,
                exception_type=type(error).__name__ if error else None,
                message=str(error) if error else None,
            )
            finalizer_note = self._run_finalizers(ctx, result, children)
        if error is not None:
            policy = self.policy(record)
            attempt = record.handler_attempts + 1
            # Discarded: given up on after retries; failed: an error it does not retry (or no retries at all).
            exhausted = policy.retries(error) and policy.max_attempts > 1
            status = JobStatus.DISCARDED if exhausted else JobStatus.FAILED
            message = f"{type(error).__name__}: {error}"
            why = f"attempt {attempt} of {policy.max_attempts}, retries exhausted" if exhausted else "not retried"
            if policy.max_attempts > 1:
                message = f"{message} ({why})"
            log.error("job %d (%s) %s: %s", record.id, record.handler, status.value, message, exc_info=error,
                      extra={"job_id": record.id, "org": record.org, "kind": record.kind, "attempt": attempt})  # fmt: skip
            return Outcome(status, error=message + finalizer_note, children=tuple(children), ran=True,
                           attempt_error=_attempt_error(attempt, at, error))  # fmt: skip
        stored, note = self._result(value)
        if finalizer_note:
            note = note + finalizer_note if note else finalizer_note.removeprefix("; ")
        return Outcome(JobStatus.COMPLETED, error=note or None, children=tuple(children), ran=True, result=stored)

    def policy(self, record: JobRecord) -> RetryPolicy:
        """The job's retry policy: its handler's own, else its kind's."""
        try:
            handler = resolve(record.handler)
        except HandlerNotFound:
            handler = None
        own = getattr(handler, "retry", None)
        return own if isinstance(own, RetryPolicy) else self._limits.retry[record.kind]  # type: ignore[index]

    def _retry(self, record: JobRecord, error: BaseException, at: float) -> Optional[Outcome]:
        """The outcome of a failed attempt that its policy retries and has attempts left for."""
        policy = self.policy(record)
        attempt = record.handler_attempts + 1
        if not policy.retries(error) or attempt >= policy.max_attempts:
            return None
        delay = policy.delay(attempt)
        message = f"{type(error).__name__}: {error}"
        log.warning("job %d (%s) failed attempt %d of %d, retrying in %.1f s: %s", record.id, record.handler, attempt,
                    policy.max_attempts, delay, message, exc_info=error,
                    extra={"job_id": record.id, "org": record.org, "kind": record.kind, "attempt": attempt})  # fmt: skip
        return Outcome(JobStatus.QUEUED, error=f"{message} (attempt {attempt} of {policy.max_attempts}; retrying)",
                       retry_at=at + delay, ran=True, attempt_error=_attempt_error(attempt, at, error))  # fmt: skip

    def _asked_retry(self, record: JobRecord, asked: Retry, at: float) -> Outcome:
        """A handler's own :class:`Retry`: an attempt like any other, bounded by its policy."""
        policy = self.policy(record)
        attempt = record.handler_attempts + 1
        entry = _attempt_error(attempt, at, asked)
        if attempt >= policy.max_attempts:
            return Outcome(JobStatus.DISCARDED, error=f"Retry: {asked.reason} (attempt {attempt} of {policy.max_attempts}, "
                           "retries exhausted)", ran=True, attempt_error=entry)  # fmt: skip
        return Outcome(JobStatus.QUEUED, error=f"Retry: {asked.reason}", retry_at=at + asked.after, ran=True,
                       attempt_error=entry)  # fmt: skip

    def _result(self, value: Any) -> tuple[Optional[str], str]:
        """The handler's return value as stored JSON, or why it is not stored."""
        if value is None:
            return None, ""
        try:
            text = json.dumps(value, allow_nan=False, separators=(",", ":"))
        except (TypeError, ValueError) as e:
            return None, f"result not stored: {type(value).__name__} is not JSON ({e}); return JSON values"
        if len(text.encode()) > self._limits.max_payload_bytes:
            return None, (f"result not stored: {len(text.encode()):,} bytes of JSON, over the limit of "
                          f"{self._limits.max_payload_bytes:,} (Limits.max_payload_bytes)")  # fmt: skip
        return text, ""

    def _call(self, ctx: Context, record: JobRecord, body: dict[str, Any]) -> Any:
        if record.kind == "future":
            fn, asynchronous = self._future(record.handler)
            args, kwargs = body.get("args", []), body.get("kwargs", {})
        else:
            cls, asynchronous = self._queueable(record.handler)
            fn, args, kwargs = restore_queueable(cls, body.get("state", {})).execute, [ctx], {}
        return self._run(ctx, fn, args, kwargs, asynchronous)

    def _future(self, path: str) -> tuple[Callable[..., Any], bool]:
        """The function of the future at ``path``, and whether it is ``async def``."""
        found = self._futures.get(path)
        if found is None:
            handler = resolve(path)
            if not isinstance(handler, FutureFunction):
                raise HandlerNotFound(f"{path!r} is not a function declared with @app.future")
            found = self._futures[path] = (handler.fn, is_async(handler.fn))
        return found

    def _queueable(self, path: str) -> tuple[type[Queueable], bool]:
        """The Queueable subclass at ``path``, and whether its ``execute`` is ``async def``."""
        found = self._queueables.get(path)
        if found is None:
            handler = resolve(path)
            if not (isinstance(handler, type) and issubclass(handler, Queueable)):
                raise HandlerNotFound(f"{path!r} is not a fairqueue.Queueable subclass")
            found = self._queueables[path] = (handler, is_async(handler.execute))
        return found

    def in_context(self, ctx: Context, fn: Callable[..., Any], args: list[Any], kwargs: dict[str, Any]) -> Any:
        """Calls ``fn(*args, **kwargs)`` as the job of ``ctx`` (so ``current_context()``
        and enqueues see it); an ``async def`` runs on the runner's event loop."""
        return self._run(ctx, fn, args, kwargs, is_async(fn))

    def _run(self, ctx: Context, fn: Callable[..., Any], args: list[Any], kwargs: dict[str, Any],
             asynchronous: bool) -> Any:  # fmt: skip
        if asynchronous:
            with running(ctx):
                return asyncio.run_coroutine_threadsafe(_with_context(ctx, fn, args, kwargs), self._event_loop()).result()
        return call_running(ctx, fn, args, kwargs)

    def _run_finalizers(self, ctx: Context, result: FinalizerResult, children: list[NewJob]) -> str:
        """Runs the job's finalizer; its enqueues join ``children``. Returns a note on failure."""
        for finalizer in ctx.finalizers:
            fctx = ctx.derive(kind="queueable", in_finalizer=True)
            try:
                self.in_context(fctx, finalizer.execute, [fctx, result], {})
            except BaseException as e:
                return f"; finalizer {type(finalizer).__qualname__} failed: {type(e).__name__}: {e}"
            children.extend(fctx.children)
        return ""

    def _event_loop(self) -> asyncio.AbstractEventLoop:
        with self._loop_lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(target=loop.run_forever, name="fairqueue-async", daemon=True)
                thread.start()
                self._loop, self._loop_thread = loop, thread
            return self._loop

    def close(self) -> None:
        """Stops the event loop thread, if one was started, and the batch pagers."""
        self._batch.close()
        with self._loop_lock:
            if self._loop is None or self._loop_thread is None:
                return
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._loop_thread.join()
            self._loop.close()
            self._loop = self._loop_thread = None


# Each attempt's error keeps this much of its traceback (the end, where it was raised).
_TRACEBACK_CHARS = 8_000


def _attempt_error(attempt: int, at: float, error: BaseException) -> str:
    """One failed attempt's error, as kept in the job's ``errors``."""
    trace = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    return json.dumps({"attempt": attempt, "at": at, "type": type(error).__name__, "message": str(error),
                       "traceback": trace[-_TRACEBACK_CHARS:]})  # fmt: skip


async def _with_context(ctx: Context, fn: Callable[..., Any], args: list[Any], kwargs: dict[str, Any]) -> Any:
    # A task copies the loop thread's context, not the caller's: set ours inside.
    with running(ctx):
        return await fn(*args, **kwargs)
