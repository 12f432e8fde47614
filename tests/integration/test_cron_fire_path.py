"""Schedules across daylight-saving changes through the store's fire path: a real
SQLite store and the worker's own schedule-firing duty, on an injected clock that
steps through the change."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from fairqueue.cron import CronSchedule, next_fire
from fairqueue.records import JobStatus, NewTrigger
from fairqueue.runtime.duties.schedule_firing import ScheduleFiring
from fairqueue.settings import QueueSettings
from fairqueue.storage.sqlite import SQLiteStorage


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SQLiteStorage]:
    storage = SQLiteStorage(tmp_path / "fq.db")
    try:
        yield storage
    finally:
        storage.close()


def at(iso: str, zone: str) -> float:
    moment = datetime.fromisoformat(iso)
    return (moment if moment.tzinfo else moment.replace(tzinfo=ZoneInfo(zone))).timestamp()


def local(t: float, zone: str) -> str:
    return datetime.fromtimestamp(t, ZoneInfo(zone)).isoformat()


def schedule(store: SQLiteStorage, name: str, cron: str, zone: str, now: float) -> int:
    first = CronSchedule(cron, zone).next_after(now)
    assert first is not None
    new = NewTrigger(org="acme", name=name, cron=cron, timezone=zone, handler="app.jobs:Report",
                     payload='{"state": {}}', next_fire_at=first)  # fmt: skip
    return store.trigger_create(new, now, max_per_org=100)


def run_clock(store: SQLiteStorage, start: float, end: float, step: float) -> dict[int, list[tuple[float, float]]]:
    """Asks the store to fire due schedules at start, start + step, … end, as a worker
    does; per schedule, (the fire time it was due at, the clock when it fired) of each job."""
    fired: dict[int, list[tuple[float, float]]] = {}
    duty = ScheduleFiring(store, QueueSettings(), step, on_fired=lambda: None)
    seen = {r.id for r in store.job_list(limit=1_000_000)}
    now = start
    while now <= end:
        duty.run(now)
        job_ids = [r.id for r in store.job_list(kind="scheduled", limit=1_000_000) if r.id not in seen]
        seen.update(job_ids)
        for trigger in store.trigger_list():
            if trigger.last_job_id in job_ids:
                assert trigger.previous_fire_at is not None
                fired.setdefault(trigger.id, []).append((trigger.previous_fire_at, now))
        assert len(job_ids) == sum(1 for t in store.trigger_list() if t.last_job_id in job_ids), "one job per fire"
        now += step
    return fired


def due_times(fired: list[tuple[float, float]], zone: str) -> list[str]:
    return [local(due, zone) for due, _ in fired]


def test_a_nightly_job_runs_once_on_the_fall_back_day(store: SQLiteStorage) -> None:
    zone = "Europe/Berlin"
    start = at("2026-10-24T00:00:00", zone)
    nightly = schedule(store, "nightly", "0 30 2 * * ?", zone, start)
    fired = run_clock(store, start, at("2026-10-26T06:00:00", zone), step=300)
    assert due_times(fired[nightly], zone) == [
        "2026-10-24T02:30:00+02:00", "2026-10-25T02:30:00+02:00", "2026-10-26T02:30:00+01:00",
    ]  # fmt: skip
    assert [now for _, now in fired[nightly]] == [due for due, _ in fired[nightly]]  # fired on the tick it was due
    jobs = store.job_list(org="acme")
    assert len(jobs) == 3 and {(j.kind, j.handler, j.status) for j in jobs} == {("scheduled", "app.jobs:Report", JobStatus.QUEUED)}
    assert sorted(j.created_at for j in jobs) == [due for due, _ in fired[nightly]]
    record = store.trigger_get(nightly)
    assert record is not None and record.times_fired == 3 and record.last_job_id == max(j.id for j in jobs)
    assert record.next_fire_at == at("2026-10-27T02:30:00", zone)


def test_a_nightly_job_in_the_skipped_hour_runs_at_the_equivalent_instant(store: SQLiteStorage) -> None:
    zone = "Europe/Berlin"
    start = at("2026-03-28T00:00:00", zone)
    nightly = schedule(store, "nightly", "0 30 2 * * ?", zone, start)
    fired = run_clock(store, start, at("2026-03-30T06:00:00", zone), step=300)
    assert due_times(fired[nightly], zone) == [
        "2026-03-28T02:30:00+01:00", "2026-03-29T03:30:00+02:00", "2026-03-30T02:30:00+02:00",
    ]  # fmt: skip
    assert len(store.job_list(org="acme")) == 3


def test_new_york_both_changes_through_the_store(store: SQLiteStorage) -> None:
    zone = "America/New_York"
    # A clock that is not aligned to the fire times: jobs are enqueued on the first tick after.
    spring_start = at("2026-03-07T00:00:07.5", zone)
    spring = schedule(store, "spring", "0 30 2 * * ?", zone, spring_start)
    fired = run_clock(store, spring_start, at("2026-03-09T06:00:00", zone), step=420)
    assert due_times(fired[spring], zone) == ["2026-03-07T02:30:00-05:00", "2026-03-08T03:30:00-04:00", "2026-03-09T02:30:00-04:00"]
    assert all(0 <= now - due < 420 for due, now in fired[spring])
    store.trigger_abort(spring)
    autumn_start = at("2026-10-31T00:00:07.5", zone)
    autumn = schedule(store, "autumn", "0 30 1 * * ?", zone, autumn_start)
    fired = run_clock(store, autumn_start, at("2026-11-02T06:00:00", zone), step=420)
    assert due_times(fired[autumn], zone) == ["2026-10-31T01:30:00-04:00", "2026-11-01T01:30:00-04:00", "2026-11-02T01:30:00-05:00"]
    assert len(store.job_list(org="acme")) == 6


def test_hourly_and_sub_hourly_schedules_fire_at_every_real_instant_across_the_change(store: SQLiteStorage) -> None:
    zone = "Europe/Berlin"
    start = at("2026-10-24T23:59:00", zone)
    hourly = schedule(store, "hourly", "0 30 * * * ?", zone, start)
    every_20 = schedule(store, "every-20", "0 0/20 * * * ?", zone, start)
    fired = run_clock(store, start, at("2026-10-25T23:59:00", zone), step=300)
    hours = due_times(fired[hourly], zone)
    assert len(hours) == 25 and hours[1:5] == [
        "2026-10-25T01:30:00+02:00", "2026-10-25T02:30:00+02:00", "2026-10-25T02:30:00+01:00", "2026-10-25T03:30:00+01:00",
    ]  # fmt: skip
    assert len(fired[every_20]) == 75
    instants = [due for due, _ in fired[every_20]]
    assert {b - a for a, b in zip(instants, instants[1:])} == {1200}, "every 20 minutes of real time, none twice"
    assert len(store.job_list(org="acme")) == 100


def test_after_downtime_across_the_repeated_hour_a_nightly_job_fires_once(store: SQLiteStorage) -> None:
    # The worker last looked at 02:00 CEST and comes back at 02:45 CET: 02:30 fired
    # neither time, and fires once now, not again for the second 02:30.
    zone = "Europe/Berlin"
    before = at("2026-10-25T02:00:00+02:00", zone)
    nightly = schedule(store, "nightly", "0 30 2 * * ?", zone, before)
    assert store.trigger_fire_due(before, next_fire, daily_limit=lambda org: 10_000) == []
    back = at("2026-10-25T02:45:00+01:00", zone)
    assert len(store.trigger_fire_due(back, next_fire, daily_limit=lambda org: 10_000)) == 1
    record = store.trigger_get(nightly)
    assert record is not None and record.previous_fire_at == at("2026-10-25T02:30:00+02:00", zone)
    assert record.next_fire_at == at("2026-10-26T02:30:00", zone)
    fired = run_clock(store, back + 60, at("2026-10-25T23:00:00", zone), step=300)
    assert fired == {} and len(store.job_list(org="acme")) == 1
