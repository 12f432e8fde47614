"""Retries with back-off, discarded jobs and results: in test mode on a virtual
clock, with a worker in this process, and across processes on both shared stores."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import fairqueue as fq
import fq_lifecycle_jobs as jobs
from fairqueue.storage import Storage, open_storage

SUPPORT = Path(__file__).resolve().parents[1] / "support"


@pytest.fixture
def effects(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "effects"
    monkeypatch.setenv("FQ_EFFECTS", str(path))
    return path


@pytest.fixture
def on_store(tmp_path: Path) -> Iterator[Storage]:
    """The jobs' app on a fresh SQLite file."""
    original, jobs.app.storage = jobs.app.storage, open_storage(str(tmp_path / "fq.db"))
    try:
        yield jobs.app.storage
    finally:
        jobs.app.storage.close()
        jobs.app.storage = original


def gaps(record: fq.JobRecord, finished: float) -> list[float]:
    """Seconds between a job's failed attempts and the run after each."""
    times = [e["at"] for e in record.attempt_errors()] + [finished]
    return [b - a for a, b in zip(times, times[1:])]


def test_a_handler_failing_twice_then_succeeding_completes_on_attempt_3_after_the_policys_delays(effects: Path) -> None:
    with jobs.app.testing() as run:
        handle = jobs.flaky.delay("org-1", "a", 2)
    record = run.get(handle.id)
    assert record is not None and record.status is fq.JobStatus.COMPLETED, record
    assert (record.handler_attempts, record.attempts, record.error_count) == (3, 3, 2)
    assert fq.jobs.result_of(record) == {"key": "a", "attempt": 3, "ctx_attempt": 3}
    assert [e["type"] for e in record.attempt_errors()] == ["ConnectionError", "ConnectionError"]
    assert "flaky attempt 2" in record.attempt_errors()[1]["traceback"], "each attempt keeps its traceback"
    # Virtual clock: each wait is the policy's delay for that attempt, within its jitter.
    assert record.finished_at is not None
    for attempt, gap in enumerate(gaps(record, record.finished_at), start=1):
        full = jobs.POLICY.base * jobs.POLICY.factor ** (attempt - 1)
        assert full * (1 - jobs.POLICY.jitter) - 1e-6 <= gap <= full + 1e-3, (attempt, gap)


def test_exhausted_retries_discard_the_job_with_its_last_error(effects: Path) -> None:
    with jobs.app.testing() as run:
        handle = jobs.broken.delay("org-1", "b")
    record = run.get(handle.id)
    assert record is not None and record.status is fq.JobStatus.DISCARDED and record.handler_attempts == 3
    assert record.extended_status == "RuntimeError: b: broken every time (attempt 3 of 3, retries exhausted)"
    assert jobs.runs_so_far("b") == 3


def test_dont_retry_on_fails_at_once(effects: Path) -> None:
    with jobs.app.testing() as run:
        handle = jobs.picky.delay("org-1", "c")
    record = run.get(handle.id)
    assert record is not None and record.status is fq.JobStatus.FAILED and record.handler_attempts == 1
    assert record.extended_status == "ValueError: c: bad input, retrying cannot help (not retried)"
    assert jobs.runs_so_far("c") == 1


def test_a_handlers_own_retry_counts_as_an_attempt_and_is_bounded_by_its_policy(effects: Path) -> None:
    with jobs.app.testing() as run:
        handle = jobs.asks_again.delay("org-1", "d")
    record = run.get(handle.id)
    assert record is not None and record.status is fq.JobStatus.DISCARDED and jobs.runs_so_far("d") == 3
    assert record.extended_status is not None and record.extended_status.startswith("Retry: d: not ready")


def test_a_queueables_class_policy_applies_and_its_return_value_is_its_result(effects: Path) -> None:
    with jobs.app.testing() as run:
        handle = jobs.app.enqueue(jobs.Report("e"), org="org-1")
    record = run.get(handle.id)
    assert record is not None and record.status is fq.JobStatus.COMPLETED and record.handler_attempts == 2
    assert fq.jobs.result_of(record) == [1, 2, 3]


def test_a_worker_retries_stores_results_and_result_raises_a_jobs_error(on_store: Storage, effects: Path) -> None:
    ok = jobs.flaky.delay("org-1", "f", 1)
    bad = jobs.broken.delay("org-2", "g")
    odd = jobs.unjsonable.delay("org-3")
    with jobs.app.worker(slots=2):
        assert ok.result(timeout=60) == {"key": "f", "attempt": 2, "ctx_attempt": 2}
        with pytest.raises(fq.JobFailed) as failed:
            bad.result(timeout=60)
        assert odd.result(timeout=60) is None
    error = failed.value
    assert (error.job_id, error.status, error.error_type) == (bad.id, "discarded", "RuntimeError")
    assert error.error_message == "g: broken every time" and "raise RuntimeError" in (error.remote_traceback or "")
    assert odd.record().extended_status is not None and "result not stored: object is not JSON" in odd.record().extended_status


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return str(tmp_path / "fq.db")
    return f"{request.getfixturevalue('pg_dsn')}?schema={request.getfixturevalue('pg_schema')}"


def test_results_and_errors_cross_processes(store_url: str, effects: Path) -> None:
    store = open_storage(store_url)
    original, jobs.app.storage = jobs.app.storage, store
    environment = {**os.environ, "FQ_STORE": store_url,
                   "PYTHONPATH": os.pathsep.join([str(SUPPORT), os.environ.get("PYTHONPATH", "")])}  # fmt: skip
    worker = subprocess.Popen(
        [sys.executable, "-m", "fairqueue", "worker", "fq_lifecycle_jobs:app", "--slots", "2", "--no-conservation"],
        env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        ok = jobs.flaky.delay("org-1", "h", 2)
        bad = jobs.picky.delay("org-1", "i")
        assert ok.result(timeout=120) == {"key": "h", "attempt": 3, "ctx_attempt": 3}
        with pytest.raises(fq.JobFailed, match=r"job \d+ failed: ValueError: i: bad input") as failed:
            bad.result(timeout=120)
        assert failed.value.error_type == "ValueError" and "raise ValueError" in (failed.value.remote_traceback or "")
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=60) == 0
    finally:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()
        jobs.app.storage = original
        store.close()


def test_futures_and_queueables_can_start_later_within_their_kinds_limit(effects: Path) -> None:
    from datetime import datetime, timedelta, timezone

    when = datetime.now(timezone.utc) + timedelta(days=2)
    with jobs.app.testing() as run:
        later = jobs.flaky.options(run_at=when).delay("org-1", "j", 0)
        soon = jobs.flaky.options(delay=90).delay("org-1", "k", 0)
        report = jobs.app.enqueue(jobs.Report("l"), org="org-1", run_at=datetime.now(timezone.utc) + timedelta(minutes=5))
        with pytest.raises(fq.LimitExceeded, match=r"over the limit of 604800 s for a future \(Limits.max_delay\['future'\]\)"):
            jobs.flaky.options(delay=timedelta(days=8)).delay("org-1", "m", 0)
        with pytest.raises(fq.LimitExceeded, match=r"for a queueable"):
            jobs.app.enqueue(jobs.Report("n"), org="org-1", delay=timedelta(minutes=11))
        with pytest.raises(fq.InvalidArgument, match="has no time zone"):
            jobs.flaky.options(run_at=datetime.now() + timedelta(hours=1)).delay("org-1", "o", 0)
        with pytest.raises(fq.InvalidArgument, match="not both"):
            jobs.app.enqueue(jobs.Report("p"), org="org-1", delay=1, run_at=when)
    records = {h.id: run.get(h.id) for h in (later, soon, report)}
    assert all(r is not None and r.status is fq.JobStatus.COMPLETED for r in records.values()), records
    # On the virtual clock each ran no earlier than asked.
    later_record = records[later.id]
    assert later_record is not None and later_record.run_at == pytest.approx(when.timestamp(), abs=1e-3)
    assert later_record.started_at is not None and later_record.started_at >= when.timestamp() - 1e-3
    soon_record = records[soon.id]
    assert soon_record is not None and soon_record.run_at is not None
    # created_at is read when the job is stored, a moment after its start was set: loose on a busy machine.
    assert soon_record.run_at - soon_record.created_at == pytest.approx(90, abs=10)
    assert fq.Limits(max_delay=60).max_delay == dict.fromkeys(fq.KINDS, 60)
    with pytest.raises(fq.InvalidArgument, match=r"invalid max_delay\['future'\]"):
        fq.Limits(max_delay={"future": -1})


def test_bulk_retry_and_abort_by_filter_touch_exactly_the_matching_jobs(on_store: Storage, effects: Path) -> None:
    app = jobs.app
    broken = [jobs.broken.delay(org, f"q-{org}-{i}") for org in ("org-1", "org-2") for i in range(2)]
    picky = jobs.picky.delay("org-1", "r")
    with app.worker(slots=2):
        for handle in (*broken, picky):
            handle.wait(timeout=60)
    assert {h.record().status for h in broken} == {fq.JobStatus.DISCARDED}
    # The org-scoped view re-runs only its own discarded futures of that handler.
    view = app.org("org-1")
    again = view.retry_jobs("discarded", handler="fq_lifecycle_jobs:broken")
    assert again == sorted(h.id for h in broken if h.org == "org-1")
    assert [h.record().status for h in broken if h.org == "org-2"] == [fq.JobStatus.DISCARDED] * 2
    assert picky.record().status is fq.JobStatus.FAILED, "another handler's job is not touched"
    with pytest.raises(LookupError):
        view.retry(broken[-1].id)  # org-2's
    with pytest.raises(fq.InvalidArgument, match="only failed, discarded, aborted"):
        view.retry(again[0])  # queued now
    # Bulk abort of the re-queued ones (no worker running), by filter, in the view.
    aborted = view.abort_jobs("queued", kind="future")
    assert aborted == dict.fromkeys(again, fq.JobStatus.ABORTED)
    assert app.retry(picky.id) is fq.JobStatus.QUEUED and picky.record().handler_attempts == 0
    with pytest.raises(fq.InvalidArgument, match="invalid status 'completed' for retry_jobs"):
        app.retry_jobs("completed")


def test_result_async_returns_the_value_or_raises_the_jobs_error(on_store: Storage, effects: Path) -> None:
    import asyncio

    ok = jobs.flaky.delay("org-1", "s", 0)
    bad = jobs.picky.delay("org-1", "t")

    async def main() -> object:
        value = await ok.result_async(timeout=60)
        with pytest.raises(fq.JobFailed, match="ValueError"):
            await bad.result_async(timeout=60)
        return value

    with jobs.app.worker(slots=2):
        assert asyncio.run(main()) == {"key": "s", "attempt": 1, "ctx_attempt": 1}


def test_explain_tells_retries_from_deliveries_lost_with_a_worker(on_store: Storage, effects: Path) -> None:
    bad = jobs.broken.delay("org-1", "u")
    with jobs.app.worker(slots=1):
        bad.wait(timeout=60)
    codes = {r.code: r.message for r in jobs.app.explain(bad.id).reasons}
    assert codes["retried"] == "its handler raised 3 times (last: RuntimeError: u: broken every time)"
    assert "redelivered" not in codes, "no delivery was lost: nothing blames a worker"
    # A delivery whose lease lapsed (its worker vanished) is one lost without an outcome.
    lost = jobs.flaky.delay("org-1", "v", 0)
    on_store.job_claim([lost.id], "gone", 1.0, 0.5)
    on_store.job_requeue_expired(2.0)
    codes = {r.code: r.message for r in jobs.app.explain(lost.id).reasons}
    assert codes["redelivered"] == "1 delivery ended without an outcome: a worker holding it died, stalled or stopped"
