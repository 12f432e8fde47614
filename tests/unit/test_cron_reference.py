"""fairqueue.cron against a second, independent implementation of its semantics.

``tests/support/cron_reference.py`` parses each field into a predicate and walks
instants minute by minute in zoneinfo (no croniter, nothing of fairqueue.cron).
The table's fire times are what that reference gives (the first test checks it
still does); the second test asks fairqueue.cron for the same fire times, and the
property tests do the same for random expressions and start times near
daylight-saving changes.

Quartz 2.3.2 (the reference platform), run on the same rows, gives the same fire
times for every row except: the daylight-saving rows where fairqueue.cron decided
otherwise (see its module docstring: Quartz skips a fire time in the skipped hour,
fires a repeated one at its second occurrence, and drops the first occurrence of
every repeated time for hourly and sub-hourly schedules); ``29W`` in a February of
28 days, which Quartz 2.3.2 fires on the 28th where current Quartz skips the month
as here; and a list mixing ``L`` with day numbers, which Quartz 2.3.2 refuses and
current Quartz accepts as here.
"""

from __future__ import annotations

from datetime import datetime
from typing import Optional
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from cron_reference import reference_fires
from fairqueue.cron import CronSchedule
from fairqueue.errors import InvalidArgument

# Tuesday 24 November 2026, 12:00 in the row's zone.
B = "2026-11-24T12:00:00"

# expression, zone, start (a wall-clock time in the zone, or with its offset), the next fire times (None: no more).
# fmt: off
TABLE: list[tuple[str, str, str, list[Optional[str]]]] = [
    # -- the fields, in UTC
    ("0 0 13 * * ?", "UTC", B, ["2026-11-24T13:00:00+00:00", "2026-11-25T13:00:00+00:00", "2026-11-26T13:00:00+00:00"]),
    ("0 15 10 ? * *", "UTC", B, ["2026-11-25T10:15:00+00:00", "2026-11-26T10:15:00+00:00", "2026-11-27T10:15:00+00:00"]),
    ("0 15 10 * * ? *", "UTC", B, ["2026-11-25T10:15:00+00:00", "2026-11-26T10:15:00+00:00"]),
    ("0 15 10 * * ? 2027", "UTC", "2026-12-30T00:00:00", [
        "2027-01-01T10:15:00+00:00",
        "2027-01-02T10:15:00+00:00",
        "2027-01-03T10:15:00+00:00",
    ]),
    ("0 * 14 * * ?", "UTC", "2026-11-24T14:58:30", ["2026-11-24T14:59:00+00:00", "2026-11-25T14:00:00+00:00", "2026-11-25T14:01:00+00:00"]),
    ("0 0/5 14,18 * * ?", "UTC", "2026-11-24T14:50:00", [
        "2026-11-24T14:55:00+00:00",
        "2026-11-24T18:00:00+00:00",
        "2026-11-24T18:05:00+00:00",
    ]),
    ("0 0-5 14 * * ?", "UTC", "2026-11-24T14:04:00", [
        "2026-11-24T14:05:00+00:00",
        "2026-11-25T14:00:00+00:00",
        "2026-11-25T14:01:00+00:00",
    ]),
    ("0 10,44 14 ? 3 WED", "UTC", B, ["2027-03-03T14:10:00+00:00", "2027-03-03T14:44:00+00:00", "2027-03-10T14:10:00+00:00"]),
    ("0 15 10 ? * MON-FRI", "UTC", "2026-11-27T11:00:00", [
        "2026-11-30T10:15:00+00:00",
        "2026-12-01T10:15:00+00:00",
        "2026-12-02T10:15:00+00:00",
    ]),
    ("0 15 10 15 * ?", "UTC", B, ["2026-12-15T10:15:00+00:00", "2027-01-15T10:15:00+00:00", "2027-02-15T10:15:00+00:00"]),
    ("0 15 10 L * ?", "UTC", "2027-01-15T00:00:00", [
        "2027-01-31T10:15:00+00:00",
        "2027-02-28T10:15:00+00:00",
        "2027-03-31T10:15:00+00:00",
        "2027-04-30T10:15:00+00:00",
    ]),
    ("0 15 10 L-2 * ?", "UTC", "2027-01-15T00:00:00", [
        "2027-01-29T10:15:00+00:00",
        "2027-02-26T10:15:00+00:00",
        "2027-03-29T10:15:00+00:00",
    ]),
    ("0 15 10 ? * 6L", "UTC", B, ["2026-11-27T10:15:00+00:00", "2026-12-25T10:15:00+00:00", "2027-01-29T10:15:00+00:00"]),
    ("0 15 10 ? * FRIL 2027-2028", "UTC", B, ["2027-01-29T10:15:00+00:00", "2027-02-26T10:15:00+00:00", "2027-03-26T10:15:00+00:00"]),
    ("0 15 10 ? * 6#3", "UTC", B, ["2026-12-18T10:15:00+00:00", "2027-01-15T10:15:00+00:00", "2027-02-19T10:15:00+00:00"]),
    ("0 0 12 ? * 2#5", "UTC", B, ["2026-11-30T12:00:00+00:00", "2027-03-29T12:00:00+00:00", "2027-05-31T12:00:00+00:00"]),
    ("0 0 9 ? * SUN#1", "UTC", B, ["2026-12-06T09:00:00+00:00", "2027-01-03T09:00:00+00:00", "2027-02-07T09:00:00+00:00"]),
    ("0 0 12 1/5 * ?", "UTC", B, [
        "2026-11-26T12:00:00+00:00",
        "2026-12-01T12:00:00+00:00",
        "2026-12-06T12:00:00+00:00",
        "2026-12-11T12:00:00+00:00",
    ]),
    ("0 11 11 11 11 ?", "UTC", B, ["2027-11-11T11:11:00+00:00", "2028-11-11T11:11:00+00:00"]),
    ("0 0 0 LW * ?", "UTC", "2026-12-15T00:00:00", [
        "2026-12-31T00:00:00+00:00",
        "2027-01-29T00:00:00+00:00",
        "2027-02-26T00:00:00+00:00",
        "2027-03-31T00:00:00+00:00",
    ]),
    ("0 0 0 L-3W * ?", "UTC", B, ["2026-11-27T00:00:00+00:00", "2026-12-28T00:00:00+00:00", "2027-01-28T00:00:00+00:00"]),
    ("0 0 0 1W * ?", "UTC", "2026-07-15T00:00:00", [
        "2026-08-03T00:00:00+00:00",
        "2026-09-01T00:00:00+00:00",
        "2026-10-01T00:00:00+00:00",
        "2026-11-02T00:00:00+00:00",
    ]),
    ("0 0 0 15W * ?", "UTC", "2026-07-20T00:00:00", [
        "2026-08-14T00:00:00+00:00",
        "2026-09-15T00:00:00+00:00",
        "2026-10-15T00:00:00+00:00",
        "2026-11-16T00:00:00+00:00",
    ]),
    ("0 0 0 31W * ?", "UTC", "2026-09-01T00:00:00", [
        "2026-10-30T00:00:00+00:00",
        "2026-12-31T00:00:00+00:00",
        "2027-01-29T00:00:00+00:00",
        "2027-03-31T00:00:00+00:00",
    ]),
    ("0 0 0 1,15W,L * ?", "UTC", "2026-08-01T00:00:00", [
        "2026-08-14T00:00:00+00:00",
        "2026-08-31T00:00:00+00:00",
        "2026-09-01T00:00:00+00:00",
        "2026-09-15T00:00:00+00:00",
        "2026-09-30T00:00:00+00:00",
        "2026-10-01T00:00:00+00:00",
    ]),
    ("0 0 0 29W 2 ?", "UTC", B, ["2028-02-29T00:00:00+00:00", "2032-02-27T00:00:00+00:00"]),
    ("0 0 9 29 2 ?", "UTC", B, ["2028-02-29T09:00:00+00:00", "2032-02-29T09:00:00+00:00", "2036-02-29T09:00:00+00:00"]),
    ("0 0 9 29 2 ? 2100-2104", "UTC", "2099-06-01T00:00:00", ["2104-02-29T09:00:00+00:00", None]),
    ("0 0 9 L 2 ?", "UTC", "2027-01-01T00:00:00", ["2027-02-28T09:00:00+00:00", "2028-02-29T09:00:00+00:00", "2029-02-28T09:00:00+00:00"]),
    ("0 30 9 ? * SUN,SAT", "UTC", B, ["2026-11-28T09:30:00+00:00", "2026-11-29T09:30:00+00:00", "2026-12-05T09:30:00+00:00"]),
    ("0 0 22-2 * * ?", "UTC", "2026-11-24T21:30:00", [
        "2026-11-24T22:00:00+00:00",
        "2026-11-24T23:00:00+00:00",
        "2026-11-25T00:00:00+00:00",
        "2026-11-25T01:00:00+00:00",
        "2026-11-25T02:00:00+00:00",
        "2026-11-25T22:00:00+00:00",
    ]),
    ("0 0 12 ? NOV-FEB MON", "UTC", "2027-02-25T00:00:00", [
        "2027-11-01T12:00:00+00:00",
        "2027-11-08T12:00:00+00:00",
        "2027-11-15T12:00:00+00:00",
    ]),
    ("0 0 12 ? * FRI-MON", "UTC", B, [
        "2026-11-27T12:00:00+00:00",
        "2026-11-28T12:00:00+00:00",
        "2026-11-29T12:00:00+00:00",
        "2026-11-30T12:00:00+00:00",
    ]),
    ("0 0 12 28-3 * ?", "UTC", "2027-02-26T00:00:00", [
        "2027-02-28T12:00:00+00:00",
        "2027-03-01T12:00:00+00:00",
        "2027-03-02T12:00:00+00:00",
        "2027-03-03T12:00:00+00:00",
        "2027-03-28T12:00:00+00:00",
    ]),
    ("*/15 * * * * ?", "UTC", "2026-11-24T12:00:50", [
        "2026-11-24T12:01:00+00:00",
        "2026-11-24T12:01:15+00:00",
        "2026-11-24T12:01:30+00:00",
        "2026-11-24T12:01:45+00:00",
        "2026-11-24T12:02:00+00:00",
    ]),
    ("5-10/2 * * * * ?", "UTC", B, [
        "2026-11-24T12:00:05+00:00",
        "2026-11-24T12:00:07+00:00",
        "2026-11-24T12:00:09+00:00",
        "2026-11-24T12:01:05+00:00",
    ]),
    ("0 0 */6 * * ?", "UTC", B, [
        "2026-11-24T18:00:00+00:00",
        "2026-11-25T00:00:00+00:00",
        "2026-11-25T06:00:00+00:00",
        "2026-11-25T12:00:00+00:00",
    ]),
    ("0 0 12 ? * */2", "UTC", B, [
        "2026-11-26T12:00:00+00:00",
        "2026-11-28T12:00:00+00:00",
        "2026-11-29T12:00:00+00:00",
        "2026-12-01T12:00:00+00:00",
    ]),
    ("0 0 12 1 1/3 ?", "UTC", B, ["2027-01-01T12:00:00+00:00", "2027-04-01T12:00:00+00:00", "2027-07-01T12:00:00+00:00"]),
    ("0 0 12 * * ? 2026/2", "UTC", "2026-12-31T13:00:00", ["2028-01-01T12:00:00+00:00", "2028-01-02T12:00:00+00:00"]),
    ("0 0 12 1 1 ? 2027,2029-2030", "UTC", B, [
        "2027-01-01T12:00:00+00:00",
        "2029-01-01T12:00:00+00:00",
        "2030-01-01T12:00:00+00:00",
        None,
    ]),
    ("0 0 20 * * ? 2010", "UTC", B, [None]),
    # -- the classic 5-field form (0 or 7 = Sunday; both day fields set: either)
    ("*/5 * * * *", "UTC", B, ["2026-11-24T12:05:00+00:00", "2026-11-24T12:10:00+00:00", "2026-11-24T12:15:00+00:00"]),
    ("0 9 * * 0", "UTC", B, ["2026-11-29T09:00:00+00:00", "2026-12-06T09:00:00+00:00", "2026-12-13T09:00:00+00:00"]),
    ("0 9 * * 7", "UTC", B, ["2026-11-29T09:00:00+00:00", "2026-12-06T09:00:00+00:00"]),
    ("0 0 1,15 * MON", "UTC", B, [
        "2026-11-30T00:00:00+00:00",
        "2026-12-01T00:00:00+00:00",
        "2026-12-07T00:00:00+00:00",
        "2026-12-14T00:00:00+00:00",
    ]),
    ("30 4 * * MON-FRI", "UTC", "2026-11-27T05:00:00", [
        "2026-11-30T04:30:00+00:00",
        "2026-12-01T04:30:00+00:00",
        "2026-12-02T04:30:00+00:00",
    ]),
    ("0 0 L * ?", "UTC", B, ["2026-11-30T00:00:00+00:00", "2026-12-31T00:00:00+00:00", "2027-01-31T00:00:00+00:00"]),
    ("15 10 * * 5L", "UTC", B, ["2026-11-27T10:15:00+00:00", "2026-12-25T10:15:00+00:00"]),
    ("0 12 * * 1#2", "UTC", B, ["2026-12-14T12:00:00+00:00", "2027-01-11T12:00:00+00:00"]),
    # -- daylight saving in Europe/Berlin (29 March and 25 October 2026)
    ("0 30 2 * * ?", "Europe/Berlin", "2026-03-27T12:00:00", [
        "2026-03-28T02:30:00+01:00",
        "2026-03-29T03:30:00+02:00",
        "2026-03-30T02:30:00+02:00",
        "2026-03-31T02:30:00+02:00",
    ]),
    ("0 30 2 * * ?", "Europe/Berlin", "2026-10-23T12:00:00", [
        "2026-10-24T02:30:00+02:00",
        "2026-10-25T02:30:00+02:00",
        "2026-10-26T02:30:00+01:00",
        "2026-10-27T02:30:00+01:00",
    ]),
    ("0 30 2 * * ?", "Europe/Berlin", "2026-10-25T02:45:00+02:00", ["2026-10-26T02:30:00+01:00", "2026-10-27T02:30:00+01:00"]),
    ("0 30 * * * ?", "Europe/Berlin", "2026-03-29T00:00:00", [
        "2026-03-29T00:30:00+01:00",
        "2026-03-29T01:30:00+01:00",
        "2026-03-29T03:30:00+02:00",
        "2026-03-29T04:30:00+02:00",
    ]),
    ("0 30 * * * ?", "Europe/Berlin", "2026-10-25T00:00:00", [
        "2026-10-25T00:30:00+02:00",
        "2026-10-25T01:30:00+02:00",
        "2026-10-25T02:30:00+02:00",
        "2026-10-25T02:30:00+01:00",
        "2026-10-25T03:30:00+01:00",
    ]),
    ("0 0/20 * * * ?", "Europe/Berlin", "2026-10-25T01:50:00", [
        "2026-10-25T02:00:00+02:00",
        "2026-10-25T02:20:00+02:00",
        "2026-10-25T02:40:00+02:00",
        "2026-10-25T02:00:00+01:00",
        "2026-10-25T02:20:00+01:00",
        "2026-10-25T02:40:00+01:00",
        "2026-10-25T03:00:00+01:00",
        "2026-10-25T03:20:00+01:00",
    ]),
    ("0 0/20 * * * ?", "Europe/Berlin", "2026-03-29T01:30:00", [
        "2026-03-29T01:40:00+01:00",
        "2026-03-29T03:00:00+02:00",
        "2026-03-29T03:20:00+02:00",
        "2026-03-29T03:40:00+02:00",
    ]),
    ("0 0/20 2 * * ?", "Europe/Berlin", "2026-10-25T01:50:00", [
        "2026-10-25T02:00:00+02:00",
        "2026-10-25T02:20:00+02:00",
        "2026-10-25T02:40:00+02:00",
        "2026-10-26T02:00:00+01:00",
        "2026-10-26T02:20:00+01:00",
    ]),
    ("0 0/20 2 * * ?", "Europe/Berlin", "2026-03-29T01:50:00", [
        "2026-03-29T03:00:00+02:00",
        "2026-03-29T03:20:00+02:00",
        "2026-03-29T03:40:00+02:00",
        "2026-03-30T02:00:00+02:00",
        "2026-03-30T02:20:00+02:00",
    ]),
    ("0 0 2 * * ?", "Europe/Berlin", "2026-03-28T12:00:00", ["2026-03-29T03:00:00+02:00", "2026-03-30T02:00:00+02:00"]),
    ("0 59 2 * * ?", "Europe/Berlin", "2026-03-28T12:00:00", ["2026-03-29T03:59:00+02:00", "2026-03-30T02:59:00+02:00"]),
    ("0 30 2,3 * * ?", "Europe/Berlin", "2026-03-29T00:00:00", [
        "2026-03-29T03:30:00+02:00",
        "2026-03-30T02:30:00+02:00",
        "2026-03-30T03:30:00+02:00",
    ]),
    ("0 0 1-3 * * ?", "Europe/Berlin", "2026-10-25T00:30:00", [
        "2026-10-25T01:00:00+02:00",
        "2026-10-25T02:00:00+02:00",
        "2026-10-25T03:00:00+01:00",
        "2026-10-26T01:00:00+01:00",
        "2026-10-26T02:00:00+01:00",
    ]),
    ("*/30 * 2 * * ?", "Europe/Berlin", "2026-03-29T01:59:00", [
        "2026-03-29T03:00:00+02:00",
        "2026-03-29T03:00:30+02:00",
        "2026-03-29T03:01:00+02:00",
    ]),
    ("*/20 * 2 * * ?", "Europe/Berlin", "2026-10-25T02:59:00+02:00", [
        "2026-10-25T02:59:20+02:00",
        "2026-10-25T02:59:40+02:00",
        "2026-10-26T02:00:00+01:00",
    ]),
    ("0 30 2 ? * SUN", "Europe/Berlin", "2026-03-27T00:00:00", ["2026-03-29T03:30:00+02:00", "2026-04-05T02:30:00+02:00"]),
    ("0 30 2 ? * 1L", "Europe/Berlin", "2026-03-01T00:00:00", [
        "2026-03-29T03:30:00+02:00",
        "2026-04-26T02:30:00+02:00",
        "2026-05-31T02:30:00+02:00",
    ]),
    ("0 30 2 ? 10 1L", "Europe/Berlin", "2026-01-01T00:00:00", ["2026-10-25T02:30:00+02:00", "2027-10-31T02:30:00+02:00"]),
    ("0 2 * * *", "Europe/Berlin", "2026-03-28T12:00:00", ["2026-03-29T03:00:00+02:00", "2026-03-30T02:00:00+02:00"]),
    # -- daylight saving in America/New_York (8 March and 1 November 2026)
    ("0 30 2 * * ?", "America/New_York", "2026-03-06T12:00:00", [
        "2026-03-07T02:30:00-05:00",
        "2026-03-08T03:30:00-04:00",
        "2026-03-09T02:30:00-04:00",
    ]),
    ("0 30 1 * * ?", "America/New_York", "2026-10-30T12:00:00", [
        "2026-10-31T01:30:00-04:00",
        "2026-11-01T01:30:00-04:00",
        "2026-11-02T01:30:00-05:00",
    ]),
    ("0 0 * * * ?", "America/New_York", "2026-11-01T00:30:00", [
        "2026-11-01T01:00:00-04:00",
        "2026-11-01T01:00:00-05:00",
        "2026-11-01T02:00:00-05:00",
        "2026-11-01T03:00:00-05:00",
    ]),
    ("0 15/30 * * * ?", "America/New_York", "2026-03-08T01:00:00", [
        "2026-03-08T01:15:00-05:00",
        "2026-03-08T01:45:00-05:00",
        "2026-03-08T03:15:00-04:00",
        "2026-03-08T03:45:00-04:00",
    ]),
    ("0 0 2 ? * 1#2", "America/New_York", "2026-03-01T00:00:00", ["2026-03-08T03:00:00-04:00", "2026-04-12T02:00:00-04:00"]),
    ("30 1 * * *", "America/New_York", "2026-10-31T12:00:00", ["2026-11-01T01:30:00-04:00", "2026-11-02T01:30:00-05:00"]),
    ("0 0 1 ? 11 SUN 2026", "America/New_York", "2026-10-31T00:00:00", ["2026-11-01T01:00:00-04:00", "2026-11-08T01:00:00-05:00"]),
    # -- a 30-minute change (Australia/Lord_Howe: 5 April and 4 October 2026) and others
    ("0 15 2 * * ?", "Australia/Lord_Howe", "2026-10-03T12:00:00", [
        "2026-10-04T02:45:00+11:00",
        "2026-10-05T02:15:00+11:00",
        "2026-10-06T02:15:00+11:00",
    ]),
    ("0 45 1 * * ?", "Australia/Lord_Howe", "2026-04-04T12:00:00", [
        "2026-04-05T01:45:00+11:00",
        "2026-04-06T01:45:00+10:30",
        "2026-04-07T01:45:00+10:30",
    ]),
    ("0 0/15 * * * ?", "Australia/Lord_Howe", "2026-04-05T01:20:00", [
        "2026-04-05T01:30:00+11:00",
        "2026-04-05T01:45:00+11:00",
        "2026-04-05T01:30:00+10:30",
        "2026-04-05T01:45:00+10:30",
        "2026-04-05T02:00:00+10:30",
        "2026-04-05T02:15:00+10:30",
    ]),
    ("0 0/20 * * * ?", "Australia/Lord_Howe", "2026-10-04T01:30:00", [
        "2026-10-04T01:40:00+10:30",
        "2026-10-04T02:40:00+11:00",
        "2026-10-04T03:00:00+11:00",
        "2026-10-04T03:20:00+11:00",
        "2026-10-04T03:40:00+11:00",
    ]),
    ("0 0 12 * * ?", "Pacific/Apia", "2011-12-28T00:00:00", [
        "2011-12-28T12:00:00-10:00",
        "2011-12-29T12:00:00-10:00",
        "2011-12-31T12:00:00+14:00",
        "2012-01-01T12:00:00+14:00",
    ]),
    ("0 30 0 * * ?", "America/Havana", "2026-03-07T12:00:00", [
        "2026-03-08T01:30:00-04:00",
        "2026-03-09T00:30:00-04:00",
        "2026-03-10T00:30:00-04:00",
    ]),
    ("0 0 9 * * ?", "Asia/Kolkata", B, ["2026-11-25T09:00:00+05:30", "2026-11-26T09:00:00+05:30"]),
    ("0 0 0 L * ?", "Asia/Tokyo", B, ["2026-11-30T00:00:00+09:00", "2026-12-31T00:00:00+09:00"]),
]
# fmt: on


def instant(text: str, zone: str) -> float:
    moment = datetime.fromisoformat(text)
    return (moment if moment.tzinfo else moment.replace(tzinfo=ZoneInfo(zone))).timestamp()


def shown(instants: list[Optional[float]], zone: str) -> list[Optional[str]]:
    return [None if t is None else datetime.fromtimestamp(t, ZoneInfo(zone)).isoformat() for t in instants]


def fairqueue_fires(expression: str, zone: str, after: float, count: int) -> list[Optional[float]]:
    schedule = CronSchedule(expression, zone)
    fires: list[Optional[float]] = []
    t: Optional[float] = after
    while len(fires) < count and t is not None:
        t = schedule.next_after(t)
        fires.append(t)
    return fires


def expected_fires(expression: str, zone: str, after: float, count: int) -> list[Optional[float]]:
    fires: list[Optional[float]] = [float(t) for t in reference_fires(expression, zone, after, count)]
    return fires if len(fires) == count else [*fires, None]


def row_id(row: tuple[str, str, str, list[Optional[str]]]) -> str:
    return f"{row[0]} @ {row[1]} after {row[2]}"


def test_the_table_is_large_enough() -> None:
    assert len(TABLE) >= 60
    assert len({(row[0], row[1]) for row in TABLE}) >= 60


@pytest.mark.parametrize(("expression", "zone", "after", "fires"), TABLE, ids=[row_id(r) for r in TABLE])
def test_the_reference_gives_the_tables_fire_times(expression: str, zone: str, after: str, fires: list[Optional[str]]) -> None:
    assert shown(expected_fires(expression, zone, instant(after, zone), len(fires)), zone)[: len(fires)] == fires


@pytest.mark.parametrize(("expression", "zone", "after", "fires"), TABLE, ids=[row_id(r) for r in TABLE])
def test_fairqueue_cron_gives_the_references_fire_times(expression: str, zone: str, after: str, fires: list[Optional[str]]) -> None:
    start = instant(after, zone)
    expected = expected_fires(expression, zone, start, len(fires))[: len(fires)]
    assert shown(fairqueue_fires(expression, zone, start, len(fires)), zone) == shown(expected, zone)


# -- random expressions ------------------------------------------------------------

ZONES = ["UTC", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "America/Havana", "Asia/Kolkata"]
# Offset changes in 2026 of those zones (UTC): Berlin, New York, Lord Howe, Havana.
CHANGES = [1774746000, 1792890000, 1772953200, 1793512800, 1775314800, 1790955000, 1772946000, 1793509200]
SECONDS = ["0", "0", "30", "*/20", "15,45", "5-10/5"]
MINUTES = ["0", "30", "*/15", "0/20", "5-10", "50-10", "15,45", "*"]
HOURS = ["*", "0-23", "2", "1", "0", "1-3", "*/6", "22-2", "0,12"]
DAYS_OF_MONTH = ["*", "1", "15", "29", "L", "L-3", "LW", "15W", "31W", "1W", "1-5", "*/10", "28-3", "1,15W,L"]
DAYS_OF_WEEK = ["*", "MON-FRI", "6L", "2#3", "1", "L", "SAT,SUN", "*/2", "1L", "1#2", "FRI-MON", "7"]
MONTHS = ["*", "*", "2", "FEB-MAR", "3,10", "*/4", "NOV-FEB", "10", "4"]
YEARS = [None, "*", "2026-2028", "2027"]


@st.composite
def reference_expressions(draw: st.DrawFn) -> str:
    if draw(st.booleans()):
        days = [draw(st.sampled_from(DAYS_OF_MONTH)), "?"]
    else:
        days = ["?", draw(st.sampled_from(DAYS_OF_WEEK))]
    fields = [draw(st.sampled_from(SECONDS)), draw(st.sampled_from(MINUTES)), draw(st.sampled_from(HOURS)),
              days[0], draw(st.sampled_from(MONTHS)), days[1]]  # fmt: skip
    year = draw(st.sampled_from(YEARS))
    return " ".join(fields + ([year] if year else []))


@st.composite
def classic_expressions(draw: st.DrawFn) -> str:
    fields = [draw(st.sampled_from(MINUTES)), draw(st.sampled_from(HOURS)),
              draw(st.sampled_from(["*", "1", "15", "L", "1-5", "*/10", "15W"])), draw(st.sampled_from(MONTHS)),
              draw(st.sampled_from(["*", "0", "7", "MON-FRI", "1,3,5", "5L", "1#2", "SAT,SUN"]))]  # fmt: skip
    return " ".join(fields)


starts = st.one_of(
    st.builds(lambda change, delta: change + delta, st.sampled_from(CHANGES), st.integers(-2 * 86400, 2 * 86400)),
    st.integers(1767225600, 1861920000),  # 2026-2028
).map(float)


def agree(expression: str, zone: str, after: float) -> None:
    try:
        CronSchedule(expression, zone)
    except InvalidArgument as e:
        assert "matches no date" in str(e)
        assume(False)
    assert shown(fairqueue_fires(expression, zone, after, 3), zone) == shown(expected_fires(expression, zone, after, 3), zone)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(reference_expressions(), st.sampled_from(ZONES), starts)
def test_random_reference_expressions_agree_with_the_reference(expression: str, zone: str, after: float) -> None:
    agree(expression, zone, after)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(classic_expressions(), st.sampled_from(ZONES), starts)
def test_random_classic_expressions_agree_with_the_reference(expression: str, zone: str, after: float) -> None:
    agree(expression, zone, after)
