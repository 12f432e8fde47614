"""Org affinity: every org with work has one home among the live workers, its home
worker weights it up, and the weights are such that each org's share of the whole
fleet stays its fair share however unevenly the homes fall; alone, or under
peek_set, nothing changes."""

from __future__ import annotations

import os

import pytest

from fairqueue.limits import Limits
from fairqueue.records import NewJob, WorkerInfo
from fairqueue.runtime.core import CoreSettings, build_dispatcher
from fairqueue.runtime.duties.affinity import Affinity, home_of
from fairqueue.settings import QueueSettings
from fairqueue.storage.memory import MemoryStorage

T0 = 1_700_000_000.0


def registered(store: MemoryStorage, slots: dict[str, int]) -> None:
    for name, n in slots.items():
        store.worker_register(WorkerInfo(name, "test-host", os.getpid(), "thread", n, T0), T0)


def affinity_of(store: MemoryStorage, name: str, slots: int, policy: str = "fair_share") -> Affinity:
    settings = QueueSettings(policy, Limits(slots=slots))
    return Affinity(store, name, CoreSettings(build_dispatcher(settings, slots, virtual_time=T0), settings))


def enqueue(store: MemoryStorage, orgs: list[str], each: int = 3) -> None:
    store.job_enqueue([NewJob(org, "future", "m:f", "{}") for org in orgs for _ in range(each)], T0)


@pytest.mark.parametrize("slots", [{"a:1:1": 8, "b:2:1": 8, "c:3:1": 8, "d:4:1": 8},
                                   {"a:1:1": 64, "b:2:1": 16, "c:3:1": 4}])  # fmt: skip
@pytest.mark.parametrize("orgs", [3, 8, 100])
def test_home_weights_keep_every_orgs_fleet_share_fair(slots: dict[str, int], orgs: int) -> None:
    """A fair-share core gives each org slots in proportion to its weight; summed over
    the workers, every org gets the fleet's slots over the orgs, and a larger part at home."""
    store = MemoryStorage()
    registered(store, slots)
    names = [f"org-{i}" for i in range(orgs)]
    enqueue(store, names)
    weights = {}
    for worker, n in slots.items():
        duty = affinity_of(store, worker, n)
        duty.run(T0)
        assert set(duty.home) == {o for o in names if home_of(o, sorted(slots)) == worker}
        assert all(f >= 1.0 for f in duty.home.values())
        weights[worker] = {o: duty.home.get(o, 1.0) for o in names}
    fleet = {o: sum(n * weights[w][o] / sum(weights[w].values()) for w, n in slots.items()) for o in names}
    fair = sum(slots.values()) / orgs
    assert all(abs(share - fair) < 1e-9 * fair for share in fleet.values()), fleet
    for o in names:  # its home gives it a larger part of its slots than any other worker gives it
        home = home_of(o, sorted(slots))
        part = {w: weights[w][o] / sum(weights[w].values()) for w in slots}
        assert all(part[home] > part[w] for w in slots if w != home), part
    for w in slots:  # every worker keeps at least half its slot-time for the orgs not at home there
        others = [o for o in names if home_of(o, sorted(slots)) != w]
        assert sum(weights[w][o] for o in others) / sum(weights[w].values()) >= 0.5 * len(others) / orgs - 1e-9


def test_a_worker_alone_or_without_home_orgs_weights_nothing() -> None:
    store = MemoryStorage()
    registered(store, {"a:1:1": 8})
    enqueue(store, ["busy"])
    solo = affinity_of(store, "a:1:1", 8)
    solo.run(T0)
    assert solo.home == {}
    registered(store, {"b:2:1": 8})
    others = [w for w in ("a:1:1", "b:2:1") if w != home_of("busy", ["a:1:1", "b:2:1"])]
    duty = affinity_of(store, others[0], 8)
    duty.run(T0)
    assert duty.home == {}


def test_weights_go_back_when_an_org_has_no_work_and_peek_set_keeps_the_reference_order() -> None:
    store = MemoryStorage()
    registered(store, {"a:1:1": 8, "b:2:1": 8})
    home = home_of("busy", ["a:1:1", "b:2:1"])
    [job] = store.job_enqueue([NewJob("busy", "future", "m:f", "{}")], T0)
    enqueue(store, ["other"])
    duty = affinity_of(store, home, 8)
    duty.run(T0)
    core = duty.core_settings.core
    assert duty.home["busy"] > 1 and core.org_limits("busy")["weight"] == duty.home["busy"]
    store.job_abort(job, T0)
    duty.run(T0 + 2)
    assert "busy" not in duty.home and core.org_limits("busy")["weight"] == 1.0
    peek = affinity_of(store, home, 8, policy="peek_set")
    enqueue(store, ["busy"])
    peek.run(T0 + 4)
    assert peek.home == {}
