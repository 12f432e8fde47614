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
        timeouts={"future": 2.0, "queueable": 2.0, "batch": 2.0, "scheduled": 2.0},
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
