"""Alert evaluation: the dispatcher's extended delays become history and alerts,
and the wait alerts are re-checked about once a second — by one worker of the fleet.

Which one: the live registered worker whose name sorts first (read from the
store's registry each time). Not an election of its own in the store, because the
registry already is one: its proof of life (a lock the worker's process or
connection holds) is lost the moment a worker dies, so the next name takes over
within a second, with no lease to expire and no new table. Two workers may both
evaluate for a second (one that sorts first has just joined, or just left): that
costs one second's reads twice and sends nothing twice, since an org's episode is
opened and closed by a conditional update in the store (see :mod:`fairqueue.alerts`).
"""

from __future__ import annotations

import logging
from typing import Optional

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
        worker: this worker's name in the store's registry: the wait alerts are
            evaluated only while it is the live worker whose name sorts first. None:
            always evaluated here (a worker with no registry, a test).
    """

    def __init__(self, alerts: Alerts, core: Dispatcher, history: HistorySampling, every: float,
                 worker: Optional[str] = None) -> None:  # fmt: skip
        self.alerts = alerts
        self.core = core
        self.history = history
        self.every = every
        self.worker = worker
        self._started: set[str] = set()
        self.evaluated = 0
        """Times this worker evaluated the wait alerts (the others skip them)."""

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
        if self.alerts.wait_threshold is None and self.alerts.pause_threshold is None:
            return
        try:
            if self.worker is None:
                self.alerts.evaluate(now, started)
                self.evaluated += 1
            elif self._evaluator():
                # The fleet's evaluator: it reads which orgs' jobs any worker started lately
                # (it only knows its own).
                self.alerts.evaluate(now, started, fleet=True)
                self.evaluated += 1
        except Exception:
            log.exception("fairqueue worker: evaluating alerts failed")

    def _evaluator(self) -> bool:
        """Whether this worker is the live registered worker whose name sorts first (or
        none is live: its own proof of life is being taken again)."""
        live = sorted(w.info.name for w in self.alerts.store().worker_list() if w.alive)
        return not live or live[0] == self.worker
