"""Jobs for the flow-control tests across hosts (tests/integration/test_flow_control_hosts.py):
real ``fairqueue worker`` processes run them on one shared store.

The app's store comes from ``FQ_STORE``, its slots and code-level (org, kind) cap from
``FQ_SLOTS`` and ``FQ_CAP``. Every run appends "start|end org key job_id wall-time pid"
lines to ``FQ_EFFECTS`` (O_APPEND: lines from several processes never interleave), so a
test can replay overlaps, start rates and slot-time from outside the workers. A job
without a key logs ``-`` as its key; a batch chunk logs ``<job id>.<chunk>`` as its id.
"""

from __future__ import annotations

import os
import time
from typing import Any, Optional

import fairqueue as fq

app = fq.FairQueue(
    os.environ.get("FQ_STORE", ":memory:"),
    limits=fq.Limits(
        slots=int(os.environ.get("FQ_SLOTS", "4")),
        cap=int(os.environ.get("FQ_CAP", "12")),
        # The tests enqueue queueable backlogs in a few transactions.
        queueables_per_sync_transaction=1_000,
        # These tests are about flow control: a job that raises fails at once.
        retry=fq.NO_RETRY,
    ),
)

NO_KEY = "-"
"""How a line names the key of a job that has none."""


def effect(line: str) -> None:
    """Appends one line to ``FQ_EFFECTS`` in a single write."""
    path = os.environ.get("FQ_EFFECTS")
    if path:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, f"{line}\n".encode())
        finally:
            os.close(fd)


def run_logged(ctx: fq.Context, seconds: float, job: Optional[str] = None) -> None:
    """Logs the start, runs ``seconds`` of wall time (mostly asleep: two cores are
    shared by every worker and the database), logs the end."""
    key = ctx.key or NO_KEY
    job = job or str(ctx.job_id)
    effect(f"start {ctx.org} {key} {job} {time.time():.6f} {os.getpid()}")
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        time.sleep(min(0.002, max(0.0, end - time.monotonic())))
    effect(f"end {ctx.org} {key} {job} {time.time():.6f} {os.getpid()}")


@app.future
def work(seconds: float) -> None:
    """A future that takes ``seconds``."""
    run_logged(fq.current_context(), seconds)


class Work(fq.Queueable):
    """A queueable that takes ``seconds``: a second kind of the same org."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def execute(self, ctx: fq.Context) -> None:
        run_logged(ctx, self.seconds)


class Chunks(fq.Batchable):
    """A batch of ``chunks`` one-record chunks, each taking ``seconds``: a third kind.
    Each chunk is a request of its own through the dispatcher."""

    def __init__(self, chunks: int, seconds: float) -> None:
        self.chunks = chunks
        self.seconds = seconds

    def start(self, ctx: fq.Context) -> Any:
        return list(range(self.chunks))

    def execute(self, ctx: fq.Context, scope: list[Any]) -> None:
        run_logged(ctx, self.seconds, f"{ctx.job_id}.{scope[0]}")
