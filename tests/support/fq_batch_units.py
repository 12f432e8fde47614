"""Jobs the unit tests of the batch runner and the periodic duties run
(``tests/unit/test_batch_runner.py``, ``tests/unit/duties/``).

The batch runner finds a batch's class by import path, so the classes live in a
real module. Each job carries a ``tag`` (one per test); what its phases did is
appended to ``events[tag]``, in order, so a test reads only its own job's story.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Iterable, Iterator
from typing import Any

from fairqueue.jobs import Batchable, Context, Queueable

events: defaultdict[str, list[tuple[Any, ...]]] = defaultdict(list)
"""What each tag's job did: ``("start",)``, ``("execute", record ids, seen)``, ``("finish", seen)``."""

closed: defaultdict[str, threading.Event] = defaultdict(threading.Event)
"""Set when a :class:`Streamed` batch's generator is closed (its ``with`` blocks end)."""


class Noop(Queueable):
    """A queueable that does nothing: what schedules fire and batch chunks chain."""

    def __init__(self, tag: str, after: Any = None) -> None:
        self.tag = tag
        self.after = after

    def execute(self, ctx: Context) -> None:
        events[self.tag].append(("noop", self.after))


class Numbers(Batchable):
    """``n`` records ``{"id": "r<i>", "n": i}`` from a list (so their total is known).

    ``execute`` counts what it saw in ``self.seen``, enqueues one :class:`Noop`
    child per chunk when ``chain`` is set, then raises ValueError if the chunk
    holds one of the ids in ``fail_on``.
    """

    def __init__(self, tag: str, n: int, *, fail_on: Iterable[str] = (), chain: bool = False) -> None:
        self.tag = tag
        self.n = n
        self.fail_on = list(fail_on)
        self.chain = chain
        self.seen = 0

    def start(self, ctx: Context) -> Iterable[Any]:
        events[self.tag].append(("start",))
        return [{"id": f"r{i}", "n": i} for i in range(self.n)]

    def execute(self, ctx: Context, scope: list[Any]) -> None:
        ids = [r["id"] for r in scope]
        events[self.tag].append(("execute", ids, self.seen))
        self.seen += len(scope)
        if self.chain:
            ctx.enqueue(Noop(self.tag, after=ids[0]))
        bad = [i for i in ids if i in self.fail_on]
        if bad:
            raise ValueError(f"bad record {bad[0]}")

    def finish(self, ctx: Context) -> None:
        events[self.tag].append(("finish", self.seen))


class Tally(Numbers):
    """:class:`Numbers` whose state is carried from chunk to chunk and to ``finish``."""

    stateful = True


class Plain(Batchable):
    """``n`` plain integers (no ``id``: an error event names them by position); every chunk fails."""

    def __init__(self, tag: str, n: int) -> None:
        self.tag = tag
        self.n = n

    def start(self, ctx: Context) -> Iterable[Any]:
        return range(self.n)

    def execute(self, ctx: Context, scope: list[Any]) -> None:
        events[self.tag].append(("execute", list(scope)))
        raise KeyError("no such row")


class Streamed(Batchable):
    """``n`` records from a generator (no length), which sets ``closed[tag]`` when it is closed."""

    def __init__(self, tag: str, n: int) -> None:
        self.tag = tag
        self.n = n

    def start(self, ctx: Context) -> Iterator[Any]:
        events[self.tag].append(("start",))
        try:
            for i in range(self.n):
                yield {"id": f"s{i}"}
        finally:
            closed[self.tag].set()

    def execute(self, ctx: Context, scope: list[Any]) -> None:
        events[self.tag].append(("execute", [r["id"] for r in scope]))

    def finish(self, ctx: Context) -> None:
        events[self.tag].append(("finish",))


class BrokenSource(Batchable):
    """A batch whose ``start`` raises: no chunk runs, ``finish`` still does."""

    def __init__(self, tag: str) -> None:
        self.tag = tag

    def start(self, ctx: Context) -> Iterable[Any]:
        raise RuntimeError("source down")

    def execute(self, ctx: Context, scope: list[Any]) -> None:
        events[self.tag].append(("execute", list(scope)))

    def finish(self, ctx: Context) -> None:
        events[self.tag].append(("finish",))
