"""The worker runtime: feeds the Rust dispatcher from the store, runs handlers in
slots, and writes outcomes back in batches.

One loop thread does all storage I/O and talks to the dispatcher core; handler
threads only run handlers and hand their outcome back through a queue (they never
touch the store). ``async def`` handlers run on one event loop thread. Outcomes and
the jobs handlers enqueued are committed together (group commit), so a crash
either keeps both or neither.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import queue
import signal
import socket
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Optional

from fairqueue import jobs as _jobs
from fairqueue._core import Dispatcher
from fairqueue.app import FairQueue
from fairqueue.errors import HandlerNotFound, InvalidArgument
from fairqueue.jobs import Context, FinalizerResult, FutureFunction, Queueable, Retry
from fairqueue.records import Finish, JobRecord, JobStatus, NewJob

__all__ = ["Worker"]

log = logging.getLogger("fairqueue.worker")

# How many queued jobs one store read hands the dispatcher at most.
_PAGE = 10_000
# Outcomes written per group commit at most.
_BATCH = 1_000


@dataclass
class _Task:
    """A claimed job on its way to a handler thread."""

    lease: int
    record: JobRecord
    cancel: threading.Event = field(default_factory=threading.Event)
    started: float = field(default_factory=time.monotonic)
    deadline: float = 0.0
    timed_out: bool = False


@dataclass
class _Outcome:
    """What a handler thread reports back."""

    task: _Task
    status: JobStatus
    error: Optional[str] = None
    retry_at: Optional[float] = None
    children: tuple[NewJob, ...] = ()


class Worker:
    """Runs an app's jobs.

    Args:
        app: the application whose store and limits to use.
        slots: handler slots (default: ``app.limits.slots``).
        name: identifies this worker's leases in the store (default host:pid:n).
        poll_interval: seconds between looks at the store when nothing wakes the worker.
    """

    _count = 0

    def __init__(
        self,
        app: FairQueue,
        *,
        slots: Optional[int] = None,
        name: Optional[str] = None,
        poll_interval: float = 0.05,
    ) -> None:
        limits = app.limits
        self.app = app
        self.slots = slots if slots is not None else limits.slots
        if not isinstance(self.slots, int) or self.slots < 1:
            raise InvalidArgument(f"invalid slots {slots!r}: expected an integer >= 1")
        Worker._count += 1
        self.name = name or f"{socket.gethostname()}:{os.getpid()}:{Worker._count}"
        self.poll_interval = poll_interval
        self.core = Dispatcher(
            policy=app.policy,
            slots=self.slots,
            peek_set=limits.peek_set,
            cap=limits.cap,
            min=limits.min,
            weight=limits.weight,
            extended_delay=dict(limits.extended_delay),
            kind_slots=dict(limits.kind_slots),
            lease=limits.lease,
        )
        for (org, kind), values in app.org_limits.items():
            self.core.set_limits(org, kind, **values)
        self._seen_seq = 0
        self._running: dict[int, _Task] = {}
        self._tasks: queue.SimpleQueue[Optional[_Task]] = queue.SimpleQueue()
        self._outcomes: queue.SimpleQueue[_Outcome] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._loop_lock = threading.Lock()
        self._loop_thread: Optional[threading.Thread] = None
        self._main: Optional[threading.Thread] = None
        self._stopping = threading.Event()
        self._stopped = threading.Event()
        self._grace = 30.0
        self._last_heartbeat = 0.0
        self._last_housekeeping = 0.0
        self.completed = 0
        """Jobs this worker has finished (any outcome), for progress displays."""

    # ----- lifecycle -------------------------------------------------------------------

    def start(self) -> Worker:
        """Starts the worker's threads and returns at once."""
        for _ in range(self.slots):
            self._spawn_handler_thread()
        self._main = threading.Thread(target=self._run_loop, name=f"fairqueue-loop-{self.name}", daemon=True)
        self._main.start()
        return self

    def stop(self, grace: float = 30.0) -> None:
        """Stops taking work, lets running jobs finish for up to ``grace`` seconds,
        re-queues the rest, and returns when the worker has stopped."""
        self._grace = grace
        self._stopping.set()
        self.app.wakeup.set()
        if self._main is not None:
            self._main.join()

    def run(self) -> int:
        """Runs until SIGTERM or SIGINT, then drains gracefully; returns the exit code."""

        def on_signal(signum: int, _frame: Any) -> None:
            log.info("fairqueue worker %s: signal %d, draining", self.name, signum)
            self._stopping.set()
            self.app.wakeup.set()

        previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            self.start()
            while not self._stopped.wait(0.2):
                pass
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
        return 0

    def __enter__(self) -> Worker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ----- the loop ----------------------------------------------------------------------

    def _run_loop(self) -> None:
        try:
            self._loop_body()
        except BaseException:
            log.exception("fairqueue worker %s: loop crashed", self.name)
            raise
        finally:
            for _ in self._threads:
                self._tasks.put(None)
            self._close_event_loop()
            self._stopped.set()

    def _loop_body(self) -> None:
        self.app.storage.job_requeue_expired(time.time())
        drain_deadline: Optional[float] = None
        while True:
            self.app.wakeup.clear()
            now = time.time()
            self._collect()
            if self._stopping.is_set():
                if drain_deadline is None:
                    drain_deadline = time.monotonic() + self._grace
                if not self._running:
                    return
                if time.monotonic() >= drain_deadline:
                    self._requeue_running(now)
                    return
            else:
                self._pick_up()
                self._dispatch(now)
            self._enforce_timeouts(now)
            self._housekeeping(now)
            if self._outcomes.empty():
                self.app.wakeup.wait(self._sleep_for(now))

    def _sleep_for(self, now: float) -> float:
        wake = self.core.next_wakeup()
        deadlines = [t.deadline for t in self._running.values()]
        until = min([self.poll_interval] + ([wake - now] if wake is not None else []) + [d - time.monotonic() for d in deadlines])
        return max(until, 0.0)

    def _pick_up(self) -> None:
        """Feeds the dispatcher every job that became queued since the last look."""
        while True:
            pending = self.app.storage.job_pending(after_seq=self._seen_seq, limit=_PAGE)
            if not pending:
                return
            self.core.enqueue_many([(p.id, p.org, p.kind, p.run_at) for p in pending], skip_held=True)
            self._seen_seq = pending[-1].ready_seq
            if len(pending) < _PAGE:
                return

    def _dispatch(self, now: float) -> None:
        grants = self.core.dispatch()
        if not grants:
            return
        lease_until = now + self.app.limits.lease
        claimed = {r.id: r for r in self.app.storage.job_claim([g.id for g in grants], self.name, lease_until, now)}
        limits = self.app.limits
        for grant in grants:
            record = claimed.get(grant.id)
            if record is None:
                # Aborted, or claimed by another worker process, since we last looked.
                self.core.ack(grant.lease)
                continue
            task = _Task(grant.lease, record)
            timeout = limits.timeouts[record.kind]
            try:
                handler = _jobs.resolve(record.handler)
            except HandlerNotFound:
                handler = None  # the handler thread records the error
            if isinstance(handler, FutureFunction) and handler.timeout is not None:
                timeout = handler.timeout
            task.deadline = task.started + timeout
            self._running[grant.lease] = task
            if record.attempts > limits.max_attempts:
                self._outcomes.put(
                    _Outcome(
                        task,
                        JobStatus.FAILED,
                        error=f"delivered {record.attempts} times without finishing (its worker stopped each time); "
                        f"the limit is {limits.max_attempts}",
                    )
                )
            else:
                self._tasks.put(task)

    def _collect(self) -> None:
        """Commits finished outcomes in one transaction and releases their slots."""
        outcomes: list[_Outcome] = []
        while len(outcomes) < _BATCH:
            try:
                outcomes.append(self._outcomes.get_nowait())
            except queue.Empty:
                break
        outcomes = [o for o in outcomes if self._running.get(o.task.lease) is o.task and not o.task.timed_out]
        if not outcomes:
            return
        now = time.time()
        self.app.storage.job_finish(
            [
                Finish(o.task.record.id, self.name, o.status, now, error=o.error, retry_at=o.retry_at, children=o.children)
                for o in outcomes
            ]
        )
        for o in outcomes:
            self._release(o.task)
        if any(o.children for o in outcomes):
            self.app.wakeup.set()

    def _release(self, task: _Task) -> None:
        del self._running[task.lease]
        self.completed += 1
        # The store now owns the job's next step (a retry re-enters through _pick_up).
        self.core.ack(task.lease)

    def _enforce_timeouts(self, now: float) -> None:
        overdue = [t for t in self._running.values() if not t.timed_out and time.monotonic() > t.deadline]
        if not overdue:
            return
        for task in overdue:
            task.timed_out = True
            task.cancel.set()
        limit = {t.lease: time.monotonic() - t.started for t in overdue}
        self.app.storage.job_finish(
            [
                Finish(t.record.id, self.name, JobStatus.FAILED, now,
                       error=f"TimeoutError: ran {limit[t.lease]:.1f} s, over its timeout of {self._timeout_of(t):g} s")
                for t in overdue
            ]
        )  # fmt: skip
        for task in overdue:
            self._release(task)
            # The hung thread cannot be killed; a fresh one takes its slot.
            self._spawn_handler_thread()

    def _timeout_of(self, task: _Task) -> float:
        return task.deadline - task.started

    def _housekeeping(self, now: float) -> None:
        lease = self.app.limits.lease
        if self._running and now - self._last_heartbeat >= lease / 3:
            self._last_heartbeat = now
            self.app.storage.job_heartbeat([t.record.id for t in self._running.values()], self.name, now + lease)
            for task in self._running.values():
                self.core.heartbeat(task.lease)
        if now - self._last_housekeeping >= min(1.0, lease / 3):
            self._last_housekeeping = now
            self.app.storage.job_requeue_expired(now)
            for task in self._running.values():
                record = self.app.storage.job_get(task.record.id)
                if record is not None and record.cancel_requested:
                    task.cancel.set()

    def _requeue_running(self, now: float) -> None:
        """Grace is over: give the still-running jobs back to the queue."""
        running = [t for t in self._running.values() if not t.timed_out]
        self.app.storage.job_finish(
            [Finish(t.record.id, self.name, JobStatus.QUEUED, now, error="re-queued: worker stopped") for t in running]
        )
        for task in running:
            task.cancel.set()
            self._release(task)

    # ----- handler threads ------------------------------------------------------------------

    def _spawn_handler_thread(self) -> None:
        thread = threading.Thread(target=self._handler_thread, name=f"fairqueue-slot-{self.name}", daemon=True)
        self._threads.append(thread)
        thread.start()

    def _handler_thread(self) -> None:
        while True:
            task = self._tasks.get()
            if task is None:
                return
            outcome = self._execute(task)
            self._outcomes.put(outcome)
            self.app.wakeup.set()
            if task.timed_out:
                return  # a replacement thread already took this slot

    def _execute(self, task: _Task) -> _Outcome:
        record = task.record
        body = json.loads(record.payload)
        ctx = Context(
            app=self.app,
            job_id=record.id,
            org=record.org,
            kind=record.kind,
            attempt=record.attempts,
            chain_depth=record.chain_depth,
            max_depth=body.get("max_depth"),
            finalizer_requeues=body.get("finalizer_requeues", 0),
            cancel=task.cancel,
        )
        error: Optional[BaseException] = None
        try:
            self._call(ctx, record, body)
        except Retry as r:
            return _Outcome(task, JobStatus.QUEUED, error=f"Retry: {r.reason}", retry_at=time.time() + r.after)
        except BaseException as e:  # the job's failure is its own; the worker goes on
            error = e
        result = FinalizerResult(
            job_id=record.id,
            succeeded=error is None,
            exception_type=type(error).__name__ if error else None,
            message=str(error) if error else None,
        )
        # A failed job's own enqueues are rolled back, as its transaction is.
        children = [new for new, _ in ctx.transaction.pending] if error is None else []
        finalizer_note = self._run_finalizers(ctx, result, children)
        if error is not None:
            trace = "".join(traceback.format_exception(type(error), error, error.__traceback__))
            message = f"{type(error).__name__}: {error}"
            log.warning("job %d (%s) failed: %s\n%s", record.id, record.handler, message, trace)
            return _Outcome(task, JobStatus.FAILED, error=message + finalizer_note, children=tuple(children))
        return _Outcome(task, JobStatus.COMPLETED, error=finalizer_note or None, children=tuple(children))

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
        self._in_context(ctx, ctx.transaction, fn, args, kwargs)

    def _in_context(self, ctx: Context, tx: _jobs.Transaction, fn: Callable[..., Any], args: list[Any], kwargs: dict[str, Any]) -> Any:
        tokens = (_jobs._current.set(ctx), _jobs._transaction.set(tx))
        try:
            if _jobs.is_async(fn):
                return asyncio.run_coroutine_threadsafe(self._with_context(ctx, tx, fn, args, kwargs), self._event_loop()).result()
            return fn(*args, **kwargs)
        finally:
            _jobs._transaction.reset(tokens[1])
            _jobs._current.reset(tokens[0])

    @staticmethod
    async def _with_context(ctx: Context, tx: _jobs.Transaction, fn: Callable[..., Any], args: list[Any], kwargs: dict[str, Any]) -> Any:
        # Tasks copy the loop thread's context, not the caller's: set ours inside.
        _jobs._current.set(ctx)
        _jobs._transaction.set(tx)
        return await fn(*args, **kwargs)

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
                self._in_context(fctx, fctx.transaction, finalizer.execute, [fctx, result], {})
            except BaseException as e:
                return f"; finalizer {type(finalizer).__qualname__} failed: {type(e).__name__}: {e}"
            children.extend(new for new, _ in fctx.transaction.pending)
        return ""

    def _event_loop(self) -> asyncio.AbstractEventLoop:
        with self._loop_lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(target=loop.run_forever, name=f"fairqueue-async-{self.name}", daemon=True)
                thread.start()
                self._loop, self._loop_thread = loop, thread
            return self._loop

    def _close_event_loop(self) -> None:
        with self._loop_lock:
            if self._loop is None or self._loop_thread is None:
                return
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._loop_thread.join()
            self._loop.close()
            self._loop = self._loop_thread = None
