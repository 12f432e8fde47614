"""Recorded history: the storage contract, the same for every backend."""

from __future__ import annotations

from fairqueue.records import HistoryEntry
from fairqueue.storage import Storage

from .builders import NOW


def test_history_is_read_back_in_time_order_by_kind(store: Storage) -> None:
    store.history_append([HistoryEntry(NOW + 2, "pending", "a", 5, {}), HistoryEntry(NOW, "throttle_start", None, 0.5, {"worker": "w"})])
    store.history_append([HistoryEntry(NOW + 1, "extended_delay", "a", NOW + 300, {"kind": "future", "count": 3})])
    assert [e.kind for e in store.history_read(NOW)] == ["throttle_start", "extended_delay", "pending"]
    assert store.history_read(NOW + 1, ["pending"]) == [HistoryEntry(NOW + 2, "pending", "a", 5, {})]
    assert store.history_read(NOW, ["extended_delay"])[0].figures == {"kind": "future", "count": 3}
    assert store.history_read(NOW + 3) == []
