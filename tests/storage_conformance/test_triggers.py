"""Schedules (triggers): the storage contract, the same for every backend."""

from __future__ import annotations

from dataclasses import replace

import pytest

from fairqueue.errors import InvalidArgument, LimitExceeded
from fairqueue.records import JobStatus, TriggerState
from fairqueue.storage import Storage

from .builders import NOW, every_minute, job, trigger


def test_a_schedule_is_stored_waiting_and_listed(store: Storage) -> None:
    a = store.trigger_create(trigger(), NOW, max_per_org=100)
    b = store.trigger_create(trigger(org="org-2"), NOW, max_per_org=100)
    record = store.trigger_get(a)
    assert record is not None
    assert (record.org, record.name, record.cron, record.timezone, record.state) == (
        "org-1", "nightly", "0 * * * * ?", "UTC", TriggerState.WAITING
    )  # fmt: skip
    assert (record.next_fire_at, record.previous_fire_at, record.times_fired, record.last_job_id) == (NOW + 60, None, 0, None)
    assert [t.id for t in store.trigger_list()] == [a, b]
    assert [t.id for t in store.trigger_list(org="org-2")] == [b]
    assert store.trigger_get(999) is None


def test_an_org_may_have_at_most_its_limit_of_schedules_and_unique_names(store: Storage) -> None:
    for i in range(3):
        store.trigger_create(trigger(name=f"s{i}"), NOW, max_per_org=3)
    with pytest.raises(LimitExceeded, match="already has 3 schedules, the most allowed \\(3\\)"):
        store.trigger_create(trigger(name="s3"), NOW, max_per_org=3)
    store.trigger_create(trigger(org="org-2", name="s3"), NOW, max_per_org=3)  # other orgs are not affected
    with pytest.raises(InvalidArgument, match="'org-2' already has a schedule named 's3'"):
        store.trigger_create(trigger(org="org-2", name="s3"), NOW, max_per_org=3)
    # An aborted schedule frees its name and its place.
    store.trigger_abort(store.trigger_list(org="org-1")[0].id)
    store.trigger_create(trigger(name="s0"), NOW, max_per_org=3)
    assert len(store.trigger_list(org="org-1", state=TriggerState.WAITING)) == 3


def test_due_schedules_fire_once_and_move_to_their_next_fire_time(store: Storage) -> None:
    due = store.trigger_create(trigger(next_fire_at=NOW - 1), NOW, max_per_org=100)
    later = store.trigger_create(trigger(name="later", next_fire_at=NOW + 3600), NOW, max_per_org=100)
    [job_id] = store.trigger_fire_due(NOW, every_minute)
    job_record = store.job_get(job_id)
    assert job_record is not None
    assert (job_record.org, job_record.kind, job_record.handler, job_record.status) == (
        "org-1", "scheduled", "app.jobs:Report", JobStatus.QUEUED
    )  # fmt: skip
    record = store.trigger_get(due)
    assert record is not None
    assert (record.times_fired, record.previous_fire_at, record.next_fire_at, record.last_job_id) == (
        1, NOW - 1, every_minute(record, NOW), job_id
    )  # fmt: skip
    assert store.trigger_fire_due(NOW, every_minute) == [], "nothing is due twice"
    assert store.trigger_get(later).times_fired == 0  # type: ignore[union-attr]
    assert store.usage_daily("org-1", NOW).count == 1


def test_a_schedules_fires_wait_in_its_queue_with_its_priority_and_cost(store: Storage) -> None:
    gpu = store.trigger_create(replace(trigger(next_fire_at=NOW - 1), queue="gpu", priority=8, cost=3), NOW, max_per_org=100)
    plain = store.trigger_create(trigger(name="plain", next_fire_at=NOW - 1), NOW, max_per_org=100)
    records = [store.trigger_get(t) for t in (gpu, plain)]
    assert [(r.queue, r.priority, r.cost) for r in records if r is not None] == [("gpu", 8, 3), ("default", 5, 1)]
    assert [(t.queue, t.priority, t.cost) for t in store.trigger_list()] == [("gpu", 8, 3), ("default", 5, 1)]
    fired = store.trigger_fire_due(NOW, every_minute)
    jobs = [store.job_get(job_id) for job_id in fired]
    assert sorted((j.queue, j.priority, j.cost) for j in jobs if j is not None) == [("default", 5, 1), ("gpu", 8, 3)]
    gpu_job = store.trigger_get(gpu).last_job_id  # type: ignore[union-attr]
    assert [p.id for p in store.job_pending(queues=["gpu"])] == [gpu_job], "a worker serving only 'gpu' sees its fire"
    assert gpu_job not in [p.id for p in store.job_pending(queues=["default"])]
    # A fire refused by the daily limit is stored failed with the same queue.
    again = store.trigger_create(replace(trigger(name="again", next_fire_at=NOW - 1), queue="gpu"), NOW, max_per_org=100)
    store.trigger_fire_due(NOW, every_minute, daily_limit=lambda org: 0)
    refused = store.job_get(store.trigger_get(again).last_job_id)  # type: ignore[arg-type, union-attr]
    assert refused is not None and (refused.status, refused.queue) == (JobStatus.FAILED, "gpu")


def test_a_fire_past_the_orgs_daily_limit_stores_a_failed_job_and_the_schedule_moves_on(store: Storage) -> None:
    # org-1 may run 2 a day and has 1 counted: of its two due schedules the first
    # fires, the second fails without running; org-2's fires as usual.
    store.job_enqueue([job()], NOW)
    first = store.trigger_create(trigger(name="first", next_fire_at=NOW - 2), NOW, max_per_org=100)
    second = store.trigger_create(trigger(name="second", next_fire_at=NOW - 1), NOW, max_per_org=100)
    other = store.trigger_create(trigger(org="org-2", name="other", next_fire_at=NOW - 1), NOW, max_per_org=100)
    limits = {"org-1": 2, "org-2": 2}
    fired = store.trigger_fire_due(NOW, every_minute, daily_limit=limits.__getitem__)
    records = [store.trigger_get(t) for t in (first, second, other)]
    moved_on = [r for r in records if r is not None and r.times_fired == 1 and r.next_fire_at == every_minute(r, NOW)]
    last_jobs = [r.last_job_id for r in moved_on]
    assert len(last_jobs) == 3 and None not in last_jobs
    assert sorted(fired) == [last_jobs[0], last_jobs[2]]
    refused = store.job_get(last_jobs[1])  # type: ignore[arg-type]
    assert refused is not None and refused.id not in fired
    assert (refused.org, refused.kind, refused.status, refused.finished_at) == ("org-1", "scheduled", JobStatus.FAILED, NOW)
    assert refused.extended_status is not None
    assert refused.extended_status.startswith("DailyLimitExceeded: org 'org-1' has used 2 of its daily limit of 2")
    assert "schedule 'second' did not run" in refused.extended_status
    assert [p.id for p in store.job_pending()] == [store.job_list(org="org-1")[-1].id, *sorted(fired)]
    assert store.usage_daily("org-1", NOW).count == 2 and store.usage_daily("org-2", NOW).count == 1


def test_after_downtime_a_schedule_that_missed_many_fires_fires_once(store: Storage) -> None:
    t = store.trigger_create(trigger(next_fire_at=NOW + 60), NOW, max_per_org=100)
    back = NOW + 60 + 10 * 3600  # down for ten hours: 600 fire times missed
    assert len(store.trigger_fire_due(back, every_minute)) == 1
    record = store.trigger_get(t)
    assert record is not None and record.times_fired == 1 and record.next_fire_at == every_minute(record, back)
    assert store.trigger_fire_due(back, every_minute) == []


def test_aborted_and_completed_schedules_never_fire(store: Storage) -> None:
    aborted = store.trigger_create(trigger(name="a", next_fire_at=NOW - 5), NOW, max_per_org=100)
    last = store.trigger_create(trigger(name="b", next_fire_at=NOW - 5), NOW, max_per_org=100)
    assert store.trigger_abort(aborted) is TriggerState.WAITING
    assert store.trigger_abort(aborted) is TriggerState.ABORTED
    assert store.trigger_abort(last, org="someone-else") is None
    assert len(store.trigger_fire_due(NOW, lambda t, now: None)) == 1
    assert store.trigger_get(last).state is TriggerState.COMPLETE  # type: ignore[union-attr]
    assert store.trigger_fire_due(NOW + 10**6, every_minute) == []
    assert store.trigger_get(aborted).next_fire_at is None  # type: ignore[union-attr]
