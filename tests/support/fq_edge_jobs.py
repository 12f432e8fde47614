"""Jobs for the edge-input property tests: an app on the in-memory store whose
handlers always succeed, so any job that does not complete was refused too late."""

from __future__ import annotations

from typing import Any

import fairqueue as fq

app = fq.FairQueue(":memory:")


@app.future
def accept(a: Any = None, b: Any = None, *rest: Any, **named: Any) -> None:
    """Takes whatever it is given."""


@app.future
def pair(a: Any, b: Any = None) -> None:
    """One or two arguments, the second by name or position."""


class Note(fq.Queueable):
    def __init__(self, value: Any) -> None:
        self.value = value

    def execute(self, ctx: fq.Context) -> None:
        pass


class Rows(fq.Batchable):
    def __init__(self, n: int) -> None:
        self.n = n

    def start(self, ctx: fq.Context) -> list[int]:
        return list(range(self.n))

    def execute(self, ctx: fq.Context, scope: list[Any]) -> None:
        pass
