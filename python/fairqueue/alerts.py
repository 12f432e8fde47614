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

Every event carries an id, the org (None for worker-wide ones), its figures and
the time.

Once per fleet: an org's episode (``wait_predicted`` or ``wait_observed`` of one
org) is open or closed in the store, and a worker sends its start or end only if
its conditional update of that state applied, so N workers send one start and
one end (callbacks run in that worker only). Worker-wide conditions
(``throttle``) are that worker's own.

Webhooks: each event is put in the store's outbox (in the same transaction as its
episode's change), and a worker duty (:mod:`fairqueue.runtime.duties.webhook_delivery`)
POSTs it as JSON, signed the Standard Webhooks way (:func:`signature`), retrying
with capped, jittered exponential back-off until the endpoint answers 2xx; the
outbox survives restarts. Destinations that are not public addresses (loopback,
private, link-local, cloud metadata) are refused unless allowed (:func:`forbidden_address`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any, Optional, Union
from urllib.parse import urlsplit

from fairqueue.errors import InvalidArgument
from fairqueue.observe import explain
from fairqueue.records import JobStatus
from fairqueue.settings import QueueSettings
from fairqueue.storage import Storage
from fairqueue.validate import check_number, shown

__all__ = ["Alerts", "AlertEvent", "Webhook", "forbidden_address", "signature"]

log = logging.getLogger("fairqueue.alerts")

# Orgs whose backlog one evaluation looks at, at most (each costs a few store reads).
_ORGS_PER_EVALUATION = 100
_END_BELOW = 0.8
# Newest jobs of an org whose waits the observed p95 is taken from, at most.
_JOBS_OBSERVED = 500

# Names that always mean this host or a cloud's metadata service, whatever DNS says.
_LOCAL_NAMES = ("localhost", "localhost.localdomain", "metadata.google.internal", "metadata")
# Bytes a signing key must have at least (Standard Webhooks: 24 to 64).
_SECRET_BYTES = 24

Address = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]
Network = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]


def forbidden_address(address: Address) -> bool:
    """Whether a webhook may not be sent to ``address`` unless allowed: anything not a
    public unicast address — loopback, private (RFC 1918, fc00::/7), link-local
    (169.254.0.0/16 with the clouds' metadata address 169.254.169.254, fe80::/10),
    shared (100.64.0.0/10), multicast, reserved, unspecified; an IPv4-mapped IPv6
    address is judged as its IPv4 address."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return not address.is_global or address.is_multicast


def signature(key: bytes, event_id: str, timestamp: int, body: str) -> str:
    """The Standard Webhooks ``webhook-signature`` value: ``v1,`` and the base64 of
    HMAC-SHA256 over ``"{id}.{timestamp}.{body}"`` with ``key``."""
    digest = hmac.new(key, f"{event_id}.{timestamp}.{body}".encode(), hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


@dataclass(frozen=True)
class Webhook:
    """One webhook destination (see :meth:`Alerts.add_webhook`)."""

    url: str
    timeout: float
    key: Optional[bytes]
    """The signing key (None: sent unsigned)."""
    allow: tuple[Union[str, Network], ...] = ()
    """Host names and networks it may reach though they are not public."""

    def allows(self, host: str, address: Address) -> bool:
        """Whether ``host``, resolved to ``address``, may be posted to."""
        if not forbidden_address(address):
            return True
        for entry in self.allow:
            if isinstance(entry, str):
                if entry == host.lower():
                    return True
            elif address in entry or (isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped in entry):
                return True
        return False

    def refusal(self, host: str, address: object) -> str:
        """Why ``host`` (at ``address``) is refused, and how to allow it."""
        where = host if host == str(address) else f"{host} is {address},"
        return (f"webhook URL {shown(self.url)}: {where} not a public address (loopback, private, "
                f"link-local and cloud metadata addresses are refused); to send there anyway, pass "
                f"add_webhook(..., allow_destinations=[{host!r}]) or the network, e.g. '10.0.0.0/8'")  # fmt: skip


def _signing_key(secret: object) -> bytes:
    """The key of ``secret``: a Standard Webhooks ``whsec_<base64>`` secret's bytes, or a
    plain string's UTF-8 bytes."""
    if not isinstance(secret, str):
        raise InvalidArgument(f"invalid webhook secret of type {type(secret).__name__}: expected a string")
    if secret.startswith("whsec_"):
        try:
            key = base64.b64decode(secret[6:], validate=True)
        except ValueError:
            raise InvalidArgument("invalid webhook secret: whsec_ must be followed by base64") from None
    else:
        key = secret.encode()
    if len(key) < _SECRET_BYTES:
        raise InvalidArgument(f"webhook secret too short: {len(key)} bytes, at least {_SECRET_BYTES} "
                              "(e.g. 'whsec_' + base64 of 32 random bytes)")  # fmt: skip
    return key


def _allowances(entries: Iterable[str]) -> tuple[Union[str, Network], ...]:
    if isinstance(entries, str):
        entries = [entries]
    allowed: list[Union[str, Network]] = []
    for entry in entries:
        if not isinstance(entry, str) or not entry:
            raise InvalidArgument(f"invalid allow_destinations entry {shown(entry)}: expected a host name, "
                                  "an address or a network such as '10.0.0.0/8'")  # fmt: skip
        try:
            allowed.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
        except ValueError:
            allowed.append(entry.lower())
    return tuple(allowed)


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
    id: str = field(default_factory=lambda: f"evt_{uuid.uuid4().hex}")
    """Unique per event: a webhook's ``webhook-id`` header, the same on every retry."""

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
        self.pause_threshold: Optional[float] = None
        """Seconds a pause lasts before it starts a ``long_pause`` alert (None: off)."""
        self._callbacks: list[Callable[[AlertEvent], Any]] = []
        self.webhooks: dict[str, Webhook] = {}
        """The webhook destinations, by URL (the delivery duty signs with their keys)."""
        # This process's worker-wide conditions (throttle), and the store's open episodes
        # as last read (key -> start event), so an unchanged condition costs no write.
        self._local: dict[tuple[str, Optional[str]], AlertEvent] = {}
        self._episodes: dict[str, AlertEvent] = {}
        self._lock = threading.Lock()
        self._usage_levels: dict[tuple[str, str], int] = {}

    def configure(
        self, *, wait_threshold: Optional[float], window: float = 300.0, pause_threshold: Optional[float] = None
    ) -> None:
        """Arms (or, with None, disarms) the wait alerts: ``wait_predicted`` and
        ``wait_observed`` (the p95 wait of an org's jobs started in the last ``window``
        seconds above the threshold); and ``long_pause``, when an org (or a kind or key
        of it, or a named queue) has been paused for ``pause_threshold`` seconds."""
        if wait_threshold is not None:
            wait_threshold = check_number("wait_threshold", wait_threshold, above=True)
        if pause_threshold is not None:
            pause_threshold = check_number("pause_threshold", pause_threshold, above=True)
        self.window = check_number("window", window, above=True)
        self.wait_threshold = wait_threshold
        self.pause_threshold = pause_threshold

    def subscribe(self, callback: Callable[[AlertEvent], Any]) -> Callable[[AlertEvent], Any]:
        """Calls ``callback`` with every event (usable as a decorator). Callbacks run in
        the process that noticed the condition (a worker, or the enqueuing service) —
        for an org's episode, in the one worker whose store update started or ended it;
        one that raises is logged and the others still run."""
        if not callable(callback):
            raise InvalidArgument(f"alerts.subscribe takes a callable, not {shown(callback)}")
        self._callbacks.append(callback)
        return callback

    def add_webhook(self, url: str, *, secret: Optional[str] = None, timeout: float = 5.0,
                    allow_destinations: Iterable[str] = ()) -> None:  # fmt: skip
        """POSTs every event as JSON to ``url`` (http or https), from the store's outbox.

        Args:
            url: where to POST; its host must be a public address unless allowed.
            secret: signs each POST the Standard Webhooks way (``webhook-id``,
                ``webhook-timestamp`` and ``webhook-signature`` headers): a
                ``whsec_<base64>`` secret (its decoded bytes are the key) or a plain
                string of at least 24 bytes. None sends unsigned.
            timeout: seconds one POST may take.
            allow_destinations: host names, addresses or networks (``"10.0.0.0/8"``,
                ``"127.0.0.1"``, ``"hooks.internal"``) it may reach though they are
                loopback, private or link-local (checked here and again, on the
                resolved address, at every delivery).

        Raises:
            InvalidArgument: a bad URL, secret or timeout, or a host that is not a
                public address and not allowed.
        """
        parts = urlsplit(url) if isinstance(url, str) else None
        if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
            raise InvalidArgument(f"invalid webhook URL {shown(url)}: expected http://host/path or https://host/path")
        hook = Webhook(url, check_number("timeout", timeout, above=True),
                       None if secret is None else _signing_key(secret), _allowances(allow_destinations))  # fmt: skip
        host = parts.hostname.lower()
        try:
            address: Optional[Address] = ipaddress.ip_address(host)
        except ValueError:
            # A name is resolved at each delivery; names that always mean this host or a
            # metadata service are refused now.
            address = ipaddress.ip_address("127.0.0.1") if host in _LOCAL_NAMES or host.endswith(".localhost") else None
        if address is not None and not hook.allows(host, address):
            raise InvalidArgument(hook.refusal(host, address))
        self.webhooks[url] = hook

    def clear(self) -> None:
        """Forgets every subscription, webhook and this process's view of ongoing conditions."""
        with self._lock:
            self._callbacks.clear()
            self.webhooks.clear()
            self._local.clear()
            self._episodes.clear()
            self._usage_levels.clear()

    @property
    def active(self) -> list[AlertEvent]:
        """The start events of the conditions in progress (this worker's own, and the
        store's open episodes as this process last saw them)."""
        with self._lock:
            return [*self._local.values(), *self._episodes.values()]

    # ----- sending ---------------------------------------------------------------------

    def _deliveries(self, event: AlertEvent) -> list[tuple[str, str]]:
        body = json.dumps(event.to_json(), separators=(",", ":"))
        return [(url, body) for url in self.webhooks]

    def _tell(self, event: AlertEvent) -> None:
        for callback in list(self._callbacks):
            try:
                callback(event)
            except Exception:
                log.exception("alert callback %r failed on %s", callback, event.kind)

    def emit(self, event: AlertEvent) -> None:
        """Sends ``event`` to every subscriber, and puts it in the store's outbox for
        every webhook."""
        self._tell(event)
        if self.webhooks:
            try:
                self.store().webhook_outbox_add(event.id, self._deliveries(event), event.at)
            except Exception:
                log.exception("alert %s %s could not be put in the webhook outbox", event.kind, event.id)

    def condition(self, kind: str, org: Optional[str], on: bool, message: str, figures: dict[str, Any]) -> None:
        """Reports whether a condition holds now; sends ``start`` or ``end`` only on a change.

        An org's condition is an episode in the store: the event goes out only if this
        call's update of it applied (another worker may have made the change first).
        A worker-wide one (``org`` None) is this process's own."""
        event = AlertEvent(kind, "start" if on else "end", org, message, figures)
        if org is None:
            with self._lock:
                if on == ((kind, org) in self._local):
                    return
                if on:
                    self._local[(kind, org)] = event
                else:
                    del self._local[(kind, org)]
            self.emit(event)
            return
        key = f"{kind}:{org}"
        with self._lock:
            if on == (key in self._episodes):
                return
        applied = self.store().alert_episode_set(key, on, event.at, event.id, self._deliveries(event))
        with self._lock:
            if on:
                self._episodes[key] = event
            else:
                self._episodes.pop(key, None)
        if applied:
            self._tell(event)

    def _refresh(self) -> None:
        """Reads which episodes are open now (other workers open and close them too)."""
        open_now = self.store().alert_episodes()
        with self._lock:
            known = self._episodes
            self._episodes = {}
            for key, opened_at in open_now.items():
                kind, _, org = key.partition(":")
                self._episodes[key] = known.get(key) or AlertEvent(kind, "start", org, f"{kind} of org {org!r}",
                                                                   at=opened_at)  # fmt: skip

    def _ongoing(self, kind: str, org: Optional[str]) -> bool:
        with self._lock:
            return (kind, org) in self._local if org is None else f"{kind}:{org}" in self._episodes

    def _above(self, kind: str, org: str, value: float, threshold: float) -> bool:
        """Whether a wait condition holds: it starts above ``threshold`` and, once on,
        ends only below ``_END_BELOW`` of it (hysteresis, so it does not flap)."""
        return value > threshold or (self._ongoing(kind, org) and value > threshold * _END_BELOW)

    # ----- evaluating (a worker calls this about once a second) ----------------------------

    def watching(self) -> bool:
        """True when anyone listens (so enqueues may spend a read on usage alerts)."""
        return bool(self._callbacks or self.webhooks)

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

    def evaluate(self, now: float, started: Iterable[str] = (), *, fleet: bool = False) -> None:
        """Re-checks the predicted wait of every org with queued jobs, and the observed
        wait of those and of ``started`` (orgs whose jobs the caller started lately),
        and with ``fleet`` (the fleet's one evaluator: any worker may have started
        them) of the orgs with jobs running or started within the window among the
        store's newest jobs."""
        if self.pause_threshold is not None:
            self._refresh()
            self._pauses(now, self.pause_threshold)
        if self.wait_threshold is None:
            return
        threshold = self.wait_threshold
        store = self.store()
        self._refresh()
        counts = store.job_counts(live=True)
        orgs = sorted({org for (org, _, status), n in counts.items()
                       if status is JobStatus.QUEUED and n})[:_ORGS_PER_EVALUATION]  # fmt: skip
        if fleet:
            running = {org for (org, _, status), n in counts.items() if status is JobStatus.PROCESSING and n}
            running |= {r.org for r in store.job_list(limit=_JOBS_OBSERVED)
                        if r.started_at is not None and r.started_at >= now - self.window}  # fmt: skip
            started = {*started, *sorted(running)[:_ORGS_PER_EVALUATION]}
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

    def _pauses(self, now: float, threshold: float) -> None:
        """The ``long_pause`` condition of each org (None: of the named queues)."""
        long: dict[Optional[str], list[Any]] = {}
        for (scope, name, _, _), pause in self.settings.fresh().pauses():
            if now - pause.at >= threshold:
                long.setdefault(None if scope == "queue" else name, []).append(pause)
        for org, pauses in sorted(long.items(), key=lambda item: item[0] or ""):
            what = "; ".join(f"{p.scope} paused since {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(p.at))} "
                             f"by {p.by or 'someone unnamed'}" for p in pauses)  # fmt: skip
            figures = {"scopes": [p.scope for p in pauses], "since": min(p.at for p in pauses), "threshold": threshold}
            self.condition("long_pause", org, True, f"paused for over {threshold:g} s: {what}", figures)
        for event in self.active:
            if event.kind == "long_pause" and event.org not in long:
                who = f"org {event.org!r}" if event.org is not None else "the named queues"
                self.condition("long_pause", event.org, False, f"{who}: no long pause any more", {})

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
