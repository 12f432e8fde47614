"""The worker runtime end to end on a real SQLite file, worker in this process."""

from __future__ import annotations

import pytest

import fairqueue as fq
import fq_sample_jobs as sample
from conftest import wait_until
from fairqueue.records import JobStatus


def test_futures_and_queueables_complete(app: fq.FairQueue) -> None:
    handles = [sample.record.delay(f"org-{i % 3}", f"t{i}") for i in range(20)]
    handles.append(sample.record_async.delay("org-9", "async"))
    handles.append(app.enqueue(sample.Chain(0, 0), org="org-1"))
    with app.worker(slots=4):
        records = [h.wait(10) for h in handles]
    assert all(r.status is JobStatus.COMPLETED for r in records)
    assert all(r.attempts == 1 and r.started_at and r.finished_at for r in records)
    assert sorted(tag for tag, *_ in sample.runs if str(tag).startswith("t")) == sorted(f"t{i}" for i in range(20))
    assert ("async", "org-9") in sample.runs


def test_a_chain_runs_in_order_with_depth_and_parent(app: fq.FairQueue) -> None:
    root = app.enqueue(sample.Chain(0, 3), org="org-1")
    with app.worker(slots=2):
        wait_until(lambda: len([r for r in sample.runs if r[0] == "chain"]) == 4, what="the chain")
        wait_until(lambda: all(r.status.finished for r in app.jobs()), what="all jobs finished")
    chain = [r for r in sample.runs if r[0] == "chain"]
    assert [(n, depth) for _, n, depth, _ in chain] == [(0, 0), (1, 1), (2, 2), (3, 3)]
    records = {r.id: r for r in app.jobs()}
    ids = [job_id for *_, job_id in chain]
    assert ids[0] == root.id
    assert [records[i].parent_id for i in ids] == [None, *ids[:-1]]


def test_a_running_job_may_chain_only_one_child(app: fq.FairQueue) -> None:
    job = app.enqueue(sample.TwoChildren(), org="org-1")
    with app.worker(slots=1):
        record = job.wait(10)
    assert record.status is JobStatus.FAILED
    assert "too many queueables from a running job (chaining): 2 > 1" in (record.extended_status or "")
    assert len(app.jobs()) == 1, "a failed job's children are rolled back"


def test_a_future_may_not_enqueue_a_future(app: fq.FairQueue) -> None:
    job = sample.nested_future.delay("org-1")
    with app.worker(slots=1):
        record = job.wait(10)
    assert record.status is JobStatus.FAILED
    assert "a future may not enqueue a future" in (record.extended_status or "")


def test_chain_depth_limit_fails_the_job_that_would_exceed_it(app: fq.FairQueue) -> None:
    app.enqueue(sample.Chain(0, 5), org="org-1", options=fq.AsyncOptions(max_depth=2))
    with app.worker(slots=1):
        wait_until(lambda: any(r.status is JobStatus.FAILED for r in app.jobs()), what="the depth limit")
    records = sorted(app.jobs(), key=lambda r: r.id)
    assert [r.chain_depth for r in records] == [0, 1, 2]
    assert [r.status for r in records] == [JobStatus.COMPLETED, JobStatus.COMPLETED, JobStatus.FAILED]
    assert "chain depth 3 is over the maximum depth of 2" in (records[-1].extended_status or "")


def test_finalizers_see_success_and_failure(app: fq.FairQueue) -> None:
    ok = app.enqueue(sample.Succeeds(), org="org-1")
    bad = app.enqueue(sample.Fails(), org="org-2")
    with app.worker(slots=2):
        assert ok.wait(10).status is JobStatus.COMPLETED
        failed = bad.wait(10)
    assert failed.status is JobStatus.FAILED and failed.extended_status == "ValueError: boom"
    finals = sorted(r for r in sample.runs if r[0] == "finalizer")
    assert finals == sorted([("finalizer", ok.id, True, None, None), ("finalizer", bad.id, False, "ValueError", "boom")])
    assert len(app.jobs()) == 2, "the failed job's chained child was rolled back"


def test_a_finalizer_may_re_enqueue_at_most_five_times_in_a_row(app: fq.FairQueue) -> None:
    app.enqueue(sample.RetryForever(), org="org-1")
    with app.worker(slots=1):
        wait_until(lambda: len(app.jobs()) == 6 and all(r.status.finished for r in app.jobs()), what="the requeues")
    assert [n for tag, n in sample.runs if tag == "attempt"] == [0, 1, 2, 3, 4, 5]
    last = app.jobs()[0]
    assert "re-enqueued 6 times in a row, over the limit of 5" in (last.extended_status or "")


def test_retry_delivers_again(app: fq.FairQueue) -> None:
    job = app.enqueue(sample.Flaky(), org="org-1")
    with app.worker(slots=1):
        wait_until(lambda: job.record().status is JobStatus.COMPLETED, what="the retry")
    assert [r for r in sample.runs if r[0] == "flaky"] == [("flaky", 1), ("flaky", 2)]
    assert job.record().attempts == 2


def test_an_aborted_queued_job_never_runs(app: fq.FairQueue) -> None:
    doomed = sample.record.delay("org-1", "doomed")
    kept = sample.record.delay("org-1", "kept")
    assert app.abort(doomed.id) is JobStatus.ABORTED
    with app.worker(slots=1):
        kept.wait(10)
    assert doomed.record().status is JobStatus.ABORTED
    assert [tag for tag, *_ in sample.runs] == ["kept"]


def test_aborting_a_running_job_sets_its_cancel_flag(app: fq.FairQueue) -> None:
    job = sample.wait_for_release.delay("org-1")
    with app.worker(slots=1):
        wait_until(lambda: ("started", job.id) in sample.runs, what="the job to start")
        assert app.abort(job.id) is JobStatus.PROCESSING
        wait_until(lambda: ("cancelled", job.id) in sample.runs, what="the cooperative cancel")
        job.wait(10)


def test_an_org_view_sees_and_aborts_only_its_own_jobs(app: fq.FairQueue) -> None:
    mine = sample.record.delay("acme", "a")
    theirs = sample.record.delay("globex", "b")
    acme = app.org("acme")
    assert [r.id for r in acme.jobs()] == [mine.id]
    assert acme.get(theirs.id) is None
    with pytest.raises(LookupError, match="acme"):
        acme.abort(theirs.id)
    assert theirs.record().status is JobStatus.QUEUED
    assert acme.abort(mine.id) is JobStatus.ABORTED


def test_poisoned_and_hung_jobs_fail_alone_while_others_flow(app: fq.FairQueue) -> None:
    poisoned = sample.poisoned.delay("org-bad")
    hung = sample.quick_timeout.delay("org-bad")
    others = [sample.record.delay(f"org-{i}", f"ok{i}") for i in range(10)]
    with app.worker(slots=2):
        records = [h.wait(10) for h in others]
        assert all(r.status is JobStatus.COMPLETED for r in records)
        p, h = poisoned.wait(10), hung.wait(10)
    assert p.status is JobStatus.FAILED and p.extended_status == "RuntimeError: poisoned job: raises every time"
    assert h.status is JobStatus.FAILED and "TimeoutError" in (h.extended_status or "")
    assert "over its timeout of 0.3 s" in (h.extended_status or "")


def test_stopping_requeues_what_did_not_finish_within_the_grace(app: fq.FairQueue) -> None:
    job = sample.wait_for_release.delay("org-1")
    worker = app.worker(slots=1).start()
    wait_until(lambda: ("started", job.id) in sample.runs, what="the job to start")
    worker.stop(grace=0.1)
    record = job.record()
    assert record.status is JobStatus.QUEUED and record.extended_status == "re-queued: worker stopped"
    sample.release.set()
    with app.worker(slots=1):
        assert job.wait(10).status is JobStatus.COMPLETED
    assert job.record().attempts == 1, "the stop handed its delivery back (#13): only the run that finished counts"


def test_a_restarted_worker_picks_up_everything_queued(app: fq.FairQueue) -> None:
    handles = [sample.record.delay(f"org-{i % 5}", f"r{i}") for i in range(200)]
    with app.worker(slots=4):
        assert all(h.wait(20).status is JobStatus.COMPLETED for h in handles)
    assert len(sample.runs) == 200


def test_process_mode_isolates_a_job_that_kills_its_process_or_hangs(
    app: fq.FairQueue, tmp_path: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FQ_STORE", str(app.storage.path))  # type: ignore[attr-defined]
    killer = sample.die.delay("org-bad")
    hung = sample.hang.delay("org-bad")
    others = [sample.spin.delay(f"org-{i}", 0.001) for i in range(12)]
    with app.worker(slots=3, mode="process", app_path="fq_sample_jobs:app"):
        assert all(h.wait(60).status is JobStatus.COMPLETED for h in others)
        died, timed_out = killer.wait(60), hung.wait(60)
    assert died.status is JobStatus.FAILED
    assert "worker process died while running it (exit code 17)" in (died.extended_status or "")
    assert timed_out.status is JobStatus.FAILED
    assert "over its timeout of 2 s (its process was killed)" in (timed_out.extended_status or "")


def test_process_mode_needs_the_app_path(app: fq.FairQueue) -> None:
    with pytest.raises(fq.InvalidArgument, match="app_path"):
        app.worker(mode="process")
    with pytest.raises(fq.InvalidArgument, match="'thread' or 'process'"):
        app.worker(mode="fiber")


def test_a_job_whose_lease_lapsed_while_running_is_run_again(app: fq.FairQueue) -> None:
    job = sample.wait_for_release.delay("org-1")
    with app.worker(slots=1):
        wait_until(lambda: ("started", job.id) in sample.runs, what="the job to start")
        # As another worker would after our heartbeats stopped: the lease is over.
        assert app.storage.job_requeue_expired(job.record().lease_expires_at + 1) == [job.id]  # type: ignore[operator]
        sample.release.set()
        record = job.wait(10)
    assert record.status is JobStatus.COMPLETED
    assert [r for r in sample.runs if r == ("started", job.id)] == [("started", job.id)] * 2
    assert record.attempts == 2
