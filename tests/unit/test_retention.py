"""fq.Retention: its defaults, its checks (a typed error naming the value and the limit)
and the cutoffs it gives the pruner."""

from __future__ import annotations

import pytest

import fairqueue as fq
from fairqueue.errors import InvalidArgument
from fairqueue.records import JobStatus
from fairqueue.retention import DAY


def test_defaults_and_cutoffs() -> None:
    r = fq.Retention()
    assert (r.completed, r.failed, r.aborted, r.discarded) == (DAY, 7 * DAY, 7 * DAY, 7 * DAY)
    assert (r.history, r.history_full, r.batch_errors) == (30 * DAY, DAY, 7 * DAY)
    cutoffs = r.finished_before(100 * DAY)
    assert cutoffs[JobStatus.COMPLETED] == 99 * DAY and cutoffs[JobStatus.FAILED] == 93 * DAY
    assert set(cutoffs) == {s for s in JobStatus if s.finished}, "every finished status has a retention"
    assert (r.history_before(100 * DAY), r.downsample_before(100 * DAY)) == (70 * DAY, 99 * DAY)
    forever = fq.Retention(completed=None, history=None, history_full=None)
    assert JobStatus.COMPLETED not in forever.finished_before(0) and forever.history_before(0) is None


@pytest.mark.parametrize("value", [0, -1, float("nan"), float("inf"), "1d", True, 1e12])
def test_bad_durations_name_the_value_and_the_limit(value: object) -> None:
    with pytest.raises(InvalidArgument, match=r"invalid Retention completed=.*expected seconds greater than 0 and at "
                                              r"most 315,360,000 \(ten years\), or None"):  # fmt: skip
        fq.Retention(completed=value)  # type: ignore[arg-type]


def test_history_full_longer_than_history_is_refused() -> None:
    with pytest.raises(InvalidArgument, match="history_full=172800: expected at most history=86400"):
        fq.Retention(history=DAY, history_full=2 * DAY)
    assert fq.Retention(history=DAY, history_full=DAY).history_full == DAY


def test_the_app_takes_a_retention_and_refuses_anything_else(tmp_path: object) -> None:
    app = fq.FairQueue(":memory:", retention=fq.Retention(completed=60))
    assert app.retention.completed == 60.0
    assert fq.FairQueue(":memory:").retention == fq.Retention()
    with pytest.raises(InvalidArgument, match=r"invalid retention \{'completed': 60\}: expected a fairqueue.Retention"):
        fq.FairQueue(":memory:", retention={"completed": 60})  # type: ignore[arg-type]
