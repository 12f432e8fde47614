"""Test mode: what a block enqueues runs synchronously when the block ends."""

from __future__ import annotations

import pytest

import fairqueue as fq
import fq_sample_jobs as sample
from fairqueue.records import JobStatus


def test_everything_enqueued_runs_when_the_block_ends_in_dispatch_order(app: fq.FairQueue) -> None:
    with app.testing() as run:
        first = sample.record.delay("org-1", "a")
        app.enqueue(sample.Chain(0, 2), org="org-2")
        sample.record.delay("org-1", "b")
        assert sample.runs == [], "nothing runs inside the block"
    assert [tag for tag, *_ in sample.runs if tag in ("a", "b")] == ["a", "b"]
    assert [(n, depth) for tag, n, depth, _ in (r for r in sample.runs if r[0] == "chain")] == [(0, 0), (1, 1), (2, 2)]
    assert all(r.status is JobStatus.COMPLETED for r in run.jobs())
    assert len(run.jobs()) == 5 and run.order[0] == first.id
    assert app.jobs() == [], "test mode never touches the app's own store"


def test_limits_apply_as_in_production(app: fq.FairQueue) -> None:
    with app.testing() as run:
        app.enqueue(sample.TwoChildren(), org="org-1")
        with pytest.raises(fq.LimitExceeded, match="51 > 50"):
            with app.transaction():
                for i in range(51):
                    sample.record.delay("org-1", str(i))
    [job] = run.jobs()
    assert job.status is JobStatus.FAILED and "2 > 1" in (job.extended_status or "")


def test_finalizers_retries_and_delays_run_without_waiting(app: fq.FairQueue) -> None:
    with app.testing() as run:
        app.enqueue(sample.Fails(), org="org-1")
        app.enqueue(sample.Flaky(), org="org-2", delay=600)
    assert [r[0] for r in sample.runs if r[0] in ("finalizer", "flaky")] == ["finalizer", "flaky", "flaky"]
    statuses = sorted(r.status.value for r in run.jobs())
    assert statuses == ["completed", "failed"]


def test_a_chain_that_never_ends_is_stopped(app: fq.FairQueue) -> None:
    with pytest.raises(fq.LimitExceeded, match="test mode ran 20 jobs"):
        with app.testing(max_jobs=20):
            app.enqueue(sample.Chain(0, 10_000), org="org-1")


def test_a_block_that_raises_runs_nothing(app: fq.FairQueue) -> None:
    with pytest.raises(KeyError):
        with app.testing():
            sample.record.delay("org-1", "never")
            raise KeyError("test failure")
    assert sample.runs == []
