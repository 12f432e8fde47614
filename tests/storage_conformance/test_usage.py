"""Daily usage and daily limits: the storage contract, the same for every backend."""

from __future__ import annotations

import pytest

from fairqueue.errors import DailyLimitExceeded
from fairqueue.records import Finish, JobStatus
from fairqueue.storage import USAGE_BUCKET, Storage

from .builders import NOW, job


def test_daily_limit_admits_up_to_the_limit_and_refuses_the_next_without_storing_it(store: Storage) -> None:
    limits = {"a": 5}
    store.job_enqueue([job(org="a") for _ in range(4)], NOW, daily_limits=limits)
    store.job_enqueue([job(org="a")], NOW + 1, daily_limits=limits)  # the 5th: exactly at the limit
    with pytest.raises(DailyLimitExceeded) as refused:
        store.job_enqueue([job(org="b"), job(org="a")], NOW + 2, daily_limits=limits)
    e = refused.value
    assert (e.org, e.count, e.limit) == ("a", 5, 5)
    assert e.resets_at == (NOW // USAGE_BUCKET + 24) * USAGE_BUCKET
    assert "'a'" in str(e) and "5" in str(e)
    assert len(store.job_list()) == 5, "all or none: b's job was not stored either"
    assert store.usage_daily("a", NOW + 2).count == 5
    # Other orgs, and orgs without a limit, are not affected.
    store.job_enqueue([job(org="b") for _ in range(7)], NOW + 3, daily_limits=limits)
    assert store.usage_daily("b", NOW + 3).count == 7


def test_daily_limit_counts_a_rolling_24_hours(store: Storage) -> None:
    limits = {"a": 2}
    hour = NOW // USAGE_BUCKET * USAGE_BUCKET
    store.job_enqueue([job(org="a")], hour + 10, daily_limits=limits)
    store.job_enqueue([job(org="a")], hour + 5 * 3600, daily_limits=limits)
    with pytest.raises(DailyLimitExceeded):
        store.job_enqueue([job(org="a")], hour + 23 * 3600 + 3599, daily_limits=limits)
    # The first hour's execution leaves the window 24 hours after that hour began.
    assert store.usage_daily("a", hour + 24 * 3600).count == 1
    store.job_enqueue([job(org="a")], hour + 24 * 3600, daily_limits=limits)
    with pytest.raises(DailyLimitExceeded) as refused:
        store.job_enqueue([job(org="a")], hour + 24 * 3600 + 1, daily_limits=limits)
    assert refused.value.resets_at == hour + 29 * 3600


def test_children_stored_with_an_outcome_count_towards_the_daily_usage(store: Storage) -> None:
    [parent] = store.job_enqueue([job(org="a")], NOW)
    store.job_claim([parent], "w1", NOW + 30, NOW)
    store.job_finish([Finish(parent, "w1", JobStatus.COMPLETED, NOW + 1, children=(job(org="a"), job(org="a")))])
    assert store.usage_daily("a", NOW + 1).count == 3
    assert store.usage_daily("nobody", NOW + 1).count == 0 and store.usage_daily("nobody", NOW).resets_at is None


def test_children_past_the_daily_limit_are_not_stored_and_the_outcome_still_applies(store: Storage) -> None:
    # The handler's own check read the usage earlier; by the outcome other processes
    # may have used the room, so the store checks again in the outcome's transaction.
    a, b = store.job_enqueue([job(org="a"), job(org="a")], NOW)
    store.job_claim([a, b], "w1", NOW + 30, NOW)
    limits = {"a": 3}
    applied = store.job_finish([
        Finish(a, "w1", JobStatus.COMPLETED, NOW + 1, children=(job(org="a"),), daily_limits=limits),
        Finish(b, "w1", JobStatus.COMPLETED, NOW + 1, children=(job(org="a"),), daily_limits=limits),
    ])  # fmt: skip
    assert applied == [a, b]
    assert store.usage_daily("a", NOW + 1).count == 3 and len(store.job_list(org="a")) == 3
    refused = store.job_get(b)
    assert refused is not None and refused.status is JobStatus.COMPLETED
    assert (refused.extended_status or "").startswith("children not enqueued: org 'a' has 3 async executions")
    assert store.job_get(a).extended_status is None  # type: ignore[union-attr]
