"""Cron expressions of the reference documentation against next fire times worked out by hand."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from fairqueue.cron import CronSchedule
from fairqueue.errors import InvalidArgument

# Tuesday 24 November 2026, 12:00 UTC.
BASE = "2026-11-24T12:00:00"


def at(iso: str, zone: str = "UTC") -> float:
    from zoneinfo import ZoneInfo

    return datetime.fromisoformat(iso).replace(tzinfo=ZoneInfo(zone)).timestamp()


@pytest.mark.parametrize(
    ("expression", "after", "expected"),
    [
        ("0 0 13 * * ?", BASE, "2026-11-24T13:00:00"),  # 13:00 every day
        ("0 0 22 ? * 6L", BASE, "2026-11-27T22:00:00"),  # last Friday of the month (6 = Friday)
        ("0 0 22 ? * FRIL", "2026-11-28T00:00:00", "2026-12-25T22:00:00"),  # the same by name, next month
        ("0 0 10 ? * MON-FRI", BASE, "2026-11-25T10:00:00"),  # weekdays at 10
        ("0 0 10 ? * 2-6", "2026-11-27T11:00:00", "2026-11-30T10:00:00"),  # 2-6 = Monday-Friday: skips the weekend
        ("0 30 9 ? * 1", BASE, "2026-11-29T09:30:00"),  # 1 = Sunday
        ("0 0 12 ? * 2#3", BASE, "2026-12-21T12:00:00"),  # third Monday (November's was the 16th)
        ("0 15 10 ? * 6#3", BASE, "2026-12-18T10:15:00"),  # third Friday
        ("0 0 0 5W * ?", BASE, "2026-12-04T00:00:00"),  # the 5th is a Saturday: the Friday before
        ("0 0 0 15W * ?", BASE, "2026-12-15T00:00:00"),  # the 15th is a Tuesday: itself
        ("0 0 0 L * ?", BASE, "2026-11-30T00:00:00"),  # last day of the month
        ("0 0 0 LW * ?", BASE, "2026-11-30T00:00:00"),  # last weekday: Monday the 30th
        ("0 0 0 LW * ?", "2026-12-31T12:00:00", "2027-01-29T00:00:00"),  # 31 January 2027 is a Sunday
        ("0 0 12 1/5 * ?", BASE, "2026-11-26T12:00:00"),  # every 5 days from the 1st
        ("0 0/30 8-9 5,20 * ?", BASE, "2026-12-05T08:00:00"),
        ("0 0 20 * * ? 2027", BASE, "2027-01-01T20:00:00"),  # a year field
        ("0 0 9 ? JAN,JUL MON 2027-2028", BASE, "2027-01-04T09:00:00"),  # a year range
        ("*/5 * * * *", BASE, "2026-11-24T12:05:00"),  # the classic 5-field form (0 = Sunday)
        ("0 9 * * 0", BASE, "2026-11-29T09:00:00"),
    ],
)
def test_next_fire_time(expression: str, after: str, expected: str) -> None:
    assert CronSchedule(expression).next_after(at(after)) == at(expected)


def test_fire_times_are_wall_clock_times_in_the_schedules_zone() -> None:
    berlin = CronSchedule("0 0 9 * * ?", "Europe/Berlin")
    assert berlin.next_after(at(BASE)) == at("2026-11-25T09:00:00", "Europe/Berlin")
    # Across the spring change 09:00 stays 09:00 local (07:00 UTC in summer, 08:00 in winter).
    assert berlin.next_after(at("2027-03-28T06:00:00")) == at("2027-03-28T07:00:00")


def test_a_year_that_has_passed_fires_no_more() -> None:
    assert CronSchedule("0 0 20 * * ? 2010").next_after(at(BASE)) is None


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("", "expected 'seconds minutes hours"),
        ("0 0 12 * *  * * 1", "8 fields"),
        ("0 0 25 * * ?", "invalid cron expression '0 0 25 * * ?'"),  # hour 25
        ("0 0 12 15 * MON", "put '?' in one of them"),
        ("0 0 12 ? * ?", "both '?'"),
        ("0 0 12 ? * 8", "day-of-week '8' is not 1-7"),
        ("0 0 12 ? * 0", "day-of-week '0' is not 1-7"),  # the reference form counts from 1
        ("0 0 12 ? * MON#6", "invalid cron expression"),
        ("0 0 12 31 2 ?", "matches no date"),  # 31 February
        ("every day", "expected 'seconds minutes hours"),
    ],
)
def test_malformed_expressions_are_refused_clearly(expression: str, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message.replace("(", r"\(").replace("?", r"\?").replace("*", r"\*")):
        CronSchedule(expression)


def test_an_unknown_zone_is_refused() -> None:
    with pytest.raises(InvalidArgument, match="unknown time zone 'Mars/Olympus'"):
        CronSchedule("0 0 12 * * ?", "Mars/Olympus")


def test_utc_is_the_default_zone() -> None:
    assert CronSchedule("0 0 12 * * ?").next_after(datetime(2026, 1, 1, tzinfo=timezone.utc).timestamp()) == at(
        "2026-01-01T12:00:00"
    )
