"""The worker's Prometheus endpoint, read over real HTTP and parsed with the client library's parser."""

from __future__ import annotations

import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

import fairqueue as fq
import fq_sample_jobs as sample
from conftest import wait_until
from fairqueue.errors import InvalidArgument


def scrape(address: tuple[str, int]) -> dict[str, list[tuple[dict[str, str], float]]]:
    host, port = address
    with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples.setdefault(s.name, []).append((s.labels, s.value))
    return samples


def value(samples: dict[str, list[tuple[dict[str, str], float]]], name: str, **labels: str) -> float:
    return sum(v for found, v in samples.get(name, []) if all(found.get(k) == want for k, want in labels.items()))


def test_the_metrics_endpoint_reports_the_store_and_the_worker(app: fq.FairQueue) -> None:
    sample.record.delay_many("acme", [("x",)] * 30)
    sample.poisoned.delay("globex")
    worker = fq.Worker(app, slots=3, metrics_port=0)
    assert worker.metrics is not None
    with worker:
        wait_until(lambda: len(app.jobs(status="completed", limit=100)) == 30 and app.jobs(status="failed"), what="the jobs")
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
    assert value(samples, "fairqueue_worker_slots") == 3 and value(samples, "fairqueue_worker_throttled") == 0
    assert value(running, "fairqueue_worker_running") == 1 and value(running, "fairqueue_worker_slot_utilisation") == pytest.approx(1 / 3)
    assert value(running, "fairqueue_jobs", org="acme", status="processing") == 1
    # With 31 jobs finished, the store gauge still holds only the waiting and running
    # ones: a scrape never counts the history.
    assert {labels["status"] for labels, _ in running["fairqueue_jobs"]} == {"processing"}


def test_no_endpoint_unless_asked_and_bad_ports_are_refused(app: fq.FairQueue) -> None:
    assert fq.Worker(app, slots=1).metrics is None
    with pytest.raises(InvalidArgument, match="invalid metrics_port 70000"):
        fq.Worker(app, slots=1, metrics_port=70000)
