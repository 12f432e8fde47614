"""Each org's predicted wait: computed for every org in a few store reads
(:func:`fairqueue.observe.predicted_waits`), agreeing with explain's estimate of the
org's newest queued job, and exported as ``fairqueue_org_predicted_wait_seconds``
with the same bounded ``org`` label as the store's other gauges (10,000 orgs make
top_orgs + 1 series, ``other`` the longest wait of the rest)."""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from fairqueue.observe import explain, predicted_waits
from fairqueue.records import Finish, JobStatus, NewJob
from fairqueue.runtime.metrics import OTHER, StoreMetrics
from fairqueue.settings import QueueSettings
from fairqueue.storage import Storage
from fairqueue.storage.memory import MemoryStorage

SLOTS, SERVICE = 2, 0.5  # two slots, half a second a job: a line drains at 4 jobs/s


def backlog(store: Storage, org: str, n: int, at: float) -> list[int]:
    return store.job_enqueue([NewJob(org, "future", "fq_sample_jobs:noop", "[]")] * n, at)


def drain(store: Storage, ids: list[int], start: float, until: float) -> None:
    """Claims and finishes ``ids`` in order on SLOTS slots from ``start``, up to ``until``."""
    for i, job_id in enumerate(ids):
        at = start + (i // SLOTS) * SERVICE
        if at <= until:
            store.job_claim([job_id], "w1", at + 60, at)
            if at + SERVICE <= until:
                store.job_finish([Finish(job_id, "w1", JobStatus.COMPLETED, at + SERVICE)])


class CountingStore(MemoryStorage):
    """A memory store that counts the reads the estimate makes."""

    reads = 0

    def job_list(self, **filters: Any) -> Any:
        self.reads += 1
        return super().job_list(**filters)

    def job_counts(self, live: bool = False) -> Any:
        self.reads += 1
        return super().job_counts(live)


def test_every_orgs_predicted_wait_in_four_reads_agrees_with_explain() -> None:
    store = CountingStore()
    now = time.time()
    start = now - 50.2
    steady = backlog(store, "steady", 400, start)
    drain(store, steady, start, now)
    quiet = backlog(store, "quiet", 3, now - 5)  # nothing of its line finished: a fair share
    for i in range(300):
        backlog(store, f"idle-{i}", 1, now - 1)
    store.reads = 0
    waits = predicted_waits(store, now)
    assert store.reads == 4, "the live counts, and the latest completed, failed and running jobs"
    settings = QueueSettings("fair_share")
    for org, newest in (("steady", steady[-1]), ("quiet", quiet[-1])):
        expected = explain(store, settings, newest, now=now).estimated_start
        assert expected is not None
        assert abs(waits[org] - (expected - now)) <= 0.05 * (expected - now), (org, waits[org], expected - now)
    # 400 jobs at 4 jobs/s, about 200 of them run: about 50 s to go.
    assert 45 <= waits["steady"] <= 55 and len(waits) == 302


def test_the_gauge_is_bounded_with_ten_thousand_orgs_and_other_is_the_longest_of_the_rest() -> None:
    store = MemoryStorage()
    now = time.time()
    start = now - 50.2
    drain(store, backlog(store, "big", 400, start), start, now)
    for n in range(10_000):
        backlog(store, f"org-{n:05d}", 1 + n % 3, now - 1)
    registry = CollectorRegistry()
    registry.register(StoreMetrics(lambda: store, top_orgs=5))
    [family] = [f for f in text_string_to_metric_families(generate_latest(registry).decode())
                if f.name == "fairqueue_org_predicted_wait_seconds"]  # fmt: skip
    exported = {s.labels["org"]: s.value for s in family.samples}
    waits = predicted_waits(store, now)
    assert len(exported) == 6 and OTHER in exported and "big" in exported
    labelled = set(exported) - {OTHER}
    # Read a moment apart: the running jobs' work grows meanwhile, so the pace moves a little.
    longest = max(w for org, w in waits.items() if org not in labelled)
    assert abs(exported[OTHER] - longest) <= 0.05 * longest
    assert abs(exported["big"] - waits["big"]) <= 0.05 * waits["big"]
