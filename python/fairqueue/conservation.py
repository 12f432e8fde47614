"""Resource conservation (SPEC §2.3): async work yields when the host or this process is busy.

A :class:`ResourceMonitor` samples host and process CPU and memory. When any watched
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
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Optional

from fairqueue.errors import InvalidArgument
from fairqueue.validate import shown

__all__ = [
    "RESOURCES",
    "INTERACTIVE",
    "Thresholds",
    "Sample",
    "ThrottlePeriod",
    "ResourceMonitor",
    "psutil_sampler",
]

log = logging.getLogger("fairqueue.conservation")

RESOURCES = ("host_cpu", "host_memory", "process_cpu", "process_rss")
"""The figures a monitor can watch, in the order ties are broken when naming a cause."""

INTERACTIVE = "interactive"
"""The resource name of throttle periods caused by :meth:`ResourceMonitor.report_load`."""

# Host figures are fractions, so capacity reaches its minimum when they reach 100 %.
# Process figures have no ceiling; capacity reaches its minimum one band (high - low)
# above the high threshold.
_FRACTIONS = ("host_cpu", "host_memory")


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
    unwatched. Host figures are fractions from 0 to 1; process CPU is in cores
    (1.0 = one core busy all the time) and process memory is resident set size in
    bytes, both of this process only.

    Args:
        host_cpu_high: host CPU busy fraction that starts throttling.
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
            to ``min_capacity`` at saturation (100 % for host figures, one band
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

    host_cpu_high: Optional[float] = 0.90
    host_cpu_low: Optional[float] = 0.75
    host_memory_high: Optional[float] = 0.90
    host_memory_low: Optional[float] = 0.80
    process_cpu_high: Optional[float] = None
    process_cpu_low: Optional[float] = None
    process_rss_high: Optional[int] = None
    process_rss_low: Optional[int] = None
    min_capacity: float = 0.25
    reduction: str = "proportional"

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
    """

    host_cpu: float = 0.0
    host_memory: float = 0.0
    process_cpu: float = 0.0
    process_rss: int = 0


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
    """A sampler reading this host and process with psutil.

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
        sampler: returns a :class:`Sample`; defaults to :func:`psutil_sampler`,
            created on first use.
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

    def sample(self) -> Sample:
        """Reads the figures now with the sampler (psutil unless one was given)."""
        if self._sampler is None:
            self._sampler = psutil_sampler()
        return self._sampler()

    def update(self, sample: Sample) -> float:
        """Applies one sample and returns the capacity factor.

        Throttling starts when any watched figure is above its high threshold and
        ends only when every watched figure is below its low threshold; in between
        the state is kept (hysteresis).

        Args:
            sample: the figures to judge.

        Returns:
            The capacity factor, as :attr:`capacity` now reads.
        """
        thresholds = self.thresholds
        values = {r: float(getattr(sample, r)) for r in thresholds.watched()}
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
            self._sampler = psutil_sampler()
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
