"""Cron expressions in the reference platform's syntax, and the 5-field form.

The reference form is ``seconds minutes hours day-of-month month day-of-week
[year]`` with ``? * , - / L W #``: day-of-week counts 1 = Sunday … 7 = Saturday
(or SUN…SAT), ``6L`` is the month's last Friday, ``2#3`` its third Monday,
``15W`` the weekday nearest the 15th, ``L`` the last day, ``LW`` the last
weekday; ``?`` (no specific value) stands in one of the two day fields. The
5-field form is classic cron: ``minutes hours day-of-month month day-of-week``
with 0 = Sunday.

The arithmetic is croniter's (a maintained library; it covers seconds, years,
``L``, ``W`` and ``#``). This module translates the reference day-of-week
numbering and ``nL`` into croniter's, adds ``LW`` (croniter has no form for it),
and turns every malformed expression into one clear error.
"""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta
from functools import lru_cache
from typing import Optional
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter
from croniter.croniter import CroniterError

from fairqueue.errors import InvalidArgument
from fairqueue.records import TriggerRecord

__all__ = ["CronSchedule", "next_fire"]

_REFERENCE_FORM = "'seconds minutes hours day-of-month month day-of-week [year]'"
_CLASSIC_FORM = "'minutes hours day-of-month month day-of-week'"
_DOW_NAMES = ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")
# LW: croniter is asked for the last days any month can have; a filter keeps the weekday.
_LAST_DAYS = "25-31"
# A schedule that matched no instant in this many candidates never fires (e.g. 30 February).
_MAX_CANDIDATES = 20_000


class CronSchedule:
    """A parsed cron expression in a time zone.

    Args:
        expression: the reference form (6 or 7 fields, seconds first) or the
            classic 5-field form.
        timezone: an IANA zone name (``"Europe/Berlin"``); fire times are wall-clock
            times there. Across a daylight-saving change a wall-clock time that does
            not exist is skipped, and one that occurs twice fires once.

    Raises:
        InvalidArgument: the expression or the zone is malformed, or the schedule
            can never fire.
    """

    def __init__(self, expression: str, timezone: str = "UTC") -> None:
        if not isinstance(expression, str) or not expression.strip():
            raise InvalidArgument(f"invalid cron expression {expression!r}: expected {_REFERENCE_FORM} or {_CLASSIC_FORM}")
        try:
            self.zone = ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError, TypeError) as e:
            raise InvalidArgument(f"unknown time zone {timezone!r}: expected an IANA name such as 'Europe/Berlin'") from e
        self.expression = " ".join(expression.split())
        self.timezone = timezone
        fields = self.expression.split(" ")
        self._last_weekday = False
        if len(fields) == 5:
            self._croniter_expression = self.expression
            self._seconds_first = False
        elif len(fields) in (6, 7):
            self._croniter_expression = " ".join(self._translate(fields))
            self._seconds_first = True
        else:
            raise self._error(f"it has {len(fields)} fields; expected {_REFERENCE_FORM} (6 or 7 fields) or {_CLASSIC_FORM}")
        try:
            croniter(self._croniter_expression, datetime(2000, 1, 1, tzinfo=self.zone), second_at_beginning=self._seconds_first)
        except (CroniterError, ValueError, KeyError) as e:
            raise self._error(str(e)) from e
        if self.next_after(datetime(2000, 1, 1, tzinfo=self.zone).timestamp()) is None and not self._has_year:
            raise self._error("it matches no date")

    def _error(self, why: str) -> InvalidArgument:
        return InvalidArgument(f"invalid cron expression {self.expression!r}: {why}")

    def _translate(self, fields: list[str]) -> list[str]:
        """The reference form's fields in croniter's dialect."""
        dom, dow = fields[3].upper(), fields[5].upper()
        if dom not in ("?", "*") and dow not in ("?", "*"):
            raise self._error("day-of-month and day-of-week are both set; put '?' in one of them")
        if dom == "?" and dow == "?":
            raise self._error("day-of-month and day-of-week are both '?'; set one of them (or use '*')")
        if dom == "LW":
            self._last_weekday = True
            dom = _LAST_DAYS
        translated = fields[:3] + ["*" if dom == "?" else dom, fields[4], self._day_of_week(dow)] + fields[6:]
        return translated

    def _day_of_week(self, field: str) -> str:
        """Reference day-of-week (1 = Sunday … 7 = Saturday, ``nL``) to croniter's (0 = Sunday, ``Ln``)."""
        if field in ("?", "*"):
            return "*"

        def day(token: str) -> str:
            if token in _DOW_NAMES:
                return str(_DOW_NAMES.index(token))
            if not token.isdigit() or not 1 <= int(token) <= 7:
                raise self._error(f"day-of-week {token!r} is not 1-7 (1 = Sunday) or SUN-SAT")
            return str(int(token) - 1)

        parts = []
        for item in field.split(","):
            last = re.fullmatch(r"([A-Z0-9]+)L", item)
            nth = re.fullmatch(r"([A-Z0-9]+)#([1-5])", item)
            if last:
                parts.append(f"L{day(last.group(1))}")
            elif nth:
                parts.append(f"{day(nth.group(1))}#{nth.group(2)}")
            else:
                step = item.split("/", 1)
                span = "-".join(day(t) if t != "*" else t for t in step[0].split("-"))
                parts.append(span + (f"/{step[1]}" if len(step) == 2 else ""))
        return ",".join(parts)

    @property
    def _has_year(self) -> bool:
        return len(self.expression.split(" ")) == 7

    def next_after(self, t: float) -> Optional[float]:
        """The first fire time strictly after Unix time ``t``, or None if there is none
        (a year field whose years have all passed)."""
        start = datetime.fromtimestamp(t, self.zone)
        it = croniter(self._croniter_expression, start, second_at_beginning=self._seconds_first)
        for _ in range(_MAX_CANDIDATES):
            try:
                candidate: datetime = it.get_next(datetime)
            except (CroniterError, StopIteration):
                return None
            if not self._last_weekday or candidate.date() == _last_weekday_of(candidate.date()):
                return candidate.timestamp()
        return None


@lru_cache(maxsize=1024)
def _parsed(expression: str, timezone: str) -> CronSchedule:
    return CronSchedule(expression, timezone)


def next_fire(trigger: TriggerRecord, now: float) -> Optional[float]:
    """A stored schedule's first fire time after ``now`` (None: it has none left)."""
    return _parsed(trigger.cron, trigger.timezone).next_after(now)


def _last_weekday_of(day: date) -> date:
    following = (day.replace(day=28) + timedelta(days=4)).replace(day=1)
    last = following - timedelta(days=1)
    while last.weekday() >= 5:  # Saturday, Sunday
        last -= timedelta(days=1)
    return last
