"""A worker's periodic duties, one module each.

Every duty has ``every`` (seconds between runs) and ``run(now)``; the worker's
loop runs each one when it is due. Each takes the store, the core or the
alerts it needs — never the worker — so it can be tested alone with an
in-memory store and a virtual clock.
"""

from __future__ import annotations

from typing import Protocol

__all__ = ["Duty"]


class Duty(Protocol):
    """One periodic duty of a worker."""

    every: float
    """Seconds between two runs."""

    def run(self, now: float) -> None:
        """Does the duty once, at time ``now``."""
