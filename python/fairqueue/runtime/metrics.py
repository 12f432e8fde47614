"""Prometheus metrics of a worker, served over HTTP when asked for
(``fairqueue worker APP --metrics-port 9464``; off by default, loopback by default).

Per org and kind: jobs in each status (from the store, so every worker sharing
it reports the same), the dequeue latency histogram (enqueue or run-at time to
start, for the jobs this worker started: p50/p95/p99 via ``histogram_quantile``)
and finished jobs by status (throughput via ``rate``). Per worker: slots,
running jobs and their utilisation, the capacity resource conservation allows
and whether it throttles, and extended delays applied.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Optional

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from fairqueue._core import Dispatcher
from fairqueue.records import JobRecord, JobStatus
from fairqueue.storage import Storage

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

__all__ = ["WorkerMetrics"]

# Seconds: from a 5 ms wait to the reference platform's hours-long ones.
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 4 * 3600)


class WorkerMetrics:
    """One worker's metrics and, once :meth:`serve` is called, their HTTP endpoint.

    Args:
        store: returns the store whose live counts are exported.
        core: the worker's dispatcher, whose slots and capacity are exported.
    """

    def __init__(self, store: Callable[[], Storage], core: Dispatcher) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.dequeue_latency = Histogram(
            "fairqueue_dequeue_latency_seconds",
            "Seconds from a job's enqueue (or run-at time) to its start, for jobs this worker started",
            ["org", "kind"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.finished = Counter(
            "fairqueue_jobs_finished",
            "Job deliveries this worker finished, by outcome (completed, failed, or queued again)",
            ["org", "kind", "status"],
            registry=self.registry,
        )
        self.registry.register(_Live(store, core))
        self._server: Optional[object] = None
        self._thread: Optional[threading.Thread] = None
        self.address: Optional[tuple[str, int]] = None
        """(host, port) the endpoint listens on, once serving."""

    def started(self, record: JobRecord) -> None:
        """Counts a job this worker just started."""
        if record.started_at is None:
            return
        ready = max(record.created_at, record.run_at or record.created_at)
        self.dequeue_latency.labels(record.org, record.kind).observe(max(record.started_at - ready, 0.0))

    def finished_one(self, record: JobRecord, status: JobStatus) -> None:
        """Counts a delivery this worker finished."""
        self.finished.labels(record.org, record.kind, status.value).inc()

    def serve(self, port: int, host: str = "127.0.0.1") -> tuple[str, int]:
        """Serves ``/metrics`` on ``host:port`` (port 0: any free one); returns where."""
        server, thread = start_http_server(port, addr=host, registry=self.registry)
        self._server, self._thread = server, thread
        self.address = (host, server.server_port)
        return self.address

    def close(self) -> None:
        """Stops serving."""
        if self._server is not None:
            self._server.shutdown()  # type: ignore[attr-defined]
            self._server.server_close()  # type: ignore[attr-defined]
            self._server = None


class _Live(Collector):
    """Figures read at scrape time: the store's counts and the worker's core."""

    def __init__(self, store: Callable[[], Storage], core: Dispatcher) -> None:
        self.store = store
        self.core = core

    def collect(self) -> Iterator[Metric]:
        # Waiting and running only: counting finished jobs would read the store's whole
        # history at every scrape. Finished totals are fairqueue_jobs_finished_total.
        jobs = GaugeMetricFamily(
            "fairqueue_jobs", "Jobs waiting or running in the store, by org, kind and status", labels=["org", "kind", "status"]
        )
        for (org, kind, status), n in sorted(self.store().job_counts(live=True).items()):
            jobs.add_metric([org, kind, status.value], n)
        yield jobs
        stats = self.core.stats()
        slots, running = float(stats["slots"]), float(stats["running"])
        yield GaugeMetricFamily("fairqueue_worker_slots", "This worker's handler slots", value=slots)
        yield GaugeMetricFamily("fairqueue_worker_running", "Jobs this worker is running", value=running)
        yield GaugeMetricFamily("fairqueue_worker_slot_utilisation", "Running jobs / slots", value=running / slots if slots else 0.0)
        capacity = float(stats["capacity"])
        yield GaugeMetricFamily(
            "fairqueue_worker_capacity", "Share of slots resource conservation lets this worker fill (1: all)", value=capacity
        )
        yield GaugeMetricFamily(
            "fairqueue_worker_throttled", "1 while resource conservation throttles this worker", value=float(capacity < 1)
        )
        yield CounterMetricFamily(
            "fairqueue_extended_delays", "Extended delays this worker's dispatcher applied (peek_set policy)",
            value=float(stats["extended_delays"]),
        )  # fmt: skip
