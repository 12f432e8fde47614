"""Alerts: callbacks and webhooks told when waits grow, before jobs are late.

``app.alerts.configure(wait_threshold=60)`` arms the wait alerts; running
workers evaluate them about once a second. Each condition sends one ``start``
event when it begins and one ``end`` event when it is over (no storm while it
lasts):

- ``wait_predicted``: the estimated wait of an org's queued backlog (its newest
  queued job, from :func:`fairqueue.observe.explain`'s estimate) is above the
  threshold: sent as soon as the estimate crosses it, before the jobs are late.
  It ends when the estimate falls below 80 % of the threshold (hysteresis).
- ``wait_observed``: the p95 wait of an org's jobs started in the last
  ``window`` seconds is above the threshold (ends below 80 % of it).
- ``throttle``: resource conservation started or stopped holding a worker back.

And single (``once``) events: ``extended_delay`` (the peek_set policy put an
org's jobs back), ``daily_limit`` (an org reached 80 % or 100 % of its daily
limit), ``flex_full`` (an org's flex queue refused a batch).

Every event carries the org (None for worker-wide ones), its figures and the
time. Webhooks receive the event as JSON in a POST, sent from a background
thread so a slow endpoint never holds up a worker.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
import urllib.request
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any, Optional
from urllib.parse import urlsplit

from fairqueue.errors import InvalidArgument
from fairqueue.observe import explain
from fairqueue.records import JobStatus
from fairqueue.settings import QueueSettings
from fairqueue.storage import Storage
from fairqueue.validate import check_number, shown

__all__ = ["Alerts", "AlertEvent"]

log = logging.getLogger("fairqueue.alerts")

# Orgs whose backlog one evaluation looks at, at most (each costs a few store reads).
_ORGS_PER_EVALUATION = 100
_END_BELOW = 0.8
# Newest jobs of an org whose waits the observed p95 is taken from, at most.
_JOBS_OBSERVED = 500


@dataclass(frozen=True)
class AlertEvent:
    """Something an operator should know about, now."""

    kind: str
    """``wait_predicted``, ``throttle``, ``extended_delay``, ``daily_limit`` or ``flex_full``."""
    state: str
    """``start``, ``end`` or ``once``."""
    org: Optional[str]
    message: str
    figures: dict[str, Any] = field(default_factory=dict)
    at: float = field(default_factory=time.time)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (what webhooks receive)."""
        return asdict(self)


class Alerts:
    """An app's alert subscriptions and the state of its ongoing conditions.

    Args:
        store: returns the store to evaluate (the app's current one).
        settings: the queue's settings (explain's estimates read them).
    """

    def __init__(self, store: Callable[[], Storage], settings: QueueSettings) -> None:
        self.store = store
        self.settings = settings
        self.wait_threshold: Optional[float] = None
        """Seconds of wait that start ``wait_predicted`` and ``wait_observed`` alerts (None: off)."""
        self.window = 300.0
        """Seconds of started jobs the observed p95 wait is measured over."""
        self._callbacks: list[Callable[[AlertEvent], Any]] = []
        self._webhooks: list[tuple[str, float]] = []
        self._active: dict[tuple[str, Optional[str]], AlertEvent] = {}
        self._lock = threading.Lock()
        self._outbox: Optional[queue.SimpleQueue[tuple[str, float, AlertEvent]]] = None
        self._usage_levels: dict[tuple[str, str], int] = {}

    def configure(self, *, wait_threshold: Optional[float], window: float = 300.0) -> None:
        """Arms (or, with None, disarms) the wait alerts: ``wait_predicted`` and
        ``wait_observed`` (the p95 wait of an org's jobs started in the last ``window``
        seconds above the threshold)."""
        if wait_threshold is not None:
            wait_threshold = check_number("wait_threshold", wait_threshold, above=True)
        self.window = check_number("window", window, above=True)
        self.wait_threshold = wait_threshold

    def subscribe(self, callback: Callable[[AlertEvent], Any]) -> Callable[[AlertEvent], Any]:
        """Calls ``callback`` with every event (usable as a decorator). Callbacks run in
        the process that noticed the condition (a worker, or the enqueuing service);
        one that raises is logged and the others still run."""
        if not callable(callback):
            raise InvalidArgument(f"alerts.subscribe takes a callable, not {shown(callback)}")
        self._callbacks.append(callback)
        return callback

    def add_webhook(self, url: str, *, timeout: float = 5.0) -> None:
        """POSTs every event as JSON to ``url`` (http or https)."""
        if urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).netloc:
            raise InvalidArgument(f"invalid webhook URL {shown(url)}: expected http://host/path or https://host/path")
        self._webhooks.append((url, timeout))

    def clear(self) -> None:
        """Forgets every subscription, webhook and ongoing condition."""
        with self._lock:
            self._callbacks.clear()
            self._webhooks.clear()
            self._active.clear()
            self._usage_levels.clear()

    @property
    def active(self) -> list[AlertEvent]:
        """The start events of the conditions in progress."""
        with self._lock:
            return list(self._active.values())

    # ----- sending ---------------------------------------------------------------------

    def emit(self, event: AlertEvent) -> None:
        """Sends ``event`` to every subscriber and webhook."""
        for callback in list(self._callbacks):
            try:
                callback(event)
            except Exception:
                log.exception("alert callback %r failed on %s", callback, event.kind)
        for url, timeout in self._webhooks:
            self._post(url, timeout, event)

    def condition(self, kind: str, org: Optional[str], on: bool, message: str, figures: dict[str, Any]) -> None:
        """Reports whether a condition holds now; sends ``start`` or ``end`` only on a change."""
        key = (kind, org)
        with self._lock:
            was = key in self._active
            if on == was:
                return
            event = AlertEvent(kind, "start" if on else "end", org, message, figures)
            if on:
                self._active[key] = event
            else:
                del self._active[key]
        self.emit(event)

    def _ongoing(self, kind: str, org: Optional[str]) -> bool:
        with self._lock:
            return (kind, org) in self._active

    def _above(self, kind: str, org: str, value: float, threshold: float) -> bool:
        """Whether a wait condition holds: it starts above ``threshold`` and, once on,
        ends only below ``_END_BELOW`` of it (hysteresis, so it does not flap)."""
        return value > threshold or (self._ongoing(kind, org) and value > threshold * _END_BELOW)

    def _post(self, url: str, timeout: float, event: AlertEvent) -> None:
        if self._outbox is None:
            self._outbox = queue.SimpleQueue()
            threading.Thread(target=self._send_loop, name="fairqueue-webhooks", daemon=True).start()
        self._outbox.put((url, timeout, event))

    def _send_loop(self) -> None:
        assert self._outbox is not None
        while True:
            url, timeout, event = self._outbox.get()
            body = json.dumps(event.to_json()).encode()
            request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"}, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=timeout):
                    pass
            except OSError as e:
                log.warning("alert webhook %s failed for %s: %s", url, event.kind, e)

    # ----- evaluating (a worker calls this about once a second) ----------------------------

    def watching(self) -> bool:
        """True when anyone listens (so enqueues may spend a read on usage alerts)."""
        return bool(self._callbacks or self._webhooks)

    def usage(self, org: str, count: int, limit: int) -> None:
        """Sends ``daily_limit`` once each time ``org`` crosses 80 % and 100 % of its limit."""
        level = 100 if count >= limit else 80 if count >= 0.8 * limit else 0
        key = ("daily_limit", org)
        with self._lock:
            previous = self._usage_levels.get(key, 0)
            self._usage_levels[key] = level
        if level > previous:
            self.emit(AlertEvent("daily_limit", "once", org, f"org {org!r} is at {level} % of its daily limit "
                                 f"({count:,} of {limit:,} async executions in 24 hours)",
                                 {"count": count, "limit": limit, "percent": level}))  # fmt: skip

    def evaluate(self, now: float, started: Iterable[str] = ()) -> None:
        """Re-checks the predicted wait of every org with queued jobs, and the observed
        wait of those and of ``started`` (orgs whose jobs the caller started lately)."""
        if self.wait_threshold is None:
            return
        threshold = self.wait_threshold
        store = self.store()
        orgs = sorted({org for (org, _, status), n in store.job_counts(live=True).items()
                       if status is JobStatus.QUEUED and n})[:_ORGS_PER_EVALUATION]  # fmt: skip
        for org in orgs:
            found = store.job_list(org=org, status=JobStatus.QUEUED, limit=1)
            if not found:
                continue
            newest = found[0]
            answer = explain(store, self.settings, newest.id, now=now)
            if answer.estimated_start is None:
                continue
            predicted = answer.estimated_start - newest.created_at
            figures = {"predicted_wait": round(predicted, 3), "threshold": threshold, "job_id": newest.id,
                       "basis": answer.estimate_basis}  # fmt: skip
            on = self._above("wait_predicted", org, predicted, threshold)
            message = (
                f"org {org!r}: its queued jobs are predicted to wait {predicted:.1f} s, over the {threshold:g} s threshold"
                if on
                else f"org {org!r}: predicted wait back to {predicted:.1f} s"
            )
            self.condition("wait_predicted", org, on, message, figures)
            self._observe(org, now, threshold)
        observed = set(orgs)
        for org in sorted(set(started) - observed):
            self._observe(org, now, threshold)
            observed.add(org)
        for event in self.active:
            if event.kind == "wait_predicted" and event.org not in orgs:
                self.condition("wait_predicted", event.org, False, f"org {event.org!r}: no jobs waiting any more", {})
            elif event.kind == "wait_observed" and event.org is not None and event.org not in observed:
                self._observe(event.org, now, threshold)

    def _observe(self, org: str, now: float, threshold: float) -> None:
        """The ``wait_observed`` condition of ``org``: its started jobs' p95 wait over the window."""
        waits = sorted(
            r.started_at - max(r.created_at, r.run_at or r.created_at)
            for r in self.store().job_list(org=org, limit=_JOBS_OBSERVED)
            if r.started_at is not None and r.started_at >= now - self.window
        )
        if not waits:
            if self._ongoing("wait_observed", org):
                self.condition("wait_observed", org, False, f"org {org!r}: no job started in the window any more", {})
            return
        p95 = waits[min(len(waits) - 1, int(0.95 * len(waits)))]
        figures = {"p95_wait": round(p95, 3), "threshold": threshold, "window": self.window, "jobs": len(waits)}
        on = self._above("wait_observed", org, p95, threshold)
        message = (
            f"org {org!r}: p95 wait {p95:.1f} s over the last {self.window:g} s, above the {threshold:g} s threshold"
            if on
            else f"org {org!r}: p95 wait back to {p95:.1f} s"
        )
        self.condition("wait_observed", org, on, message, figures)
