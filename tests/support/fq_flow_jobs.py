"""Jobs for the tests of keys, priorities, costs and named queues
(tests/integration/test_job_options.py and test_queues.py). Workers find handlers by
import path, so they live in a real module; the tests point ``app.storage`` at the
store under test and run workers in their own process."""

from __future__ import annotations

import threading
from typing import Any

import fairqueue as fq

app = fq.FairQueue(":memory:", limits=fq.Limits(retry=fq.NO_RETRY))

ran: list[tuple[str, str, int]] = []
"""(handler, tag, job id) of every run, in the order they started."""
_lock = threading.Lock()


def note(handler: str, tag: str) -> None:
    with _lock:
        ran.append((handler, tag, fq.current_context().job_id))


@app.future
def plain(tag: str) -> None:
    note("plain", tag)


@app.future(queue="reports")
def report(tag: str) -> None:
    note("report", tag)


class Child(fq.Queueable):
    """A report child with class-level defaults: its own queue and priority."""

    queue = "reports"
    priority = 7

    def __init__(self, tag: str) -> None:
        self.tag = tag

    def execute(self, ctx: fq.Context) -> Any:
        note("child", self.tag)
        return {"key": ctx.key}


class Parent(fq.Queueable):
    """Chains a Child (taking this job's key), a future told key=None and a future (taking the key)."""

    def __init__(self, tag: str) -> None:
        self.tag = tag

    def execute(self, ctx: fq.Context) -> Any:
        note("parent", self.tag)
        ctx.enqueue(Child(f"{self.tag}-inherits"))
        plain.options(key=None, priority=2, cost=4).delay(ctx.org, f"{self.tag}-keyless")
        plain.delay(ctx.org, f"{self.tag}-future")
        return {"key": ctx.key}


class Chunks(fq.Batchable):
    queue = "reports"
    cost = 3

    def start(self, ctx: fq.Context) -> list[int]:
        return [1, 2, 3]

    def execute(self, ctx: fq.Context, scope: list[Any]) -> None:
        note("chunks", str(scope))
