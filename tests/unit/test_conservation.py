"""Resource conservation's decision logic, driven by synthetic samples and a fake clock."""

from __future__ import annotations

import logging
import math
import random
from pathlib import Path
from typing import Any

import pytest

from fairqueue.conservation import INTERACTIVE, ResourceMonitor, Sample, SystemSampler, Thresholds, ThrottlePeriod
from fairqueue.errors import InvalidArgument


class Clock:
    """A clock that moves only when told."""

    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


def make(thresholds: Thresholds | None = None) -> tuple[ResourceMonitor, Clock, list[ThrottlePeriod], list[ThrottlePeriod]]:
    clock = Clock()
    started: list[ThrottlePeriod] = []
    ended: list[ThrottlePeriod] = []
    monitor = ResourceMonitor(thresholds, clock=clock, on_throttle_start=[started.append], on_throttle_end=[ended.append])
    return monitor, clock, started, ended


CALM = Sample(cpu=0.10, memory=0.30)


# ----- hysteresis ------------------------------------------------------------------------


def test_calm_host_runs_at_full_capacity() -> None:
    monitor, _, started, _ = make()
    assert monitor.update(CALM) == 1.0
    assert monitor.update(Sample(cpu=0.89, memory=0.89)) == 1.0  # at or under high: no throttling
    assert monitor.update(Sample(cpu=0.90, memory=0.90)) == 1.0
    assert monitor.capacity == 1.0
    assert not monitor.throttled
    assert started == [] and monitor.throttle_periods == []


def test_throttling_starts_above_high_holds_between_low_and_high_and_ends_below_low() -> None:
    monitor, clock, started, ended = make()
    monitor.update(CALM)
    clock.advance(1)
    assert monitor.update(Sample(cpu=0.95, memory=0.30)) < 1.0
    assert monitor.throttled
    # Between low (0.75) and high (0.90): still throttled.
    for cpu in (0.89, 0.80, 0.76, 0.75):
        clock.advance(1)
        assert monitor.update(Sample(cpu=cpu, memory=0.30)) < 1.0, cpu
    assert ended == []
    clock.advance(1)
    assert monitor.update(Sample(cpu=0.74, memory=0.30)) == 1.0
    assert not monitor.throttled
    assert len(started) == len(ended) == 1
    assert ended[0].start == 1001.0 and ended[0].end == 1006.0


def test_throttling_ends_only_when_every_resource_is_below_its_low() -> None:
    monitor, clock, _, ended = make()
    monitor.update(Sample(cpu=0.95, memory=0.30))
    clock.advance(1)
    # CPU recovers, but memory has meanwhile climbed between its low and high: still throttled.
    assert monitor.update(Sample(cpu=0.10, memory=0.85)) < 1.0
    clock.advance(1)
    assert monitor.update(Sample(cpu=0.10, memory=0.81)) < 1.0
    assert ended == []
    clock.advance(1)
    assert monitor.update(Sample(cpu=0.10, memory=0.79)) == 1.0
    assert [(p.resource, p.end) for p in ended] == [("cpu", 1003.0)]


def test_any_single_resource_over_high_starts_throttling() -> None:
    thresholds = Thresholds(process_cpu_high=1.5, process_cpu_low=1.0, process_rss_high=1 << 30, process_rss_low=1 << 29)
    cases = {
        "cpu": Sample(cpu=0.91),
        "memory": Sample(memory=0.91),
        "process_cpu": Sample(process_cpu=1.6),
        "process_rss": Sample(process_rss=(1 << 30) + 1),
    }
    for resource, sample in cases.items():
        monitor, _, started, _ = make(thresholds)
        assert monitor.update(sample) < 1.0, resource
        assert [p.resource for p in started] == [resource]


def test_unwatched_resources_are_ignored() -> None:
    monitor, _, started, _ = make(Thresholds(cpu_high=None, cpu_low=None))
    assert monitor.update(Sample(cpu=1.0, process_cpu=64.0, process_rss=1 << 40)) == 1.0
    assert started == []


def test_cause_is_the_resource_furthest_over_its_high() -> None:
    monitor, _, started, _ = make()
    # Both over; memory is 0.5 bands over (band 0.10), CPU 0.33 bands (band 0.15).
    monitor.update(Sample(cpu=0.95, memory=0.95))
    assert started[0].resource == "memory"


# ----- how much capacity -------------------------------------------------------------------


def test_proportional_capacity_deepens_with_load_and_never_passes_the_minimum() -> None:
    monitor, _, _, _ = make(Thresholds(min_capacity=0.25))
    capacities = [monitor.update(Sample(memory=m)) for m in (0.91, 0.94, 0.97, 1.0)]
    assert capacities == sorted(capacities, reverse=True)
    assert all(0.25 <= c < 1.0 for c in capacities)
    assert math.isclose(capacities[-1], 0.25)  # saturated memory: the minimum
    # Linear from 1 at low (0.80) to the minimum at 100 %: at 0.91, 1 - 0.75 * 0.55.
    assert math.isclose(capacities[0], 1 - 0.75 * 0.55)


def test_capacity_never_below_the_minimum_for_any_sample() -> None:
    thresholds = Thresholds(
        process_cpu_high=1.0, process_cpu_low=0.5, process_rss_high=1000, process_rss_low=500, min_capacity=0.4
    )
    monitor, _, _, _ = make(thresholds)
    rng = random.Random(7)
    for _ in range(2000):
        sample = Sample(
            cpu=rng.random(),
            memory=rng.random(),
            process_cpu=rng.uniform(0, 16),
            process_rss=rng.randrange(0, 100_000),
        )
        capacity = monitor.update(sample)
        assert 0.4 <= capacity <= 1.0
    assert all(p.capacity_min >= 0.4 for p in monitor.throttle_periods)


def test_process_figures_reach_the_minimum_one_band_above_high() -> None:
    monitor, _, _, _ = make(Thresholds(process_rss_high=2000, process_rss_low=1000, min_capacity=0.0))
    assert math.isclose(monitor.update(Sample(process_rss=2001)), 1 - 1001 / 2000)
    assert monitor.update(Sample(process_rss=3000)) == 0.0
    assert monitor.update(Sample(process_rss=10**12)) == 0.0


def test_proportional_capacity_holds_its_high_threshold_level_while_back_between_thresholds() -> None:
    monitor, _, _, _ = make(Thresholds(min_capacity=0.25))
    at_high = 1 - 0.75 * (0.90 - 0.75) / (1.0 - 0.75)  # host CPU: low 0.75, high 0.90, saturation 1.0
    assert monitor.update(Sample(cpu=0.99)) < at_high
    for cpu in (0.89, 0.80, 0.75):
        assert math.isclose(monitor.update(Sample(cpu=cpu)), at_high), cpu
    assert monitor.update(Sample(cpu=0.7499)) == 1.0


def test_step_reduction_holds_the_minimum_while_throttled() -> None:
    monitor, _, _, _ = make(Thresholds(min_capacity=0.5, reduction="step"))
    assert monitor.update(Sample(cpu=0.91)) == 0.5
    assert monitor.update(Sample(cpu=0.99)) == 0.5
    assert monitor.update(Sample(cpu=0.80)) == 0.5
    assert monitor.update(Sample(cpu=0.10)) == 1.0


def test_min_capacity_zero_pauses_async_work() -> None:
    monitor, _, _, _ = make(Thresholds(min_capacity=0.0, reduction="step"))
    assert monitor.update(Sample(memory=0.95)) == 0.0


# ----- interactive load --------------------------------------------------------------------


def test_report_load_caps_capacity_until_its_ttl_expires() -> None:
    monitor, clock, started, ended = make()
    monitor.update(CALM)
    monitor.report_load(0.7, ttl=5.0)
    assert math.isclose(monitor.capacity, 0.3)
    assert monitor.throttled
    clock.advance(4.999)
    assert math.isclose(monitor.capacity, 0.3)
    clock.advance(0.001)
    assert monitor.capacity == 1.0
    assert not monitor.throttled
    assert [(p.resource, p.start, p.end, p.peak) for p in ended] == [(INTERACTIVE, 1000.0, 1005.0, 0.7)]
    assert len(started) == 1


def test_report_load_takes_the_lower_of_load_and_throttle() -> None:
    monitor, clock, _, _ = make(Thresholds(min_capacity=0.5, reduction="step"))
    monitor.update(Sample(cpu=0.95))
    monitor.report_load(0.2, ttl=10)
    assert monitor.capacity == 0.5  # the throttle is lower than 1 - 0.2
    monitor.report_load(0.9, ttl=10)
    assert math.isclose(monitor.capacity, 0.1)  # interactive load may go below min_capacity
    clock.advance(10)
    assert monitor.capacity == 0.5


def test_report_load_renewal_extends_and_level_zero_withdraws() -> None:
    monitor, clock, started, ended = make()
    monitor.report_load(0.5, ttl=2)
    clock.advance(1.5)
    monitor.report_load(0.6, ttl=2)  # renewed: one period, expires at 1003.5
    clock.advance(1.5)
    assert math.isclose(monitor.capacity, 0.4)
    monitor.report_load(0, ttl=1)
    assert monitor.capacity == 1.0
    assert len(started) == 1 and len(ended) == 1
    assert ended[0].end == 1003.0 and ended[0].peak == 0.6 and math.isclose(ended[0].capacity_min, 0.4)


def test_report_load_sources_combine_by_highest_level() -> None:
    monitor, clock, _, _ = make()
    monitor.report_load(0.3, ttl=10, source="web")
    monitor.report_load(0.6, ttl=2, source="reports")
    assert math.isclose(monitor.capacity, 0.4)
    clock.advance(2)
    assert math.isclose(monitor.capacity, 0.7)
    assert [p.resource for p in monitor.current_periods] == [INTERACTIVE]


@pytest.mark.parametrize(
    ("level", "ttl", "bad"),
    [
        (-0.1, 1, "-0.1"),
        (1.5, 1, "1.5"),
        (math.nan, 1, "nan"),
        (True, 1, "True"),
        (0.5, 0, "ttl 0"),
        (0.5, -1, "-1"),
        (0.5, math.inf, "inf"),
    ],
)
def test_report_load_rejects_bad_values(level: float, ttl: float, bad: str) -> None:
    monitor, _, _, _ = make()
    with pytest.raises(InvalidArgument, match=bad):
        monitor.report_load(level, ttl)
    assert monitor.capacity == 1.0


# ----- periods and callbacks ---------------------------------------------------------------


def test_periods_record_start_end_resource_peak_and_lowest_capacity() -> None:
    monitor, clock, _, _ = make(Thresholds(min_capacity=0.2))
    for t, memory in enumerate((0.5, 0.92, 0.97, 0.93, 0.85, 0.79, 0.5)):
        clock.t = 2000.0 + t
        monitor.update(Sample(memory=memory))
    (period,) = monitor.throttle_periods
    assert period.start == 2001.0 and period.end == 2005.0 and period.duration == 4.0
    assert period.resource == "memory"
    assert period.peak == 0.97
    assert math.isclose(period.capacity_min, 1 - 0.8 * (0.97 - 0.8) / 0.2)


def test_a_period_in_progress_is_listed_with_no_end() -> None:
    monitor, _, _, _ = make()
    monitor.update(Sample(cpu=0.99))
    (period,) = monitor.throttle_periods
    assert period.end is None and period.duration is None
    assert monitor.current_periods == [period]


def test_callbacks_fire_once_per_start_and_end_under_jitter() -> None:
    monitor, clock, started, ended = make()
    rng = random.Random(1)
    # Calm, jittering around the low threshold: nothing starts.
    for _ in range(200):
        clock.advance(0.1)
        monitor.update(Sample(cpu=0.75 + rng.uniform(-0.05, 0.05)))
    # Hot, jittering around the high threshold (never below low): one start, no end.
    for _ in range(200):
        clock.advance(0.1)
        monitor.update(Sample(cpu=0.90 + rng.uniform(-0.1, 0.05)))
    # Calm again but jittering around low (never above high): stays on until all below low.
    for _ in range(200):
        clock.advance(0.1)
        monitor.update(Sample(cpu=0.74 - rng.uniform(0, 0.3)))
    assert len(started) == 1 and len(ended) == 1
    assert started[0].end is None and ended[0].end is not None
    assert ended[0].start == started[0].start
    assert len(monitor.throttle_periods) == 1


def test_callback_errors_are_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    monitor, _, started, ended = make()

    def broken(period: ThrottlePeriod) -> None:
        raise RuntimeError("listener bug")

    monitor.on_throttle_start.insert(0, broken)
    monitor.on_throttle_end.insert(0, broken)
    with caplog.at_level(logging.ERROR, logger="fairqueue.conservation"):
        assert monitor.update(Sample(cpu=0.95)) < 1.0
        assert monitor.update(CALM) == 1.0
    # The broken listener did not stop the others.
    assert len(started) == len(ended) == 1
    assert sum("listener bug" in (r.exc_text or "") or "callback" in r.getMessage() for r in caplog.records) == 2


def test_history_keeps_the_latest_periods() -> None:
    clock = Clock()
    monitor = ResourceMonitor(clock=clock, history=3)
    for _ in range(5):
        clock.advance(1)
        monitor.update(Sample(cpu=0.95))
        clock.advance(1)
        monitor.update(CALM)
    assert [p.start for p in monitor.throttle_periods] == [1005.0, 1007.0, 1009.0]


def test_sampling_thread_uses_the_given_sampler() -> None:
    samples = iter([Sample(cpu=0.95)] * 1000)
    monitor = ResourceMonitor(interval=0.001, sampler=lambda: next(samples))
    assert not monitor.running
    with monitor:
        assert monitor.running
        assert monitor.start() is monitor  # idempotent
    assert not monitor.running
    # The thread may have taken 0 samples before stop; drive one directly to be deterministic.
    assert monitor.update(monitor.sample()) < 1.0
    assert monitor.last_sample == Sample(cpu=0.95)


# ----- bad thresholds --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"cpu_high": 1.2}, r"cpu_high 1\.2.*0 to 1"),
        ({"memory_low": -0.1}, r"memory_low -0\.1"),
        ({"cpu_high": math.nan}, r"cpu_high nan"),
        ({"cpu_low": 0.95}, r"cpu_low 0\.95: expected less than cpu_high \(0\.9\)"),
        ({"memory_low": 0.9}, r"memory_low 0\.9: expected less than memory_high \(0\.9\)"),
        ({"cpu_high": None}, r"cpu_low 0\.75: cpu_high must be set"),
        ({"process_rss_high": 100}, r"process_rss_high 100: process_rss_low must be set"),
        ({"process_rss_high": 100, "process_rss_low": 1.5}, r"process_rss_low 1\.5.*bytes"),
        ({"process_cpu_high": -1, "process_cpu_low": 0}, r"process_cpu_high -1.*cores"),
        ({"process_cpu_high": 1, "process_cpu_low": 2}, r"process_cpu_low 2: expected less than process_cpu_high \(1\)"),
        ({"min_capacity": 1.5}, r"min_capacity 1\.5.*0 to 1"),
        ({"min_capacity": -0.01}, r"min_capacity -0\.01"),
        ({"reduction": "linear"}, r"reduction 'linear'.*proportional"),
    ],
)
def test_bad_thresholds_raise_naming_the_value_and_the_limit(options: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        Thresholds(**options)  # type: ignore[arg-type]


def test_thresholds_are_frozen_and_may_watch_nothing() -> None:
    thresholds = Thresholds(cpu_high=None, cpu_low=None, memory_high=None, memory_low=None)
    assert thresholds.watched() == ()
    with pytest.raises(AttributeError):
        thresholds.min_capacity = 0.5  # type: ignore[misc]
    assert ResourceMonitor(thresholds).update(Sample(cpu=1.0, memory=1.0)) == 1.0


@pytest.mark.parametrize(("options", "message"), [({"interval": 0}, "interval 0"), ({"history": 0}, "history 0")])
def test_bad_monitor_options_raise(options: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        ResourceMonitor(**options)  # type: ignore[arg-type]


# ----- host figures and unmeasured ones --------------------------------------------------


def test_host_figures_are_not_watched_by_default_but_may_be_asked_for() -> None:
    monitor, _, started, _ = make()
    assert monitor.update(Sample(host_cpu=1.0, host_memory=1.0, cpu=0.1, memory=0.1)) == 1.0
    assert started == []
    monitor, _, started, _ = make(Thresholds(host_cpu_high=0.9, host_cpu_low=0.8))
    assert monitor.update(Sample(host_cpu=0.95, cpu=0.1, memory=0.1)) < 1.0
    assert [p.resource for p in started] == ["host_cpu"]


def test_a_figure_not_measured_neither_starts_nor_holds_throttling() -> None:
    monitor, _, started, _ = make()
    assert monitor.update(Sample(cpu=None, memory=None)) == 1.0
    assert monitor.update(Sample(cpu=0.95, memory=None)) < 1.0
    # CPU back under low, memory still unmeasured: throttling ends.
    assert monitor.update(Sample(cpu=0.10, memory=None)) == 1.0
    assert len(started) == 1


# ----- cgroup readings, from a fake cgroup filesystem ----------------------------------------

MIB = 1 << 20


class FakeCgroups:
    """A cgroup filesystem under a temporary root, and a ``/proc/self/cgroup`` naming it."""

    def __init__(self, base: Path, version: int, membership: str) -> None:
        self.root = base / "cgroup"
        self.root.mkdir()
        self.proc = base / "proc-self-cgroup"
        self.proc.write_text(membership)
        if version == 2:
            (self.root / "cgroup.controllers").write_text("cpu memory pids\n")

    def write(self, path: str, **files: str | int) -> None:
        directory = self.root / path
        directory.mkdir(parents=True, exist_ok=True)
        for name, text in files.items():
            (directory / name.replace("__", ".")).write_text(f"{text}\n")


def v2_cgroup(base: Path, path: str = "/") -> FakeCgroups:
    return FakeCgroups(base, 2, f"0::{path}\n")


def v1_cgroup(base: Path, path: str = "/") -> FakeCgroups:
    return FakeCgroups(base, 1, f"12:memory:{path}\n4:cpu,cpuacct:{path}\n1:name=systemd:/init.scope\n")


def calm_host() -> Sample:
    return Sample(host_cpu=0.05, host_memory=0.10, process_cpu=0.0, process_rss=1)


def busy_host() -> Sample:
    """Other pods' load: the host's CPU and memory saturated."""
    return Sample(host_cpu=1.0, host_memory=0.99, process_cpu=0.0, process_rss=1)


def sampler(fake: FakeCgroups, clock: Clock, **options: Any) -> SystemSampler:
    options.setdefault("host", calm_host)
    return SystemSampler(fake.root, proc_cgroup=fake.proc, clock=clock, **options)


def test_v2_cpu_is_usage_against_the_quota_and_memory_leaves_out_reclaimable_cache(tmp_path: Path) -> None:
    fake = v2_cgroup(tmp_path)
    # Limits under one core and the host's memory, so that they bind on any test machine.
    fake.write("", cpu__max="75000 100000", cpu__stat="usage_usec 1000000\nuser_usec 900000",
               memory__max=512 * MIB, memory__current=400 * MIB, memory__stat="anon 1\ninactive_file 100000")  # fmt: skip
    clock = Clock()
    reader = sampler(fake, clock)
    assert reader.version == 2 and reader.limits() == {"cpu": 0.75, "memory": 512 * MIB}
    clock.advance(2.0)
    fake.write("", cpu__stat="usage_usec 2200000")  # 1.2 CPU-seconds in 2 s, of 0.75 cores
    reading = reader()
    assert math.isclose(reading.cpu or 0, 1.2 / (2.0 * 0.75))
    assert math.isclose(reading.memory or 0, (400 * MIB - 100000) / (512 * MIB))
    assert reading.host_cpu == 0.05  # the host's figures ride along, unjudged by default


def test_v2_memory_high_counts_when_tighter_than_max(tmp_path: Path) -> None:
    fake = v2_cgroup(tmp_path)
    fake.write("", memory__max="max", memory__high=256 * MIB, memory__current=128 * MIB)
    reader = sampler(fake, Clock())
    assert reader.limits()["memory"] == 256 * MIB and math.isclose(reader().memory or 0, 0.5)


def test_the_tightest_limit_up_the_chain_counts_with_that_cgroups_own_usage(tmp_path: Path) -> None:
    # A pod's limit on the parent, the container's cgroup below it with none of its own.
    fake = v2_cgroup(tmp_path, "/kubepods/pod1/ctr")
    fake.write("kubepods", cpu__max="max 100000", memory__max=8192 * MIB)
    fake.write("kubepods/pod1", cpu__max="50000 100000", cpu__stat="usage_usec 0",
               memory__max=1024 * MIB, memory__current=900 * MIB, memory__stat="inactive_file 0")  # fmt: skip
    fake.write("kubepods/pod1/ctr", cpu__max="max 100000", cpu__stat="usage_usec 0",
               memory__max="max", memory__current=10 * MIB, memory__stat="inactive_file 0")  # fmt: skip
    clock = Clock()
    reader = sampler(fake, clock)
    assert reader.limits() == {"cpu": 0.5, "memory": 1024 * MIB}
    clock.advance(1.0)
    fake.write("kubepods/pod1", cpu__stat="usage_usec 450000")
    reading = reader()
    assert math.isclose(reading.cpu or 0, 0.9) and math.isclose(reading.memory or 0, 900 / 1024)
    assert "kubepods/pod1" in (reader.describe()["memory"] or "")


def test_a_path_not_visible_from_inside_is_the_container_mounted_at_the_root(tmp_path: Path) -> None:
    # /proc/self/cgroup names the host's path; inside a cgroup namespace the root is our cgroup.
    fake = v2_cgroup(tmp_path, "/system.slice/docker-abc.scope")
    fake.write("", memory__max=100 * MIB, memory__current=95 * MIB)
    assert math.isclose(sampler(fake, Clock())().memory or 0, 0.95)


def test_v1_quota_usage_and_memory_limit(tmp_path: Path) -> None:
    fake = v1_cgroup(tmp_path, "/docker/abc")
    fake.write("cpu,cpuacct/docker/abc", cpu__cfs_quota_us=50000, cpu__cfs_period_us=100000, cpuacct__usage=5 * 10**9)
    fake.write("memory/docker/abc", memory__limit_in_bytes=256 * MIB, memory__usage_in_bytes=200 * MIB,
               memory__stat="cache 1\ntotal_inactive_file 8388608")  # fmt: skip
    fake.write("memory", memory__limit_in_bytes=9223372036854771712)
    clock = Clock()
    reader = sampler(fake, clock)
    assert reader.version == 1 and reader.limits() == {"cpu": 0.5, "memory": 256 * MIB}
    clock.advance(4.0)
    fake.write("cpu,cpuacct/docker/abc", cpuacct__usage=65 * 10**8)
    reading = reader()
    assert math.isclose(reading.cpu or 0, 0.75) and math.isclose(reading.memory or 0, 192 / 256)


def test_v1_with_separate_cpu_and_cpuacct_mounts(tmp_path: Path) -> None:
    fake = FakeCgroups(tmp_path, 1, "3:cpuacct:/\n2:cpu:/\n1:memory:/\n")
    fake.write("cpu", cpu__cfs_quota_us=50000, cpu__cfs_period_us=100000)
    fake.write("cpuacct", cpuacct__usage=0)
    fake.write("memory", memory__limit_in_bytes=9223372036854771712, memory__usage_in_bytes=1)
    clock = Clock()
    reader = sampler(fake, clock)
    assert reader.limits() == {"cpu": 0.5, "memory": None}
    clock.advance(1.0)
    fake.write("cpuacct", cpuacct__usage=5 * 10**8)
    assert math.isclose(reader().cpu or 0, 1.0)


def test_no_limit_falls_back_to_the_host_or_is_not_measured(tmp_path: Path) -> None:
    fake = v2_cgroup(tmp_path)
    fake.write("", cpu__max="max 100000", cpu__stat="usage_usec 5", memory__max="max", memory__current=1)
    with_host = sampler(fake, Clock(), host=busy_host)
    assert with_host.limits() == {"cpu": None, "memory": None}
    assert (with_host().cpu, with_host().memory) == (1.0, 0.99)
    own_only = sampler(fake, Clock(), host=busy_host, host_fallback=False)
    reading = own_only()
    assert reading.cpu is None and reading.memory is None and reading.host_cpu == 1.0
    assert own_only.describe() == {"cpu": None, "memory": None}
    assert "not watched: cpu, memory" in ResourceMonitor(sampler=own_only).describe()


def test_a_limit_beyond_the_hosts_binds_nothing(tmp_path: Path) -> None:
    fake = v2_cgroup(tmp_path)
    fake.write("", cpu__max="100000000 100000", memory__max=1 << 60, memory__current=1)
    assert sampler(fake, Clock()).limits() == {"cpu": None, "memory": None}


def test_no_cgroup_filesystem_reads_the_host(tmp_path: Path) -> None:
    reader = SystemSampler(tmp_path / "missing", proc_cgroup=tmp_path / "missing-too", host=busy_host)
    assert reader.version is None and reader.limits() == {"cpu": None, "memory": None}
    assert reader().cpu == 1.0
    assert SystemSampler(None, host=busy_host).version is None


def test_unreadable_or_garbled_files_are_not_measured_rather_than_fatal(tmp_path: Path) -> None:
    fake = v2_cgroup(tmp_path)
    fake.write("", cpu__max="50000 100000", cpu__stat="usage_usec lots", memory__max=100 * MIB, memory__current="?")
    clock = Clock()
    reader = sampler(fake, clock)
    clock.advance(1)
    reading = reader()
    assert reading.cpu is None and reading.memory is None


def test_a_resized_limit_is_followed(tmp_path: Path) -> None:
    fake = v2_cgroup(tmp_path)
    fake.write("", memory__max=100 * MIB, memory__current=80 * MIB)
    reader = sampler(fake, Clock())
    assert math.isclose(reader().memory or 0, 0.8)
    fake.write("", memory__max=200 * MIB)
    assert math.isclose(reader().memory or 0, 0.4)


def test_the_containers_own_memory_throttles_and_the_busy_host_does_not(tmp_path: Path) -> None:
    fake = v2_cgroup(tmp_path)
    fake.write("", cpu__max="50000 100000", cpu__stat="usage_usec 0",
               memory__max=100 * MIB, memory__current=50 * MIB, memory__stat="inactive_file 0")  # fmt: skip
    clock = Clock()
    monitor = ResourceMonitor(clock=clock, sampler=sampler(fake, clock, host=busy_host))
    clock.advance(1)
    fake.write("", cpu__stat="usage_usec 100000")  # 0.1 s of its 0.5 cores in 1 s: 20 %
    assert monitor.update(monitor.sample()) == 1.0  # the host is saturated; the container is not
    fake.write("", memory__current=95 * MIB)
    assert monitor.update(monitor.sample()) < 1.0
    assert [p.resource for p in monitor.current_periods] == ["memory"]
    fake.write("", memory__current=60 * MIB)
    assert monitor.update(monitor.sample()) == 1.0


def test_describe_names_what_is_watched_and_from_where(tmp_path: Path) -> None:
    fake = v2_cgroup(tmp_path)
    fake.write("", cpu__max="50000 100000", cpu__stat="usage_usec 0", memory__max="max")
    text = ResourceMonitor(Thresholds(min_capacity=0.5), sampler=sampler(fake, Clock())).describe()
    assert text.startswith("resource conservation: cpu above 90% until under 75% (cgroup v2 limit 0.5 cores at ")
    assert "memory above 90% until under 80% (no cgroup limit: the host's " in text and text.endswith("down to 50%")
    custom = ResourceMonitor(Thresholds(cpu_high=None, cpu_low=None, memory_high=None, memory_low=None), sampler=calm_host)
    assert custom.describe() == "resource conservation: nothing watched (interactive load only)"
