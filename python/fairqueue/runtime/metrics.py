"""Prometheus metrics: a worker's own, served over HTTP when asked for
(``fairqueue worker APP --metrics-port 9464``; off by default, loopback by default),
and the store's, served once for the whole fleet (``fairqueue exporter``).

A worker exports what it did and what it is: the dequeue latency and run duration
histograms (for the jobs this worker started and finished: p50/p95/p99 via
``histogram_quantile``), finished deliveries by status, redeliveries and retries
(rates via ``rate``), its slots, running jobs, utilisation, the capacity resource
conservation allows and whether it throttles, extended delays applied, and
``fairqueue_build_info``. Every series is this worker's alone, so ``sum()`` over
instances is the fleet's.

The store's gauges (jobs waiting and running per org, kind and status) are the
same whichever worker reads them, so they are not on a worker's endpoint unless
that one worker is told to (``--metrics-store``); ``fairqueue exporter`` serves
them on their own, once.

The ``org`` label is bounded: the ``top_orgs`` busiest orgs (20 by default; by
jobs started and finished lately, with older activity decaying) keep their own
label and the rest are summed as ``org="other"``, so 10,000 tenants make 21 label
values, not 10,000. ``top_orgs=None`` labels every org (opt-in, for a fleet with
few tenants). An org that drops out of the busiest has its series removed (it
counts under ``other`` from then on); one that comes back starts new series, which
``rate()`` reads as a counter reset, as it should.
"""

from __future__ import annotations

import platform
import threading
import time
from collections.abc import Callable, Iterator
from importlib import metadata
from typing import TYPE_CHECKING, Optional, TypeVar, Union

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from fairqueue._core import Dispatcher
from fairqueue.errors import InvalidArgument
from fairqueue.kinds import Policy
from fairqueue.observe import predicted_waits
from fairqueue.records import JobRecord, JobStatus
from fairqueue.storage import Storage
from fairqueue.validate import check_policy, shown

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

__all__ = ["DEFAULT_TOP_ORGS", "OTHER", "OrgLabels", "StoreMetrics", "WorkerMetrics", "serve"]

DEFAULT_TOP_ORGS = 20
"""Orgs that keep their own ``org`` label by default; the rest are ``other``."""

OTHER = "other"
"""The ``org`` label of every org outside the busiest."""

# Seconds: from a 5 ms wait to the reference platform's hours-long ones.
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 4 * 3600)

# Every RERANK seconds the busiest orgs are chosen again, and activity so far decays by
# half every HALF_LIFE: an org that was busy an hour ago gives way to one busy now,
# while labels change at most once a minute (each change ends some series).
_RERANK = 60.0
_HALF_LIFE = 600.0
# Activity under this is forgotten, so the tally holds the orgs active lately only.
_FORGET = 0.01

Server = tuple[object, threading.Thread]
_M = TypeVar("_M", Histogram, Counter)


def _check_top(top_orgs: Optional[int]) -> Optional[int]:
    if top_orgs is not None and (not isinstance(top_orgs, int) or isinstance(top_orgs, bool) or top_orgs < 0):
        raise InvalidArgument(f"invalid top_orgs {shown(top_orgs)}: expected an integer >= 0, or None for every org")
    return top_orgs


class OrgLabels:
    """Which orgs keep their own ``org`` label: the ``top`` busiest, the rest ``other``.

    The loop thread calls :meth:`label` for each job event; a scrape reads nothing
    of it. Orgs take free label places as they first appear; once every place is
    taken, the busiest are chosen again every minute, and :meth:`label` returns
    the orgs that lost their place so their series can be removed.

    Args:
        top: how many orgs keep their own label (None: every org; 0: none).
        clock: monotonic seconds.

    Raises:
        InvalidArgument: ``top`` is not an integer >= 0 or None.
    """

    def __init__(self, top: Optional[int] = DEFAULT_TOP_ORGS, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.top = _check_top(top)
        self._clock = clock
        self._activity: dict[str, float] = {}
        self._labelled: set[str] = set()
        self._reranked = clock()

    @property
    def labelled(self) -> frozenset[str]:
        """The orgs that have their own label now."""
        return frozenset(self._labelled)

    @property
    def tracked(self) -> int:
        """Orgs whose recent activity is tallied (what this costs in memory)."""
        return len(self._activity)

    def label(self, org: str) -> tuple[str, list[str]]:
        """Counts one event of ``org``; returns its label and the orgs that just lost theirs."""
        if self.top is None:
            return org, []
        self._activity[org] = self._activity.get(org, 0.0) + 1.0
        dropped: list[str] = []
        now = self._clock()
        if now - self._reranked >= _RERANK:
            dropped = self._rerank(now)
        if org not in self._labelled and len(self._labelled) < self.top:
            self._labelled.add(org)
        return (org if org in self._labelled else OTHER), dropped

    def _rerank(self, now: float) -> list[str]:
        decay = 0.5 ** ((now - self._reranked) / _HALF_LIFE)
        self._reranked = now
        self._activity = {o: a * decay for o, a in self._activity.items() if a * decay >= _FORGET}
        # Ties go to the org already labelled, then by name, so equal orgs do not swap places.
        ranked = sorted(self._activity, key=lambda o: (-self._activity[o], o not in self._labelled, o))
        busiest = set(ranked[: self.top])
        dropped = sorted(self._labelled - busiest)
        self._labelled = busiest
        return dropped


class WorkerMetrics:
    """One worker's metrics and, once :meth:`serve` is called, their HTTP endpoint.

    Args:
        store: returns the store (read only for the store's gauges, when
            :meth:`add_store_gauges` asks for them).
        core: the worker's dispatcher, whose slots and capacity are exported.
        top_orgs: how many orgs keep their own ``org`` label (see the module's
            docstring; None: every org).
        clock: monotonic seconds, for choosing the busiest orgs.

    Raises:
        InvalidArgument: a bad ``top_orgs``.
    """

    def __init__(
        self,
        store: Callable[[], Storage],
        core: Dispatcher,
        *,
        top_orgs: Optional[int] = DEFAULT_TOP_ORGS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.orgs = OrgLabels(top_orgs, clock=clock)
        self.registry = CollectorRegistry(auto_describe=True)
        self.dequeue_latency = Histogram(
            "fairqueue_dequeue_latency_seconds",
            "Seconds from a job's enqueue (or run-at time) to its start, for jobs this worker started",
            ["org", "kind"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.run_duration = Histogram(
            "fairqueue_run_duration_seconds",
            "Seconds from a delivery's start to its outcome, for deliveries this worker finished",
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
        self.redeliveries = Counter(
            "fairqueue_redeliveries",
            "Deliveries this worker started that were not the job's first: after a retry, or after a delivery "
            "that ended without an outcome (its worker died, its lease lapsed); minus retries, the lost ones",
            ["org", "kind"],
            registry=self.registry,
        )
        self.retries = Counter(
            "fairqueue_retries",
            "Deliveries this worker finished by scheduling a retry of the job",
            ["org", "kind"],
            registry=self.registry,
        )
        # The label values each labelled org has in each metric, to remove them when it drops out.
        self._series: dict[str, set[tuple[Union[Histogram, Counter], tuple[str, ...]]]] = {}
        self._lock = threading.Lock()
        self.registry.register(_BuildInfo())
        self.registry.register(_WorkerLive(core, self.orgs))
        self._store_gauges: Optional[StoreMetrics] = None
        self._server: Optional[Server] = None
        self.address: Optional[tuple[str, int]] = None
        """(host, port) the endpoint listens on, once serving."""

    def limit_orgs(self, top_orgs: Optional[int]) -> None:
        """Sets how many orgs keep their own ``org`` label (None: every org); call it
        before the worker starts.

        Raises:
            InvalidArgument: not an integer >= 0 or None.
        """
        self.orgs.top = _check_top(top_orgs)

    def add_store_gauges(self, top_orgs: Optional[int] = DEFAULT_TOP_ORGS, *, policy: Policy = "fair_share") -> None:
        """Exports the store's gauges from this worker's endpoint too: ask it of one
        worker per store only (or run ``fairqueue exporter`` instead), since every
        worker would report the same figures. ``policy``: the queue's (the predicted
        waits depend on it)."""
        if self._store_gauges is None:
            self._store_gauges = StoreMetrics(self.store, top_orgs=top_orgs, build_info=False, policy=policy)
            self.registry.register(self._store_gauges)

    # ----- what the loop reports -------------------------------------------------------

    def started(self, record: JobRecord) -> None:
        """Counts a delivery this worker just started (its latency; a redelivery if it is not the first)."""
        if record.started_at is None:
            return
        ready = max(record.created_at, record.run_at or record.created_at)
        org = self._label(record.org)
        self._labels(self.dequeue_latency, org, record.kind).observe(max(record.started_at - ready, 0.0))
        if record.attempts > 1:
            self._labels(self.redeliveries, org, record.kind).inc()

    def finished_one(
        self, record: JobRecord, status: JobStatus, *, ran_for: Optional[float] = None, given_back: bool = False
    ) -> None:
        """Counts a delivery this worker finished.

        Args:
            record: the job as it was claimed.
            status: the outcome's status (``queued`` for a retry or a job handed back).
            ran_for: seconds from the delivery's start to its outcome; by default
                measured from the claim's ``started_at`` to now, which adds the
                time the outcome waited to be stored.
            given_back: the delivery was handed back unfinished (its worker
                stopped): not a retry, and no run duration.
        """
        org = self._label(record.org)
        self._labels(self.finished, org, record.kind, status.value).inc()
        if given_back:
            return
        if status is JobStatus.QUEUED:
            self._labels(self.retries, org, record.kind).inc()
        if ran_for is None and record.started_at is not None:
            ran_for = time.time() - record.started_at
        if ran_for is not None:
            self._labels(self.run_duration, org, record.kind).observe(max(ran_for, 0.0))

    # ----- serving ---------------------------------------------------------------------

    def serve(self, port: int, host: str = "127.0.0.1") -> tuple[str, int]:
        """Serves ``/metrics`` on ``host:port`` (port 0: any free one); returns where."""
        self._server, self.address = serve(self.registry, port, host)
        return self.address

    def close(self) -> None:
        """Stops serving."""
        if self._server is not None:
            server, thread = self._server
            server.shutdown()  # type: ignore[attr-defined]
            server.server_close()  # type: ignore[attr-defined]
            thread.join(5)
            self._server = None

    # ----- internals -------------------------------------------------------------------

    def _label(self, org: str) -> str:
        with self._lock:
            label, dropped = self.orgs.label(org)
            for gone in dropped:
                for metric, values in self._series.pop(gone, ()):
                    metric.remove(gone, *values)
        return label

    def _labels(self, metric: _M, org: str, *values: str) -> _M:
        """``metric``'s child for ``org`` (a label from :meth:`_label`) and ``values``."""
        if org != OTHER and self.orgs.top is not None:
            with self._lock:
                self._series.setdefault(org, set()).add((metric, values))
        return metric.labels(org, *values)


class StoreMetrics(Collector):
    """The store's gauges, read at scrape time: jobs waiting and running by org, kind
    and status (the busiest ``top_orgs`` orgs by live jobs; the rest summed as
    ``other``), how many orgs have any, and each org's predicted wait (the same orgs
    labelled; ``other``: the longest of the rest's) from
    :func:`fairqueue.observe.predicted_waits`, a few reads per scrape however many
    orgs there are. Same figures from any process: export them once per store
    (``fairqueue exporter``).

    Waiting and running only: counting finished jobs would read the store's whole
    history at every scrape (finished totals are the workers'
    ``fairqueue_jobs_finished_total``).

    Args:
        store: returns the store to read.
        top_orgs: how many orgs keep their own ``org`` label (None: every org).
        build_info: export ``fairqueue_build_info`` too (for a registry of its own).
        policy: the queue's policy (``fair_share`` or ``peek_set``): the predicted waits depend on it.

    Raises:
        InvalidArgument: a bad ``top_orgs`` or ``policy``.
    """

    def __init__(self, store: Callable[[], Storage], *, top_orgs: Optional[int] = DEFAULT_TOP_ORGS, build_info: bool = True,
                 policy: Policy = "fair_share") -> None:  # fmt: skip
        self.store = store
        self.top_orgs = _check_top(top_orgs)
        self.policy = check_policy(policy)
        self._build_info = _BuildInfo() if build_info else None

    def collect(self) -> Iterator[Metric]:
        counts = self.store().job_counts(live=True)
        per_org: dict[str, int] = {}
        for (org, _, _), n in counts.items():
            per_org[org] = per_org.get(org, 0) + n
        if self.top_orgs is None:
            kept = set(per_org)
        else:
            # A gauge is read afresh at every scrape, so the busiest now keep their label.
            kept = set(sorted(per_org, key=lambda o: (-per_org[o], o))[: self.top_orgs])
        summed: dict[tuple[str, str, str], int] = {}
        for (org, kind, status), n in counts.items():
            key = (org if org in kept else OTHER, kind, status.value)
            summed[key] = summed.get(key, 0) + n
        jobs = GaugeMetricFamily(
            "fairqueue_jobs",
            "Jobs waiting or running in the store, by org (the busiest; the rest as 'other'), kind and status",
            labels=["org", "kind", "status"],
        )
        for labels, n in sorted(summed.items()):
            jobs.add_metric(list(labels), n)
        yield jobs
        yield GaugeMetricFamily("fairqueue_orgs_with_jobs", "Orgs with jobs waiting or running in the store", value=len(per_org))
        predicted: dict[str, float] = {}
        for org, wait in predicted_waits(self.store(), time.time(), policy=self.policy).items():
            label = org if org in kept else OTHER
            predicted[label] = max(predicted.get(label, 0.0), wait)
        waits = GaugeMetricFamily(
            "fairqueue_org_predicted_wait_seconds",
            "Seconds until an org's newest queued job is estimated to start, at the pace its line has moved while it "
            "had work (the estimate explain gives); 'other' is the longest among the orgs without their own label",
            labels=["org"],
        )
        for org, wait in sorted(predicted.items()):
            waits.add_metric([org], round(wait, 3))
        yield waits
        if self._build_info is not None:
            yield from self._build_info.collect()


class _BuildInfo(Collector):
    """``fairqueue_build_info``: 1, labelled with what runs (the usual ``*_build_info`` gauge)."""

    def __init__(self) -> None:
        try:
            version = metadata.version("fairqueue")
        except metadata.PackageNotFoundError:  # a source tree that was never installed
            version = "unknown"
        self.labels = {"version": version, "python": platform.python_version(), "implementation": platform.python_implementation()}

    def collect(self) -> Iterator[Metric]:
        info = GaugeMetricFamily("fairqueue_build_info", "fairqueue's version and Python's; always 1", labels=list(self.labels))
        info.add_metric(list(self.labels.values()), 1)
        yield info


class _WorkerLive(Collector):
    """Figures read at scrape time from the worker's core."""

    def __init__(self, core: Dispatcher, orgs: OrgLabels) -> None:
        self.core = core
        self.orgs = orgs

    def collect(self) -> Iterator[Metric]:
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
        yield GaugeMetricFamily(
            "fairqueue_metrics_orgs_tracked",
            "Orgs whose recent activity this worker tallies to choose the busiest for the org label",
            value=float(self.orgs.tracked),
        )


def serve(registry: CollectorRegistry, port: int, host: str = "127.0.0.1") -> tuple[Server, tuple[str, int]]:
    """Serves ``registry`` at ``/metrics`` on ``host:port`` (port 0: any free one) on a
    daemon thread; returns the server and thread, and where it listens."""
    server, thread = start_http_server(port, addr=host, registry=registry)
    return (server, thread), (host, server.server_port)
