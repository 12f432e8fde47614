"""Alert evaluation: the dispatcher's extended delays become history and alerts,
and the wait alerts are re-checked about once a second."""

from __future__ import annotations

import logging

from fairqueue._core import Dispatcher
from fairqueue.alerts import AlertEvent, Alerts
from fairqueue.records import HistoryEntry
from fairqueue.runtime.duties.history_sampling import HistorySampling

__all__ = ["AlertEvaluation"]

log = logging.getLogger("fairqueue.worker")


class AlertEvaluation:
    """Turns the core's events into history and alerts, and evaluates the wait alerts.

    Args:
        alerts: the app's alerts.
        core: the worker's dispatcher, whose events are taken.
        history: where extended delays are recorded.
        every: seconds between evaluations.
    """

    def __init__(self, alerts: Alerts, core: Dispatcher, history: HistorySampling, every: float) -> None:
        self.alerts = alerts
        self.core = core
        self.history = history
        self.every = every
        self._started: set[str] = set()

    def job_started(self, org: str) -> None:
        """Notes that a job of ``org`` started (its observed wait is checked next time)."""
        self._started.add(org)

    def run(self, now: float) -> None:
        """Records and announces the core's extended delays, then evaluates the wait alerts."""
        for event in self.core.take_events():
            if event.get("event") != "extended_delay":
                continue
            org, until = str(event["org"]), event["until"]
            assert isinstance(until, (int, float))
            self.history.record(HistoryEntry(
                now, "extended_delay", org, float(until), {"kind": event["kind"], "count": event["count"]}
            ))  # fmt: skip
            if self.alerts.watching():
                self.alerts.emit(AlertEvent(
                    "extended_delay", "once", org,
                    f"org {org!r}: {event['count']} {event['kind']} jobs put back until {until:.0f} "
                    "(every job in the peek set was its, at its cap)",
                    {"kind": event["kind"], "count": event["count"], "until": until},
                ))  # fmt: skip
        started, self._started = self._started, set()
        try:
            self.alerts.evaluate(now, started)
        except Exception:
            log.exception("fairqueue worker: evaluating alerts failed")
