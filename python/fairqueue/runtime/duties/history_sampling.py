"""History sampling: what explain and the dashboard read later — each org's
pending and running jobs every few seconds (the graph of seed 001), and the
throttle periods and extended delays other parts of the worker report."""

from __future__ import annotations

import logging

from fairqueue.records import HistoryEntry, JobStatus
from fairqueue.storage import Storage

__all__ = ["HistorySampling", "SAMPLE_EVERY"]

log = logging.getLogger("fairqueue.worker")

SAMPLE_EVERY = 5.0
"""Seconds between two samples of each org's pending and running jobs."""


class HistorySampling:
    """Samples the store's per-org counts and writes reported history entries.

    Args:
        store: where history is kept (and the counts are read).
        every: seconds between writes of the reported entries.
    """

    def __init__(self, store: Storage, every: float) -> None:
        self.store = store
        self.every = every
        self._entries: list[HistoryEntry] = []
        self._last_sample = 0.0

    def record(self, entry: HistoryEntry) -> None:
        """Keeps ``entry`` for the next write."""
        self._entries.append(entry)

    def run(self, now: float) -> None:
        """Samples the counts if a sample is due (once per interval across every
        worker sharing the store, near enough), then writes what was reported."""
        try:
            if now - self._last_sample >= SAMPLE_EVERY:
                self._last_sample = now
                self._sample(now)
            if self._entries:
                entries, self._entries = self._entries, []
                self.store.history_append(entries)
        except Exception:
            log.exception("fairqueue worker: recording history failed")

    def _sample(self, now: float) -> None:
        if self.store.history_read(now - SAMPLE_EVERY * 0.9, ["pending"]):
            return  # another worker sampled within this interval
        per_org: dict[str, list[int]] = {}
        for (org, _, status), n in self.store.job_counts(live=True).items():
            counts = per_org.setdefault(org, [0, 0])
            if status in (JobStatus.QUEUED, JobStatus.HOLDING):
                counts[0] += n
            elif status is JobStatus.PROCESSING:
                counts[1] += n
        for org, (pending, running) in sorted(per_org.items()):
            if pending or running:
                self._entries.append(HistoryEntry(now, "pending", org, pending, {}))
                self._entries.append(HistoryEntry(now, "running", org, running, {}))
