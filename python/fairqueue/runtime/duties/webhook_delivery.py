"""Webhook delivery: POSTs the events in the store's outbox, signed, until each is taken.

Every worker runs it; each claims a few due deliveries at a time (PostgreSQL: rows
locked by another claimer are skipped; SQLite: its one writer), so each is posted
by one worker at a time, and a delivery a worker claimed but never settled (it
died) is claimed again once its hold lapses. Posting happens on a thread of the
duty's own, so a slow endpoint never holds up the worker's loop.

A POST answered 2xx is delivered; anything else (another status, a refused or
timed-out connection, a destination that now resolves to a forbidden address) is
tried again after a capped, jittered exponential back-off (1 s, 2 s, 4 s … at most
:data:`RETRY_MOST`), for :data:`GIVE_UP_AFTER` seconds from the event; receivers
drop a repeated ``webhook-id``, since a delivery may arrive twice (at least once).
"""

from __future__ import annotations

import http.client
import ipaddress
import logging
import random
import socket
import ssl
import threading
import time
from typing import Optional, Union
from urllib.parse import urlsplit

from fairqueue.alerts import Alerts, Webhook, signature
from fairqueue.storage import Storage
from fairqueue.storage.interface import WebhookDelivery

__all__ = ["GIVE_UP_AFTER", "KEEP_DELIVERED", "RETRY_FIRST", "RETRY_MOST", "WebhookDelivering", "post"]

log = logging.getLogger("fairqueue.worker")

RETRY_FIRST = 1.0
"""Seconds before the first retry; each failure doubles it."""
RETRY_MOST = 600.0
"""Seconds between two attempts at most."""
GIVE_UP_AFTER = 3 * 24 * 3600.0
"""Seconds from an event after which its delivery is given up on (kept, with its last error)."""
KEEP_DELIVERED = 7 * 24 * 3600.0
"""Seconds delivered and given-up deliveries stay in the outbox before pruning."""
_BATCH = 10
_PRUNE_EVERY = 3600.0


class _PinnedHTTPConnection(http.client.HTTPConnection):
    """Connects to the address that was checked, not to a second lookup of the host
    (DNS rebinding could answer differently between the check and the connect)."""

    def __init__(self, host: str, port: Optional[int], address: str, timeout: float) -> None:
        super().__init__(host, port, timeout=timeout)
        self.address = address

    def connect(self) -> None:
        self.sock = socket.create_connection((self.address, self.port), self.timeout)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """As :class:`_PinnedHTTPConnection`, over TLS checked against the URL's host name."""

    def __init__(self, host: str, port: Optional[int], address: str, timeout: float) -> None:
        self.tls = ssl.create_default_context()
        super().__init__(host, port, timeout=timeout, context=self.tls)
        self.address = address

    def connect(self) -> None:
        sock = socket.create_connection((self.address, self.port), self.timeout)
        self.sock = self.tls.wrap_socket(sock, server_hostname=self.host)


def post(hook: Webhook, delivery: WebhookDelivery, now: float) -> Optional[str]:
    """POSTs ``delivery`` to ``hook``; returns None once answered 2xx, else why not.

    The host is resolved here and every address it resolves to must be allowed
    (:meth:`Webhook.allows`); the connection goes to the address checked.
    """
    parts = urlsplit(hook.url)
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as e:
        return f"cannot resolve {host}: {e}"
    addresses: list[Union[ipaddress.IPv4Address, ipaddress.IPv6Address]] = [
        ipaddress.ip_address(str(info[4][0]).partition("%")[0]) for info in found
    ]
    refused = [a for a in addresses if not hook.allows(host, a)]
    if refused or not addresses:
        return hook.refusal(host, refused[0] if refused else "unresolved")
    timestamp = int(now)
    headers = {"Content-Type": "application/json", "User-Agent": "fairqueue-webhooks",
               "webhook-id": delivery.event_id, "webhook-timestamp": str(timestamp)}  # fmt: skip
    if hook.key is not None:
        headers["webhook-signature"] = signature(hook.key, delivery.event_id, timestamp, delivery.body)
    kind = _PinnedHTTPSConnection if parts.scheme == "https" else _PinnedHTTPConnection
    conn = kind(host, parts.port, str(addresses[0]), hook.timeout)
    try:
        conn.request("POST", (parts.path or "/") + (f"?{parts.query}" if parts.query else ""),
                     body=delivery.body.encode(), headers=headers)  # fmt: skip
        response = conn.getresponse()
        response.read(65536)
        # Redirects are not followed: the next hop would escape the destination check.
        return None if 200 <= response.status < 300 else f"HTTP {response.status} {response.reason}"
    except (OSError, http.client.HTTPException) as e:
        return f"{type(e).__name__}: {e}"
    finally:
        conn.close()


class WebhookDelivering:
    """Delivers the outbox's due events to the app's webhooks, on a thread of its own.

    Args:
        store: the store whose outbox is delivered.
        alerts: the app's alerts (their webhooks' timeouts, signing keys and allowances).
        every: seconds between two looks at the outbox.
    """

    def __init__(self, store: Storage, alerts: Alerts, every: float) -> None:
        self.store = store
        self.alerts = alerts
        self.every = every
        self._thread: Optional[threading.Thread] = None
        self._pruned_at = 0.0
        self.delivered = 0
        """Deliveries this worker made (answered 2xx)."""

    def run(self, now: float) -> None:
        """Starts a delivery pass on a thread of its own, unless one is still going (or
        the app has no webhooks)."""
        if not self.alerts.webhooks or (self._thread is not None and self._thread.is_alive()):
            return
        # A daemon thread that ends with its pass: a delivery in flight when the process
        # ends is claimed again by some worker once its hold lapses; its row is never lost.
        self._thread = threading.Thread(target=self._pass, name="fairqueue-webhooks", daemon=True)
        self._thread.start()

    def _pass(self) -> None:
        try:
            self.deliver(time.time())
        except Exception:
            log.exception("fairqueue worker: delivering webhooks failed; trying again shortly")

    def deliver(self, now: float) -> int:
        """Claims the due deliveries and posts them, a batch at a time while batches are
        full; returns how many were delivered."""
        delivered = 0
        if now - self._pruned_at >= _PRUNE_EVERY:
            self._pruned_at = now
            self.store.webhook_outbox_prune(now - KEEP_DELIVERED, 1_000)
        while True:
            # Held for as long as posting the whole batch may take (each POST to its timeout),
            # so no other worker takes a row of it while this one is still on its way there.
            hold = (max((h.timeout for h in self.alerts.webhooks.values()), default=5.0) + 1) * _BATCH + 30
            claimed = self.store.webhook_outbox_claim(now, _BATCH, hold)
            for delivery in claimed:
                hook = self.alerts.webhooks.get(delivery.url)
                error = "this worker's app has no such webhook" if hook is None else post(hook, delivery, time.time())
                if error is None:
                    delivered += 1
                    self.store.webhook_outbox_settle(delivery.id, time.time())
                    continue
                attempt = delivery.attempts + 1
                backoff = min(RETRY_MOST, RETRY_FIRST * 2 ** min(attempt - 1, 30)) * random.uniform(0.5, 1.0)
                retry_at: Optional[float] = time.time() + backoff
                if time.time() + backoff > delivery.created_at + GIVE_UP_AFTER:
                    retry_at = None
                log.warning("fairqueue worker: webhook %s, event %s, attempt %d: %s; %s", delivery.url,
                            delivery.event_id, attempt, error, "giving up" if retry_at is None else
                            f"retrying in {retry_at - time.time():.1f} s")  # fmt: skip
                self.store.webhook_outbox_settle(delivery.id, time.time(), error, retry_at)
            if len(claimed) < _BATCH:
                break
            now = time.time()
        self.delivered += delivered
        return delivered
