"""A second, deliberately naive implementation of fairqueue's cron semantics, for tests.

It shares no code with ``fairqueue.cron`` and uses neither it nor croniter: every
field becomes a predicate over wall-clock fields, and fire times are found by
walking instants one minute (and, in a matching minute, one second) at a time and
asking zoneinfo what the clock says. The semantics are the reference platform's
(Quartz CronTrigger) for the fields, and the daylight-saving rules that
``fairqueue.cron`` documents, stated here in terms of instants:

- all 24 hours in the hours field: an instant fires when its wall-clock time
  matches (so both occurrences of a repeated time, and no skipped time);
- otherwise an instant fires when its wall-clock time matches and no earlier
  instant showed the same wall-clock time; and a matching wall-clock time that
  the clock skipped fires at the instant it would have had on the clock before
  the change (the instant just before the jump, plus how far into the gap it is).

Walking is made bearable by jumping over the rest of a day (or an hour) that
cannot match, but only when the zone's offset is the same at both ends of the
jump (two changes are never a day apart).
"""

from __future__ import annotations

import heapq
import math
from calendar import monthrange
from collections.abc import Callable
from datetime import date, datetime, timedelta
from typing import Optional
from zoneinfo import ZoneInfo

MONTHS = ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"]
WEEKDAYS = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"]

DatePredicate = Callable[[date], bool]


def _number(token: str, names: Optional[list[str]], first: int) -> int:
    if names is not None and token in names:
        return names.index(token) + first
    return int(token)


def _expand(text: str, lo: int, hi: int, names: Optional[list[str]] = None, first_name: int = 0) -> set[int]:
    """A field of values, ranges (wrapping past ``hi`` to ``lo``), steps and lists."""
    result: set[int] = set()
    for part in text.split(","):
        stepped = "/" in part
        span, _, step_text = part.partition("/")
        step = int(step_text) if stepped else 1
        if span == "*":
            start, stop = lo, hi
        elif "-" in span:
            a, b = span.split("-")
            start, stop = _number(a, names, first_name), _number(b, names, first_name)
        else:
            start = _number(span, names, first_name)
            stop = hi if stepped else start
        # Walk the values one by one, around the cycle if need be, from start to stop.
        walk = [start]
        while walk[-1] != stop:
            walk.append(lo if walk[-1] == hi else walk[-1] + 1)
        result.update(walk[::step])
    return result


def _weekdays_of_month(day: date) -> list[int]:
    last = monthrange(day.year, day.month)[1]
    return [d for d in range(1, last + 1) if date(day.year, day.month, d).weekday() < 5]


def _nearest_weekday(day: date, target: int) -> Optional[int]:
    """The Monday-Friday of ``day``'s month nearest day ``target`` (None: the month has no such day)."""
    last = monthrange(day.year, day.month)[1]
    if not 1 <= target <= last:
        return None
    return min(_weekdays_of_month(day), key=lambda d: abs(d - target))


def _last_day(d: date) -> int:
    return monthrange(d.year, d.month)[1]


def _day_of_month_item(item: str) -> DatePredicate:
    if item == "*":
        return lambda d: True
    if item.startswith("L"):
        offset = int(item[2:].rstrip("W")) if item.startswith("L-") else 0
        if item.endswith("W"):
            return lambda d: d.day == _nearest_weekday(d, _last_day(d) - offset)
        return lambda d: d.day == _last_day(d) - offset
    if item.endswith("W"):
        target = int(item[:-1])
        return lambda d: d.day == _nearest_weekday(d, target)
    days = _expand(item, 1, 31)
    return lambda d: d.day in days


def _day_of_month(text: str) -> DatePredicate:
    tests = [_day_of_month_item(item) for item in text.split(",")]
    return lambda d: any(test(d) for test in tests)


def _day_of_week(text: str, classic: bool) -> DatePredicate:
    """Quartz numbering (1 = Sunday) or, ``classic``, cron's (0 or 7 = Sunday)."""

    def number(d: date) -> int:
        return d.isoweekday() % 7 + (0 if classic else 1)

    first_name = 0 if classic else 1

    def wanted(token: str) -> int:
        value = _number(token, WEEKDAYS, first_name)
        return value % 7 if classic else value

    if text == "L":
        return lambda d: number(d) == 7
    if text.endswith("L"):
        weekday = wanted(text[:-1])
        return lambda d: number(d) == weekday and (d + timedelta(days=7)).month != d.month
    if "#" in text:
        day, nth = text.split("#")
        weekday = wanted(day)
        return lambda d: number(d) == weekday and (d.day - 1) // 7 + 1 == int(nth)
    if classic:
        values = {v % 7 for v in _expand(text, 0, 7, WEEKDAYS, 0)}
    else:
        values = _expand(text, 1, 7, WEEKDAYS, 1)
    return lambda d: number(d) in values


class Reference:
    """One cron expression in one zone, the slow and obvious way."""

    def __init__(self, expression: str, zone: str) -> None:
        fields = expression.upper().split()
        self.zone = ZoneInfo(zone)
        if len(fields) == 5:
            fields = ["0", *fields]
            dom, dow = fields[3], fields[5]
            dom_free, dow_free = dom in ("*", "?"), dow in ("*", "?")
            dom_test = _day_of_month("*" if dom == "?" else dom)
            dow_test = _day_of_week("*" if dow == "?" else dow, classic=True)
            if dom_free or dow_free:
                self.date_ok: DatePredicate = lambda d: dom_test(d) and dow_test(d)
            else:
                self.date_ok = lambda d: dom_test(d) or dow_test(d)
        else:
            dom, dow = fields[3], fields[5]
            assert (dom == "?") != (dow == "?"), "the reference form has exactly one '?' day field"
            self.date_ok = _day_of_week(dow, classic=False) if dom == "?" else _day_of_month(dom)
        self.seconds = sorted(_expand(fields[0], 0, 59))
        self.minutes = _expand(fields[1], 0, 59)
        self.hours = _expand(fields[2], 0, 23)
        self.months = _expand(fields[4], 1, 12, MONTHS, 1)
        self.years: Optional[set[int]] = None
        if len(fields) == 7 and fields[6] != "*":
            self.years = _expand(fields[6], 1970, 2199)
        self.every_hour = self.hours == set(range(24))

    def date_matches(self, d: date) -> bool:
        return (self.years is None or d.year in self.years) and d.month in self.months and self.date_ok(d)

    def wall_matches(self, w: datetime) -> bool:
        return self.date_matches(w.date()) and w.hour in self.hours and w.minute in self.minutes and w.second in self.seconds

    def _wall(self, instant: int) -> datetime:
        return datetime.fromtimestamp(instant, self.zone).replace(tzinfo=None)

    def _offset(self, instant: int) -> timedelta:
        offset = datetime.fromtimestamp(instant, self.zone).utcoffset()
        assert offset is not None
        return offset

    def _first_showing(self, instant: int) -> bool:
        """No earlier instant (within 3 hours) showed the same wall-clock time."""
        if self._offset(instant - 3 * 3600) == self._offset(instant):
            return True
        wall = self._wall(instant)
        return all(self._wall(instant - 60 * k) != wall for k in range(1, 181))

    def fires(self, after: float, count: int) -> list[int]:
        """The first ``count`` fire instants strictly after ``after`` (fewer if none are left)."""
        found: list[int] = []
        pending: list[int] = []  # fire instants of skipped wall-clock times, not yet reached
        last_year = max(self.years) if self.years is not None else 2199

        def emit(instant: int) -> None:
            if instant > after and (not found or instant > found[-1]):
                found.append(instant)

        first_minute = math.floor(after) // 60 * 60
        # Start a day early: a skipped wall-clock time fires up to a day (Samoa, 2011) after the jump.
        x = first_minute - 26 * 3600
        for _ in range(10_000_000):
            if len(found) >= count:
                break
            wall = self._wall(x)
            if wall.year > last_year + 1:
                break
            now_offset, before_offset = self._offset(x), self._offset(x - 60)
            if not self.every_hour and now_offset > before_offset:
                # The clock jumped forward at x: the wall-clock times it skipped.
                skipped_from = self._wall(x - 60) + timedelta(minutes=1)
                gap_minutes = int((now_offset - before_offset).total_seconds()) // 60
                for k in range(gap_minutes):
                    skipped = skipped_from + timedelta(minutes=k)
                    for second in self.seconds:
                        if self.wall_matches(skipped + timedelta(seconds=second)):
                            heapq.heappush(pending, x + 60 * k + second)
            while pending and pending[0] < x:
                emit(heapq.heappop(pending))
            if x < first_minute:  # before the start, only the jumps matter
                x = self._jump(x, min(3600, first_minute - x))
                continue
            if not self.date_matches(wall.date()):
                x = self._jump(x, 86400 - (wall.hour * 3600 + wall.minute * 60 + wall.second))
                continue
            if wall.hour not in self.hours:
                x = self._jump(x, 3600 - (wall.minute * 60 + wall.second))
                continue
            if wall.minute in self.minutes:
                for second in self.seconds:
                    instant = x + second
                    if not self.wall_matches(self._wall(instant)):
                        continue
                    if not self.every_hour and not self._first_showing(instant):
                        continue
                    while pending and pending[0] <= instant:
                        emit(heapq.heappop(pending))
                    emit(instant)
            x += 60
        else:
            raise AssertionError("the reference walked too far")
        while pending and len(found) < count:
            emit(heapq.heappop(pending))
        return found[:count]

    def _jump(self, x: int, seconds: int) -> int:
        """``x`` moved on by ``seconds`` if the offset stays the same across, else by one minute."""
        target = x + seconds
        if seconds > 60 and self._offset(target) == self._offset(x) and self._offset(target - 60) == self._offset(x):
            return target
        return x + 60


def reference_fires(expression: str, zone: str, after: float, count: int) -> list[int]:
    return Reference(expression, zone).fires(after, count)
