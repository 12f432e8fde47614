"""explain: each waiting reason constructed for real, and the estimate against the actual start."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import timedelta

import pytest
from click.testing import CliRunner

import fairqueue as fq
import fq_sample_jobs as sample
from conftest import wait_until
from fairqueue.cli import main
from fairqueue.observe import explain, pace
from fairqueue.records import Finish, JobStatus, NewJob
from fairqueue.storage import Storage
from fairqueue.storage.memory import MemoryStorage


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


# ----- the estimate after an idle spell, on a virtual clock -------------------------------------

T0 = 1_700_000_000.0
SLOTS, SERVICE = 2, 0.5  # two slots, half a second a job: the line drains at 4 jobs/s


def backlog(store: Storage, n: int, at: float) -> list[int]:
    return store.job_enqueue([NewJob("steady", "future", "fq_sample_jobs:noop", "[]")] * n, at)


def drain(store: Storage, ids: list[int], start: float, until: float) -> dict[int, float]:
    """Runs ``ids`` in order on SLOTS slots from ``start``: claims and finishes, on the virtual
    clock, what has started and finished by ``until``. Returns each job's start time."""
    starts = {job_id: start + (i // SLOTS) * SERVICE for i, job_id in enumerate(ids)}
    for job_id, at in starts.items():
        if at <= until:
            store.job_claim([job_id], "w1", at + 60, at)
            if at + SERVICE <= until:
                store.job_finish([Finish(job_id, "w1", JobStatus.COMPLETED, at + SERVICE)])
    return starts


@pytest.mark.parametrize(
    ("now", "stray_at"),
    [
        (T0 + 700.2, None),  # the moment the work came back: nothing finished for 10 minutes
        (T0 + 705.0, T0 + 500.0),  # a stray job ran in the middle of the pause
    ],
)
def test_after_a_ten_minute_pause_the_estimate_is_the_pace_of_the_work_not_of_the_clock(
    app: fq.FairQueue, now: float, stray_at: float | None
) -> None:
    store = app.storage
    drain(store, backlog(store, 400, T0), T0, now)  # drained by T0 + 100
    if stray_at is not None:
        drain(store, backlog(store, 1, stray_at), stray_at, now)
    resumed = backlog(store, 400, T0 + 700)
    starts = drain(store, resumed, T0 + 700, now)
    target = resumed[199]
    why = explain(store, app.settings, target, now=now)
    assert why.estimated_start is not None, why.estimate_basis
    predicted, actual = why.estimated_start - now, starts[target] - now
    print(f"\npredicted wait {predicted:.2f} s, actual {actual:.2f} s ({why.estimate_basis})")
    assert abs(predicted - actual) <= 0.25 * actual
    assert "while it had work" in (why.estimate_basis or "")


def test_pace_leaves_out_the_time_the_line_had_no_work() -> None:
    store = MemoryStorage()
    # Five jobs ready at T0, finished one a second; then nothing for an hour; one more.
    ids = backlog(store, 5, T0)
    for i, job_id in enumerate(ids):
        store.job_claim([job_id], "w1", T0 + 60, T0 + i)
        store.job_finish([Finish(job_id, "w1", JobStatus.COMPLETED, T0 + i + 1)])
    [late] = backlog(store, 1, T0 + 3000)
    store.job_claim([late], "w1", T0 + 3060, T0 + 3000)
    store.job_finish([Finish(late, "w1", JobStatus.COMPLETED, T0 + 3001)])
    measured = pace(store, T0 + 3001, org="steady", kind="future")
    assert measured is not None
    # From the first finish (T0 + 1): 4 s of work then 1 s of work; 5 jobs after the first.
    assert (measured.finished, measured.busy, measured.span) == (5, 5.0, 3000.0)
    assert measured.rate == 1.0 and "of the last 50.0 min" in str(measured)
    assert pace(store, T0 + 3001, org="nobody") is None


# ----- the worker registry: no stopped worker is named -----------------------------------------

REGISTERED_WORKER = """
import os, sys, time
from fairqueue.records import HistoryEntry, WorkerInfo
from fairqueue.storage import open_storage
store = open_storage(sys.argv[1])
now = time.time()
store.worker_register(WorkerInfo(sys.argv[2], "elsewhere", os.getpid(), "thread", 2, now), now)
store.history_append([HistoryEntry(now, "throttle_start", None, 0.25, {"worker": sys.argv[2], "resources": ["cgroup_cpu"]})])
print("registered", flush=True)
time.sleep(600)
"""


def test_a_stopped_worker_is_never_named_throttled_and_no_live_worker_means_no_worker(app: fq.FairQueue) -> None:
    waiting = app.enqueue(sample.Chain(0, 0), org="acme", delay=timedelta(minutes=5))
    other = subprocess.Popen([sys.executable, "-c", REGISTERED_WORKER, str(app.storage.path), "w-elsewhere"],  # type: ignore[attr-defined]
                             stdout=subprocess.PIPE, start_new_session=True)  # fmt: skip
    try:
        assert other.stdout is not None and other.stdout.readline().strip() == b"registered"
        # Alive and throttled (it says so in the history): named, and a worker is there.
        why = app.explain(waiting.id)
        assert [r.figures["worker"] for r in why.reasons if r.code == "throttled"] == ["w-elsewhere"]
        assert "no_worker" not in codes(why)
        other.kill()
        other.wait(30)
        wait_until(lambda: [w.alive for w in app.storage.worker_list()] == [False], what="its death to show in the registry")
        # Dead, still registered (nobody reaped it), its throttle never ended: not named.
        why = app.explain(waiting.id)
        assert codes(why) == ["scheduled", "no_worker"]
        assert why.reasons[1].figures == {"registered": 1, "live": 0} and "1 registered worker stopped or died" in why.reasons[1].message
        with fq.Worker(app, slots=2):
            wait_until(lambda: [w.alive for w in app.storage.worker_list()] == [True], what="the live worker, the dead one reaped")
            assert codes(app.explain(waiting.id)) == ["scheduled"]
        # Stopped cleanly: it left the registry.
        assert app.storage.worker_list() == [] and codes(app.explain(waiting.id)) == ["scheduled", "no_worker"]
    finally:
        if other.poll() is None:
            other.kill()
        other.wait(30)
        assert other.stdout is not None
        other.stdout.close()
