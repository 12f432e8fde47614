"""explain: each waiting reason constructed for real, and the estimate against the actual start."""

from __future__ import annotations

import json
import time
from datetime import timedelta

import pytest
from click.testing import CliRunner

import fairqueue as fq
import fq_sample_jobs as sample
from conftest import wait_until
from fairqueue.cli import main


def codes(explanation: fq.Explanation) -> list[str]:
    return [r.code for r in explanation.reasons]


def test_an_org_at_its_cap_names_the_cap_and_the_jobs_holding_it(app: fq.FairQueue) -> None:
    app.set_limits("acme", "future", cap=1)
    holder = sample.wait_for_release.delay("acme")
    waiting = [sample.record.delay("acme", str(i)) for i in range(2)]
    with fq.Worker(app, slots=3):
        wait_until(lambda: holder.status is fq.JobStatus.PROCESSING, what="the holder to run")
        why = app.explain(waiting[1].id)
        sample.release.set()
        wait_until(lambda: all(w.status is fq.JobStatus.COMPLETED for w in waiting), what="the rest")
    assert why.status == "queued" and codes(why)[:2] == ["cap_reached", "queued_behind"]
    cap = why.reasons[0]
    assert cap.figures == {"running": 1, "cap": 1, "holders": [holder.id]}
    assert f"1 of 1 future slots, held by jobs {holder.id}" in cap.message
    assert why.ahead_in_line == 1 and why.reasons[1].figures["ahead_in_line"] == 1
    done = app.explain(waiting[1].id)
    assert done.status == "completed" and done.waited is not None and done.waited > 0 and done.ran is not None
    assert "after waiting" in done.render()


def test_a_holding_batch_names_its_flex_queue_position(app: fq.FairQueue) -> None:
    handles = [app.execute_batch(sample.Numbers(10), org="acme") for _ in range(7)]
    why = app.explain(handles[6].id)
    assert codes(why)[0] == "holding" and why.reasons[0].figures == {"position": 2, "holding": 2}
    assert why.estimated_start is None and "flex queue" in (why.estimate_basis or "")


def test_a_delayed_job_names_its_run_at_and_no_worker_says_so(app: fq.FairQueue) -> None:
    handle = app.enqueue(sample.Chain(0, 0), org="acme", delay=timedelta(minutes=5))
    why = app.explain(handle.id)
    run_at = app.get(handle.id).run_at  # type: ignore[union-attr]
    assert codes(why) == ["scheduled", "no_worker"] and why.reasons[0].figures == {"run_at": run_at}
    assert "is a worker running" in why.render()
    with pytest.raises(LookupError, match="no job with id 999"):
        app.explain(999)


@pytest.mark.timeout(120)
def test_the_estimate_is_within_half_of_the_actual_start_for_a_steady_workload(app: fq.FairQueue) -> None:
    sample.spin.delay_many("steady", [(0.02,)] * 400)
    with fq.Worker(app, slots=2):
        wait_until(lambda: len(app.jobs(status="completed", limit=60)) >= 60, timeout=60, what="a steady rate")
        target = app.jobs(org="steady", status="queued", limit=1000)[-150]  # 150th from the front of the line
        now = time.time()
        why = app.explain(target.id)
        assert why.estimated_start is not None and why.estimate_basis
        started = wait_until(lambda: app.get(target.id).started_at, timeout=60, what="the target to start")  # type: ignore[union-attr]
    predicted, actual = why.estimated_start - now, started - now
    print(f"\npredicted wait {predicted:.2f} s, actual {actual:.2f} s ({why.estimate_basis})")
    assert abs(predicted - actual) <= 0.5 * actual


def test_explain_on_the_command_line(app: fq.FairQueue) -> None:
    store = str(app.storage.path)  # type: ignore[attr-defined]
    handle = sample.record.delay("acme", "x")
    result = CliRunner().invoke(main, ["explain", str(handle.id), "--store", store, "--json"])
    assert result.exit_code == 0
    data = json.loads(result.output)
    assert data["job_id"] == handle.id and data["status"] == "queued" and data["reasons"][0]["code"] == "no_worker"
    result = CliRunner().invoke(main, ["explain", str(handle.id), "--store", store])
    assert result.exit_code == 0 and f"job {handle.id} (future, org 'acme') is queued" in result.output
    result = CliRunner().invoke(main, ["explain", "999", "--store", store])
    assert result.exit_code == 1 and "no job with id 999" in result.output


def test_a_throttled_worker_is_named_from_recorded_history(app: fq.FairQueue) -> None:
    from fairqueue.conservation import ResourceMonitor

    app.conservation = ResourceMonitor()
    try:
        blockers = [sample.wait_for_release.delay("acme") for _ in range(3)]
        with fq.Worker(app, slots=2):
            app.report_load(0.5, 60)
            wait_until(lambda: app.storage.history_read(0, ["throttle_start"]), what="the throttle to be recorded")
            why = app.explain(blockers[2].id)
            sample.release.set()
    finally:
        app.conservation = None
    [throttled] = [r for r in why.reasons if r.code == "throttled"]
    assert throttled.figures["capacity"] == 0.5 and "50% of its slots" in throttled.message


def test_an_extended_delay_is_named_with_its_end(app: fq.FairQueue) -> None:
    core = fq.Dispatcher(policy="peek_set", slots=2, cap=1, peek_set=2)
    blockers = [sample.wait_for_release.delay("acme") for _ in range(4)]
    with fq.Worker(app, slots=2, dispatcher=core):
        wait_until(lambda: app.storage.history_read(0, ["extended_delay"]), what="an extended delay to be recorded")
        why = app.explain(blockers[2].id)
        sample.release.set()
    [delayed] = [r for r in why.reasons if r.code == "extended_delay"]
    assert delayed.figures["until"] > time.time() + 200 and delayed.figures["times"] >= 1
    assert "every job in the peek set belonged to org 'acme', at its cap" in delayed.message


def test_outside_the_peek_set_under_the_peek_set_policy(app: fq.FairQueue) -> None:
    policy, app.policy = app.policy, "peek_set"
    try:
        sample.record.delay_many("noisy", [("x",)] * app.limits.peek_set)
        late = sample.record.delay("quiet", "q")
        why = app.explain(late.id)
    finally:
        app.policy = policy
    [outside] = [r for r in why.reasons if r.code == "outside_peek_set"]
    assert outside.figures == {"ahead_in_queue": 2000, "peek_set": 2000}


def test_an_org_at_its_daily_limit_is_named_with_when_it_resets(app: fq.FairQueue) -> None:
    app.set_daily_limit("acme", 3)
    handles = [sample.record.delay("acme", str(i)) for i in range(3)]
    why = app.explain(handles[0].id)
    [limited] = [r for r in why.reasons if r.code == "daily_limit"]
    assert limited.figures["count"] == 3 and limited.figures["limit"] == 3
    assert limited.figures["resets_at"] > time.time() and "refused until" in limited.message
    assert not [r for r in app.explain(sample.record.delay("globex", "x").id).reasons if r.code == "daily_limit"]
