"""Cron expressions: fire times worked out by hand, each daylight-saving decision
stated as a test, and every malformed expression refused with the field, the value
and the allowed range. (``test_cron_reference.py`` holds the large table checked
against an independent implementation.)"""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from typing import Optional
from zoneinfo import ZoneInfo

import pytest

from fairqueue.cron import CronSchedule, next_fire
from fairqueue.errors import InvalidArgument
from fairqueue.records import TriggerRecord, TriggerState

# Tuesday 24 November 2026, 12:00 UTC.
BASE = "2026-11-24T12:00:00"


def at(iso: str, zone: str = "UTC") -> float:
    moment = datetime.fromisoformat(iso)
    return (moment if moment.tzinfo else moment.replace(tzinfo=ZoneInfo(zone))).timestamp()


def fires(expression: str, zone: str, after: str, until: str) -> list[str]:
    """Every fire time after ``after`` up to ``until`` (wall-clock times in ``zone``), as local ISO times."""
    schedule, end = CronSchedule(expression, zone), at(until, zone)
    found: list[str] = []
    t: Optional[float] = at(after, zone)
    while True:
        t = schedule.next_after(t)  # type: ignore[arg-type]
        if t is None or t > end:
            return found
        found.append(datetime.fromtimestamp(t, ZoneInfo(zone)).isoformat())


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
        ("0 0 0 L-3 * ?", BASE, "2026-11-27T00:00:00"),  # three days before it
        ("0 0 0 LW * ?", BASE, "2026-11-30T00:00:00"),  # last weekday: Monday the 30th
        ("0 0 0 LW * ?", "2026-12-31T12:00:00", "2027-01-29T00:00:00"),  # 31 January 2027 is a Sunday
        ("0 0 0 31W * ?", BASE, "2026-12-31T00:00:00"),  # November has no 31st: no fire in November
        ("0 0 12 1/5 * ?", BASE, "2026-11-26T12:00:00"),  # every 5 days from the 1st
        ("0 0/30 8-9 5,20 * ?", BASE, "2026-12-05T08:00:00"),
        ("0 0 20 * * ? 2027", BASE, "2027-01-01T20:00:00"),  # a year field
        ("0 0 9 ? JAN,JUL MON 2027-2028", BASE, "2027-01-04T09:00:00"),  # a year range
        ("0 0 9 29 2 ?", BASE, "2028-02-29T09:00:00"),  # a leap day
        ("0 0 23-1 * * ?", "2026-11-24T23:30:00", "2026-11-25T00:00:00"),  # a range across midnight
        ("*/5 * * * *", BASE, "2026-11-24T12:05:00"),  # the classic 5-field form (0 = Sunday)
        ("0 9 * * 0", BASE, "2026-11-29T09:00:00"),
        ("0 9 * * 7", BASE, "2026-11-29T09:00:00"),  # 7 is Sunday too
        ("0 0 1,15 * MON", BASE, "2026-11-30T00:00:00"),  # both day fields set: either (a Monday comes first)
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
    assert CronSchedule("0 0 12 1 1 ? 2027").next_after(at("2027-01-01T12:00:00")) is None


def test_next_after_is_strictly_after_and_whole_seconds() -> None:
    every_minute = CronSchedule("0 * * * * ?")
    assert every_minute.next_after(at("2026-11-24T12:00:00")) == at("2026-11-24T12:01:00")
    assert every_minute.next_after(at("2026-11-24T12:00:00") - 0.5) == at("2026-11-24T12:00:00")
    assert every_minute.next_after(10**12) is None  # past the last year (2199)
    assert every_minute.next_after(-(10**12)) == at("1970-01-01T00:00:00")
    for bad in (float("nan"), float("inf"), "soon", None, True):
        with pytest.raises(InvalidArgument, match="next_after takes a finite Unix time"):
            every_minute.next_after(bad)  # type: ignore[arg-type]


# -- daylight-saving days: one test per decision -------------------------------------
# Berlin: 2026-03-29 02:00 CET -> 03:00 CEST, 2026-10-25 03:00 CEST -> 02:00 CET.
# New York: 2026-03-08 02:00 EST -> 03:00 EDT, 2026-11-01 02:00 EDT -> 01:00 EST.


def test_a_fire_time_in_the_skipped_hour_fires_at_the_equivalent_instant() -> None:
    # 02:30 does not exist on the spring-forward day: it fires at 03:30 local, the instant
    # 02:30 would have been on the clock before the change (01:30 UTC), once, then as usual.
    assert fires("0 30 2 * * ?", "Europe/Berlin", "2026-03-28T12:00:00", "2026-03-30T12:00:00") == [
        "2026-03-29T03:30:00+02:00", "2026-03-30T02:30:00+02:00",
    ]  # fmt: skip
    assert CronSchedule("0 30 2 * * ?", "Europe/Berlin").next_after(at("2026-03-29T00:00:00")) == at("2026-03-29T01:30:00Z")
    assert fires("0 30 2 * * ?", "America/New_York", "2026-03-07T12:00:00", "2026-03-09T12:00:00") == [
        "2026-03-08T03:30:00-04:00", "2026-03-09T02:30:00-04:00",
    ]  # fmt: skip
    # Lord Howe moves its clock by 30 minutes (02:00 -> 02:30): 02:15 fires at 02:45.
    assert fires("0 15 2 * * ?", "Australia/Lord_Howe", "2026-10-03T12:00:00", "2026-10-04T12:00:00") == [
        "2026-10-04T02:45:00+11:00",
    ]  # fmt: skip
    # Two wall-clock times that land on the same instant fire once (02:30 moves onto 03:30).
    assert fires("0 30 2,3 * * ?", "Europe/Berlin", "2026-03-29T00:00:00", "2026-03-29T12:00:00") == [
        "2026-03-29T03:30:00+02:00",
    ]  # fmt: skip


def test_a_fire_time_in_the_repeated_hour_fires_once_at_its_first_occurrence() -> None:
    assert fires("0 30 2 * * ?", "Europe/Berlin", "2026-10-24T12:00:00", "2026-10-26T12:00:00") == [
        "2026-10-25T02:30:00+02:00", "2026-10-26T02:30:00+01:00",
    ]  # fmt: skip
    assert fires("0 30 1 * * ?", "America/New_York", "2026-10-31T12:00:00", "2026-11-02T12:00:00") == [
        "2026-11-01T01:30:00-04:00", "2026-11-02T01:30:00-05:00",
    ]  # fmt: skip
    # Asked from between the two occurrences (as after a fire at the first), the next is tomorrow's.
    daily = CronSchedule("0 30 2 * * ?", "Europe/Berlin")
    assert daily.next_after(at("2026-10-25T02:30:00+02:00")) == at("2026-10-26T02:30:00", "Europe/Berlin")
    assert daily.next_after(at("2026-10-25T02:10:00+01:00")) == at("2026-10-26T02:30:00", "Europe/Berlin")
    # Every minute of hour 2 fires in the first 02:xx only: 60 fires that day, not 120.
    hour_two = fires("0 * 2 * * ?", "Europe/Berlin", "2026-10-25T00:00:00", "2026-10-25T23:59:00")
    assert len(hour_two) == 60 and all(t.endswith("+02:00") for t in hour_two)


def test_hourly_schedules_fire_at_every_real_hour_across_both_changes() -> None:
    # The hours field covers every hour: every instant whose wall-clock time matches fires.
    spring = fires("0 30 * * * ?", "Europe/Berlin", "2026-03-29T00:00:00", "2026-03-29T23:59:00")
    assert len(spring) == 23 and spring[:3] == ["2026-03-29T00:30:00+01:00", "2026-03-29T01:30:00+01:00",
                                                "2026-03-29T03:30:00+02:00"]  # fmt: skip
    autumn = fires("0 30 * * * ?", "Europe/Berlin", "2026-10-25T00:00:00", "2026-10-25T23:59:00")
    assert len(autumn) == 25 and autumn[2:4] == ["2026-10-25T02:30:00+02:00", "2026-10-25T02:30:00+01:00"]
    for day in (spring, autumn):  # an hour of real time apart, every one
        instants = [datetime.fromisoformat(t).timestamp() for t in day]
        assert {b - a for a, b in zip(instants, instants[1:])} == {3600}


def test_sub_hourly_schedules_fire_every_interval_of_real_time_across_both_changes() -> None:
    spring = fires("0 0/20 * * * ?", "Europe/Berlin", "2026-03-28T23:59:00", "2026-03-29T23:59:00")
    autumn = fires("0 0/20 * * * ?", "Europe/Berlin", "2026-10-24T23:59:00", "2026-10-25T23:59:00")
    assert (len(spring), len(autumn)) == (23 * 3, 25 * 3)
    for day in (spring, autumn):
        instants = [datetime.fromisoformat(t).timestamp() for t in day]
        assert {b - a for a, b in zip(instants, instants[1:])} == {1200}
    # Every second: one fire per real second straight through the change, none twice.
    seconds = CronSchedule("* * * * * ?", "America/New_York")
    t = at("2026-11-01T01:59:58-04:00")
    got = []
    for _ in range(5):
        t = seconds.next_after(t)  # type: ignore[assignment]
        got.append(t)
    assert got == [at("2026-11-01T05:59:59Z") + i for i in range(5)]


def test_a_30_minute_change_follows_the_same_rules() -> None:
    # Lord Howe, 5 April 2026: 02:00 +11:00 -> 01:30 +10:30.
    assert fires("0 45 1 * * ?", "Australia/Lord_Howe", "2026-04-04T12:00:00", "2026-04-05T12:00:00") == [
        "2026-04-05T01:45:00+11:00",
    ]  # fmt: skip
    assert fires("0 0/15 * * * ?", "Australia/Lord_Howe", "2026-04-05T01:20:00", "2026-04-05T02:10:00") == [
        "2026-04-05T01:30:00+11:00", "2026-04-05T01:45:00+11:00",
        "2026-04-05T01:30:00+10:30", "2026-04-05T01:45:00+10:30", "2026-04-05T02:00:00+10:30",
    ]  # fmt: skip


# -- refused expressions ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("", "expected 'seconds minutes hours"),
        ("every day", "it has 2 fields"),
        ("0 0 12", "it has 3 fields"),
        ("0 0 12 * *  * * 1", "8 fields"),
        # a value out of its field's range
        ("61 0 12 * * ?", "seconds field: 61 is out of range 0-59"),
        ("0 60 12 * * ?", "minutes field: 60 is out of range 0-59"),
        ("0 0 25 * * ?", "hours field: 25 is out of range 0-23"),
        ("0 0 12 32 * ?", "day-of-month field: 32 is out of range 1-31"),
        ("0 0 12 0 * ?", "day-of-month field: 0 is out of range 1-31"),
        ("0 0 12 ? 13 *", "month field: 13 is out of range 1-12 (or JAN-DEC)"),
        ("0 0 12 ? * 8", "day-of-week field: 8 is out of range 1-7 (1 = Sunday … 7 = Saturday, or SUN-SAT)"),
        ("0 0 12 ? * 0", "day-of-week field: 0 is out of range 1-7"),  # the reference form counts from 1
        ("0 0 12 ? * 1-9", "day-of-week field: 9 is out of range 1-7"),
        ("0 0 12 * * ? 1969", "year field: 1969 is out of range 1970-2199"),
        ("0 0 12 * * ? 2200", "year field: 2200 is out of range 1970-2199"),
        ("1-99999999999 * * * * ?", "seconds field: 99999999999 is out of range 0-59"),
        ("60 * * * *", "minutes field: 60 is out of range 0-59"),
        ("0 12 * * 8", "day-of-week field: 8 is out of range 0-7 (0 or 7 = Sunday, or SUN-SAT)"),
        # steps, L, W and #
        ("*/0 * * * * ?", "seconds field: step 0 in '*/0' is out of range 1-59"),
        ("0/60 * * * * ?", "seconds field: step 60 in '0/60' is out of range 1-59"),
        ("0 0 */24 * * ?", "hours field: step 24 in '*/24' is out of range 1-23"),
        ("0 0 12 ? 2/13 *", "month field: step 13 in '2/13' is out of range 1-12"),
        ("0 0 12 ? * 1/8", "day-of-week field: step 8 in '1/8' is out of range 1-7"),
        ("0 0 12 1/x * ?", "day-of-month field: the step in '1/X' is not a number"),
        ("0 0 12 ? * MON#6", "day-of-week field: occurrence 6 in 'MON#6' is out of range 1-5"),
        ("0 0 12 ? * 2#0", "day-of-week field: occurrence 0 in '2#0' is out of range 1-5"),
        ("0 0 12 L-31 * ?", "day-of-month field: offset 31 in 'L-31' is out of range 0-30"),
        ("0 0 12 32W * ?", "day-of-month field: 32 in '32W' is out of range 1-31"),
        ("0 0 12 1-5W * ?", "'W' follows one day number 1-31"),
        ("0 0 12 15L * ?", "day-of-month field: '15L' is not valid"),
        ("0 0 12 ? * 3W", "day-of-week field: '3W' is not a number 1-7 or a name SUN-SAT"),
        ("0 0 12 ? * 2#1,6#3", "day-of-week field: '2#1' must stand alone"),  # the reference refuses both
        ("0 0 12 ? * 6L,2", "day-of-week field: '6L' must stand alone"),
        # the two day fields: exactly one is '?'
        ("* * * * * * *", "day-of-month '*' and day-of-week '*' are both set; put '?' in one of them"),
        ("0 0 12 * * *", "are both set; put '?' in one of them"),
        ("0 0 12 15 * MON", "are both set; put '?' in one of them"),
        ("0 0 12 ? * ?", "both '?'"),
        ("0 0 ? * * ?", "hours field: '?' is allowed only in day-of-month or day-of-week"),
        ("0 0 12 1,? * ?", "'?' is allowed alone"),
        # names, numbers, lists, ranges
        ("a 0 12 * * ?", "seconds field: 'A' is not a number 0-59"),
        ("٣ 0 12 * * ?", "seconds field: '٣' is not a number 0-59"),  # only ASCII digits
        ("0 0 12 ? * MONDAY", "day-of-week field: 'MONDAY' is not a number 1-7 or a name SUN-SAT"),
        ("0 0 12 ? JANUARY *", "month field: 'JANUARY' is not a number 1-12 or a name JAN-DEC"),
        ("0 0 12 1,,2 * ?", "day-of-month field: '1,,2' has an empty item"),
        ("0 0 12 5- * ?", "day-of-month field: '5-' is missing a number"),
        ("0 0 12 * * ? 2030-2020", "year field: range 2030-2020 runs backwards"),
        # a schedule that can never fire
        ("0 0 12 31 2 ?", "matches no date"),  # 31 February
        ("0 0 0 30W 2 ?", "matches no date"),
        ("0 0 0 ? 2 1#5 2026", "matches no date"),  # February 2026 has four Sundays
        ("0 " * 600 + "?", "characters long; at most 1000 are allowed"),
    ],
)
def test_malformed_expressions_are_refused_clearly(expression: str, message: str) -> None:
    with pytest.raises(InvalidArgument, match="invalid cron expression") as refused:
        CronSchedule(expression)
    assert message in str(refused.value)
    assert "croniter" not in str(refused.value).lower()


@pytest.mark.parametrize("expression", [None, 5, b"0 0 12 * * ?", ["0", "0"]])
def test_an_expression_that_is_not_text_is_refused(expression: object) -> None:
    with pytest.raises(InvalidArgument, match="invalid cron expression"):
        CronSchedule(expression)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "zone", ["Mars/Olympus", "", "a" * 300, "../etc/passwd", "\x00", "Europe/Berlin\udcff", "Europe/Berlin ", "x" * 10**6]
)
def test_an_unknown_zone_is_refused(zone: str) -> None:
    with pytest.raises(InvalidArgument, match="unknown time zone"):
        CronSchedule("0 0 12 * * ?", zone)


def test_a_zone_that_is_not_text_is_refused() -> None:
    with pytest.raises(InvalidArgument, match="the time zone is an IANA name"):
        CronSchedule("0 0 12 * * ?", None)  # type: ignore[arg-type]


def test_utc_is_the_default_zone() -> None:
    assert CronSchedule("0 0 12 * * ?").next_after(datetime(2026, 1, 1, tzinfo=timezone.utc).timestamp()) == at("2026-01-01T12:00:00")


def test_the_expression_is_kept_with_its_whitespace_normalised() -> None:
    schedule = CronSchedule("  0 30  2 *\t* ?  ", "Europe/Berlin")
    assert (schedule.expression, schedule.timezone, repr(schedule)) == (
        "0 30 2 * * ?", "Europe/Berlin", "CronSchedule('0 30 2 * * ?', 'Europe/Berlin')"
    )  # fmt: skip


def trigger(cron: str, zone: str = "UTC") -> TriggerRecord:
    return TriggerRecord(id=1, org="acme", name="nightly", cron=cron, timezone=zone, handler="app.jobs:Report",
                         payload="{}", state=TriggerState.WAITING, created_at=0.0, next_fire_at=None,
                         previous_fire_at=None, times_fired=0, last_job_id=None)  # fmt: skip


def test_next_fire_reads_a_stored_schedule() -> None:
    assert next_fire(trigger("0 30 2 * * ?", "Europe/Berlin"), at("2026-03-29T00:00:00Z")) == at("2026-03-29T01:30:00Z")


def test_a_stored_schedule_from_before_the_day_fields_were_checked_still_fires() -> None:
    # '*' in both day fields was accepted once; stored schedules keep their meaning (every day).
    assert next_fire(trigger("0 0 12 * * *"), at(BASE)) == at("2026-11-25T12:00:00")
    assert next_fire(trigger("0 0 12 ? * MON"), at(BASE)) == at("2026-11-30T12:00:00")


def test_a_stored_schedule_that_no_longer_parses_completes_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="fairqueue.cron"):
        assert next_fire(trigger("0 0 12 ? * 2#1,6#3"), at(BASE)) is None
    assert "no longer parses" in caplog.text
