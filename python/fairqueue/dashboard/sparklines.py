"""Each org's pending jobs over the last hour, as the overview's sparklines.

The store's history holds a sample of every busy org's pending jobs every few
seconds (:mod:`fairqueue.runtime.duties.history_sampling`): an hour of it for
10,000 busy orgs is millions of rows, too many to read for every page of the
overview. So the dashboard keeps each org's peak per two-minute bucket (30 of
them: an hour) in memory and reads only what was recorded since its last read,
at most once per :data:`REFRESH` seconds, whatever the number of pages asked
for. The first read is the whole hour, once.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, Optional

from fairqueue.records import HistoryEntry

__all__ = ["Sparklines", "POINTS", "STEP", "REFRESH"]

POINTS = 30
"""Points per sparkline."""
STEP = 120.0
"""Seconds per point: 30 of them make the last hour."""
REFRESH = 5.0
"""Seconds a read of the history is reused (workers sample every 5 s)."""
# Seconds read again before the last read's end: a worker writes its samples a moment
# after it takes them, so a sample may land behind the newest one already read.
# Peaks are maxima, so reading a sample twice changes nothing.
_OVERLAP = 30.0


class Sparklines:
    """Peak pending jobs per org and per :data:`STEP` seconds, over the last :data:`POINTS` steps.

    Args:
        read: reads the history at or after a time, as :meth:`Storage.history_read`
            (the pending samples are the ones used).
        clock: wall-clock seconds.
    """

    def __init__(self, read: Callable[[float, list[str]], list[HistoryEntry]], clock: Callable[[], float] = time.time) -> None:
        self._read = read
        self._clock = clock
        self._peaks: dict[str, dict[int, float]] = {}
        self._sampled: set[int] = set()
        """Buckets in which any org was sampled: in those, an org with no sample had none pending."""
        self._read_to: Optional[float] = None
        self._read_at = -math.inf
        self._first: Optional[int] = None
        self._lock = threading.Lock()

    def series(self, orgs: Iterable[str]) -> tuple[dict[str, Any], dict[str, list[Optional[float]]]]:
        """Where the points are (``{"start", "step", "points"}``: the first bucket's start
        time) and each of ``orgs``'s peaks, oldest first (None: nothing was sampled then,
        no worker was running)."""
        with self._lock:
            now = self._clock()
            self._refresh(now)
            last = int(now // STEP)
            buckets = range(last - POINTS + 1, last + 1)
            lines = {}
            for org in orgs:
                peaks = self._peaks.get(org, {})
                lines[org] = [peaks.get(b, 0.0) if b in self._sampled else None for b in buckets]
        return {"start": buckets[0] * STEP, "step": STEP, "points": POINTS}, lines

    def _refresh(self, now: float) -> None:
        if now - self._read_at < REFRESH:
            return
        first = int(now // STEP) - POINTS + 1
        since = first * STEP if self._read_to is None else max(first * STEP, self._read_to - _OVERLAP)
        entries = self._read(since, ["pending"])
        for e in entries:
            if e.org is None:
                continue
            bucket = int(e.at // STEP)
            self._sampled.add(bucket)
            peaks = self._peaks.setdefault(e.org, {})
            peaks[bucket] = max(peaks.get(bucket, 0.0), e.value)
        self._read_to = max([self._read_to or since, *(e.at for e in entries)])
        self._read_at = now
        if first == self._first:
            return
        # A bucket fell out of the hour (every STEP seconds): forget it, and the orgs
        # left with nothing in the hour.
        self._first = first
        self._sampled = {b for b in self._sampled if b >= first}
        for org in list(self._peaks):
            kept = {b: v for b, v in self._peaks[org].items() if b >= first}
            if kept:
                self._peaks[org] = kept
            else:
                del self._peaks[org]
