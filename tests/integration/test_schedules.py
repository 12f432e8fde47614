"""Scheduled jobs end to end: a real worker fires them on a real SQLite file."""

from __future__ import annotations

import pytest

import fairqueue as fq
import fq_sample_jobs as sample
from conftest import wait_until
from fairqueue.errors import InvalidArgument, LimitExceeded


def test_a_worker_fires_a_schedule_and_its_job_runs(app: fq.FairQueue) -> None:
    trigger = app.schedule("every-second", "* * * * * ?", sample.Chain(0, 0), "acme")
    assert trigger.state is fq.TriggerState.WAITING and trigger.next_fire_at is not None
    with fq.Worker(app, slots=2):
        wait_until(lambda: len([r for r in sample.runs if r[0] == "chain"]) >= 2, what="two fires")
    record = next(t for t in app.schedules() if t.id == trigger.id)
    assert record.times_fired >= 2 and record.previous_fire_at is not None
    assert record.next_fire_at is not None and record.next_fire_at > record.previous_fire_at
    jobs = app.jobs(org="acme", kind="scheduled")
    assert len(jobs) == record.times_fired and all(j.handler.endswith(":Chain") for j in jobs)
    assert record.last_job_id == max(j.id for j in jobs)
    assert app.unschedule(trigger.id) is fq.TriggerState.WAITING
    assert app.schedules(state="aborted")[0].id == trigger.id


def test_bad_schedules_are_refused_clearly(app: fq.FairQueue) -> None:
    with pytest.raises(InvalidArgument, match="invalid cron expression '0 0 12 \\? \\* 9'"):
        app.schedule("bad", "0 0 12 ? * 9", sample.Chain(0, 0), "acme")
    with pytest.raises(InvalidArgument, match="never run"):
        app.schedule("past", "0 0 12 * * ? 2010", sample.Chain(0, 0), "acme")
    with pytest.raises(InvalidArgument, match="runs a Queueable instance"):
        app.schedule("fn", "0 0 12 * * ?", sample.record, "acme")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="invalid schedule name ''"):
        app.schedule("", "0 0 12 * * ?", sample.Chain(0, 0), "acme")
    with pytest.raises(InvalidArgument, match="unknown time zone"):
        app.schedule("tz", "0 0 12 * * ?", sample.Chain(0, 0), "acme", timezone="Nowhere/Here")
    with pytest.raises(InvalidArgument, match="invalid schedule state 'later'"):
        app.schedules(state="later")
    assert app.schedules() == []


def test_an_org_has_at_most_100_schedules_and_sees_only_its_own(app: fq.FairQueue) -> None:
    acme = app.org("acme")
    for i in range(100):
        acme.schedule(f"s{i}", "0 0 3 * * ?", sample.Chain(0, 0))
    with pytest.raises(LimitExceeded, match="already has 100 schedules"):
        acme.schedule("s100", "0 0 3 * * ?", sample.Chain(0, 0))
    other = app.org("globex").schedule("nightly", "0 0 3 * * ?", sample.Chain(0, 0), timezone="Asia/Tokyo")
    assert len(acme.schedules()) == 100 and [t.id for t in app.org("globex").schedules()] == [other.id]
    with pytest.raises(LookupError, match="org 'acme' has no schedule"):
        acme.unschedule(other.id)
    assert app.org("globex").unschedule(other.id) is fq.TriggerState.WAITING
