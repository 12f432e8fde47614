"""Batch jobs (the reference platform's Batch Apex): ``start`` yields the records,
``execute`` runs once per chunk, ``finish`` once at the end.

A batch is one job of kind ``batch`` whose record shows its progress (items
processed and, once known, total; failed chunks as ``error_count``). Each chunk
is a delivery of its own: after a chunk the job goes back to the queue, so every
chunk is one request through the fair dispatcher, and one transaction commits
the chunk's outcome, the jobs it enqueued, the next chunk number, the carried
state and the error event if it failed.

Records are never all in memory and never stored. A worker pages through the
iterable ``start`` returned (a list, a generator, a DB-API cursor over your own
database) on a thread of its own, one chunk at a time, and keeps it between
chunks; only chunk boundaries (the next chunk's number) and progress are
persisted. A generator is closed when the batch is done with it, so a
connection opened in a ``with`` block inside ``start`` is closed then. A chunk that lands on a worker
without the iterator — another process, or a restart after a crash — calls
``start`` again and skips the finished chunks' records, so ``start`` must yield
the same records in the same order each time (a query with ``ORDER BY``). A
crash re-runs at most the chunk that was running; finished chunks never run again.
"""

from __future__ import annotations

import itertools
import json
import logging
import queue
import sys
import threading
import time
import traceback
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sized
from typing import TYPE_CHECKING, Any, ClassVar, Optional

from fairqueue import jobs as _jobs
from fairqueue.errors import HandlerNotFound, InvalidArgument
from fairqueue.jobs import Context
from fairqueue.records import BatchErrorEvent, JobRecord, JobStatus, NewJob, Progress

if TYPE_CHECKING:
    from fairqueue.runner import Outcome, Runner

__all__ = ["Batchable", "DEFAULT_SCOPE", "MAX_SCOPE"]

log = logging.getLogger("fairqueue.batch")

DEFAULT_SCOPE = 200
"""Records per chunk unless the batch asks for another size."""
MAX_SCOPE = 2000
"""The most records one chunk may hold."""
# Pagers a worker keeps between chunks; one left behind by a batch that moved on
# to another process is closed once this many newer ones exist.
_KEPT_PAGERS = 64


class Batchable:
    """Base class of a batch job: subclass it and write ``start``, ``execute`` and
    (optionally) ``finish``.

    The instance's attributes are its state (JSON). With ``stateful = True`` the
    state ``execute`` leaves behind is carried to the next chunk and to ``finish``;
    otherwise every chunk (and ``finish``) starts from the state the batch was
    enqueued with.
    """

    stateful: ClassVar[bool] = False

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


def batch_payload(job: Batchable, scope: int, max_bytes: int, *, single_chunk: bool = False) -> tuple[str, str]:
    """The import path and the initial payload of a batch, checked. ``single_chunk``:
    every record in one chunk, then ``finish``, in one delivery (an AsyncProcessor's
    queueable)."""
    if not isinstance(job, Batchable):
        raise InvalidArgument(f"invalid batch {job!r}: expected an instance of a fairqueue.Batchable subclass")
    if not single_chunk and (not isinstance(scope, int) or isinstance(scope, bool) or not 1 <= scope <= MAX_SCOPE):
        raise InvalidArgument(f"invalid scope {scope!r}: expected 1 to {MAX_SCOPE} records per chunk")
    path = _jobs.import_path(type(job))
    _jobs.check_importable(path, type(job))
    state = dict(vars(job))
    body = {"state": state, "carried": state, "scope": scope, "chunk": 0, "single_chunk": single_chunk}
    return path, _jobs.encode(body, f"the state of {path}", max_bytes)


def record_id(record: Any, position: int) -> Any:
    """How an error event names a record: its ``"id"`` key or ``id`` attribute, else its position."""
    if isinstance(record, dict) and "id" in record:
        return record["id"]
    found = getattr(record, "id", None)
    if isinstance(found, (int, str)):
        return found
    return position


class _Pager:
    """Pages through one batch's records on a thread of its own.

    ``start`` runs on that thread and the iterator it returns is only ever
    advanced there: a DB-API cursor may be bound to the thread that opened its
    connection (sqlite3's is), while a batch's chunks run on whichever handler
    thread is free.
    """

    def __init__(self, runner: Runner, ctx: Context, job: Batchable, skip: int) -> None:
        self.position = skip
        self._requests: queue.SimpleQueue[Optional[int]] = queue.SimpleQueue()
        self._replies: queue.SimpleQueue[tuple[Optional[list[Any]], Optional[BaseException], Optional[int]]] = (
            queue.SimpleQueue()
        )
        self._thread = threading.Thread(
            target=self._run, args=(runner, ctx, job, skip), name=f"fairqueue-batch-{ctx.job_id}", daemon=True
        )
        self._thread.start()

    def _run(self, runner: Runner, ctx: Context, job: Batchable, skip: int) -> None:
        iterator: Optional[Iterator[Any]] = None
        total: Optional[int] = None
        while True:
            n = self._requests.get()
            if n is None:
                # A generator's ``with`` blocks (the connection it opened) end here, on its own thread.
                close = getattr(iterator, "close", None)
                if callable(close):
                    try:
                        close()
                    except Exception:
                        log.exception("batch %d: closing its records' iterator failed", ctx.job_id)
                return
            try:
                if iterator is None:
                    source: Iterable[Any] = runner._in_context(ctx, job.start, [ctx], {})
                    total = len(source) if isinstance(source, Sized) else None
                    iterator = iter(source)
                    next(itertools.islice(iterator, skip, skip), None)  # the finished chunks' records
                self._replies.put((list(itertools.islice(iterator, n)), None, total))
            except BaseException as e:
                self._replies.put((None, e, total))
                iterator = None

    def next_chunk(self, n: int) -> tuple[Optional[list[Any]], Optional[BaseException], Optional[int]]:
        """The next ``n`` records (fewer at the end), or the error ``start`` or the
        iterator raised; and the total, if the iterable has a length."""
        self._requests.put(n)
        records, error, total = self._replies.get()
        self.position += len(records or ())
        return records, error, total

    def close(self) -> None:
        self._requests.put(None)


class BatchRunner:
    """Runs one delivery (one chunk, or the finish) of a batch job."""

    def __init__(self, runner: Runner) -> None:
        self.runner = runner
        self._pagers: OrderedDict[int, _Pager] = OrderedDict()
        self._lock = threading.Lock()

    def execute(self, ctx: Context, record: JobRecord, body: dict[str, Any]) -> Outcome:
        from fairqueue.runner import Outcome

        cls = _jobs.resolve(record.handler)
        if not (isinstance(cls, type) and issubclass(cls, Batchable)):
            raise HandlerNotFound(f"{record.handler!r} is not a fairqueue.Batchable subclass")
        scope, chunk = int(body["scope"]), int(body["chunk"])
        job = _restore(cls, body["carried"] if cls.stateful else body["state"])
        errors: list[BatchErrorEvent] = []
        processed, total = record.items_processed, record.items_total
        children: list[NewJob] = []

        def failed(phase: str, error: BaseException, records: list[Any], first: int) -> None:
            ids = [record_id(r, first + i) for i, r in enumerate(records)]
            errors.append(BatchErrorEvent(
                job_id=record.id, org=record.org, phase=phase, chunk=chunk if phase == "EXECUTE" else None,
                record_ids=ids, exception_type=type(error).__name__, message=str(error),
                traceback="".join(traceback.format_exception(type(error), error, error.__traceback__)), at=time.time(),
            ))  # fmt: skip
            log.warning("batch %d (%s) %s failed: %s: %s", record.id, record.handler, phase, type(error).__name__, error)

        def run(fn: Any, *args: Any) -> Optional[BaseException]:
            phase_ctx = _phase_context(ctx)
            try:
                self.runner._in_context(phase_ctx, fn, [phase_ctx, *args], {})
            except BaseException as e:
                return e
            children.extend(new for new, _ in phase_ctx.transaction.pending)
            return None

        pager = self._pager(ctx, record.id, _restore(cls, body["state"]), chunk * scope)
        # A single-chunk job (an AsyncProcessor's queueable) takes every record there is now.
        records, error, known_total = pager.next_chunk(sys.maxsize if body.get("single_chunk") else scope)
        total = total if total is not None else known_total
        if error is not None:
            failed("START", error, [], 0)
        if records:
            error = run(job.execute, records)
            if error is not None:
                failed("EXECUTE", error, records, chunk * scope)
                children.clear()  # a failed chunk's enqueues roll back with it
            processed += len(records)
            if body.get("single_chunk"):
                records = []  # an AsyncProcessor's queueable: all its records were this one chunk
        if records:
            carried = dict(vars(job)) if cls.stateful else body["carried"]
            next_body = {**body, "chunk": chunk + 1, "carried": carried}
            payload = _jobs.encode(next_body, f"the state of {record.handler}", self.runner.app.limits.max_payload_bytes)
            progress = Progress(payload, processed, total, record.error_count + bool(errors), tuple(errors))
            return Outcome(JobStatus.QUEUED, retry_at=None, children=tuple(children), progress=progress)
        # The records ran out (or could not be read): the finish phase, in this same delivery.
        self._drop(record.id)
        error = run(job.finish)
        if error is not None:
            failed("FINISH", error, [], 0)
        count = record.error_count + len(errors)
        progress = Progress(record.payload, processed, processed, count, tuple(errors))
        note = f"{count} of its chunks or phases failed; see app.batch_errors({record.id})" if count else None
        return Outcome(JobStatus.COMPLETED, error=note, children=tuple(children), progress=progress)

    def _pager(self, ctx: Context, job_id: int, job: Batchable, position: int) -> _Pager:
        """The pager positioned at ``position``: this process's own, or a new one that
        calls ``start`` again and skips to it (another process ran the last chunk,
        or this one restarted)."""
        with self._lock:
            pager = self._pagers.pop(job_id, None)
            if pager is not None and pager.position != position:
                pager.close()
                pager = None
            if pager is None:
                pager = _Pager(self.runner, _phase_context(ctx), job, position)
            self._pagers[job_id] = pager
            while len(self._pagers) > _KEPT_PAGERS:
                self._pagers.popitem(last=False)[1].close()
            return pager

    def _drop(self, job_id: int) -> None:
        with self._lock:
            pager = self._pagers.pop(job_id, None)
        if pager is not None:
            pager.close()

    def close(self) -> None:
        """Stops every pager thread."""
        with self._lock:
            pagers, self._pagers = list(self._pagers.values()), OrderedDict()
        for pager in pagers:
            pager.close()


def _restore(cls: type[Batchable], state: dict[str, Any]) -> Batchable:
    """An instance with a fresh copy of ``state`` (execute may change it)."""
    job = cls.__new__(cls)
    vars(job).update(json.loads(json.dumps(state)))
    return job


def _phase_context(ctx: Context) -> Context:
    """A fresh context (and transaction) per phase, so a failed chunk's enqueues are dropped alone."""
    return Context(
        app=ctx.app, job_id=ctx.job_id, org=ctx.org, kind=ctx.kind, attempt=ctx.attempt, chain_depth=ctx.chain_depth,
        max_depth=ctx.max_depth, finalizer_requeues=ctx.finalizer_requeues, cancel=ctx._cancel,
    )  # fmt: skip


