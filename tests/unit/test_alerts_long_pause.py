"""``long_pause``: an alert when an org, a kind or key of it, or a named queue stays
paused past a threshold, and its end when resumed."""

from __future__ import annotations

import time

from fairqueue.alerts import AlertEvent, Alerts
from fairqueue.settings import QueueSettings
from fairqueue.storage.memory import MemoryStorage
from fairqueue.tenants import Tenants


def test_a_pause_past_the_threshold_starts_one_episode_and_its_resume_ends_it() -> None:
    store, settings = MemoryStorage(), QueueSettings()
    tenants = Tenants(lambda: store, settings)
    settings.follow(tenants.refresh)
    alerts = Alerts(lambda: store, settings)
    alerts.configure(wait_threshold=None, pause_threshold=600)
    seen: list[AlertEvent] = []
    alerts.subscribe(seen.append)
    tenants.pause("acme", "batch", by="ops <b>")
    tenants.pause(queue="gpu")
    now = time.time()

    alerts.evaluate(now + 60)
    assert seen == [], "not yet past the threshold"
    alerts.evaluate(now + 601)
    alerts.evaluate(now + 602)  # still paused: no second start
    assert [(e.kind, e.state, e.org) for e in seen] == [("long_pause", "start", None), ("long_pause", "start", "acme")]
    assert "kind 'batch' of org 'acme' paused since" in seen[1].message and "by ops <b>" in seen[1].message

    tenants.resume("acme", "batch")
    alerts.evaluate(now + 603)
    assert [(e.kind, e.state, e.org) for e in seen[2:]] == [("long_pause", "end", "acme")]
