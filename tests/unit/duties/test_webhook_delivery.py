"""Webhook delivery: a failing destination is retried after a jittered exponential
back-off capped at RETRY_MOST, and given up on once past GIVE_UP_AFTER; the POSTs are
real (to a closed port on 127.0.0.1, allowed explicitly), the store is in memory."""

from __future__ import annotations

import socket
import time

from fairqueue.alerts import Alerts
from fairqueue.limits import Limits
from fairqueue.runtime.duties.webhook_delivery import GIVE_UP_AFTER, RETRY_FIRST, RETRY_MOST, WebhookDelivering
from fairqueue.settings import QueueSettings
from fairqueue.storage.memory import MemoryStorage


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def setup() -> tuple[MemoryStorage, WebhookDelivering, str]:
    store = MemoryStorage()
    alerts = Alerts(lambda: store, QueueSettings(limits=Limits()))
    url = f"http://127.0.0.1:{closed_port()}/hook"
    alerts.add_webhook(url, timeout=2.0, allow_destinations=["127.0.0.1"])
    return store, WebhookDelivering(store, alerts, 1.0), url


def test_a_failing_delivery_backs_off_exponentially_with_jitter_up_to_the_cap() -> None:
    store, duty, url = setup()
    store.webhook_outbox_add("evt_1", [(url, "{}")], time.time())
    far = time.time() + 10**7  # every retry is due by then
    for attempt in range(1, 13):
        backoff = min(RETRY_MOST, RETRY_FIRST * 2 ** (attempt - 1))
        before = time.time()
        assert duty.deliver(far) == 0
        after = time.time()
        assert store.webhook_outbox_claim(before + 0.5 * backoff - 0.01, 1, 0.0) == [], f"attempt {attempt}: too soon"
        [due] = store.webhook_outbox_claim(after + backoff, 1, 0.0)
        assert due.attempts == attempt and due.event_id == "evt_1"
    assert backoff == RETRY_MOST, "the last attempts waited the cap, not 2^11 s"


def test_a_delivery_is_given_up_on_past_the_deadline_and_kept() -> None:
    store, duty, url = setup()
    store.webhook_outbox_add("evt_old", [(url, "{}")], time.time() - GIVE_UP_AFTER + 0.1)
    assert duty.deliver(time.time()) == 0
    assert store.webhook_outbox_claim(time.time() + 10**7, 10, 30.0) == [], "never tried again"
    assert store.webhook_outbox_prune(time.time() + 1, 10) == 1, "kept (with its error) until pruned"
