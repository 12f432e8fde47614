"""Alert evaluation: an extended delay in the dispatcher becomes a history entry
and an alert, and the orgs whose jobs started are checked for their observed
wait; a failing evaluation is logged, never raised into the worker's loop."""

from __future__ import annotations

from typing import Any

import pytest

from fairqueue import Dispatcher
from fairqueue.alerts import AlertEvent, Alerts
from fairqueue.errors import StorageError
from fairqueue.limits import Limits
from fairqueue.records import HistoryEntry, JobStatus, NewJob
from fairqueue.runtime.core import build_dispatcher
from fairqueue.runtime.duties.alert_evaluation import AlertEvaluation
from fairqueue.runtime.duties.history_sampling import HistorySampling
from fairqueue.settings import QueueSettings
from fairqueue.storage.memory import MemoryStorage

T0 = 1_700_000_000.0
"""The virtual clock's start (UNIX seconds)."""
DELAY = 300.0
"""The reference extended delay of futures."""

# The seed's setting: 13 slots, cap 12, a peek set of 15.
SETTINGS = QueueSettings("peek_set", Limits(slots=13, cap=12, peek_set=15, lease=3600.0))


def fill_peek_set(core: Dispatcher) -> None:
    """Org 1 runs its cap of 12 and has 15 more in front of org 2: the whole peek set is its,
    so the next dispatch puts them back for the extended delay."""
    core.enqueue_many([(i, "org-1", "future") for i in range(1, 13)])
    assert len(core.dispatch(12)) == 12
    core.enqueue_many([(i, "org-1", "future") for i in range(13, 28)] + [(101, "org-2", "future")])
    core.set_time(T0 + 10)
    assert [g.id for g in core.dispatch(1)] == [101]


def summary(event: AlertEvent) -> tuple[Any, ...]:
    return event.kind, event.state, event.org, event.figures


@pytest.mark.parametrize("subscribed", [True, False])
def test_an_extended_delay_becomes_history_and_an_alert(subscribed: bool) -> None:
    store = MemoryStorage()
    core = build_dispatcher(SETTINGS, 13, virtual_time=T0)
    alerts = Alerts(lambda: store, SETTINGS)
    received: list[AlertEvent] = []
    if subscribed:
        alerts.subscribe(received.append)
    history = HistorySampling(store, every=1.0)
    duty = AlertEvaluation(alerts, core, history, every=1.0)
    fill_peek_set(core)

    duty.run(T0 + 10)
    history.run(T0 + 10)

    until = T0 + 10 + DELAY
    assert store.history_read(0.0, ["extended_delay"]) == [
        HistoryEntry(T0 + 10, "extended_delay", "org-1", until, {"kind": "future", "count": 15})
    ]
    if subscribed:
        assert [summary(e) for e in received] == [("extended_delay", "once", "org-1", {"kind": "future", "count": 15, "until": until})]
        assert "15 future jobs put back" in received[0].message
    assert core.take_events() == [], "the duty took the core's events"

    duty.run(T0 + 11)
    history.run(T0 + 11)
    assert len(store.history_read(0.0, ["extended_delay"])) == 1 and len(received) == int(subscribed), "once"


def test_orgs_whose_jobs_started_are_checked_for_their_wait() -> None:
    store = MemoryStorage()
    core = build_dispatcher(SETTINGS, 13, virtual_time=T0)
    alerts = Alerts(lambda: store, SETTINGS)
    alerts.configure(wait_threshold=10.0)
    received: list[AlertEvent] = []
    alerts.subscribe(received.append)
    duty = AlertEvaluation(alerts, core, HistorySampling(store, every=1.0), every=1.0)
    # A job of acme waited 100 s before it started; acme has nothing queued now.
    [job_id] = store.job_enqueue([NewJob("acme", "future", "fq_batch_units:Noop", "{}")], T0)
    store.job_claim([job_id], "w", T0 + 3700, T0 + 100)

    duty.run(T0 + 101)
    assert received == [], "only orgs with queued jobs, or whose jobs started, are looked at"

    duty.job_started("acme")
    duty.run(T0 + 102)

    assert [summary(e) for e in received] == [
        ("wait_observed", "start", "acme", {"p95_wait": 100.0, "threshold": 10.0, "window": 300.0, "jobs": 1})
    ]
    record = store.job_get(job_id)
    assert record is not None and record.status is JobStatus.PROCESSING


class BrokenStore(MemoryStorage):
    """A memory store that cannot count its jobs (a database outage)."""

    def job_counts(self, live: bool = False) -> dict[tuple[str, str, JobStatus], int]:
        raise StorageError("database is unreachable")


def test_a_failing_evaluation_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    store = BrokenStore()
    core = build_dispatcher(SETTINGS, 13, virtual_time=T0)
    alerts = Alerts(lambda: store, SETTINGS)
    alerts.configure(wait_threshold=10.0)
    history = HistorySampling(store, every=1.0)
    duty = AlertEvaluation(alerts, core, history, every=1.0)
    fill_peek_set(core)

    with caplog.at_level("ERROR", logger="fairqueue.worker"):
        duty.run(T0 + 10)

    assert [r.getMessage() for r in caplog.records] == ["fairqueue worker: evaluating alerts failed"]
    # The delay was recorded before the evaluation failed. (The history duty's own sample fails on the
    # same outage at T0 + 10, which holds its writes back to its next run.)
    history.run(T0 + 10)
    history.run(T0 + 11)
    assert [e.kind for e in store.history_read(0.0)] == ["extended_delay"]
