"""Pruning: deletes what the app's :class:`~fairqueue.retention.Retention` no longer
keeps — finished jobs (with their results and batch error events), old history
(thinned to a point a minute first), usage counters past the daily window, old
batch error events and idle rate-limit states — in bounded batches, so no delete holds the store for long.

Every worker runs it; the store lets one delete at a time (PostgreSQL: a tried
advisory lock, SQLite: its one writer), so more workers never mean more deleting.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Optional

from fairqueue.retention import Retention
from fairqueue.storage import Storage

__all__ = ["BATCH", "BUDGET", "PRUNE_EVERY", "RECLAIM_PAGES", "Pruned", "Pruning", "prune"]

log = logging.getLogger("fairqueue.worker")

PRUNE_EVERY = 30.0
"""Seconds between two pruning runs of a worker that is caught up."""
RATE_STATE_KEPT = 60.0
"""Seconds past its theoretical arrival time a rate limit's state is kept (then it is
the same as none: the scope has its whole burst)."""
BATCH = 1_000
"""Rows one delete transaction removes at most: a few milliseconds of the store's write lock."""
BUDGET = 0.2
"""Seconds of batches one run goes on for at most (it runs in the worker's loop, between
turns); a run that stops with work left runs again a second later, not after PRUNE_EVERY."""
RECLAIM_PAGES = 2_000
"""Pages (8 MB at SQLite's 4 KiB) one run hands back to the file system at most; only a
run an interval after one that caught up hands any back (see :meth:`Pruning.run`)."""


@dataclass
class Pruned:
    """What a pruning pass deleted (or, dry, would delete)."""

    jobs: int = 0
    history: int = 0
    usage: int = 0
    rate_states: int = 0
    batch_errors: int = 0
    reclaimed_pages: int = 0
    done: bool = True
    """False if the pass stopped at its time budget with more to delete."""
    by_status: dict[str, int] = field(default_factory=dict)
    """Jobs per status (``dry_run`` passes only, which count each status on its own)."""

    @property
    def rows(self) -> int:
        """Rows deleted in all."""
        return self.jobs + self.history + self.usage + self.batch_errors + self.rate_states


def prune(
    store: Storage,
    retention: Retention,
    now: float,
    *,
    batch: int = BATCH,
    budget: Optional[float] = None,
    dry_run: bool = False,
    reclaim: int = 0,
) -> Pruned:
    """Deletes what ``retention`` no longer keeps at ``now``, ``batch`` rows per store
    transaction, until nothing is left or ``budget`` seconds have passed (None: no
    limit; every step still gets one batch). ``reclaim`` pages of free space are
    handed back first (see :meth:`Storage.space_reclaim`). ``dry_run`` counts instead,
    in one read per step and per job status."""
    pruned = Pruned()
    deadline = None if budget is None else time.monotonic() + budget
    if reclaim and not dry_run:
        pruned.reclaimed_pages = store.space_reclaim(reclaim)
    if dry_run:
        for status, cutoff in retention.finished_before(now).items():
            pruned.by_status[status.value] = store.job_prune({status: cutoff}, 2**62, dry_run=True)
        pruned.jobs = sum(pruned.by_status.values())
        batch = 2**62
    steps: list[tuple[str, Callable[[int], int]]] = []
    finished_before = retention.finished_before(now)
    if finished_before and not dry_run:
        steps.append(("jobs", lambda n: store.job_prune(finished_before, n)))
    errors_before = retention.batch_errors_before(now)
    if errors_before is not None:
        steps.append(("batch_errors", lambda n: store.batch_errors_prune(errors_before, n, dry_run=dry_run)))
    history_before, thin_before = retention.history_before(now), retention.downsample_before(now)
    if history_before is not None or thin_before is not None:
        steps.append(("history", lambda n: store.history_prune(history_before, thin_before, n, dry_run=dry_run)))
    steps.append(("usage", lambda n: store.usage_prune(now, n, dry_run=dry_run)))
    steps.append(("rate_states", lambda n: store.rate_state_prune(now - RATE_STATE_KEPT, n, dry_run=dry_run)))
    for name, step in steps:
        while True:
            n = step(batch)
            setattr(pruned, name, getattr(pruned, name) + n)
            if n < batch or dry_run:
                break
            if deadline is not None and time.monotonic() >= deadline:
                pruned.done = False
                break
    return pruned


class Pruning:
    """Prunes the store by the app's retention every :data:`PRUNE_EVERY` seconds, or
    every second while a run left work behind (it checks every second).

    Args:
        store: the store to prune.
        retention: what to keep, and for how long.
        every: seconds between two checks (the worker's duty interval).
        interval: seconds between runs once caught up.
        batch: rows per delete transaction.
        budget: seconds of batches per run.
    """

    def __init__(self, store: Storage, retention: Retention, every: float = 1.0, interval: float = PRUNE_EVERY,
                 batch: int = BATCH, budget: float = BUDGET) -> None:  # fmt: skip
        self.store = store
        self.retention = retention
        self.every = every
        self.interval = interval
        self.batch = batch
        self.budget = budget
        self._next = 0.0
        self.total = Pruned()
        """What this duty has deleted so far (``done``: whether its last run caught up)."""

    def run(self, now: float) -> None:
        """Runs a pass if one is due; a store error is logged and the pass tried again later."""
        if now < self._next:
            return
        # Free pages are handed back only after a whole interval in which the store's inserts
        # could reuse them (the last run caught up): right after a run's deletes they are
        # what the next inserts need, and handing them back would only make the file grow again.
        reclaim = RECLAIM_PAGES if self.total.done else 0
        try:
            pruned = prune(self.store, self.retention, now, batch=self.batch, budget=self.budget, reclaim=reclaim)
        except Exception:
            log.exception("fairqueue worker: pruning the store failed; trying again in %.0f s", self.interval)
            self._next = now + self.interval
            return
        for name in ("jobs", "history", "usage", "batch_errors", "reclaimed_pages"):
            setattr(self.total, name, getattr(self.total, name) + getattr(pruned, name))
        self.total.done = pruned.done
        # Left work behind: go on next second; else wait the interval.
        self._next = now + (self.interval if pruned.done else self.every)
        if pruned.rows:
            log.debug("fairqueue worker: pruned %d jobs, %d history entries, %d usage counters, %d batch error events",
                      pruned.jobs, pruned.history, pruned.usage, pruned.batch_errors)  # fmt: skip
