"""What the conformance tests (``test_jobs.py``, ``test_claims.py``, …) build their jobs and schedules from."""

from __future__ import annotations

from fairqueue.records import NewJob, NewTrigger, TriggerRecord

__all__ = ["NOW", "batch", "every_minute", "job", "trigger"]

NOW = 1_700_000_000.0


def job(org: str = "org-1", kind: str = "future", **kw: object) -> NewJob:
    return NewJob(org=org, kind=kind, handler="app.jobs:send", payload='{"args": [1]}', **kw)  # type: ignore[arg-type]


def batch(org: str = "org-1") -> NewJob:
    return job(org=org, kind="batch")


def trigger(org: str = "org-1", name: str = "nightly", next_fire_at: float = NOW + 60) -> NewTrigger:
    return NewTrigger(org=org, name=name, cron="0 * * * * ?", timezone="UTC", handler="app.jobs:Report",
                      payload='{"state": {}}', next_fire_at=next_fire_at)  # fmt: skip


def every_minute(t: TriggerRecord, now: float) -> float:
    """The first whole minute after ``now`` (what "0 * * * * ?" gives)."""
    return (now // 60 + 1) * 60
