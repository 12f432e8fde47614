"""Resource conservation (SPEC §2.3): async work yields when this worker's CPU or memory runs short.

A :class:`ResourceMonitor` samples CPU and memory against the limits that bind this
process: its cgroup's CPU quota and memory limit when it runs in a container (or
a systemd slice) that sets them, the host's otherwise (:class:`SystemSampler`).
Other pods' load on a shared host is not this worker's to react to, so host-wide
figures are watched only where no limit of its own is set, or when asked for
(``host_cpu`` / ``host_memory`` thresholds). When any watched
figure rises above its high threshold, throttling starts and the monitor's
:attr:`~ResourceMonitor.capacity` falls below 1; the worker passes it to the
dispatcher (``Dispatcher.set_capacity``), which then fills only
``floor(slots × capacity)`` slots. Throttling ends only when every figure is back
below its low threshold, so a figure that jitters around one threshold cannot make
throttling flap. The service's interactive work can claim priority with
:meth:`~ResourceMonitor.report_load`. Every throttle period is recorded with its
start, end, cause, peak and lowest capacity, and callbacks hear of each start and end.

The decision logic (:meth:`~ResourceMonitor.update`) is pure: it takes a
:class:`Sample` and reads time only from the injected clock, so it is tested with
synthetic samples and no sleeps.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from fairqueue.errors import InvalidArgument
from fairqueue.validate import shown

__all__ = [
    "RESOURCES",
    "INTERACTIVE",
    "CGROUP_ROOT",
    "Thresholds",
    "Sample",
    "ThrottlePeriod",
    "ResourceMonitor",
    "SystemSampler",
    "psutil_sampler",
]

log = logging.getLogger("fairqueue.conservation")

RESOURCES = ("cpu", "memory", "host_cpu", "host_memory", "process_cpu", "process_rss")
"""The figures a monitor can watch, in the order ties are broken when naming a cause:
``cpu`` and ``memory`` against this process's own limits (its cgroup's, else the
host's), ``host_*`` of the whole host, ``process_*`` of this process alone."""

CGROUP_ROOT = "/sys/fs/cgroup"
"""Where the cgroup filesystem is mounted on Linux."""

INTERACTIVE = "interactive"
"""The resource name of throttle periods caused by :meth:`ResourceMonitor.report_load`."""

# Fractions reach their minimum capacity at 100 %. Process figures have no ceiling;
# capacity reaches its minimum one band (high - low) above the high threshold.
_FRACTIONS = ("cpu", "memory", "host_cpu", "host_memory")


def _is_number(value: object) -> bool:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an int too large for a float
        return False


@dataclass(frozen=True)
class Thresholds:
    """When to throttle and how hard.

    Every resource has a high threshold (throttling starts when the figure goes
    above it) and a low one (throttling ends when every watched figure is below
    its low threshold). Set both of a pair to ``None`` to leave that figure
    unwatched. ``cpu``, ``memory`` and host figures are fractions from 0 to 1;
    process CPU is in cores (1.0 = one core busy all the time) and process memory
    is resident set size in bytes, both of this process only.

    By default ``cpu`` and ``memory`` are watched: this process's usage against
    its own limits (see :class:`SystemSampler`). Host-wide figures are off by
    default, since on a shared host or in a container they measure other
    processes' load.

    Args:
        cpu_high: busy fraction of this process's CPU limit (its cgroup's quota,
            else the host's cores) that starts throttling.
        cpu_low: that fraction under which throttling may end.
        memory_high: used fraction of this process's memory limit (its cgroup's,
            less reclaimable page cache, else the host's) that starts throttling.
        memory_low: that fraction under which throttling may end.
        host_cpu_high: host CPU busy fraction that starts throttling (off by default).
        host_cpu_low: host CPU busy fraction under which throttling may end.
        host_memory_high: host memory used fraction that starts throttling.
        host_memory_low: host memory used fraction under which throttling may end.
        process_cpu_high: cores this process uses that start throttling (off by default).
        process_cpu_low: cores under which throttling may end.
        process_rss_high: bytes of this process's RSS that start throttling (off by default).
        process_rss_low: bytes under which throttling may end.
        min_capacity: the lowest capacity throttling sets, from 0 to 1 (0 pauses
            async work entirely while throttled). Interactive load may go lower.
        reduction: ``"proportional"`` (default): while throttled, each figure at
            or above its low threshold allows a capacity proportional to how far
            it is over its high threshold: on the line from 1 at the low threshold
            to ``min_capacity`` at saturation (100 % for fractions, one band
            ``high - low`` above high for process figures), read at the figure's
            value or at its high threshold, whichever is greater (so a figure
            falling back between its thresholds holds the capacity it allowed at
            high, and capacity returns to 1 only when throttling ends). The
            lowest capacity wins. ``"step"``: capacity is ``min_capacity`` for as
            long as throttling lasts.

    Raises:
        InvalidArgument: a threshold out of range, a low not below its high, half
            of a pair set, or a bad ``min_capacity`` or ``reduction``.
    """

    host_cpu_high: Optional[float] = None
    host_cpu_low: Optional[float] = None
    host_memory_high: Optional[float] = None
    host_memory_low: Optional[float] = None
    process_cpu_high: Optional[float] = None
    process_cpu_low: Optional[float] = None
    process_rss_high: Optional[int] = None
    process_rss_low: Optional[int] = None
    min_capacity: float = 0.25
    reduction: str = "proportional"
    # Last, so that positional arguments keep the meaning they had before these existed.
    cpu_high: Optional[float] = 0.90
    cpu_low: Optional[float] = 0.75
    memory_high: Optional[float] = 0.90
    memory_low: Optional[float] = 0.80

    def __post_init__(self) -> None:
        for resource in RESOURCES:
            high = getattr(self, f"{resource}_high")
            low = getattr(self, f"{resource}_low")
            if (high is None) != (low is None):
                given, missing = (f"{resource}_low", f"{resource}_high")
                if low is None:
                    given, missing = missing, given
                raise InvalidArgument(f"invalid {given} {shown(getattr(self, given))}: {missing} must be set too (or both None)")
            if high is None:
                continue
            for name, value in ((f"{resource}_high", high), (f"{resource}_low", low)):
                self._check_value(resource, name, value)
            if not low < high:
                raise InvalidArgument(f"invalid {resource}_low {shown(low)}: expected less than {resource}_high ({shown(high)})")
        if not _is_number(self.min_capacity) or not 0 <= self.min_capacity <= 1:
            raise InvalidArgument(f"invalid min_capacity {shown(self.min_capacity)}: expected a number from 0 to 1")
        if self.reduction not in ("proportional", "step"):
            raise InvalidArgument(f"invalid reduction {shown(self.reduction)}: expected 'proportional' or 'step'")

    @staticmethod
    def _check_value(resource: str, name: str, value: object) -> None:
        if resource in _FRACTIONS:
            if not _is_number(value) or not 0 <= value <= 1:  # type: ignore[operator]
                raise InvalidArgument(f"invalid {name} {shown(value)}: expected a fraction from 0 to 1")
        elif resource == "process_rss":
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise InvalidArgument(f"invalid {name} {shown(value)}: expected bytes, an integer >= 0")
        elif not _is_number(value) or value < 0:  # type: ignore[operator]
            raise InvalidArgument(f"invalid {name} {shown(value)}: expected cores, a finite number >= 0")

    def watched(self) -> tuple[str, ...]:
        """The resources with thresholds set, in :data:`RESOURCES` order."""
        return tuple(r for r in RESOURCES if getattr(self, f"{r}_high") is not None)

    def high(self, resource: str) -> float:
        """The high threshold of ``resource`` (which must be watched)."""
        return float(getattr(self, f"{resource}_high"))

    def low(self, resource: str) -> float:
        """The low threshold of ``resource`` (which must be watched)."""
        return float(getattr(self, f"{resource}_low"))

    def overshoot(self, resource: str, value: float) -> float:
        """How far ``value`` is over the high threshold of ``resource``, in bands of ``high - low``."""
        high = self.high(resource)
        return (value - high) / (high - self.low(resource))

    def capacity_for(self, resource: str, value: float) -> float:
        """The capacity one figure allows while throttling is on (see ``reduction``)."""
        if self.reduction == "step":
            return float(self.min_capacity)
        low, high = self.low(resource), self.high(resource)
        full = 1.0 if resource in _FRACTIONS else high + (high - low)
        depth = (max(value, high) - low) / (full - low)
        return 1.0 - (1.0 - self.min_capacity) * min(max(depth, 0.0), 1.0)


@dataclass(frozen=True)
class Sample:
    """One reading of the figures a monitor watches.

    Args:
        host_cpu: fraction of the host's CPU time busy, 0 to 1.
        host_memory: fraction of the host's memory in use (not available), 0 to 1.
        process_cpu: cores this process used (1.0 = one core all the time).
        process_rss: this process's resident set size, bytes.
        cpu: busy fraction of this process's CPU limit, 0 to 1 (or more, briefly,
            when a quota is overrun); None when not measured (no limit of its own
            and no fallback to the host's), which the monitor does not judge.
        memory: used fraction of this process's memory limit, 0 to 1; None when
            not measured.
    """

    host_cpu: float = 0.0
    host_memory: float = 0.0
    process_cpu: float = 0.0
    process_rss: int = 0
    cpu: Optional[float] = None
    memory: Optional[float] = None


@dataclass(frozen=True)
class ThrottlePeriod:
    """A span of time during which async work was throttled.

    Args:
        start: when throttling started (seconds, from the monitor's clock).
        end: when it ended, or None while it lasts.
        resource: what started it: one of :data:`RESOURCES`, or ``"interactive"``
            for load reported with :meth:`ResourceMonitor.report_load`.
        peak: the highest value ``resource`` reached during the period, in its own
            unit (a fraction, cores, bytes, or the interactive load level).
        capacity_min: the lowest capacity set during the period.
    """

    start: float
    end: Optional[float]
    resource: str
    peak: float
    capacity_min: float

    @property
    def duration(self) -> Optional[float]:
        """Seconds from start to end, or None while the period lasts."""
        return None if self.end is None else self.end - self.start


Callback = Callable[[ThrottlePeriod], object]


def psutil_sampler() -> Callable[[], Sample]:
    """A sampler reading this host and process with psutil (``host_*`` and
    ``process_*``; ``cpu`` and ``memory`` are left None: see :class:`SystemSampler`).

    CPU figures are measured since the sampler's previous call (the first call
    measures since the sampler was made), so the sampler never blocks.

    Returns:
        A function returning a fresh :class:`Sample` per call.
    """
    import psutil

    process = psutil.Process()
    # Prime both CPU counters: cpu_percent(None) reports usage since the previous call.
    psutil.cpu_percent(interval=None)
    process.cpu_percent(interval=None)

    def sample() -> Sample:
        return Sample(
            host_cpu=psutil.cpu_percent(interval=None) / 100.0,
            host_memory=psutil.virtual_memory().percent / 100.0,
            process_cpu=process.cpu_percent(interval=None) / 100.0,
            process_rss=int(process.memory_info().rss),
        )

    return sample


# A v1 memory limit at or above this means "no limit" (the kernel writes
# PAGE_COUNTER_MAX pages, 9223372036854771712 bytes with 4 KiB pages).
_V1_UNLIMITED = 1 << 62


def _read(path: Path) -> Optional[str]:
    """A cgroup file's text, or None if it is missing or unreadable (a controller not
    enabled there, a cgroup removed meanwhile)."""
    try:
        return path.read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None


def _read_int(path: Path) -> Optional[int]:
    text = _read(path)
    try:
        return None if text is None else int(text)
    except ValueError:
        return None


def _stat(path: Path, key: str) -> Optional[int]:
    """One ``key value`` line of a flat-keyed file (``cpu.stat``, ``memory.stat``)."""
    text = _read(path)
    for line in (text or "").splitlines():
        name, _, value = line.partition(" ")
        if name == key:
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _chain(mount: Path, relative: str) -> tuple[Path, ...]:
    """The cgroup directories from this process's own up to the mount, leaf first.

    A path that does not exist under the mount is the container case: its own
    cgroup is mounted at the root (a cgroup namespace, or a v1 bind mount), and
    the host's path ``/proc/self/cgroup`` names cannot be seen from inside.
    """
    parts = [p for p in relative.split("/") if p and p != ".."]
    leaf = mount.joinpath(*parts)
    if not parts or not leaf.is_dir():
        return (mount,)
    return tuple(mount.joinpath(*parts[:n]) for n in range(len(parts), -1, -1))


def _membership(proc_cgroup: Path) -> dict[str, str]:
    """``/proc/self/cgroup``: each controller's (``""`` for v2's unified one) path."""
    paths: dict[str, str] = {}
    for line in (_read(proc_cgroup) or "").splitlines():
        number, _, rest = line.partition(":")
        controllers, _, path = rest.partition(":")
        if number == "0" and not controllers:
            paths[""] = path
        for controller in controllers.split(","):
            if controller:
                paths[controller] = path
    return paths


@dataclass(frozen=True)
class _Limit:
    """The tightest limit found along the chain, and where its usage is read."""

    value: float
    """Cores (CPU) or bytes (memory)."""
    where: Path
    usage: Path
    """The directory whose usage counts against it (v1's CPU usage is another hierarchy's)."""


class SystemSampler:
    """Readings of CPU and memory against the limits that bind this process.

    ``cpu`` and ``memory`` are read from this process's cgroup, v2 (``cpu.max``,
    ``cpu.stat`` ``usage_usec``, ``memory.max`` / ``memory.high``,
    ``memory.current``) or v1 (``cpu.cfs_quota_us`` / ``cpu.cfs_period_us``,
    ``cpuacct.usage``, ``memory.limit_in_bytes``, ``memory.usage_in_bytes``),
    found through ``/proc/self/cgroup``. The tightest limit from the process's own
    cgroup up to the root counts (a pod's limit may sit on a parent), and its
    usage is that cgroup's, its children's included: the container's own load
    against its own limit, never other pods'. Memory usage leaves out
    ``inactive_file`` (page cache the kernel reclaims before it would kill
    anything, as the kubelet's working set does). Limits are read again at every
    sample, so a resized container is followed.

    A limit at or above what the host has (CPU cores this process may use, or
    host memory) binds nothing and counts as no limit. Where no limit is set,
    the figure is the host's (psutil) when ``host_fallback`` is on, else None: not
    measured, so never a cause of throttling.

    The ``host_*`` and ``process_*`` figures of every sample come from ``host``
    (default: :func:`psutil_sampler`). CPU figures measure the time since the
    previous call (the first: since the sampler was made), so a call never blocks.

    Args:
        cgroup_root: where the cgroup filesystem is mounted (None: read no cgroup,
            the host's figures only).
        proc_cgroup: the file naming this process's cgroups.
        host_fallback: read the host's figures where no cgroup limit is set.
        host: the host and process readings.
        clock: monotonic seconds, for CPU usage rates.
    """

    def __init__(
        self,
        cgroup_root: Optional[str | Path] = CGROUP_ROOT,
        *,
        proc_cgroup: str | Path = "/proc/self/cgroup",
        host_fallback: bool = True,
        host: Optional[Callable[[], Sample]] = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        import psutil

        self.host_fallback = host_fallback
        self._host = host if host is not None else psutil_sampler()
        self._clock = clock
        # Limits that reach these bind nothing: the host runs out first.
        self._host_cores = float(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
        self._host_bytes = int(psutil.virtual_memory().total)
        self.version: Optional[int] = None
        """The cgroup version found (1 or 2), or None (not Linux, not mounted, or not asked)."""
        self._cpu: tuple[tuple[Path, Path], ...] = ()
        self._memory: tuple[Path, ...] = ()
        if cgroup_root is not None:
            self._find(Path(cgroup_root), Path(proc_cgroup))
        # CPU usage seconds at the previous call, per cgroup read.
        self._cpu_seen: dict[Path, tuple[float, float]] = {}
        limit = self._cpu_limit()
        if limit is not None:
            self._cpu_rate(limit)

    def _find(self, root: Path, proc_cgroup: Path) -> None:
        paths = _membership(proc_cgroup)
        if (root / "cgroup.controllers").is_file():
            self.version = 2
            chain = _chain(root, paths.get("", "/"))
            self._cpu = tuple((d, d) for d in chain)
            self._memory = chain
            return

        def mount(controller: str) -> Optional[Path]:
            for name in (controller, "cpu,cpuacct" if controller in ("cpu", "cpuacct") else controller):
                if (root / name).is_dir():
                    return root / name
            return None

        cpu, cpuacct, memory = mount("cpu"), mount("cpuacct"), mount("memory")
        if cpu is None and memory is None:
            return
        self.version = 1
        if cpu is not None and cpuacct is not None:
            quota = _chain(cpu, paths.get("cpu", "/"))
            # Usage of the same cgroup, in the cpuacct hierarchy (often the same mount).
            usage = _chain(cpuacct, paths.get("cpuacct", "/"))
            self._cpu = tuple(zip(quota, usage)) if len(usage) == len(quota) else ((quota[0], usage[0]),)
        if memory is not None:
            self._memory = _chain(memory, paths.get("memory", "/"))

    # ----- limits ----------------------------------------------------------------------

    def _cpu_limit(self) -> Optional[_Limit]:
        tightest: Optional[_Limit] = None
        for where, usage in self._cpu:
            cores: Optional[float] = None
            if self.version == 2:
                quota, _, period = (_read(where / "cpu.max") or "max").partition(" ")
                if quota != "max" and quota.isdigit() and period.isdigit() and int(period) > 0:
                    cores = int(quota) / int(period)
            else:
                quota_us, period_us = _read_int(where / "cpu.cfs_quota_us"), _read_int(where / "cpu.cfs_period_us")
                if quota_us is not None and quota_us > 0 and period_us:
                    cores = quota_us / period_us
            if cores is not None and cores < self._host_cores and (tightest is None or cores < tightest.value):
                tightest = _Limit(cores, where, usage)
        return tightest

    def _memory_limit(self) -> Optional[_Limit]:
        tightest: Optional[_Limit] = None
        for where in self._memory:
            if self.version == 2:
                # memory.high is where the kernel starts reclaiming hard and stalling the group.
                found = [_read(where / name) for name in ("memory.max", "memory.high")]
                limits = [int(text) for text in found if text is not None and text.isdigit()]
                limit = min(limits) if limits else None
            else:
                limit = _read_int(where / "memory.limit_in_bytes")
                limit = None if limit is None or limit >= _V1_UNLIMITED else limit
            if limit is not None and 0 < limit < self._host_bytes and (tightest is None or limit < tightest.value):
                tightest = _Limit(limit, where, where)
        return tightest

    def limits(self) -> dict[str, Optional[float]]:
        """The limits that bind this process now: ``{"cpu": cores, "memory": bytes}``,
        None where no cgroup sets one below what the host has."""
        cpu, memory = self._cpu_limit(), self._memory_limit()
        return {"cpu": None if cpu is None else cpu.value, "memory": None if memory is None else memory.value}

    # ----- usage -----------------------------------------------------------------------

    def _cpu_rate(self, limit: _Limit) -> Optional[float]:
        """Busy fraction of ``limit`` since the previous reading of its cgroup (None at the first)."""
        if self.version == 2:
            micros = _stat(limit.usage / "cpu.stat", "usage_usec")
            used = None if micros is None else micros / 1e6
        else:
            nanos = _read_int(limit.usage / "cpuacct.usage")
            used = None if nanos is None else nanos / 1e9
        if used is None:
            return None
        now = self._clock()
        previous = self._cpu_seen.get(limit.usage)
        self._cpu_seen[limit.usage] = (now, used)
        if previous is None or now <= previous[0]:
            return None
        return max(used - previous[1], 0.0) / ((now - previous[0]) * limit.value)

    def _memory_used(self, limit: _Limit) -> Optional[float]:
        """Used fraction of ``limit``, reclaimable page cache left out."""
        if self.version == 2:
            current, cache = _read_int(limit.usage / "memory.current"), _stat(limit.usage / "memory.stat", "inactive_file")
        else:
            current = _read_int(limit.usage / "memory.usage_in_bytes")
            cache = _stat(limit.usage / "memory.stat", "total_inactive_file")
        if current is None:
            return None
        return max(current - (cache or 0), 0) / limit.value

    def __call__(self) -> Sample:
        """Reads every figure now."""
        host = self._host()
        cpu_limit, memory_limit = self._cpu_limit(), self._memory_limit()
        fallback = self.host_fallback
        cpu = self._cpu_rate(cpu_limit) if cpu_limit is not None else (host.host_cpu if fallback else None)
        memory = self._memory_used(memory_limit) if memory_limit is not None else (host.host_memory if fallback else None)
        return dataclasses.replace(host, cpu=cpu, memory=memory)

    def describe(self) -> dict[str, Optional[str]]:
        """Where ``cpu`` and ``memory`` come from now, in words (for start-up logs);
        None for a figure not measured (no limit, and no fallback to the host's)."""
        cpu, memory = self._cpu_limit(), self._memory_limit()
        host = self.host_fallback
        return {
            "cpu": (f"cgroup v{self.version} limit {cpu.value:g} cores at {cpu.where}" if cpu is not None
                    else f"no cgroup limit: the host's {self._host_cores:g} cores" if host else None),
            "memory": (f"cgroup v{self.version} limit {_bytes(memory.value)} at {memory.where}" if memory is not None
                       else f"no cgroup limit: the host's {_bytes(self._host_bytes)}" if host else None),
        }  # fmt: skip


def _bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024:
            return f"{n:.4g} {unit}"
        n /= 1024
    return f"{n:.4g} TiB"


@dataclass
class _Load:
    level: float
    expires: float
    period: ThrottlePeriod


class ResourceMonitor:
    """Watches CPU and memory and turns them into a capacity factor for the dispatcher.

    Call :meth:`start` to sample every ``interval`` seconds on a daemon thread, or
    call :meth:`update` yourself with samples (tests, custom samplers). Read
    :attr:`capacity` and pass it to ``Dispatcher.set_capacity``.

    Args:
        thresholds: when to throttle and how hard (defaults: :class:`Thresholds`).
        interval: seconds between samples on the sampling thread (> 0).
        sampler: returns a :class:`Sample`; defaults to a :class:`SystemSampler`
            (this process's cgroup limits, the host's where none is set), created
            on first use.
        clock: the time source for throttle periods and load expiry (seconds).
        on_throttle_start: callables given each period when it starts.
        on_throttle_end: callables given each period when it ends.
        history: how many finished periods to keep (the oldest are dropped).

    Raises:
        InvalidArgument: a bad ``interval`` or ``history``.
    """

    def __init__(
        self,
        thresholds: Optional[Thresholds] = None,
        *,
        interval: float = 1.0,
        sampler: Optional[Callable[[], Sample]] = None,
        clock: Callable[[], float] = time.time,
        on_throttle_start: Iterable[Callback] = (),
        on_throttle_end: Iterable[Callback] = (),
        history: int = 1000,
    ) -> None:
        if not _is_number(interval) or interval <= 0:
            raise InvalidArgument(f"invalid interval {shown(interval)}: expected seconds > 0")
        if not isinstance(history, int) or isinstance(history, bool) or history < 1:
            raise InvalidArgument(f"invalid history {shown(history)}: expected an integer >= 1")
        self.thresholds = thresholds if thresholds is not None else Thresholds()
        self.interval = float(interval)
        self.clock = clock
        self.on_throttle_start: list[Callback] = list(on_throttle_start)
        """Called with each period when it starts (append to add a listener)."""
        self.on_throttle_end: list[Callback] = list(on_throttle_end)
        """Called with each period when it ends (append to add a listener)."""
        self._sampler = sampler
        self._lock = threading.Lock()
        self._resource_capacity = 1.0
        self._current: Optional[ThrottlePeriod] = None
        self._loads: dict[str, _Load] = {}
        self._finished: deque[ThrottlePeriod] = deque(maxlen=history)
        self._last_sample: Optional[Sample] = None
        self._thread: Optional[threading.Thread] = None
        self._stop = threading.Event()

    # ----- reading ---------------------------------------------------------------------

    @property
    def capacity(self) -> float:
        """The capacity factor now, 0 to 1: the throttle's, lowered by unexpired interactive load."""
        with self._lock:
            ended = self._expire_loads(self.clock())
            capacity = self._capacity_locked()
        self._notify(self.on_throttle_end, ended)
        return capacity

    @property
    def throttled(self) -> bool:
        """True while a throttle period (resource or interactive) is in progress."""
        return bool(self.current_periods)

    @property
    def current_periods(self) -> list[ThrottlePeriod]:
        """The periods in progress (resource throttling first, then interactive loads)."""
        with self._lock:
            ended = self._expire_loads(self.clock())
            current = self._current_locked()
        self._notify(self.on_throttle_end, ended)
        return current

    @property
    def throttle_periods(self) -> list[ThrottlePeriod]:
        """Every kept period, oldest start first, including those in progress (``end`` None)."""
        with self._lock:
            ended = self._expire_loads(self.clock())
            periods = list(self._finished) + self._current_locked()
        self._notify(self.on_throttle_end, ended)
        return sorted(periods, key=lambda p: p.start)

    @property
    def running(self) -> bool:
        """True while the sampling thread runs (between :meth:`start` and :meth:`stop`)."""
        thread = self._thread
        return thread is not None and thread.is_alive()

    @property
    def last_sample(self) -> Optional[Sample]:
        """The most recent sample given to :meth:`update`, if any."""
        return self._last_sample

    # ----- deciding --------------------------------------------------------------------

    @property
    def sampler(self) -> Callable[[], Sample]:
        """What the figures are read with (the default :class:`SystemSampler` is made on first use)."""
        if self._sampler is None:
            self._sampler = SystemSampler()
        return self._sampler

    def sample(self) -> Sample:
        """Reads the figures now with the sampler."""
        return self.sampler()

    def describe(self) -> str:
        """What this monitor watches, from where, and when it throttles, in one line
        (what a worker logs at start-up)."""
        thresholds = self.thresholds
        sources = self.sampler.describe() if isinstance(self.sampler, SystemSampler) else {}
        watched, unmeasured = [], []
        for resource in thresholds.watched():
            high, low = thresholds.high(resource), thresholds.low(resource)
            if resource in sources and sources[resource] is None:
                unmeasured.append(resource)
                continue
            if resource in _FRACTIONS:
                band = f"above {high:.0%} until under {low:.0%}"
            elif resource == "process_rss":
                band = f"above {_bytes(high)} until under {_bytes(low)}"
            else:
                band = f"above {high:g} cores until under {low:g}"
            source = sources.get(resource)
            watched.append(f"{resource} {band}" + (f" ({source})" if source else ""))
        skipped = f"; not watched: {', '.join(unmeasured)} (no limit of its own)" if unmeasured else ""
        if not watched:
            return f"resource conservation: nothing watched (interactive load only){skipped}"
        floor = "step to" if thresholds.reduction == "step" else "down to"
        return f"resource conservation: {'; '.join(watched)}; capacity {floor} {thresholds.min_capacity:.0%}{skipped}"

    def update(self, sample: Sample) -> float:
        """Applies one sample and returns the capacity factor.

        Throttling starts when any watched figure is above its high threshold and
        ends only when every watched figure is below its low threshold; in between
        the state is kept (hysteresis). Figures the sample leaves None are skipped.

        Args:
            sample: the figures to judge.

        Returns:
            The capacity factor, as :attr:`capacity` now reads.
        """
        thresholds = self.thresholds
        # A figure the sampler could not measure (None) is not judged either way.
        values = {r: float(v) for r in thresholds.watched() if (v := getattr(sample, r)) is not None}
        started: list[ThrottlePeriod] = []
        ended: list[ThrottlePeriod]
        with self._lock:
            now = self.clock()
            self._last_sample = sample
            ended = self._expire_loads(now)
            current = self._current
            if current is None:
                over = [r for r, v in values.items() if v > thresholds.high(r)]
                if over:
                    # Units differ (fractions, cores, bytes), so compare overshoots in bands.
                    cause = max(over, key=lambda r: thresholds.overshoot(r, values[r]))
                    self._resource_capacity = self._throttled_capacity(values)
                    current = ThrottlePeriod(now, None, cause, values[cause], self._capacity_locked())
                    started.append(current)
            elif all(v < thresholds.low(r) for r, v in values.items()):
                self._resource_capacity = 1.0
                ended.append(dataclasses.replace(current, end=now))
                self._finished.append(ended[-1])
                current = None
            else:
                self._resource_capacity = self._throttled_capacity(values)
                current = dataclasses.replace(
                    current,
                    peak=max(current.peak, values.get(current.resource, current.peak)),
                    capacity_min=min(current.capacity_min, self._capacity_locked()),
                )
            self._current = current
            self._track_loads()
            capacity = self._capacity_locked()
        self._notify(self.on_throttle_end, ended)
        self._notify(self.on_throttle_start, started)
        return capacity

    def report_load(self, level: float, ttl: float, *, source: str = "default") -> None:
        """Lets the service's interactive work claim priority over async work.

        Until ``ttl`` seconds pass, capacity is at most ``1 - level``. A new report
        from the same ``source`` replaces the previous one (report again to extend
        it; ``level`` 0 withdraws it); reports from different sources combine by
        taking the highest level. Each claim is recorded as an ``"interactive"``
        throttle period.

        Args:
            level: how much of the capacity the interactive work needs, 0 to 1.
            ttl: seconds the claim holds unless renewed (> 0).
            source: names the claimant, so independent parts of a service do not
                overwrite each other's claims.

        Raises:
            InvalidArgument: ``level`` outside 0 to 1, or ``ttl`` not a positive number.
        """
        if not _is_number(level) or not 0 <= level <= 1:
            raise InvalidArgument(f"invalid level {shown(level)}: expected a number from 0 to 1")
        if not _is_number(ttl) or ttl <= 0:
            raise InvalidArgument(f"invalid ttl {shown(ttl)}: expected seconds > 0")
        started: list[ThrottlePeriod] = []
        ended: list[ThrottlePeriod] = []
        with self._lock:
            now = self.clock()
            ended = self._expire_loads(now)
            load = self._loads.get(source)
            if level == 0:
                if load is not None:
                    del self._loads[source]
                    ended.append(self._finish(load.period, now))
            elif load is None:
                period = ThrottlePeriod(now, None, INTERACTIVE, float(level), 1.0)
                self._loads[source] = _Load(float(level), now + ttl, period)
                started.append(period)
            else:
                load.level, load.expires = float(level), now + ttl
                load.period = dataclasses.replace(load.period, peak=max(load.period.peak, float(level)))
            self._track_loads()
            if started:
                started = [self._loads[source].period]
        self._notify(self.on_throttle_end, ended)
        self._notify(self.on_throttle_start, started)

    # ----- sampling thread -------------------------------------------------------------

    def start(self) -> ResourceMonitor:
        """Samples every ``interval`` seconds on a daemon thread until :meth:`stop`; returns self."""
        if self.running:
            return self
        if self._sampler is None:
            self._sampler = SystemSampler()  # made now, so the first interval's CPU figures measure from here
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="fairqueue-conservation", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: Optional[float] = None) -> None:
        """Stops the sampling thread and waits up to ``timeout`` seconds for it (None: no limit)."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    def __enter__(self) -> ResourceMonitor:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.update(self.sample())
            except Exception:
                # A failed reading must not end conservation; the next one may succeed.
                log.exception("fairqueue resource monitor: sampling failed")

    # ----- internals (call with the lock held unless noted) ----------------------------

    def _throttled_capacity(self, values: dict[str, float]) -> float:
        thresholds = self.thresholds
        allowed = [thresholds.capacity_for(r, v) for r, v in values.items() if v >= thresholds.low(r)]
        return max(thresholds.min_capacity, min(allowed, default=1.0))

    def _current_locked(self) -> list[ThrottlePeriod]:
        return ([self._current] if self._current else []) + [load.period for load in self._loads.values()]

    def _capacity_locked(self) -> float:
        level = max((load.level for load in self._loads.values()), default=0.0)
        return max(0.0, min(self._resource_capacity, 1.0 - level))

    def _track_loads(self) -> None:
        """Lowers each interactive period's ``capacity_min`` to the capacity now."""
        capacity = self._capacity_locked()
        for load in self._loads.values():
            if capacity < load.period.capacity_min:
                load.period = dataclasses.replace(load.period, capacity_min=capacity)

    def _expire_loads(self, now: float) -> list[ThrottlePeriod]:
        ended = []
        for source, load in list(self._loads.items()):
            if load.expires <= now:
                del self._loads[source]
                # The claim ended when it expired, not when someone next looked.
                ended.append(self._finish(load.period, load.expires))
        return ended

    def _finish(self, period: ThrottlePeriod, end: float) -> ThrottlePeriod:
        done = dataclasses.replace(period, end=end)
        self._finished.append(done)
        return done

    @staticmethod
    def _notify(callbacks: list[Callback], periods: list[ThrottlePeriod]) -> None:
        """Calls every callback with every period (without the lock); errors are logged."""
        for period in periods:
            for callback in list(callbacks):
                try:
                    callback(period)
                except Exception:
                    log.exception("fairqueue resource monitor: throttle callback %r failed", callback)
