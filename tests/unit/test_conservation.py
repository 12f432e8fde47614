"""Resource conservation's decision logic, driven by synthetic samples and a fake clock."""

from __future__ import annotations

import logging
import math
import random

import pytest

from fairqueue.conservation import INTERACTIVE, ResourceMonitor, Sample, Thresholds, ThrottlePeriod
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


CALM = Sample(host_cpu=0.10, host_memory=0.30)


# ----- hysteresis ------------------------------------------------------------------------


def test_calm_host_runs_at_full_capacity() -> None:
    monitor, _, started, _ = make()
    assert monitor.update(CALM) == 1.0
    assert monitor.update(Sample(host_cpu=0.89, host_memory=0.89)) == 1.0  # at or under high: no throttling
    assert monitor.update(Sample(host_cpu=0.90, host_memory=0.90)) == 1.0
    assert monitor.capacity == 1.0
    assert not monitor.throttled
    assert started == [] and monitor.throttle_periods == []


def test_throttling_starts_above_high_holds_between_low_and_high_and_ends_below_low() -> None:
    monitor, clock, started, ended = make()
    monitor.update(CALM)
    clock.advance(1)
    assert monitor.update(Sample(host_cpu=0.95, host_memory=0.30)) < 1.0
    assert monitor.throttled
    # Between low (0.75) and high (0.90): still throttled.
    for cpu in (0.89, 0.80, 0.76, 0.75):
        clock.advance(1)
        assert monitor.update(Sample(host_cpu=cpu, host_memory=0.30)) < 1.0, cpu
    assert ended == []
    clock.advance(1)
    assert monitor.update(Sample(host_cpu=0.74, host_memory=0.30)) == 1.0
    assert not monitor.throttled
    assert len(started) == len(ended) == 1
    assert ended[0].start == 1001.0 and ended[0].end == 1006.0


def test_throttling_ends_only_when_every_resource_is_below_its_low() -> None:
    monitor, clock, _, ended = make()
    monitor.update(Sample(host_cpu=0.95, host_memory=0.30))
    clock.advance(1)
    # CPU recovers, but memory has meanwhile climbed between its low and high: still throttled.
    assert monitor.update(Sample(host_cpu=0.10, host_memory=0.85)) < 1.0
    clock.advance(1)
    assert monitor.update(Sample(host_cpu=0.10, host_memory=0.81)) < 1.0
    assert ended == []
    clock.advance(1)
    assert monitor.update(Sample(host_cpu=0.10, host_memory=0.79)) == 1.0
    assert [(p.resource, p.end) for p in ended] == [("host_cpu", 1003.0)]


def test_any_single_resource_over_high_starts_throttling() -> None:
    thresholds = Thresholds(process_cpu_high=1.5, process_cpu_low=1.0, process_rss_high=1 << 30, process_rss_low=1 << 29)
    cases = {
        "host_cpu": Sample(host_cpu=0.91),
        "host_memory": Sample(host_memory=0.91),
        "process_cpu": Sample(process_cpu=1.6),
        "process_rss": Sample(process_rss=(1 << 30) + 1),
    }
    for resource, sample in cases.items():
        monitor, _, started, _ = make(thresholds)
        assert monitor.update(sample) < 1.0, resource
        assert [p.resource for p in started] == [resource]


def test_unwatched_resources_are_ignored() -> None:
    monitor, _, started, _ = make(Thresholds(host_cpu_high=None, host_cpu_low=None))
    assert monitor.update(Sample(host_cpu=1.0, process_cpu=64.0, process_rss=1 << 40)) == 1.0
    assert started == []


def test_cause_is_the_resource_furthest_over_its_high() -> None:
    monitor, _, started, _ = make()
    # Both over; memory is 0.5 bands over (band 0.10), CPU 0.33 bands (band 0.15).
    monitor.update(Sample(host_cpu=0.95, host_memory=0.95))
    assert started[0].resource == "host_memory"


# ----- how much capacity -------------------------------------------------------------------


def test_proportional_capacity_deepens_with_load_and_never_passes_the_minimum() -> None:
    monitor, _, _, _ = make(Thresholds(min_capacity=0.25))
    capacities = [monitor.update(Sample(host_memory=m)) for m in (0.91, 0.94, 0.97, 1.0)]
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
            host_cpu=rng.random(),
            host_memory=rng.random(),
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
    assert monitor.update(Sample(host_cpu=0.99)) < at_high
    for cpu in (0.89, 0.80, 0.75):
        assert math.isclose(monitor.update(Sample(host_cpu=cpu)), at_high), cpu
    assert monitor.update(Sample(host_cpu=0.7499)) == 1.0


def test_step_reduction_holds_the_minimum_while_throttled() -> None:
    monitor, _, _, _ = make(Thresholds(min_capacity=0.5, reduction="step"))
    assert monitor.update(Sample(host_cpu=0.91)) == 0.5
    assert monitor.update(Sample(host_cpu=0.99)) == 0.5
    assert monitor.update(Sample(host_cpu=0.80)) == 0.5
    assert monitor.update(Sample(host_cpu=0.10)) == 1.0


def test_min_capacity_zero_pauses_async_work() -> None:
    monitor, _, _, _ = make(Thresholds(min_capacity=0.0, reduction="step"))
    assert monitor.update(Sample(host_memory=0.95)) == 0.0


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
    monitor.update(Sample(host_cpu=0.95))
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
        monitor.update(Sample(host_memory=memory))
    (period,) = monitor.throttle_periods
    assert period.start == 2001.0 and period.end == 2005.0 and period.duration == 4.0
    assert period.resource == "host_memory"
    assert period.peak == 0.97
    assert math.isclose(period.capacity_min, 1 - 0.8 * (0.97 - 0.8) / 0.2)


def test_a_period_in_progress_is_listed_with_no_end() -> None:
    monitor, _, _, _ = make()
    monitor.update(Sample(host_cpu=0.99))
    (period,) = monitor.throttle_periods
    assert period.end is None and period.duration is None
    assert monitor.current_periods == [period]


def test_callbacks_fire_once_per_start_and_end_under_jitter() -> None:
    monitor, clock, started, ended = make()
    rng = random.Random(1)
    # Calm, jittering around the low threshold: nothing starts.
    for _ in range(200):
        clock.advance(0.1)
        monitor.update(Sample(host_cpu=0.75 + rng.uniform(-0.05, 0.05)))
    # Hot, jittering around the high threshold (never below low): one start, no end.
    for _ in range(200):
        clock.advance(0.1)
        monitor.update(Sample(host_cpu=0.90 + rng.uniform(-0.1, 0.05)))
    # Calm again but jittering around low (never above high): stays on until all below low.
    for _ in range(200):
        clock.advance(0.1)
        monitor.update(Sample(host_cpu=0.74 - rng.uniform(0, 0.3)))
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
        assert monitor.update(Sample(host_cpu=0.95)) < 1.0
        assert monitor.update(CALM) == 1.0
    # The broken listener did not stop the others.
    assert len(started) == len(ended) == 1
    assert sum("listener bug" in (r.exc_text or "") or "callback" in r.getMessage() for r in caplog.records) == 2


def test_history_keeps_the_latest_periods() -> None:
    clock = Clock()
    monitor = ResourceMonitor(clock=clock, history=3)
    for _ in range(5):
        clock.advance(1)
        monitor.update(Sample(host_cpu=0.95))
        clock.advance(1)
        monitor.update(CALM)
    assert [p.start for p in monitor.throttle_periods] == [1005.0, 1007.0, 1009.0]


def test_sampling_thread_uses_the_given_sampler() -> None:
    samples = iter([Sample(host_cpu=0.95)] * 1000)
    monitor = ResourceMonitor(interval=0.001, sampler=lambda: next(samples))
    assert not monitor.running
    with monitor:
        assert monitor.running
        assert monitor.start() is monitor  # idempotent
    assert not monitor.running
    # The thread may have taken 0 samples before stop; drive one directly to be deterministic.
    assert monitor.update(monitor.sample()) < 1.0
    assert monitor.last_sample == Sample(host_cpu=0.95)


# ----- bad thresholds --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"host_cpu_high": 1.2}, r"host_cpu_high 1\.2.*0 to 1"),
        ({"host_memory_low": -0.1}, r"host_memory_low -0\.1"),
        ({"host_cpu_high": math.nan}, r"host_cpu_high nan"),
        ({"host_cpu_low": 0.95}, r"host_cpu_low 0\.95: expected less than host_cpu_high \(0\.9\)"),
        ({"host_memory_low": 0.9}, r"host_memory_low 0\.9: expected less than host_memory_high \(0\.9\)"),
        ({"host_cpu_high": None}, r"host_cpu_low 0\.75: host_cpu_high must be set"),
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
    thresholds = Thresholds(host_cpu_high=None, host_cpu_low=None, host_memory_high=None, host_memory_low=None)
    assert thresholds.watched() == ()
    with pytest.raises(AttributeError):
        thresholds.min_capacity = 0.5  # type: ignore[misc]
    assert ResourceMonitor(thresholds).update(Sample(host_cpu=1.0, host_memory=1.0)) == 1.0


@pytest.mark.parametrize(("options", "message"), [({"interval": 0}, "interval 0"), ({"history": 0}, "history 0")])
def test_bad_monitor_options_raise(options: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        ResourceMonitor(**options)  # type: ignore[arg-type]
