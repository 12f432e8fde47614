"""Container-aware conservation, live: a worker throttled by its own cgroup's memory
(a fake cgroup filesystem under the test's directory), not by a busy host, and the
command line's choice of what to watch."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

import fairqueue as fq
import fq_sample_jobs as sample
from conftest import wait_until
from fairqueue.cli import main
from fairqueue.conservation import ResourceMonitor, Sample, SystemSampler, Thresholds

MIB = 1 << 20
SUPPORT = Path(__file__).resolve().parents[1] / "support"


def busy_host() -> Sample:
    """The host as other pods load it: CPU and memory saturated."""
    return Sample(host_cpu=1.0, host_memory=0.99)


class Container:
    """A cgroup v2 filesystem of one container with a 0.5-core quota and a 100 MiB limit
    (under any test machine's own), whose memory use the test sets."""

    def __init__(self, base: Path) -> None:
        self.root = base / "cgroup"
        self.root.mkdir()
        self.proc = base / "cgroup-membership"
        self.proc.write_text("0::/\n")
        for name, text in {"cgroup.controllers": "cpu memory", "cpu.max": "50000 100000", "cpu.stat": "usage_usec 0",
                           "memory.max": str(100 * MIB), "memory.stat": "inactive_file 0"}.items():  # fmt: skip
            (self.root / name).write_text(text + "\n")
        self.use(10 * MIB)

    def use(self, memory: int) -> None:
        # Written whole and renamed, so a reading never sees a half-written number.
        (self.root / "memory.tmp").write_text(f"{memory}\n")
        os.replace(self.root / "memory.tmp", self.root / "memory.current")


@pytest.fixture
def container(tmp_path: Path) -> Container:
    return Container(tmp_path)


@pytest.fixture
def monitor(container: Container) -> Iterator[ResourceMonitor]:
    sampler = SystemSampler(container.root, proc_cgroup=container.proc, host=busy_host)
    assert sampler.limits() == {"cpu": 0.5, "memory": 100 * MIB}
    yield ResourceMonitor(Thresholds(min_capacity=0.25, reduction="step"), interval=0.02, sampler=sampler)


def started() -> int:
    return len([r for r in sample.runs if r[0] == "started"])


def test_a_busy_host_does_not_throttle_a_calm_container(app: fq.FairQueue, monitor: ResourceMonitor) -> None:
    handles = [sample.wait_for_release.delay(f"org-{i}") for i in range(8)]
    app.conservation = monitor
    try:
        with app.worker(slots=8) as worker:
            wait_until(lambda: started() == 8, what="all eight slots in use")
            first = monitor.last_sample
            wait_until(lambda: monitor.last_sample is not first, what="another sample")
            assert worker.core.stats()["effective_slots"] == 8
            sample.release.set()
            assert all(h.wait(10).status is fq.JobStatus.COMPLETED for h in handles)
    finally:
        app.conservation = None
    assert monitor.throttle_periods == []
    assert monitor.last_sample is not None and monitor.last_sample.host_cpu == 1.0


def test_the_containers_own_memory_throttles_it_and_it_recovers(
    app: fq.FairQueue, container: Container, monitor: ResourceMonitor
) -> None:
    container.use(95 * MIB)
    handles = [sample.wait_for_release.delay(f"org-{i}") for i in range(8)]
    app.conservation = monitor
    try:
        monitor.update(monitor.sample())
        assert monitor.throttled
        with app.worker(slots=8) as worker:
            wait_until(lambda: started() == 2, what="two slots in use")
            assert worker.core.stats()["effective_slots"] == 2
            container.use(50 * MIB)
            wait_until(lambda: started() == 8, what="all eight slots again")
            sample.release.set()
            assert all(h.wait(10).status is fq.JobStatus.COMPLETED for h in handles)
    finally:
        app.conservation = None
    [period] = monitor.throttle_periods
    assert period.resource == "memory" and period.end is not None and period.peak == pytest.approx(0.95)


def test_the_worker_command_throttles_on_its_cgroup_by_default(app: fq.FairQueue, container: Container) -> None:
    container.use(99 * MIB)
    store = str(app.storage.path)  # type: ignore[attr-defined]
    environment = {**os.environ, "FQ_STORE": store,
                   "PYTHONPATH": os.pathsep.join([str(SUPPORT), os.environ.get("PYTHONPATH", "")])}  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, "-m", "fairqueue", "worker", "fq_sample_jobs:app", "--slots", "4", "--cgroup-root", str(container.root)],
        env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        entries = wait_until(lambda: app.storage.history_read(0, ["throttle_start"]), timeout=60, what="a throttle")
        container.use(10 * MIB)
        wait_until(lambda: app.storage.history_read(0, ["throttle_end"]), timeout=60, what="the throttle's end")
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    # The default thresholds, proportional: 99 % of the limit is 0.95 of the way from low (80 %) to full.
    assert entries[0].figures["resources"] == ["memory"] and entries[0].value == pytest.approx(1 - 0.75 * 0.19 / 0.20)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--cpu-high", "0.5", "--cpu-low", "0.6"], "invalid cpu_low 0.6: expected less than cpu_high (0.5)"),
        (["--memory-high", "1.5"], "1.5 is not in the range 0<=x<=1"),
        (["--no-conservation", "--memory-high", "0.8"], "--memory-high needs conservation on"),
    ],
)
def test_bad_conservation_options_are_refused_before_the_worker_starts(args: list[str], message: str) -> None:
    result = CliRunner().invoke(main, ["worker", "fq_sample_jobs:app", *args])
    assert result.exit_code == 2 and message in result.output, result.output


def test_an_apps_own_monitor_is_not_overridden_silently(app: fq.FairQueue) -> None:
    app.conservation = ResourceMonitor()
    try:
        result = CliRunner().invoke(main, ["worker", "fq_sample_jobs:app", "--cpu-high", "0.8"])
    finally:
        app.conservation = None
    assert result.exit_code == 2 and "the app sets its own conservation monitor" in result.output
