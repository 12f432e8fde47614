"""Jobs of an app with fair_share's defaults (no cap, no rate limit): a thread-mode
worker on the embedded store takes its usual turns in native code
(``Storage.job_turn_in_line``). The store is set by each test (``app.storage``)."""

from __future__ import annotations

import threading
import time
from typing import Any

import fairqueue as fq

app = fq.FairQueue(
    ":memory:",
    limits=fq.Limits(slots=8, lease=60, timeouts={"future": 5.0, "queueable": 5.0, "batch": 5.0, "scheduled": 5.0},
                     retry=fq.NO_RETRY),  # fmt: skip
)

runs: list[Any] = []
"""(tag, org, job id) of each run, appended by the handlers."""
release = threading.Event()
"""``blocked`` jobs wait on this."""
gate = threading.Event()
"""``gated`` jobs wait on this."""


@app.future
def record(tag: str) -> None:
    ctx = fq.current_context()
    runs.append((tag, ctx.org, ctx.job_id))


@app.future
def fails(tag: str) -> None:
    runs.append((tag, fq.current_context().org, fq.current_context().job_id))
    raise ValueError(f"{tag} refuses")


@app.future
def answer(n: int) -> int:
    return n * 2


class Parent(fq.Queueable):
    """Enqueues one child, which records ``{tag}-child``."""

    def __init__(self, tag: str, child: bool = True) -> None:
        self.tag = tag
        self.child = child

    def execute(self, ctx: fq.Context) -> None:
        runs.append((self.tag, ctx.org, ctx.job_id))
        if self.child:
            ctx.enqueue(Parent(f"{self.tag}-child", child=False))


@app.future
def blocked(tag: str) -> None:
    runs.append((tag, fq.current_context().org, fq.current_context().job_id))
    release.wait(30)


@app.future
def gated(tag: str) -> None:
    runs.append((tag, fq.current_context().org, fq.current_context().job_id))
    gate.wait(30)


@app.future(timeout=0.3)
def hangs() -> None:
    time.sleep(3)


class Numbers(fq.Batchable):
    """Records ``{"id": i}`` for i < n."""

    def __init__(self, n: int) -> None:
        self.n = n

    def start(self, ctx: fq.Context) -> Any:
        return ({"id": i} for i in range(self.n))

    def execute(self, ctx: fq.Context, scope: list[Any]) -> None:
        runs.append(("chunk", ctx.org, [r["id"] for r in scope]))


@app.future(timeout=4.0)
def brief(tag: str, opened_by: str) -> None:
    """Runs until ``gate`` or ``release`` opens (``opened_by``); a test opens it well
    within the 4 s timeout."""
    runs.append((tag, fq.current_context().org, fq.current_context().job_id))
    (gate if opened_by == "gate" else release).wait(30)
