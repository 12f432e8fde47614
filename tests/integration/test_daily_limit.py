"""The daily limit of async executions per org, through the app on a real SQLite file."""

from __future__ import annotations

import time

import pytest

import fairqueue as fq
import fq_sample_jobs as sample
from conftest import wait_until
from fairqueue.errors import InvalidArgument


def test_an_org_at_its_daily_limit_is_refused_with_its_figures_and_others_are_not(app: fq.FairQueue) -> None:
    app.set_daily_limit("acme", 3)
    handles = [sample.record.delay("acme", str(i)) for i in range(3)]
    before = time.time()
    with pytest.raises(fq.DailyLimitExceeded) as refused:
        sample.record.delay("acme", "one too many")
    e = refused.value
    assert (e.org, e.count, e.limit) == ("acme", 3, 3)
    assert before < e.resets_at <= before + 24 * 3600
    assert "daily limit of 3" in str(e) and "set_daily_limit" in str(e)
    assert [h.id for h in handles] == [r.id for r in reversed(app.jobs(org="acme"))], "nothing more was stored"
    # Other orgs keep the default limit.
    sample.record.delay_many("globex", [("x",)] * 10)
    assert app.daily_usage("globex").count == 10 and app.org("acme").daily_usage().count == 3


def test_a_bulk_enqueue_over_the_limit_stores_nothing(app: fq.FairQueue) -> None:
    app.set_daily_limit("acme", 5)
    sample.record.delay_many("acme", [("a",)] * 4)
    with pytest.raises(fq.DailyLimitExceeded):
        sample.record.delay_many("acme", [("b",)] * 2)
    with pytest.raises(fq.DailyLimitExceeded):
        with app.transaction():
            sample.record.delay("acme", "c")
            sample.record.delay("acme", "d")
    assert app.daily_usage("acme").count == 4 and len(app.jobs(org="acme")) == 4


def test_a_running_job_is_refused_children_beyond_the_limit(app: fq.FairQueue) -> None:
    app.set_daily_limit("acme", 2)
    with app.testing() as run:
        app.enqueue(sample.Chain(0, 5), org="acme")
    chains = [r for r in run.jobs() if r.handler.endswith(":Chain")]
    assert len(chains) == 2, "the first job's one child fits; the child's own child does not"
    assert chains[-1].status is fq.JobStatus.FAILED and "daily limit of 2" in (chains[-1].extended_status or "")


def test_bad_daily_limits_are_refused() -> None:
    with pytest.raises(InvalidArgument, match="daily_executions"):
        fq.Limits(daily_executions=0)
    with pytest.raises(InvalidArgument, match="daily limit -1 for org 'acme'"):
        sample.app.set_daily_limit("acme", -1)


def test_a_schedule_past_the_daily_limit_fails_its_fire_and_keeps_its_next_one(app: fq.FairQueue) -> None:
    app.set_daily_limit("acme", 2)
    sample.record.delay("acme", "counted")
    trigger = app.schedule("every-second", "* * * * * ?", sample.Chain(0, 0), "acme")
    with fq.Worker(app, slots=2):
        wait_until(lambda: len(app.jobs(org="acme", kind="scheduled")) >= 3, what="three fires")
    fires = sorted(app.jobs(org="acme", kind="scheduled"), key=lambda r: r.id)
    assert fires[0].status is fq.JobStatus.COMPLETED, "the first fire fits in the limit and runs"
    for refused in fires[1:]:
        assert refused.status is fq.JobStatus.FAILED and refused.started_at is None
        assert "DailyLimitExceeded" in (refused.extended_status or "")
        assert "schedule 'every-second' did not run" in (refused.extended_status or "")
    assert len([r for r in sample.runs if r[0] == "chain"]) == 1
    assert app.daily_usage("acme").count == 2
    record = next(t for t in app.schedules() if t.id == trigger.id)
    assert record.state is fq.TriggerState.WAITING and record.times_fired == len(fires)
