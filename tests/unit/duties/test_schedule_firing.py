"""Schedule firing: a due schedule enqueues exactly one scheduled job and wakes
the worker; one not yet due does nothing; a fire past its org's daily limit is
stored as a failed job with the reason, and the schedule moves on."""

from __future__ import annotations

from fairqueue.handlers import import_path
from fairqueue.records import JobStatus, NewTrigger, TriggerState
from fairqueue.runtime.duties.schedule_firing import ScheduleFiring
from fairqueue.settings import QueueSettings
from fairqueue.storage.memory import MemoryStorage
from fairqueue.tenants import Tenants
from fq_batch_units import Noop

T0 = 1_700_000_000.0
"""The virtual clock's start: 2023-11-14 22:13:20 UTC."""
NEXT_HOUR = 1_700_002_800.0
"""23:00 UTC that day: an hourly schedule's first fire time after T0."""
PAYLOAD = '{"state":{"tag":"schedules","after":null},"max_depth":null,"finalizer_requeues":0}'


def schedule(store: MemoryStorage, org: str, next_fire_at: float) -> int:
    """An hourly schedule of ``org`` whose next fire is at ``next_fire_at``."""
    new = NewTrigger(org=org, name="hourly", cron="0 * * * *", timezone="UTC", handler=import_path(Noop),
                     payload=PAYLOAD, next_fire_at=next_fire_at)  # fmt: skip
    return store.trigger_create(new, T0 - 3600, max_per_org=100)


class Wakeups:
    """The worker's ``on_fired``: counts how often the duty asked it to look at the queue."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> None:
        self.count += 1


def test_a_due_schedule_fires_once() -> None:
    store, wakeups = MemoryStorage(), Wakeups()
    trigger_id = schedule(store, "acme", T0 - 60)  # missed a minute ago
    duty = ScheduleFiring(store, QueueSettings(), 1.0, wakeups)

    duty.run(T0)

    [job] = store.job_list()
    assert (job.org, job.kind, job.handler, job.payload, job.status) == (
        "acme", "scheduled", import_path(Noop), PAYLOAD, JobStatus.QUEUED
    )  # fmt: skip
    assert [p.id for p in store.job_pending()] == [job.id], "a worker picks it up"
    assert wakeups.count == 1
    trigger = store.trigger_get(trigger_id)
    assert trigger is not None
    assert (trigger.state, trigger.times_fired, trigger.last_job_id) == (TriggerState.WAITING, 1, job.id)
    assert (trigger.previous_fire_at, trigger.next_fire_at) == (T0 - 60, NEXT_HOUR)
    assert store.usage_daily("acme", T0).count == 1, "a fire counts in the org's daily usage"

    duty.run(T0 + 1)  # another look before the next fire time (or another worker's)
    assert len(store.job_list()) == 1 and wakeups.count == 1


def test_a_schedule_not_yet_due_does_nothing() -> None:
    store, wakeups = MemoryStorage(), Wakeups()
    trigger_id = schedule(store, "acme", T0 + 60)
    duty = ScheduleFiring(store, QueueSettings(), 1.0, wakeups)

    duty.run(T0)
    assert store.job_list() == [] and wakeups.count == 0
    trigger = store.trigger_get(trigger_id)
    assert trigger is not None and (trigger.times_fired, trigger.next_fire_at) == (0, T0 + 60)

    duty.run(T0 + 60)  # due at its fire time exactly
    assert [j.kind for j in store.job_list()] == ["scheduled"] and wakeups.count == 1


def stored_daily_limit(store: MemoryStorage, settings: QueueSettings, org: str, limit: int) -> None:
    """Stores ``org``'s daily limit as an app does, with ``settings`` following the store."""
    tenants = Tenants(lambda: store, settings)
    settings.follow(tenants.refresh)
    tenants.set_limits(org, daily_limit=limit)


def test_a_fire_past_the_daily_limit_is_a_failed_job() -> None:
    store, wakeups, settings = MemoryStorage(), Wakeups(), QueueSettings()
    refused_id = schedule(store, "acme", T0 - 60)
    duty = ScheduleFiring(store, settings, 1.0, wakeups)
    stored_daily_limit(store, settings, "acme", 0)  # set after the duty was built: it reads the settings when it runs

    duty.run(T0)

    [job] = store.job_list()
    assert (job.org, job.kind, job.status, job.finished_at) == ("acme", "scheduled", JobStatus.FAILED, T0)
    assert job.extended_status is not None
    assert job.extended_status.startswith("DailyLimitExceeded: org 'acme' has used 0 of its daily limit of 0")
    assert store.job_pending() == [], "it never runs"
    assert wakeups.count == 0, "nothing was queued: no reason to wake the worker"
    assert store.usage_daily("acme", T0).count == 0, "a refused fire is not counted"
    trigger = store.trigger_get(refused_id)
    assert trigger is not None
    assert (trigger.times_fired, trigger.last_job_id, trigger.next_fire_at) == (1, job.id, NEXT_HOUR), "it moves on"


def test_a_refused_fire_does_not_hold_up_another_orgs() -> None:
    store, wakeups, settings = MemoryStorage(), Wakeups(), QueueSettings()
    stored_daily_limit(store, settings, "acme", 0)
    schedule(store, "acme", T0 - 60)
    schedule(store, "beta", T0 - 30)

    ScheduleFiring(store, settings, 1.0, wakeups).run(T0)

    assert sorted((j.org, j.status) for j in store.job_list()) == [("acme", JobStatus.FAILED), ("beta", JobStatus.QUEUED)]
    assert wakeups.count == 1
