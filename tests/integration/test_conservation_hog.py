"""Resource conservation against real load: a memory hog in a child process, real psutil
sampling of the host's memory (watched only when asked for: ``host_memory`` thresholds),
and the real dispatcher taking the monitor's capacity.

Thresholds are set relative to the machine's usage measured at the start of each test
(the hog's size, not the machine's, decides whether they are crossed), so the tests
hold on small and large hosts alike. Every wait is a poll against a deadline.
"""

from __future__ import annotations

import math
import subprocess
import sys
from collections.abc import Iterator

import psutil
import pytest

from conftest import wait_until
from fairqueue._core import Dispatcher, Grant
from fairqueue.conservation import ResourceMonitor, Thresholds, ThrottlePeriod

GIB = 1 << 30

# The child fills `n` bytes (bytearray * n writes every page, so it is resident at
# once), says so, and holds them until its stdin closes: if the test process dies,
# the hog dies with it.
HOG = "import sys; n = int(sys.argv[1]); b = bytearray(b'\\x01') * n; print('ready', flush=True); sys.stdin.read()"


def memory_used() -> float:
    """The host's used memory fraction, as the monitor's psutil sampler reads it."""
    return psutil.virtual_memory().percent / 100.0


class MemoryHog:
    """A child process holding ``size`` bytes of touched memory while it runs."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", HOG, str(self.size)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
        if self.proc is not None:
            self.proc.wait(timeout=10)
            for stream in (self.proc.stdin, self.proc.stdout):
                if stream is not None:
                    stream.close()


@pytest.fixture
def hog() -> Iterator[MemoryHog]:
    """A memory hog sized to move host memory use clearly (up to 3 GiB, a third of what is free)."""
    available = psutil.virtual_memory().available
    size = min(3 * GIB, available // 3)
    if size < GIB // 2:
        pytest.skip(f"only {available / GIB:.1f} GiB available: too little to run a memory hog safely")
    hog = MemoryHog(size)
    try:
        yield hog
    finally:
        hog.kill()


@pytest.fixture
def monitor(hog: MemoryHog) -> Iterator[ResourceMonitor]:
    """A monitor watching host memory only, with thresholds between now and now + the hog.

    High sits halfway through the hog's share of memory, low a quarter of the way:
    the hog crosses high with half its size to spare, and its death brings usage
    back under low with a quarter to spare for whatever else the machine is doing.
    """
    total = psutil.virtual_memory().total
    share = hog.size / total
    baseline = max(memory_used() for _ in range(5))
    thresholds = Thresholds(
        cpu_high=None,  # the CPU and memory limits of its own: not what this test moves
        cpu_low=None,
        memory_high=None,
        memory_low=None,
        host_memory_high=baseline + share / 2,
        host_memory_low=baseline + share / 4,
        min_capacity=0.25,
    )
    mon = ResourceMonitor(thresholds, interval=0.1).start()
    try:
        wait_until(lambda: mon.last_sample is not None, 5, "the monitor's first sample")
        yield mon
    finally:
        mon.stop(timeout=5)


@pytest.mark.timeout(30)
def test_memory_hog_throttles_and_recovery_restores_full_capacity(hog: MemoryHog, monitor: ResourceMonitor) -> None:
    started: list[ThrottlePeriod] = []
    ended: list[ThrottlePeriod] = []
    monitor.on_throttle_start.append(started.append)
    monitor.on_throttle_end.append(ended.append)
    assert monitor.capacity == 1.0, f"throttled before the hog started: {monitor.last_sample}"

    hog.start()
    wait_until(lambda: monitor.capacity < 1.0, 15, "throttling while the hog holds its memory")
    assert monitor.throttled
    assert monitor.thresholds.min_capacity <= monitor.capacity < 1.0
    (period,) = monitor.current_periods
    assert period.resource == "host_memory" and period.end is None
    assert period.peak > monitor.thresholds.high("host_memory")

    hog.kill()
    wait_until(lambda: monitor.capacity == 1.0, 15, "full capacity after the hog was killed")
    assert not monitor.throttled
    (period,) = monitor.throttle_periods
    assert period.end is not None and period.end >= period.start
    assert period.resource == "host_memory"
    assert period.peak > monitor.thresholds.high("host_memory")
    assert monitor.thresholds.min_capacity <= period.capacity_min < 1.0
    assert len(started) == len(ended) == 1 and ended[0] == period


@pytest.mark.timeout(30)
def test_dispatcher_fills_fewer_slots_while_throttled_and_loses_nothing(hog: MemoryHog, monitor: ResourceMonitor) -> None:
    slots = 8
    core = Dispatcher(virtual_time=0.0, slots=slots, cap=slots)
    ids = list(range(1, 401))
    core.enqueue_many([(i, f"org-{i % 4}", "future") for i in ids])
    dispatched: list[int] = []
    acked = 0
    running: list[Grant] = []

    def tick() -> tuple[float, int]:
        """One round of a worker loop: finish what ran, take the capacity, fill slots."""
        nonlocal acked, running
        acked += core.ack_many([g.lease for g in running])
        capacity = monitor.capacity
        core.set_capacity(capacity)
        running = core.dispatch()
        dispatched.extend(g.id for g in running)
        core.advance(0.1)
        return capacity, len(running)

    before = [tick() for _ in range(3)]
    assert before == [(1.0, slots)] * 3

    hog.start()
    wait_until(lambda: monitor.capacity < 1.0, 15, "throttling while the hog holds its memory")
    during = [tick() for _ in range(3)]
    for capacity, filled in during:
        assert capacity < 1.0
        assert filled == math.floor(slots * capacity) < slots
        assert filled >= math.floor(slots * monitor.thresholds.min_capacity) >= 1  # throttled, not stopped

    hog.kill()
    wait_until(lambda: monitor.capacity == 1.0, 15, "full capacity after the hog was killed")
    after = [tick() for _ in range(3)]
    assert after == [(1.0, slots)] * 3

    # Drain the rest: every request is dispatched exactly once and acked.
    for _ in range(len(ids)):
        if not running and core.stats()["queued"] == 0:
            break
        tick()
    assert sorted(dispatched) == ids
    assert acked == len(ids)
    stats = core.stats()
    assert stats["queued"] == stats["running"] == stats["delayed"] == 0
    assert stats["dispatched"] == stats["acked"] == len(ids)
    assert not any(core.holds(i) for i in ids)


@pytest.mark.timeout(30)
def test_process_rss_over_its_threshold_throttles_this_process() -> None:
    process = psutil.Process()
    rss = process.memory_info().rss
    block = 256 << 20
    thresholds = Thresholds(
        cpu_high=None,
        cpu_low=None,
        memory_high=None,
        memory_low=None,
        process_rss_high=rss + block // 2,
        process_rss_low=rss + block // 4,
        min_capacity=0.0,
    )
    with ResourceMonitor(thresholds, interval=0.05) as mon:
        wait_until(lambda: mon.last_sample is not None, 5, "the monitor's first sample")
        assert mon.capacity == 1.0
        ballast = bytearray(b"\x01") * block
        wait_until(lambda: mon.capacity < 1.0, 10, "throttling on this process's RSS")
        assert mon.current_periods[0].resource == "process_rss"
        del ballast
        wait_until(lambda: mon.capacity == 1.0, 10, "full capacity once the ballast was freed")
    (period,) = mon.throttle_periods
    assert period.end is not None and period.peak >= rss + block // 2
