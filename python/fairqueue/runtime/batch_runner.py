"""Running batch jobs (the reference platform's Batch Apex): ``start`` yields the records,
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
from collections.abc import Callable, Iterable, Iterator, Sized
from typing import Any, Optional

from fairqueue.errors import HandlerNotFound
from fairqueue.handlers import resolve
from fairqueue.jobs import Batchable, Context, encode
from fairqueue.records import BatchErrorEvent, JobRecord, JobStatus, NewJob, Progress
from fairqueue.retry import RetryPolicy
from fairqueue.runtime.outcome import Outcome

__all__ = ["BatchRunner", "record_id"]

log = logging.getLogger("fairqueue.batch")

# Pagers a worker keeps between chunks; one left behind by a batch that moved on
# to another process is closed once this many newer ones exist.
_KEPT_PAGERS = 64

Call = Callable[[Context, Callable[..., Any], list[Any], dict[str, Any]], Any]
"""How a phase's function is called as the job of a context (``Runner.in_context``)."""


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

    def __init__(self, call: Call, ctx: Context, job: Batchable, skip: int) -> None:
        self.position = skip
        self.exhausted = False
        """True once a read returned fewer records than asked for: the records ran out."""
        self._requests: queue.SimpleQueue[Optional[int]] = queue.SimpleQueue()
        self._replies: queue.SimpleQueue[tuple[Optional[list[Any]], Optional[BaseException], Optional[int]]] = (
            queue.SimpleQueue()
        )
        self._thread = threading.Thread(
            target=self._run, args=(call, ctx, job, skip), name=f"fairqueue-batch-{ctx.job_id}", daemon=True
        )
        self._thread.start()

    def _run(self, call: Call, ctx: Context, job: Batchable, skip: int) -> None:
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
                    source: Iterable[Any] = call(ctx, job.start, [ctx], {})
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
        self.exhausted = error is None and len(records or ()) < n
        return records, error, total

    def close(self) -> None:
        self._requests.put(None)


class BatchRunner:
    """Runs one delivery (one chunk, or the finish) of a batch job.

    Args:
        call: calls a phase's function as the job of a context (``Runner.in_context``).
        max_payload_bytes: the limit the next chunk's payload is encoded under.
        policy: the retry policy of a batch (a failed chunk is run again by it before
            it becomes an error event).
    """

    def __init__(self, call: Call, max_payload_bytes: int, policy: Callable[[JobRecord], RetryPolicy]) -> None:
        self.call = call
        self.max_payload_bytes = max_payload_bytes
        self.policy = policy
        """The retry policy of a batch's record (a failed chunk is retried by it)."""
        self._pagers: OrderedDict[int, _Pager] = OrderedDict()
        self._lock = threading.Lock()

    def execute(self, ctx: Context, record: JobRecord, body: dict[str, Any]) -> Outcome:
        """Runs the delivery of ``record`` whose payload is ``body``."""
        cls = resolve(record.handler)
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
            phase_ctx = ctx.derive()
            try:
                self.call(phase_ctx, fn, [phase_ctx, *args], {})
            except BaseException as e:
                return e
            children.extend(phase_ctx.children)
            return None

        pager = self._pager(ctx, record.id, _restore(cls, body["state"]), chunk * scope)
        # A single-chunk job (an AsyncProcessor's queueable) takes every record there is now.
        records, error, known_total = pager.next_chunk(sys.maxsize if body.get("single_chunk") else scope)
        total = total if total is not None else known_total
        if error is not None:
            failed("START", error, [], 0)
        if records:
            error = run(job.execute, records)
            if error is not None and not body.get("single_chunk"):
                retry = self._retry_chunk(record, body, error, total)
                if retry is not None:
                    return retry
            if error is not None:
                failed("EXECUTE", error, records, chunk * scope)
                children.clear()  # a failed chunk's enqueues roll back with it
            processed += len(records)
            if body.get("single_chunk"):
                records = []  # an AsyncProcessor's queueable: all its records were this one chunk
        if records:
            carried = dict(vars(job)) if cls.stateful else body["carried"]
            next_body = {**body, "chunk": chunk + 1, "carried": carried}
            next_body.pop("chunk_attempts", None)  # the next chunk starts its attempts afresh
            payload = encode(next_body, f"the state of {record.handler}", self.max_payload_bytes)
            progress = Progress(payload, processed, total, record.error_count + bool(errors), tuple(errors))
            return Outcome(JobStatus.QUEUED, retry_at=None, children=tuple(children), progress=progress)
        # The records ran out (or could not be read): the finish phase, in this same delivery.
        self._drop(record.id)
        if body.get("single_chunk") and not cls.stateful:
            job = _restore(cls, body["state"])  # finish starts from the enqueued state, as after a chunk
        error = run(job.finish)
        if error is not None:
            failed("FINISH", error, [], 0)
        count = record.error_count + len(errors)
        progress = Progress(record.payload, processed, processed, count, tuple(errors))
        note = f"{count} of its chunks or phases failed; see app.batch_errors({record.id})" if count else None
        return Outcome(JobStatus.COMPLETED, error=note, children=tuple(children), progress=progress)

    def _retry_chunk(self, record: JobRecord, body: dict[str, Any], error: BaseException,
                     total: Optional[int]) -> Optional[Outcome]:  # fmt: skip
        """The same chunk again later, if the batch's policy retries ``error`` and has
        attempts left for it; None once it is to become an error event."""
        policy = self.policy(record)
        attempt = int(body.get("chunk_attempts", 0)) + 1
        if not policy.retries(error) or attempt >= policy.max_attempts:
            return None
        delay = policy.delay(attempt)
        chunk = int(body["chunk"])
        message = f"chunk {chunk} failed attempt {attempt} of {policy.max_attempts}: {type(error).__name__}: {error}"
        log.warning("batch %d (%s) %s; retrying in %.1f s", record.id, record.handler, message, delay,
                    extra={"job_id": record.id, "org": record.org, "kind": record.kind, "attempt": attempt})  # fmt: skip
        payload = encode({**body, "chunk_attempts": attempt}, f"the state of {record.handler}", self.max_payload_bytes)
        progress = Progress(payload, record.items_processed, total, record.error_count, ())
        # The chunk's records are read again (start is called anew and skips to them).
        return Outcome(JobStatus.QUEUED, error=f"{message}; retrying", retry_at=time.time() + delay, progress=progress)

    def _pager(self, ctx: Context, job_id: int, job: Batchable, position: int) -> _Pager:
        """The pager positioned at ``position``: this process's own, or a new one that
        calls ``start`` again and skips to it (another process ran the last chunk,
        or this one restarted)."""
        with self._lock:
            pager = self._pagers.pop(job_id, None)
            # The finish delivery's position counts a short last chunk as full: a pager
            # that ran out of records before it has nothing more to read either way.
            if pager is not None and pager.position != position and not (pager.exhausted and position > pager.position):
                pager.close()
                pager = None
            if pager is None:
                pager = _Pager(self.call, ctx.derive(), job, position)
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
