"""Jobs the tests enqueue. Workers find handlers by import path, so they live in a
real module (on the test path via pytest's ``pythonpath`` and, for worker
subprocesses, ``PYTHONPATH``).

The app's store comes from ``FQ_STORE`` so a test and its worker subprocesses share
one SQLite file; side effects are appended to ``FQ_EFFECTS`` (one line per run,
written with O_APPEND so lines from several processes never interleave).
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from typing import Any

import fairqueue as fq

app = fq.FairQueue(
    os.environ.get("FQ_STORE", ":memory:"),
    limits=fq.Limits(
        slots=int(os.environ.get("FQ_SLOTS", "4")),
        lease=float(os.environ.get("FQ_LEASE", "60")),
        # FQ_CAP=none: fair_share's default, no cap.
        cap=None if os.environ.get("FQ_CAP") == "none" else int(os.environ.get("FQ_CAP", "12")),
        timeouts={"future": 2.0, "queueable": 2.0, "batch": 2.0, "scheduled": 2.0},
        # These tests are about other things than retries (tests/integration/test_lifecycle.py):
        # a job that raises fails at once, as it did before retry policies.
        retry=fq.NO_RETRY,
    ),
)

runs: list[Any] = []
"""In-process record of what ran, for tests whose worker runs in the same process."""
release = threading.Event()
"""Blocking jobs wait on this; tests set it to let them finish."""


def effect(line: str) -> None:
    """Records a side effect observable from outside the process."""
    path = os.environ.get("FQ_EFFECTS")
    if path:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, f"{line}\n".encode())
        finally:
            os.close(fd)


@app.future
def record(tag: str) -> None:
    ctx = fq.current_context()
    runs.append((tag, ctx.org, ctx.job_id))
    effect(str(ctx.job_id))


@app.future
async def record_async(tag: str) -> None:
    await asyncio.sleep(0.001)
    runs.append((tag, fq.current_context().org))


@app.future
def spin(seconds: float) -> None:
    """A job that takes real time."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        time.sleep(0.001)
    effect(str(fq.current_context().job_id))


@app.future
def spin_logged(seconds: float) -> None:
    """Like spin, logging "start|end org job_id wall-time pid" lines so tests can
    replay how many of an org's jobs overlapped across processes, and where."""
    ctx = fq.current_context()
    effect(f"start {ctx.org} {ctx.job_id} {time.time():.6f} {os.getpid()}")
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        time.sleep(0.001)
    effect(f"end {ctx.org} {ctx.job_id} {time.time():.6f} {os.getpid()}")


@app.future
def poisoned() -> None:
    raise RuntimeError("poisoned job: raises every time")


@app.future
def hang() -> None:
    time.sleep(3600)


@app.future
def die() -> None:
    os._exit(17)


@app.future
def nested_future() -> None:
    record.delay("org-x", "from a future")


@app.future
def wait_for_release() -> None:
    ctx = fq.current_context()
    runs.append(("started", ctx.job_id))
    while not release.wait(0.005):
        if ctx.cancelled:
            runs.append(("cancelled", ctx.job_id))
            return


@app.future(timeout=0.3)
def quick_timeout() -> None:
    time.sleep(3600)


class Chain(fq.Queueable):
    def __init__(self, n: int, until: int) -> None:
        self.n = n
        self.until = until

    def execute(self, ctx: fq.Context) -> None:
        runs.append(("chain", self.n, ctx.chain_depth, ctx.job_id))
        if self.n < self.until:
            ctx.enqueue(Chain(self.n + 1, self.until))


class TwoChildren(fq.Queueable):
    def execute(self, ctx: fq.Context) -> None:
        ctx.enqueue(Chain(0, 0))
        ctx.enqueue(Chain(0, 0))


class Flaky(fq.Queueable):
    """Asks for a retry on its first delivery."""

    retry = fq.RetryPolicy(max_attempts=3)

    def execute(self, ctx: fq.Context) -> None:
        runs.append(("flaky", ctx.attempt))
        if ctx.attempt == 1:
            raise fq.Retry(after=0.0, reason="first try fails")


class Fails(fq.Queueable):
    def __init__(self, finalizer: bool = True) -> None:
        self.finalizer = finalizer

    def execute(self, ctx: fq.Context) -> None:
        if self.finalizer:
            ctx.attach_finalizer(Report())
        ctx.enqueue(Chain(0, 0))  # rolled back with the failed job
        raise ValueError("boom")


class Succeeds(fq.Queueable):
    def execute(self, ctx: fq.Context) -> None:
        ctx.attach_finalizer(Report())


class Report(fq.Finalizer):
    def execute(self, ctx: fq.Context, result: fq.FinalizerResult) -> None:
        runs.append(("finalizer", result.job_id, result.succeeded, result.exception_type, result.message))


class RetryForever(fq.Queueable):
    """Fails every time; its finalizer re-enqueues it, which the limit must stop."""

    def execute(self, ctx: fq.Context) -> None:
        runs.append(("attempt", ctx.finalizer_requeues))
        ctx.attach_finalizer(Requeue())
        raise RuntimeError("always fails")


class Requeue(fq.Finalizer):
    def execute(self, ctx: fq.Context, result: fq.FinalizerResult) -> None:
        ctx.enqueue(RetryForever())


class Payload(fq.Queueable):
    def __init__(self, data: Any) -> None:
        self.data = data

    def execute(self, ctx: fq.Context) -> None:
        runs.append(("payload", self.data))


@app.future
def noop() -> None:
    """Does nothing: for measuring the runtime's own cost."""


class Numbers(fq.Batchable):
    """Records {"id": 0} … {"id": n - 1}, from a generator; chunks whose records
    include an id in ``fail_ids`` raise. Each chunk appends ("chunk", ids) to runs."""

    def __init__(self, n: int, fail_ids: tuple[int, ...] = (), pause: float = 0.0) -> None:
        self.n = n
        self.fail_ids = list(fail_ids)
        self.pause = pause

    def start(self, ctx: fq.Context) -> Any:
        return ({"id": i} for i in range(self.n))

    def execute(self, ctx: fq.Context, scope: list[Any]) -> None:
        ids = [r["id"] for r in scope]
        effect(f"start {ids[0]}")
        if self.pause:
            time.sleep(self.pause)
        runs.append(("chunk", ids))
        if any(i in self.fail_ids for i in ids):
            raise ValueError(f"chunk from {ids[0]} refuses")
        effect(f"end {ids[0]}")

    def finish(self, ctx: fq.Context) -> None:
        runs.append(("finish", ctx.job_id))
        effect("finish")


class Summing(fq.Batchable):
    """A stateful batch: the running total is carried from chunk to chunk into finish."""

    stateful = True

    def __init__(self, n: int) -> None:
        self.n = n
        self.total = 0

    def start(self, ctx: fq.Context) -> Any:
        return list(range(self.n))

    def execute(self, ctx: fq.Context, scope: list[Any]) -> None:
        self.total += sum(scope)

    def finish(self, ctx: fq.Context) -> None:
        runs.append(("total", self.total))


class Rows(fq.Batchable):
    """A batch over a SQL query on the user's own database: a DB-API cursor."""

    def __init__(self, url: str, query: str) -> None:
        self.url = url
        self.query = query

    def start(self, ctx: fq.Context) -> Any:
        # A generator: its connection closes when the batch has read the last row.
        if self.url.startswith("postgresql://"):
            import psycopg

            with psycopg.connect(self.url) as conn:
                yield from conn.execute(self.query)
            return
        import sqlite3
        from contextlib import closing

        with closing(sqlite3.connect(self.url)) as db:
            yield from db.execute(self.query)

    def execute(self, ctx: fq.Context, scope: list[Any]) -> None:
        runs.append(("rows", [row[0] for row in scope]))


class Blank(fq.Batchable):
    """Yields ``n`` records and does nothing with them: for measuring memory."""

    def __init__(self, n: int) -> None:
        self.n = n

    def start(self, ctx: fq.Context) -> Any:
        return ({"id": i, "name": f"record {i}"} for i in range(self.n))

    def execute(self, ctx: fq.Context, scope: list[Any]) -> None:
        pass


class Names(fq.AsyncProcessor):
    """An AsyncProcessor: records its records; raises on a record named "bad"."""

    threshold = 10
    scope = 4

    def inner_execute(self, records: list[Any]) -> None:
        runs.append(("names", [r["id"] for r in records]))
        if any(r.get("name") == "bad" for r in records):
            raise ValueError("a bad name")
