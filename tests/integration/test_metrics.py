"""Prometheus metrics, read over real HTTP (a worker's endpoint, ``fairqueue exporter``) or
rendered from the registry, and always parsed with the client library's parser."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from importlib import metadata
from pathlib import Path

import pytest
from click.testing import CliRunner
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

import fairqueue as fq
import fq_sample_jobs as sample
from conftest import wait_until
from fairqueue.cli import main
from fairqueue.errors import InvalidArgument
from fairqueue.records import JobRecord, JobStatus, NewJob
from fairqueue.runtime.metrics import OTHER, StoreMetrics, WorkerMetrics
from fairqueue.storage.memory import MemoryStorage

Samples = dict[str, list[tuple[dict[str, str], float]]]
SUPPORT = Path(__file__).resolve().parents[1] / "support"


def parse(text: str) -> Samples:
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples.setdefault(s.name, []).append((s.labels, s.value))
    return samples


def scrape(address: tuple[str, int]) -> Samples:
    host, port = address
    with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=10) as response:
        return parse(response.read().decode())


def value(samples: Samples, name: str, **labels: str) -> float:
    return sum(v for found, v in samples.get(name, []) if all(found.get(k) == want for k, want in labels.items()))


def test_the_metrics_endpoint_reports_the_worker(app: fq.FairQueue) -> None:
    sample.record.delay_many("acme", [("x",)] * 30)
    sample.poisoned.delay("globex")
    app.enqueue(sample.Flaky(), org="initech")
    worker = fq.Worker(app, slots=3, metrics_port=0)
    assert worker.metrics is not None
    with worker:
        wait_until(lambda: len(app.jobs(status="completed", limit=100)) == 31 and app.jobs(status="failed"), what="the jobs")
        assert worker.metrics.address is not None and worker.metrics.address[0] == "127.0.0.1"
        samples = scrape(worker.metrics.address)
        blocker = sample.wait_for_release.delay("acme")
        wait_until(lambda: blocker.status is fq.JobStatus.PROCESSING, what="a running job")
        running = scrape(worker.metrics.address)
        sample.release.set()
    assert value(samples, "fairqueue_jobs_finished_total", org="acme", status="completed") == 30
    assert value(samples, "fairqueue_jobs_finished_total", org="globex", status="failed") == 1
    assert value(samples, "fairqueue_dequeue_latency_seconds_count", org="acme", kind="future") == 30
    assert value(samples, "fairqueue_dequeue_latency_seconds_bucket", org="acme", le="+Inf") == 30
    # Flaky asked for a retry on its first delivery and completed on its second.
    assert value(samples, "fairqueue_retries_total", org="initech", kind="queueable") == 1
    assert value(samples, "fairqueue_redeliveries_total", org="initech") == 1
    assert value(samples, "fairqueue_redeliveries_total", org="acme") == 0
    assert value(samples, "fairqueue_run_duration_seconds_count", org="acme", kind="future") == 30
    assert value(samples, "fairqueue_run_duration_seconds_count", org="initech") == 2
    assert value(samples, "fairqueue_worker_slots") == 3 and value(samples, "fairqueue_worker_throttled") == 0
    [(info, one)] = samples["fairqueue_build_info"]
    assert one == 1 and info["version"] == metadata.version("fairqueue") and info["python"] == ".".join(map(str, sys.version_info[:3]))
    assert value(running, "fairqueue_worker_running") == 1 and value(running, "fairqueue_worker_slot_utilisation") == pytest.approx(1 / 3)
    # The store's gauges are the same from every worker: not on a worker's endpoint by default.
    assert "fairqueue_jobs" not in running and "fairqueue_orgs_with_jobs" not in running


def test_a_delivery_whose_worker_died_counts_as_a_redelivery(app: fq.FairQueue) -> None:
    handle = sample.noop.delay("acme")
    # A worker that claimed it and died: its lease lapsed, so the job is queued again.
    [claimed] = app.storage.job_claim([handle.id], "gone", time.time() - 1, time.time() - 2)
    assert claimed.attempts == 1
    worker = fq.Worker(app, slots=1, metrics_port=0)
    assert worker.metrics is not None
    with worker:
        wait_until(lambda: handle.status is fq.JobStatus.COMPLETED, what="the job")
        assert worker.metrics.address is not None
        samples = scrape(worker.metrics.address)
    assert value(samples, "fairqueue_redeliveries_total", org="acme", kind="future") == 1
    assert value(samples, "fairqueue_retries_total") == 0


def test_one_worker_may_export_the_stores_gauges(app: fq.FairQueue) -> None:
    sample.record.delay_many("acme", [("x",)] * 3)
    worker = fq.Worker(app, slots=1, metrics_port=0)
    assert worker.metrics is not None
    worker.metrics.add_store_gauges()
    blocker = sample.wait_for_release.delay("acme")
    with worker:
        wait_until(lambda: blocker.status is fq.JobStatus.PROCESSING, what="a running job")
        assert worker.metrics.address is not None
        running = scrape(worker.metrics.address)
        sample.release.set()
    assert value(running, "fairqueue_jobs", org="acme", status="processing") == 1
    assert value(running, "fairqueue_orgs_with_jobs") == 1
    # With jobs finished, the store gauge still holds only the waiting and running ones:
    # a scrape never counts the history.
    assert {labels["status"] for labels, _ in running["fairqueue_jobs"]} == {"processing"}
    assert len(running["fairqueue_build_info"]) == 1


def test_no_endpoint_unless_asked_and_bad_ports_are_refused(app: fq.FairQueue) -> None:
    assert fq.Worker(app, slots=1).metrics is None
    with pytest.raises(InvalidArgument, match="invalid metrics_port 70000"):
        fq.Worker(app, slots=1, metrics_port=70000)


# ----- bounded org labels ---------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def record(job_id: int, org: str, attempts: int = 1, kind: str = "future") -> JobRecord:
    now = time.time()
    return JobRecord(
        id=job_id, org=org, kind=kind, handler="fq_sample_jobs:noop", payload="[]", status=JobStatus.PROCESSING,
        created_at=now - 2, run_at=None, started_at=now - 1, finished_at=None, attempts=attempts, items_processed=0,
        items_total=None, error_count=0, extended_status=None, parent_id=None, chain_depth=0,
        duplicate_signature=None, lease_owner="w", lease_expires_at=now + 60, cancel_requested=False,
    )  # fmt: skip


def worker_metrics(clock: Clock, **options: int | None) -> WorkerMetrics:
    return WorkerMetrics(MemoryStorage, fq.Dispatcher(slots=4), clock=clock, **options)  # type: ignore[arg-type]


def run(metrics: WorkerMetrics, job: JobRecord, status: JobStatus = JobStatus.COMPLETED) -> None:
    metrics.started(job)
    metrics.finished_one(job, status, ran_for=0.5)


def series_by_org(samples: Samples) -> dict[str, set[str]]:
    """Every metric name's distinct org label values."""
    return {name: {labels["org"] for labels, _ in rows if "org" in labels} for name, rows in samples.items()}


def test_ten_thousand_orgs_make_a_bounded_number_of_series() -> None:
    clock = Clock()
    metrics = worker_metrics(clock)
    kinds = ("future", "queueable", "batch", "scheduled")
    job_id = 0
    for _ in range(3):  # three minutes, so the busiest are chosen again
        for n in range(10_000):
            job_id += 1
            # org-0..org-24 run ten times as often: they are the busiest.
            for _ in range(10 if n < 25 else 1):
                run(metrics, record(job_id, f"org-{n}", attempts=1 + n % 2, kind=kinds[n % 4]),
                    JobStatus.QUEUED if n % 3 == 0 else JobStatus.COMPLETED)  # fmt: skip
        clock.t += 61
    text = generate_latest(metrics.registry).decode()
    samples = parse(text)
    orgs = series_by_org(samples)
    busiest = {f"org-{n}" for n in range(20)}
    for name in ("fairqueue_jobs_finished_total", "fairqueue_dequeue_latency_seconds_bucket",
                 "fairqueue_run_duration_seconds_count", "fairqueue_retries_total", "fairqueue_redeliveries_total"):  # fmt: skip
        assert orgs[name] <= busiest | {OTHER} and OTHER in orgs[name], name
    assert orgs["fairqueue_jobs_finished_total"] == busiest | {OTHER}
    # At most 21 org values x 4 kinds: per histogram 17 buckets, +Inf, count, sum and created;
    # per counter series a total and a created; 3 statuses of finished; 20 for the rest.
    bound = 21 * 4 * (2 * 21 + 3 * 2 + 2 * 2) + 20
    total = sum(len(rows) for rows in samples.values())
    print(f"\n{total} samples for 10,000 orgs (bound {bound}), {len(text):,} bytes")
    assert total <= bound
    # Nothing is lost: every delivery is counted under its org or "other".
    assert value(samples, "fairqueue_jobs_finished_total") == 3 * (25 * 10 + 9_975)
    assert value(samples, "fairqueue_dequeue_latency_seconds_count") == 3 * (25 * 10 + 9_975)


def test_every_org_is_labelled_when_asked_for() -> None:
    metrics = worker_metrics(Clock(), top_orgs=None)
    for n in range(500):
        run(metrics, record(n + 1, f"org-{n}"))
    assert len(series_by_org(parse(generate_latest(metrics.registry).decode()))["fairqueue_jobs_finished_total"]) == 500


def test_an_org_that_becomes_busy_takes_the_place_of_one_gone_quiet_and_counters_never_go_back() -> None:
    clock = Clock()
    metrics = worker_metrics(clock, top_orgs=2)
    for n in range(10):
        run(metrics, record(n, "early"))
        run(metrics, record(100 + n, "steady"))
    run(metrics, record(200, "late"))
    first = parse(generate_latest(metrics.registry).decode())
    assert series_by_org(first)["fairqueue_jobs_finished_total"] == {"early", "steady", OTHER}
    # An hour later "early" has gone quiet and "late" is busy.
    for _ in range(60):
        clock.t += 61
        for n in range(5):
            run(metrics, record(300 + n, "late"))
            run(metrics, record(400 + n, "steady"))
    second = parse(generate_latest(metrics.registry).decode())
    assert series_by_org(second)["fairqueue_jobs_finished_total"] == {"late", "steady", OTHER}
    # "other" only ever grows: a dropped org's earlier counts are not moved into it.
    other = value(first, "fairqueue_jobs_finished_total", org=OTHER)
    assert other == 1 and value(second, "fairqueue_jobs_finished_total", org=OTHER) >= other
    assert value(second, "fairqueue_jobs_finished_total", org="steady") == 10 + 300
    assert value(second, "fairqueue_metrics_orgs_tracked") == 3


def test_bad_top_orgs_are_refused() -> None:
    with pytest.raises(InvalidArgument, match="invalid top_orgs -1"):
        worker_metrics(Clock(), top_orgs=-1)
    with pytest.raises(InvalidArgument, match="invalid top_orgs True"):
        StoreMetrics(MemoryStorage, top_orgs=True)


def test_the_stores_gauges_with_ten_thousand_orgs_are_bounded_and_sum_right(tmp_path: Path) -> None:
    store = MemoryStorage()
    now = time.time()
    store.job_enqueue([NewJob(f"org-{n}", "future", "fq_sample_jobs:noop", "[]") for n in range(10_000)], now)
    store.job_enqueue([NewJob("big", "future", "fq_sample_jobs:noop", "[]")] * 50, now)
    registry_text = generate_latest(_registry(StoreMetrics(lambda: store, top_orgs=5))).decode()
    samples = parse(registry_text)
    assert {labels["org"] for labels, _ in samples["fairqueue_jobs"]} == {"big", "org-0", "org-1", "org-10", "org-100", OTHER}
    assert value(samples, "fairqueue_jobs", org="big", status="queued") == 50
    assert value(samples, "fairqueue_jobs") == 10_050 and value(samples, "fairqueue_orgs_with_jobs") == 10_001
    assert len(samples["fairqueue_build_info"]) == 1


def _registry(collector: StoreMetrics) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(collector)
    return registry


# ----- the command line ---------------------------------------------------------------------------


def test_the_exporter_serves_the_stores_gauges_once(app: fq.FairQueue) -> None:
    sample.record.delay_many("acme", [("x",)] * 4)
    sample.record.delay("globex", "y")
    store = str(app.storage.path)  # type: ignore[attr-defined]
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SUPPORT), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen(
        [sys.executable, "-m", "fairqueue", "exporter", "--store", store, "--port", "0", "--metrics-orgs", "1"],
        env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        found = re.search(r"http://([\d.]+):(\d+)/metrics", line)
        assert found, line
        samples = scrape((found[1], int(found[2])))
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert value(samples, "fairqueue_jobs", org="acme", kind="future", status="queued") == 4
    assert value(samples, "fairqueue_jobs", org=OTHER, status="queued") == 1
    assert value(samples, "fairqueue_orgs_with_jobs") == 2 and len(samples["fairqueue_build_info"]) == 1
    assert "fairqueue_worker_slots" not in samples


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--metrics-store"], "--metrics-store needs --metrics-port"),
        (["--metrics-port", "0", "--metrics-orgs", "many"], "'many': expected a number of orgs >= 0, or 'all'"),
    ],
)
def test_bad_metrics_options_are_refused(args: list[str], message: str) -> None:
    result = CliRunner().invoke(main, ["worker", "fq_sample_jobs:app", "--no-conservation", *args])
    assert result.exit_code == 2 and message in result.output, result.output
