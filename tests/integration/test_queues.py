"""Workers serving named queues, and priorities, with real worker threads on the
memory, SQLite and PostgreSQL stores: a worker serving only ``reports`` never runs a
``default`` job (and explain says nobody serves it); one serving both runs both; a
schedule's fires wait in its job class's queue; a priority-9 job behind 200 of its
org's priority-5 jobs starts within the first few."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from test_job_options import opened

import fairqueue as fq
import fq_flow_jobs as jobs
from conftest import wait_until
from fairqueue.storage import Storage


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Storage]:
    """The flow jobs' app on a fresh store of each kind."""
    backend = opened(request, tmp_path, request.param)
    original, jobs.app.storage = jobs.app.storage, backend
    jobs.ran.clear()
    try:
        yield backend
    finally:
        jobs.app.storage = original
        backend.close()


def status(store: Storage, job_id: int) -> fq.JobStatus:
    record = store.job_get(job_id)
    assert record is not None
    return record.status


def test_a_worker_serving_only_reports_never_runs_a_default_job(store: Storage) -> None:
    # The default jobs come first: a worker that served them would meet them first.
    defaults = [jobs.plain.delay("org-1", f"d{i}") for i in range(5)]
    reports = [jobs.report.delay("org-1", f"r{i}") for i in range(5)]
    with jobs.app.worker(slots=2, queues=["reports"]) as worker:
        for handle in reports:
            handle.wait(timeout=60)
        worker.pick_up()  # one more look at the store: still nothing of 'default' for it
    assert all(status(store, h.id) is fq.JobStatus.COMPLETED for h in reports)
    assert all(status(store, h.id) is fq.JobStatus.QUEUED for h in defaults)
    assert {handler for handler, _, _ in jobs.ran} == {"report"}


def test_a_worker_serving_both_queues_runs_both_and_one_serving_all_runs_any(store: Storage) -> None:
    handles = [jobs.plain.delay("org-1", "d"), jobs.report.delay("org-1", "r"),
               jobs.plain.options(queue="gpu").delay("org-2", "g")]  # fmt: skip
    with jobs.app.worker(slots=2, queues=["reports", "default"]):
        for handle in handles[:2]:
            handle.wait(timeout=60)
    assert status(store, handles[2].id) is fq.JobStatus.QUEUED
    with jobs.app.worker(slots=1):  # queues=None: every queue
        handles[2].wait(timeout=60)
    assert sorted(tag for _, tag, _ in jobs.ran) == ["d", "g", "r"]


def test_a_priority_9_job_behind_200_priority_5_jobs_starts_within_the_first_few(store: Storage) -> None:
    normal = jobs.plain.delay_many("org-1", [[f"n{i}"] for i in range(200)])
    urgent = jobs.plain.options(priority=9).delay("org-1", "urgent")
    with jobs.app.worker(slots=1):
        urgent.wait(timeout=120)
        jobs.app.wait(normal[-1].id, timeout=300)
    order = [job_id for _, _, job_id in jobs.ran]
    assert len(order) == 201
    # Whatever was in flight when the worker first looked may start before it; no more.
    assert order.index(urgent.id) <= 3, order[:10]


def test_a_schedule_of_a_reports_class_fires_into_reports_and_only_its_worker_runs_it(store: Storage) -> None:
    schedule = jobs.app.schedule("reports-every-second", "* * * * * ?", jobs.Child("scheduled"), "org-1")
    assert (schedule.queue, schedule.priority) == ("reports", 7), "the class's queue and priority, stored"
    with jobs.app.worker(slots=1, queues=["default"]) as worker:
        # Fires happen (this worker fires due schedules) but none of them runs here.
        wait_until(lambda: bool(jobs.app.jobs(org="org-1", kind="scheduled")), timeout=60)
        worker.pick_up()
        assert jobs.ran == []
    fired = jobs.app.jobs(org="org-1", kind="scheduled")
    assert {(j.queue, j.priority, j.status) for j in fired} == {("reports", 7, fq.JobStatus.QUEUED)}
    jobs.app.unschedule(schedule.id)
    with jobs.app.worker(slots=1, queues=["reports"]):
        for j in jobs.app.jobs(org="org-1", kind="scheduled"):
            jobs.app.wait(j.id, timeout=60)
    assert {handler for handler, _, _ in jobs.ran} == {"child"}


def test_a_workers_queues_are_checked() -> None:
    with pytest.raises(fq.InvalidArgument, match=r"invalid queues 'reports': expected a non-empty list"):
        jobs.app.worker(queues="reports")
    with pytest.raises(fq.InvalidArgument, match=r"invalid queue ''"):
        jobs.app.worker(queues=["reports", ""])


def test_the_registry_shows_a_workers_queues_and_explain_names_a_queue_nobody_serves(
    store: Storage,
) -> None:
    waiting = jobs.plain.delay("org-1", "d")
    with jobs.app.worker(slots=1, queues=["reports"]) as worker:
        registered = wait_until(lambda: [w for w in store.worker_list() if w.info.name == worker.name],
                                timeout=30, what="the worker's registry row")  # fmt: skip
        explained = jobs.app.explain(waiting.id)
        assert registered[0].info.queues == ("reports",)
    reasons = [r for r in explained.reasons if r.code == "no_worker"]
    assert reasons and "no worker serves queue 'default'" in reasons[0].message, explained.render()
