"""Running one job: its context, its handler, its finalizer, its outcome.

Shared by thread slots and process slots; it does no storage I/O. What a handler
enqueued comes back as the outcome's children, to be committed with it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any, NamedTuple, Optional

from fairqueue import jobs as _jobs
from fairqueue.app import FairQueue
from fairqueue.errors import HandlerNotFound, MalformedRecord
from fairqueue.jobs import CancelFlag, Context, FinalizerResult, FutureFunction, Queueable, Retry
from fairqueue.batch import BatchRunner
from fairqueue.records import JobRecord, JobStatus, NewJob, Progress

__all__ = ["Outcome", "Runner"]

log = logging.getLogger("fairqueue.worker")


class Outcome(NamedTuple):
    """How one delivery of a job ended (a named tuple: one is built per job)."""

    status: JobStatus
    error: Optional[str] = None
    retry_at: Optional[float] = None
    children: tuple[NewJob, ...] = ()
    progress: Optional[Progress] = None
    """A batch delivery's progress (see :class:`fairqueue.records.Progress`)."""


def _payload(record: JobRecord) -> dict[str, Any]:
    try:
        body = json.loads(record.payload)
    except ValueError as e:
        raise MalformedRecord(f"job {record.id}'s stored payload is not JSON ({e})") from None
    if not isinstance(body, dict):
        raise MalformedRecord(f"job {record.id}'s stored payload is {type(body).__name__}, not a JSON object")
    return body


class Runner:
    """Runs jobs of one app; ``async def`` handlers share one event loop thread."""

    def __init__(self, app: FairQueue) -> None:
        self.app = app
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._loop_thread: Optional[threading.Thread] = None
        self._loop_lock = threading.Lock()
        self._batch = BatchRunner(self)

    def execute(self, record: JobRecord, cancel: Optional[CancelFlag] = None) -> Outcome:
        """Runs one delivery of ``record``; never raises for the job's own failures."""
        try:
            body = _payload(record)
        except MalformedRecord as e:
            return Outcome(JobStatus.FAILED, error=f"MalformedRecord: {e}")
        ctx = Context(
            app=self.app,
            job_id=record.id,
            org=record.org,
            kind=record.kind,
            attempt=record.attempts,
            chain_depth=record.chain_depth,
            max_depth=body.get("max_depth"),
            finalizer_requeues=body.get("finalizer_requeues", 0),
            cancel=cancel,
        )
        if record.kind == "batch" or body.get("single_chunk"):
            try:
                return self._batch.execute(ctx, record, body)
            except BaseException as e:  # a batch that cannot even be loaded fails as a whole
                return Outcome(JobStatus.FAILED, error=f"{type(e).__name__}: {e}")
        error: Optional[BaseException] = None
        try:
            self._call(ctx, record, body)
        except Retry as r:
            return Outcome(JobStatus.QUEUED, error=f"Retry: {r.reason}", retry_at=time.time() + r.after)
        except BaseException as e:  # the job's failure is its own; the worker goes on
            error = e
        # A failed job's own enqueues are rolled back, as its transaction is.
        children = [new for new, _ in ctx.transaction.pending] if error is None else []
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
            trace = "".join(traceback.format_exception(type(error), error, error.__traceback__))
            message = f"{type(error).__name__}: {error}"
            log.warning("job %d (%s) failed: %s\n%s", record.id, record.handler, message, trace)
            return Outcome(JobStatus.FAILED, error=message + finalizer_note, children=tuple(children))
        return Outcome(JobStatus.COMPLETED, error=finalizer_note or None, children=tuple(children))

    def _call(self, ctx: Context, record: JobRecord, body: dict[str, Any]) -> None:
        handler = _jobs.resolve(record.handler)
        if record.kind == "future":
            if not isinstance(handler, FutureFunction):
                raise HandlerNotFound(f"{record.handler!r} is not a function declared with @app.future")
            fn: Callable[..., Any] = handler.fn
            args, kwargs = body.get("args", []), body.get("kwargs", {})
        else:
            if not (isinstance(handler, type) and issubclass(handler, Queueable)):
                raise HandlerNotFound(f"{record.handler!r} is not a fairqueue.Queueable subclass")
            job = _jobs.restore_queueable(handler, body.get("state", {}))
            fn, args, kwargs = job.execute, [ctx], {}
        self._in_context(ctx, fn, args, kwargs)

    def _in_context(self, ctx: Context, fn: Callable[..., Any], args: list[Any], kwargs: dict[str, Any]) -> Any:
        tokens = (_jobs._current.set(ctx), _jobs._transaction.set(ctx.transaction))
        try:
            if _jobs.is_async(fn):
                return asyncio.run_coroutine_threadsafe(_with_context(ctx, fn, args, kwargs), self._event_loop()).result()
            return fn(*args, **kwargs)
        finally:
            _jobs._transaction.reset(tokens[1])
            _jobs._current.reset(tokens[0])

    def _run_finalizers(self, ctx: Context, result: FinalizerResult, children: list[NewJob]) -> str:
        """Runs the job's finalizer; its enqueues join ``children``. Returns a note on failure."""
        for finalizer in ctx.finalizers:
            fctx = Context(
                app=self.app,
                job_id=ctx.job_id,
                org=ctx.org,
                kind="queueable",
                attempt=ctx.attempt,
                chain_depth=ctx.chain_depth,
                max_depth=ctx.max_depth,
                finalizer_requeues=ctx.finalizer_requeues,
                in_finalizer=True,
            )
            try:
                self._in_context(fctx, finalizer.execute, [fctx, result], {})
            except BaseException as e:
                return f"; finalizer {type(finalizer).__qualname__} failed: {type(e).__name__}: {e}"
            children.extend(new for new, _ in fctx.transaction.pending)
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


async def _with_context(ctx: Context, fn: Callable[..., Any], args: list[Any], kwargs: dict[str, Any]) -> Any:
    # A task copies the loop thread's context, not the caller's: set ours inside.
    _jobs._current.set(ctx)
    _jobs._transaction.set(ctx.transaction)
    return await fn(*args, **kwargs)
