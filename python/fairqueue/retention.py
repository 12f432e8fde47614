"""Retention: how long finished jobs, history, usage counters and batch error events
are kept before a worker's pruner deletes them (see :mod:`fairqueue.runtime.duties.pruning`).

Every duration is in seconds; None keeps that kind of record forever.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Optional

from fairqueue.errors import InvalidArgument
from fairqueue.records import JobStatus
from fairqueue.validate import MAX_SECONDS, shown

__all__ = ["Retention", "HOUR", "DAY", "SAMPLED_HISTORY", "DOWNSAMPLE_STEP", "prune_order"]

HOUR = 3600.0
DAY = 24 * HOUR


@dataclass(frozen=True)
class Retention:
    """How long each kind of record is kept after it stops changing.

    Args:
        completed: seconds a completed job is kept after it finished (1 day: long enough
            to look at yesterday's runs, ``handle.wait`` and results; the bulk of
            every store is completed jobs).
        discarded: seconds a job discarded after its last retry is kept (7 days: a
            week to notice, look at its errors and re-run it).
        failed: seconds a failed job is kept (7 days, as discarded).
        aborted: seconds an aborted job is kept (7 days, as discarded).
        history: seconds recorded history (pending and running per org, throttling,
            extended delays) is kept (30 days: a month of charts).
        history_full: seconds history is kept at full resolution (a sample every 5 s);
            older samples are thinned to one point per minute per org and kind, the
            minute's highest (1 day). Must not exceed ``history``.
        batch_errors: seconds a batch error event is kept, even while its batch job
            is kept longer (7 days); events always go with their job.

    Raises:
        InvalidArgument: a duration that is not a number of seconds above 0 (at most
            ten years) or None, or ``history_full`` longer than ``history``.
    """

    completed: Optional[float] = DAY
    discarded: Optional[float] = 7 * DAY
    failed: Optional[float] = 7 * DAY
    aborted: Optional[float] = 7 * DAY
    history: Optional[float] = 30 * DAY
    history_full: Optional[float] = DAY
    batch_errors: Optional[float] = 7 * DAY

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None:
                continue
            number = float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else math.nan
            if not (math.isfinite(number) and 0 < number <= MAX_SECONDS):
                raise InvalidArgument(
                    f"invalid Retention {f.name}={shown(value)}: expected seconds greater than 0 and at most "
                    f"{MAX_SECONDS:,.0f} (ten years), or None to keep forever"
                )
            object.__setattr__(self, f.name, number)
        if self.history is not None and self.history_full is not None and self.history_full > self.history:
            raise InvalidArgument(
                f"invalid Retention history_full={self.history_full:g}: expected at most history={self.history:g} "
                "(history is deleted before it could be thinned)"
            )

    def finished_before(self, now: float) -> dict[JobStatus, float]:
        """For each finished status kept for a limited time, the finish time before which
        its jobs are deleted at ``now``."""
        cutoffs = {}
        for status in JobStatus:
            keep = getattr(self, status.value, None) if status.finished else None
            if keep is not None:
                cutoffs[status] = now - keep
        return cutoffs

    def history_before(self, now: float) -> Optional[float]:
        """History recorded before this is deleted at ``now`` (None: never)."""
        return None if self.history is None else now - self.history

    def downsample_before(self, now: float) -> Optional[float]:
        """History samples recorded before this are thinned at ``now`` (None: never)."""
        return None if self.history_full is None else now - self.history_full

    def batch_errors_before(self, now: float) -> Optional[float]:
        """Batch error events recorded before this are deleted at ``now`` (None: never)."""
        return None if self.batch_errors is None else now - self.batch_errors


SAMPLED_HISTORY = ("pending", "running")
"""The history kinds that are samples (every 5 s per org), thinned after ``history_full``;
the others are events (throttling, extended delays), kept whole until ``history``."""

DOWNSAMPLE_STEP = 60.0
"""Seconds per point of thinned history: one per minute, org and kind."""


def prune_order(finished_before: Mapping[JobStatus, float]) -> list[tuple[JobStatus, float]]:
    """``finished_before``'s (status, cutoff) pairs in status order, refusing a status a
    job can still leave (only finished jobs may be pruned)."""
    for status in finished_before:
        if not JobStatus(status).finished:
            raise InvalidArgument(f"cannot prune {JobStatus(status).value!r} jobs: only finished jobs are pruned")
    return sorted(((JobStatus(s), float(c)) for s, c in finished_before.items()), key=lambda sc: sc[0].value)
