"""Cron expressions in the reference platform's syntax, and the 5-field form.

The reference form (Quartz's CronTrigger) is ``seconds minutes hours
day-of-month month day-of-week [year]`` with ``? * , - / L W #``: day-of-week
counts 1 = Sunday … 7 = Saturday (or SUN…SAT), ``6L`` is the month's last
Friday, ``2#3`` its third Monday, ``15W`` the weekday nearest the 15th (in the
same month: a month without a 31st has no ``31W``), ``L`` the last day, ``L-3``
three days before it, ``LW`` the last weekday. Exactly one of the two day fields
is ``?`` (no specific value); ranges may wrap (``22-2``, ``NOV-FEB``); years run
1970-2199. The 5-field form is classic cron: ``minutes hours day-of-month month
day-of-week`` with 0 or 7 = Sunday, where a day matches either day field when
both are restricted. Anything else is refused with
:class:`~fairqueue.errors.InvalidArgument` naming the field, the value and the
allowed range.

Fire times are wall-clock times in the schedule's zone. On daylight-saving days:

- A fire time in the hour skipped when clocks go forward fires at the equivalent
  instant, its wall-clock time shifted forward by the gap (a daily 02:30 in
  Europe/Berlin fires at 03:30 CEST on 29 March 2026), where Quartz skips it
  for that day.
- A fire time in the hour repeated when clocks go back fires once, at its first
  occurrence (02:30 CEST on 25 October 2026, not again at 02:30 CET).
- A schedule whose hours field covers all 24 hours (hourly, every 15 minutes,
  every second) fires at every real instant whose wall-clock time matches: in the
  repeated hour at both occurrences, an hour apart, and in the skipped hour not at
  all, as those wall-clock times never happen and the schedule goes on after them.

The arithmetic is this module's own: croniter (used before) moved a skipped
02:30 to 03:00, fired a repeated one twice, fired ``31W`` in 30-day months and
reported malformed fields in its own words.
"""

from __future__ import annotations

import logging
import math
import re
from bisect import bisect_left
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from functools import lru_cache
from typing import Any, Optional

from fairqueue.errors import InvalidArgument
from fairqueue.records import TriggerRecord
from fairqueue.validate import check_timezone, shown

__all__ = ["CronSchedule", "next_fire"]

_log = logging.getLogger(__name__)

_REFERENCE_FORM = "'seconds minutes hours day-of-month month day-of-week [year]'"
_CLASSIC_FORM = "'minutes hours day-of-month month day-of-week'"
_MONTH_NAMES = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
_DOW_NAMES = ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")
_FIRST_YEAR, _LAST_YEAR = 1970, 2199
_MAX_EXPRESSION = 1000  # characters: far more than any real schedule, and bounds the work of parsing one
_NUMBER = re.compile(r"[0-9]+")
_DAY = 86400
_EPOCH = date(1970, 1, 1).toordinal()
# Instants are searched in windows of constant UTC offset. In the tz database since
# 1970 two offset changes are at least 7 days apart and one moves the clock by at
# most 24 hours (Samoa, 2011), and zone offsets span less than 26 hours; so a window
# of 2 days plus a 26-hour look-back holds at most one change, found by bisection.
_LOOKBACK = 26 * 3600
_WINDOW = 2 * _DAY
_FIRST_INSTANT = -2 * _DAY
_LAST_INSTANT = (date(_LAST_YEAR + 1, 1, 2).toordinal() - _EPOCH) * _DAY
_LAST_DAY_NUMBER = date(_LAST_YEAR, 12, 31).toordinal() - _EPOCH


@dataclass(frozen=True)
class _Field:
    name: str
    lo: int
    hi: int
    max_step: int
    names: tuple[str, ...] = ()  # names[i] stands for lo + i
    hint: str = ""
    wraps: bool = True  # a range may run past hi back to lo (22-2)

    def span(self) -> str:
        return f"{self.lo}-{self.hi}{self.hint}"


_SECONDS = _Field("seconds", 0, 59, 59)
_MINUTES = _Field("minutes", 0, 59, 59)
_HOURS = _Field("hours", 0, 23, 23)
_DOM = _Field("day-of-month", 1, 31, 31)
_MONTH = _Field("month", 1, 12, 12, _MONTH_NAMES, " (or JAN-DEC)")
_DOW = _Field("day-of-week", 1, 7, 7, _DOW_NAMES, " (1 = Sunday … 7 = Saturday, or SUN-SAT)")
_CLASSIC_DOW = _Field("day-of-week", 0, 7, 7, _DOW_NAMES, " (0 or 7 = Sunday, or SUN-SAT)")
_YEAR = _Field("year", _FIRST_YEAR, _LAST_YEAR, _LAST_YEAR - _FIRST_YEAR, wraps=False)


@dataclass(frozen=True)
class _Days:
    """Which days of a month a schedule fires on, from its two day fields."""

    dom_any: bool = True  # '*' or '?': the day-of-month field does not restrict the day
    dom_days: frozenset[int] = frozenset()  # day numbers
    dom_last: frozenset[int] = frozenset()  # L-n: n days before the last day
    dom_weekday: frozenset[int] = frozenset()  # nW: the weekday nearest day n
    dom_last_weekday: frozenset[int] = frozenset()  # L-nW: the weekday nearest the last day less n
    dow_any: bool = True
    dow_days: frozenset[int] = frozenset()  # Python weekdays, 0 = Monday
    dow_last: Optional[int] = None  # xL: the month's last weekday x
    dow_nth: Optional[tuple[int, int]] = None  # x#k: the month's k-th weekday x
    either: bool = False  # classic form with both fields restricted: a day matching either

    def of_month(self, year: int, month: int) -> list[int]:
        last = _days_in_month(year, month)
        first_weekday = date(year, month, 1).weekday()
        every = set(range(1, last + 1))
        dom = every
        if not self.dom_any:
            dom = {d for d in self.dom_days if d <= last}
            dom.update(last - n for n in self.dom_last if last - n >= 1)
            dom.update(_nearest_weekday(n, last, first_weekday) for n in self.dom_weekday if n <= last)
            dom.update(_nearest_weekday(last - n, last, first_weekday) for n in self.dom_last_weekday if last - n >= 1)
        dow = every
        if not self.dow_any:
            dow = {d for d in every if (first_weekday + d - 1) % 7 in self.dow_days}
            if self.dow_last is not None:
                last_weekday = (first_weekday + last - 1) % 7
                dow.add(last - (last_weekday - self.dow_last) % 7)
            if self.dow_nth is not None:
                weekday, k = self.dow_nth
                day = 1 + (weekday - first_weekday) % 7 + 7 * (k - 1)
                if day <= last:
                    dow.add(day)
        return sorted(dom | dow if self.either else dom & dow)


def _days_in_month(year: int, month: int) -> int:
    following = date(year + month // 12, month % 12 + 1, 1)
    return (following - timedelta(days=1)).day


def _nearest_weekday(day: int, last: int, first_weekday: int) -> int:
    """The weekday (Monday-Friday) nearest ``day`` without leaving its month."""
    weekday = (first_weekday + day - 1) % 7
    if weekday == 5:  # Saturday: the Friday before, or the Monday after the 1st
        return 3 if day == 1 else day - 1
    if weekday == 6:  # Sunday: the Monday after, or the Friday before the last day
        return day - 2 if day == last else day + 1
    return day


class CronSchedule:
    """A parsed cron expression in a time zone.

    Args:
        expression: the reference form (6 or 7 fields, seconds first) or the
            classic 5-field form.
        timezone: an IANA zone name (``"Europe/Berlin"``); fire times are wall-clock
            times there (see the module's documentation for daylight-saving days).

    Raises:
        InvalidArgument: the expression or the zone is malformed, or the schedule
            matches no date at all.
    """

    def __init__(self, expression: str, timezone: str = "UTC") -> None:
        if not isinstance(expression, str) or not expression.strip():
            raise InvalidArgument(f"invalid cron expression {shown(expression)}: expected {_REFERENCE_FORM} or {_CLASSIC_FORM}")
        self.zone = check_timezone(timezone)
        self.timezone = timezone
        self.expression = " ".join(expression.split()) if len(expression) <= 4 * _MAX_EXPRESSION else expression
        if len(self.expression) > _MAX_EXPRESSION:
            raise self._error(f"it is {len(self.expression)} characters long; at most {_MAX_EXPRESSION} are allowed")
        fields = self.expression.upper().split(" ")
        if len(fields) == 5:
            self._parse_classic(fields)
        elif len(fields) in (6, 7):
            self._parse_reference(fields)
        else:
            raise self._error(f"it has {len(fields)} fields; expected {_REFERENCE_FORM} (6 or 7 fields) or {_CLASSIC_FORM}")
        self._every_hour = self._hours == list(range(24))
        self._month_days = lru_cache(maxsize=256)(self._days.of_month)
        if self._next_wall(_wall_seconds(_FIRST_YEAR, 1, 1)) is None:
            raise self._error(f"it matches no date (in the years {_FIRST_YEAR}-{_LAST_YEAR})")

    def __repr__(self) -> str:
        return f"CronSchedule({self.expression!r}, {self.timezone!r})"

    def _error(self, why: str) -> InvalidArgument:
        return InvalidArgument(f"invalid cron expression {shown(self.expression)}: {why}")

    # -- parsing ------------------------------------------------------------------

    def _parse_reference(self, fields: list[str]) -> None:
        dom, dow = fields[3], fields[5]
        if dom == "?" and dow == "?":
            raise self._error("day-of-month and day-of-week are both '?'; set one of them (or use '*')")
        if dom != "?" and dow != "?":
            raise self._error(
                f"day-of-month {dom!r} and day-of-week {dow!r} are both set; put '?' in one of them (the reference form takes exactly one)"
            )
        self._seconds = self._values(fields[0], _SECONDS)
        self._minutes = self._values(fields[1], _MINUTES)
        self._hours = self._values(fields[2], _HOURS)
        self._months = self._values(fields[4], _MONTH)
        self._years: Optional[list[int]] = None
        if len(fields) == 7 and fields[6] != "*":
            self._years = self._values(fields[6], _YEAR)
        if dom == "?":
            self._days = _Days(**self._day_of_week(dow, _DOW))
        else:
            self._days = _Days(**self._day_of_month(dom))

    def _parse_classic(self, fields: list[str]) -> None:
        self._seconds = [0]
        self._minutes = self._values(fields[0], _MINUTES)
        self._hours = self._values(fields[1], _HOURS)
        self._months = self._values(fields[3], _MONTH)
        self._years = None
        dom, dow = fields[2], fields[4]
        # Classic cron: with both day fields restricted, a day matching either one fires.
        self._days = _Days(
            **({} if dom in ("*", "?") else self._day_of_month(dom)),
            **({} if dow in ("*", "?") else self._day_of_week(dow, _CLASSIC_DOW)),
            either=dom not in ("*", "?") and dow not in ("*", "?"),
        )

    def _values(self, text: str, field: _Field) -> list[int]:
        """A field of numbers, names, ranges, steps and lists, as its sorted values."""
        values: set[int] = set()
        for item in self._items(text, field):
            values.update(self._item(item, field))
        return sorted(values)

    def _items(self, text: str, field: _Field) -> list[str]:
        items = text.split(",")
        if "" in items:
            raise self._error(f"{field.name} field: {text!r} has an empty item")
        if "?" in items:
            day_field = field in (_DOM, _DOW, _CLASSIC_DOW)
            where = "alone in day-of-month or day-of-week" if day_field else "only in day-of-month or day-of-week"
            raise self._error(f"{field.name} field: '?' is allowed {where}")
        return items

    def _item(self, item: str, field: _Field) -> list[int]:
        base, slash, step_text = item.partition("/")
        step = 1
        if slash:
            if not _NUMBER.fullmatch(step_text):
                raise self._error(f"{field.name} field: the step in {item!r} is not a number")
            step = _bounded_int(step_text)
            if not 1 <= step <= field.max_step:
                raise self._error(f"{field.name} field: step {step_text} in {item!r} is out of range 1-{field.max_step}")
        if base == "*":
            start, end = field.lo, field.hi
        else:
            first, dash, last = base.partition("-")
            start = self._value(first, field, item)
            end = self._value(last, field, item) if dash else (field.hi if slash else start)
        if field is _CLASSIC_DOW:  # 7 is Sunday too: "*" is 0-6, and "7-2" runs from Sunday
            if base == "*":
                end = 6
            elif start == 7 and end < 7:
                start = 0
        if start <= end:
            values = list(range(start, end + 1, step))
        elif not field.wraps:
            raise self._error(f"{field.name} field: range {base} runs backwards")
        else:
            size = field.hi - field.lo + 1 - (1 if field is _CLASSIC_DOW else 0)
            values = [field.lo + (v - field.lo) % size for v in range(start, end + size + 1, step)]
        if field is _CLASSIC_DOW:
            values = [0 if v == 7 else v for v in values]
        return values

    def _value(self, token: str, field: _Field, item: str) -> int:
        if _NUMBER.fullmatch(token):
            value = _bounded_int(token)
            if not field.lo <= value <= field.hi:
                raise self._error(f"{field.name} field: {token} is out of range {field.span()}")
            return value
        if token in field.names:
            return field.lo + field.names.index(token)
        if not token:
            raise self._error(f"{field.name} field: {item!r} is missing a number")
        names = f" or a name {field.names[0]}-{field.names[-1]}" if field.names else ""
        where = "" if token == item else f" in {item!r}"
        raise self._error(f"{field.name} field: {token!r}{where} is not a number {field.lo}-{field.hi}{names}")

    def _day_of_month(self, text: str) -> dict[str, Any]:
        plain: set[int] = set()
        last: set[int] = set()
        weekday: set[int] = set()
        last_weekday: set[int] = set()
        for item in self._items(text, _DOM):
            special = re.fullmatch(r"L(?:-([0-9]+))?(W?)", item)
            if special:
                offset = _bounded_int(special.group(1)) if special.group(1) else 0
                if offset > 30:
                    raise self._error(f"day-of-month field: offset {special.group(1)} in {item!r} is out of range 0-30")
                (last_weekday if special.group(2) else last).add(offset)
            elif item.endswith("W"):
                number = item[:-1]
                if not _NUMBER.fullmatch(number):
                    raise self._error(f"day-of-month field: {item!r}: 'W' follows one day number 1-31 (as in 15W) or L")
                day = _bounded_int(number)
                if not 1 <= day <= 31:
                    raise self._error(f"day-of-month field: {number} in {item!r} is out of range 1-31")
                weekday.add(day)
            elif "L" in item or "W" in item or "#" in item:
                raise self._error(
                    f"day-of-month field: {item!r} is not valid (expected a day 1-31, a range a-b, a step a/n, L, L-n, LW, L-nW or nW)"
                )
            elif item == "*":
                return {}
            else:
                plain.update(self._item(item, _DOM))
        return {"dom_any": False, "dom_days": frozenset(plain), "dom_last": frozenset(last),
                "dom_weekday": frozenset(weekday), "dom_last_weekday": frozenset(last_weekday)}  # fmt: skip

    def _day_of_week(self, text: str, field: _Field) -> dict[str, Any]:
        def python_weekday(value: int) -> int:  # 0 = Monday
            return (value + (5 if field is _DOW else 6)) % 7

        items = self._items(text, field)
        singles = [i for i in items if i.endswith("L") or "#" in i]
        if singles and len(items) > 1:
            raise self._error(f"day-of-week field: {singles[0]!r} must stand alone (the reference form takes no list with 'L' or '#')")
        item = items[0]
        if item == "L":  # alone, L is the last day of the week: Saturday
            return {"dow_any": False, "dow_days": frozenset({5})}
        if item.endswith("L"):
            return {"dow_any": False, "dow_last": python_weekday(self._value(item[:-1], field, item))}
        if "#" in item:
            day, _, nth = item.partition("#")
            if not _NUMBER.fullmatch(nth):
                raise self._error(f"day-of-week field: {item!r}: '#' is followed by a number 1-5 (as in MON#2)")
            if not 1 <= _bounded_int(nth) <= 5:
                raise self._error(f"day-of-week field: occurrence {nth} in {item!r} is out of range 1-5")
            return {"dow_any": False, "dow_nth": (python_weekday(self._value(day, field, item)), _bounded_int(nth))}
        if text == "*":
            return {}
        return {"dow_any": False, "dow_days": frozenset(python_weekday(v) for v in self._values(text, field))}

    # -- wall-clock arithmetic ----------------------------------------------------

    def _time_from(self, second_of_day: int) -> Optional[int]:
        """The first matching time of day at or after ``second_of_day`` (seconds), or None."""
        hour, rest = divmod(second_of_day, 3600)
        minute, second = divmod(rest, 60)
        hours, minutes, seconds = self._hours, self._minutes, self._seconds
        i = bisect_left(hours, hour)
        if i < len(hours) and hours[i] == hour:
            j = bisect_left(minutes, minute)
            if j < len(minutes) and minutes[j] == minute:
                k = bisect_left(seconds, second)
                if k < len(seconds):
                    return hour * 3600 + minute * 60 + seconds[k]
                j += 1
            if j < len(minutes):
                return hour * 3600 + minutes[j] * 60 + seconds[0]
            i += 1
        if i < len(hours):
            return hours[i] * 3600 + minutes[0] * 60 + seconds[0]
        return None

    def _next_wall(self, wall: int) -> Optional[int]:
        """The first matching wall-clock time at or after ``wall`` (seconds since
        1970-01-01 00:00 on the zone's clock), or None."""
        wall = max(wall, _wall_seconds(_FIRST_YEAR, 1, 1))
        day_number, second_of_day = divmod(wall, _DAY)
        if day_number > _LAST_DAY_NUMBER:
            return None
        start = date.fromordinal(_EPOCH + day_number)
        years = (
            range(max(start.year, _FIRST_YEAR), _LAST_YEAR + 1)
            if self._years is None
            else (self._years[bisect_left(self._years, start.year) :])
        )
        for year in years:
            for month in self._months:
                if (year, month) < (start.year, start.month):
                    continue
                for day in self._month_days(year, month):
                    if (year, month, day) < (start.year, start.month, start.day):
                        continue
                    if (year, month, day) == (start.year, start.month, start.day):
                        time_of_day = self._time_from(second_of_day)
                        if time_of_day is None:
                            continue
                    else:
                        time_of_day = self._hours[0] * 3600 + self._minutes[0] * 60 + self._seconds[0]
                    return _wall_seconds(year, month, day) + time_of_day
        return None

    # -- instants -----------------------------------------------------------------

    def _offset(self, instant: int) -> int:
        offset = datetime.fromtimestamp(instant, self.zone).utcoffset()
        return 0 if offset is None else int(offset.total_seconds())

    def _pieces(self, a: int, b: int) -> list[tuple[int, int, int, int]]:
        """[a, b) cut where the zone's offset changes: (start, end, offset, offset before start)."""
        before, after = self._offset(a), self._offset(b)
        if before == after:
            return [(a, b, before, before)]
        lo, hi = a, b  # the offset is `before` at lo and not at hi
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if self._offset(mid) == before:
                lo = mid
            else:
                hi = mid
        return [(a, hi, before, before), (hi, b, after, before)]

    def _first_in_piece(self, start: int, piece_start: int, end: int, offset: int, previous: int) -> Optional[int]:
        """The first fire time in [start, end), a stretch of constant ``offset`` that began
        at ``piece_start`` with a change from ``previous``."""
        best: Optional[int] = None
        normal_from = start
        if not self._every_hour and previous > offset:
            # The clocks went back at piece_start: its first (previous - offset) seconds
            # repeat wall-clock times that already fired.
            normal_from = max(normal_from, piece_start + previous - offset)
        if normal_from < end:
            wall = self._next_wall(normal_from + offset)
            if wall is not None and wall - offset < end:
                best = wall - offset
        if not self._every_hour and offset > previous and start < piece_start + offset - previous:
            # The clocks went forward at piece_start: wall-clock times in the gap fire at
            # the instant they have on the clock before the change.
            wall = self._next_wall(start + previous)
            if wall is not None and wall < piece_start + offset:
                instant = wall - previous
                if instant < end and (best is None or instant < best):
                    best = instant
        return best

    def next_after(self, t: float) -> Optional[float]:
        """The first fire time strictly after Unix time ``t``, or None if there is none
        (a year field whose years have all passed)."""
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t):
            raise InvalidArgument(f"next_after takes a finite Unix time in seconds, not {shown(t)}")
        if t >= _LAST_INSTANT:
            return None
        u = max(math.floor(t) + 1, _FIRST_INSTANT)
        while u < _LAST_INSTANT:
            end = u + _WINDOW
            for piece_start, piece_end, offset, previous in self._pieces(u - _LOOKBACK, end):
                start = max(piece_start, u)
                if start < piece_end:
                    found = self._first_in_piece(start, piece_start, piece_end, offset, previous)
                    if found is not None:
                        return float(found)
            # Nothing before `end`: go on where the next matching wall-clock time can first fire.
            offset = self._offset(end)
            wall = self._next_wall(end + offset - _LOOKBACK)
            if wall is None:
                return None
            u = max(end, wall - self._offset(wall - offset) - _LOOKBACK)
        return None


def _bounded_int(digits: str) -> int:
    """``digits`` as an int, any run of more than 9 digits as 10**9 (out of every range)."""
    return int(digits) if len(digits) <= 9 else 10**9


def _wall_seconds(year: int, month: int, day: int) -> int:
    return (date(year, month, day).toordinal() - _EPOCH) * _DAY


@lru_cache(maxsize=1024)
def _parsed(expression: str, timezone: str) -> Optional[CronSchedule]:
    try:
        return CronSchedule(expression, timezone)
    except InvalidArgument as e:
        fields = expression.split()
        if len(fields) in (6, 7) and "?" not in (fields[3], fields[5]) and "*" in (fields[3], fields[5]):
            # Stored before both day fields had to be told apart ('0 0 12 * * *'): '*'
            # then meant "no restriction", which is what '?' says.
            fields[5 if fields[5] == "*" else 3] = "?"
            try:
                return CronSchedule(" ".join(fields), timezone)
            except InvalidArgument:
                pass
        _log.warning("stored schedule %r in %r no longer parses (%s): it fires no more", expression, timezone, e)
        return None


def next_fire(trigger: TriggerRecord, now: float) -> Optional[float]:
    """A stored schedule's first fire time after ``now`` (None: it has none left)."""
    schedule = _parsed(trigger.cron, trigger.timezone)
    return None if schedule is None else schedule.next_after(now)
