"""The worker fills only as many slots as resource conservation allows, live."""

from __future__ import annotations

import pytest

import fairqueue as fq
import fq_sample_jobs as sample
from conftest import wait_until
from fairqueue.conservation import ResourceMonitor, Sample, Thresholds


class Gauge:
    """A sampler whose reading the test sets."""

    def __init__(self) -> None:
        self.sample = Sample(cpu=0.1, memory=0.1)

    def __call__(self) -> Sample:
        return self.sample


def test_a_busy_cpu_slows_dispatch_and_it_recovers_with_nothing_lost(app: fq.FairQueue) -> None:
    gauge = Gauge()
    monitor = ResourceMonitor(Thresholds(min_capacity=0.25, reduction="step"), interval=0.02, sampler=gauge)
    app.conservation = monitor
    handles = [sample.wait_for_release.delay(f"org-{i}") for i in range(8)]
    try:
        gauge.sample = Sample(cpu=0.99, memory=0.1)
        monitor.update(gauge())
        assert monitor.throttled
        worker = app.worker(slots=8).start()
        wait_until(lambda: len([r for r in sample.runs if r[0] == "started"]) == 2, what="two slots in use")
        assert worker.core.stats()["effective_slots"] == 2
        gauge.sample = Sample(cpu=0.1, memory=0.1)
        wait_until(lambda: len([r for r in sample.runs if r[0] == "started"]) == 8, what="all eight slots again")
        sample.release.set()
        assert all(h.wait(10).status is fq.JobStatus.COMPLETED for h in handles)
        worker.stop()
    finally:
        app.conservation = None
    [period] = monitor.throttle_periods
    assert period.resource == "cpu" and period.end is not None and not monitor.running


def test_report_load_needs_a_monitor(app: fq.FairQueue) -> None:
    with pytest.raises(fq.InvalidArgument, match="conservation"):
        app.report_load(0.5, 1)
    app.conservation = ResourceMonitor()
    try:
        app.report_load(0.5, 10)
        assert app.conservation.capacity == 0.5
    finally:
        app.conservation = None
