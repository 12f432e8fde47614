"""Jobs of the handler-path unit tests (tests/unit/test_handler_path.py): what a
handler sees of its context and transaction, from its own thread, from threads
it starts and on the event loop."""

from __future__ import annotations

import contextvars
import threading
from typing import Any

import fairqueue as fq
from fairqueue.jobs import current_transaction

app = fq.FairQueue(":memory:", limits=fq.Limits(retry=fq.NO_RETRY))

THREADS = 8
"""How many threads :class:`FanOut` enqueues from at once."""


@app.future
def noop() -> None:
    """Does nothing."""


@app.future
def whoami() -> list[Any]:
    """The running job's id, and whether the open transaction is the context's own."""
    ctx = fq.current_context()
    return [ctx.job_id, current_transaction() is ctx.transaction]


@app.future
async def whoami_async() -> list[Any]:
    """As ``whoami``, on the runner's event loop."""
    ctx = fq.current_context()
    return [ctx.job_id, current_transaction() is ctx.transaction]


class FanOut(fq.Queueable):
    """Enqueues one future from each of ``THREADS`` threads started with its context, all at once."""

    def execute(self, ctx: fq.Context) -> None:
        start = threading.Barrier(THREADS)

        def one() -> None:
            start.wait()
            noop.delay(ctx.org)

        threads = [threading.Thread(target=contextvars.copy_context().run, args=(one,)) for _ in range(THREADS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()


class Plain(fq.Queueable):
    """Does nothing (a queueable path that a future-kind record may wrongly name)."""

    def execute(self, ctx: fq.Context) -> None:
        pass
