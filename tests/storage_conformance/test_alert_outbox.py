"""Alert episodes and the webhook outbox, the same on every store: an episode flips
once however many callers race to flip it, its event enters the outbox in the same
step, and deliveries are claimed by one caller at a time until settled."""

from __future__ import annotations

import threading

from fairqueue.storage import Storage

NOW = 1_000_000.0
HOOK = "https://hooks.example/x"


def test_an_episode_opens_and_closes_once_however_many_race_for_it(store: Storage) -> None:
    assert not store.alert_episode_set("wait_observed:acme", False, NOW, "evt_0", [(HOOK, "{}")]), "never opened"
    wins: list[str] = []
    barrier = threading.Barrier(8)

    def flip(i: int, open: bool) -> None:
        barrier.wait()
        if store.alert_episode_set("wait_observed:acme", open, NOW + i, f"evt_{open}_{i}", [(HOOK, f'{{"n": {i}}}')]):
            wins.append(f"evt_{open}_{i}")

    for open in (True, False):
        threads = [threading.Thread(target=flip, args=(i, open)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(wins) == 1, wins
        assert (set(store.alert_episodes()) == {"wait_observed:acme"}) == open
        [delivery] = store.webhook_outbox_claim(NOW + 100, 10, 30.0)
        assert delivery.event_id == wins.pop() and delivery.url == HOOK and delivery.attempts == 0
        store.webhook_outbox_settle(delivery.id, NOW + 100)
    assert store.webhook_outbox_claim(NOW + 1000, 10, 30.0) == [], "delivered ones are not claimed again"


def test_a_claimed_delivery_is_held_retried_when_due_and_pruned_once_settled(store: Storage) -> None:
    store.webhook_outbox_add("evt_1", [(HOOK, "{}"), ("https://other.example/y", "{}")], NOW)
    store.webhook_outbox_add("evt_1", [(HOOK, '{"again": true}')], NOW)  # the same event and URL: kept once
    first = store.webhook_outbox_claim(NOW, 10, 30.0)
    assert [(d.event_id, d.url, d.body) for d in first] == [("evt_1", HOOK, "{}"), ("evt_1", "https://other.example/y", "{}")]
    assert store.webhook_outbox_claim(NOW + 29, 10, 30.0) == [], "held while one caller posts it"
    store.webhook_outbox_settle(first[0].id, NOW + 1, "HTTP 500", NOW + 2)
    store.webhook_outbox_settle(first[1].id, NOW + 1, "HTTP 410", None)  # given up
    [again] = store.webhook_outbox_claim(NOW + 2, 10, 30.0)
    assert again.id == first[0].id and again.attempts == 1
    store.webhook_outbox_settle(again.id, NOW + 3)
    assert store.webhook_outbox_prune(NOW - 1, 10) == 0, "only those created before the cutoff"
    assert store.webhook_outbox_prune(NOW + 1, 10) == 2
    assert store.webhook_outbox_claim(NOW + 10_000, 10, 30.0) == []
