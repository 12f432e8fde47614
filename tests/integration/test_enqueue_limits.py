"""Every limit the durable-runtime issue touches, at its boundary: a refused
enqueue raises a typed error and stores nothing."""

from __future__ import annotations

import math
from datetime import timedelta

import pytest

import fairqueue as fq
import fq_sample_jobs as sample


def stored(app: fq.FairQueue) -> int:
    return len(app.jobs(limit=10_000))


@pytest.mark.parametrize("count", [49, 50])
def test_up_to_50_futures_per_transaction_are_stored_together(app: fq.FairQueue, count: int) -> None:
    with app.transaction():
        handles = [sample.record.delay("org-1", str(i)) for i in range(count)]
    assert stored(app) == count
    assert sorted(h.id for h in handles) == [r.id for r in reversed(app.jobs(limit=100))]


def test_the_51st_future_is_refused_and_the_transaction_stores_nothing(app: fq.FairQueue) -> None:
    with pytest.raises(fq.LimitExceeded, match="51 > 50"):
        with app.transaction():
            for i in range(51):
                sample.record.delay("org-1", str(i))
    assert stored(app) == 0


def test_jobs_of_a_transaction_that_raises_are_not_stored(app: fq.FairQueue) -> None:
    with pytest.raises(KeyError):
        with app.transaction():
            handle = sample.record.delay("org-1", "x")
            raise KeyError("the service's own error")
    assert stored(app) == 0
    with pytest.raises(RuntimeError, match="transaction ends"):
        _ = handle.id


def test_50_queueables_per_synchronous_transaction(app: fq.FairQueue) -> None:
    with app.transaction():
        for _ in range(50):
            app.enqueue(sample.Chain(0, 0), org="org-1")
    with pytest.raises(fq.LimitExceeded, match="51 > 50"):
        with app.transaction():
            for _ in range(51):
                app.enqueue(sample.Chain(0, 0), org="org-1")
    assert stored(app) == 50


@pytest.mark.parametrize(
    ("delay", "ok"),
    [(0, True), (timedelta(minutes=10), True), (600.0, True), (600.001, False), (timedelta(minutes=11), False)],
)
def test_delay_is_0_to_10_minutes(app: fq.FairQueue, delay: object, ok: bool) -> None:
    if ok:
        handle = app.enqueue(sample.Chain(0, 0), org="org-1", delay=delay)  # type: ignore[arg-type]
        seconds = delay.total_seconds() if isinstance(delay, timedelta) else delay
        record = handle.record()
        assert (record.run_at is None) == (seconds == 0)
        if record.run_at is not None:
            assert math.isclose(record.run_at - record.created_at, float(seconds), abs_tol=0.5)  # type: ignore[arg-type]
    else:
        with pytest.raises(fq.LimitExceeded, match="over the limit of 600 s"):
            app.enqueue(sample.Chain(0, 0), org="org-1", delay=delay)  # type: ignore[arg-type]
        assert stored(app) == 0


@pytest.mark.parametrize("delay", [-1, float("nan"), float("inf"), "soon", True])
def test_a_malformed_delay_is_an_invalid_argument(app: fq.FairQueue, delay: object) -> None:
    with pytest.raises(fq.InvalidArgument, match="delay"):
        app.enqueue(sample.Chain(0, 0), org="org-1", delay=delay)  # type: ignore[arg-type]
    assert stored(app) == 0


def test_a_duplicate_signature_is_refused_while_the_first_is_queued(app: fq.FairQueue) -> None:
    options = fq.AsyncOptions(duplicate_signature="sync:org-1")
    first = app.enqueue(sample.Chain(0, 0), org="org-1", options=options)
    with pytest.raises(fq.DuplicateSignature, match="sync:org-1"):
        app.enqueue(sample.Chain(0, 0), org="org-1", options=options)
    assert [r.id for r in app.jobs()] == [first.id]
    app.abort(first.id)
    app.enqueue(sample.Chain(0, 0), org="org-1", options=options)
    assert stored(app) == 2


@pytest.mark.parametrize(("max_depth", "refused"), [(0, False), (None, False)])
def test_max_depth_zero_allows_the_root_job(app: fq.FairQueue, max_depth: int, refused: bool) -> None:
    app.enqueue(sample.Chain(0, 0), org="org-1", options=fq.AsyncOptions(max_depth=max_depth))
    assert stored(app) == 1


def test_payloads_must_be_json(app: fq.FairQueue) -> None:
    with pytest.raises(fq.NotSerializable, match=r"\[1\]\['when'\].*datetime"):
        from datetime import datetime

        sample.record.delay("org-1", ["ok", {"when": datetime(2026, 1, 1)}])  # type: ignore[arg-type]
    with pytest.raises(fq.NotSerializable, match="nan"):
        app.enqueue(sample.Payload(float("nan")), org="org-1")
    with pytest.raises(fq.NotSerializable, match="keys must be str"):
        app.enqueue(sample.Payload({1: "a"}), org="org-1")
    assert stored(app) == 0


def test_a_payload_over_the_size_limit_is_refused(app: fq.FairQueue) -> None:
    limit = app.limits.max_payload_bytes
    app.enqueue(sample.Payload("x" * (limit - 200)), org="org-1")
    with pytest.raises(fq.LimitExceeded, match=f"over the limit of {limit} bytes"):
        app.enqueue(sample.Payload("x" * limit), org="org-1")
    assert stored(app) == 1


@pytest.mark.parametrize("org", ["", "x" * 256, "bad\norg", 42, None])
def test_a_bad_org_is_refused(app: fq.FairQueue, org: object) -> None:
    with pytest.raises(fq.InvalidArgument, match="org"):
        sample.record.delay(org, "x")  # type: ignore[arg-type]
    assert stored(app) == 0


def test_handlers_must_be_importable(app: fq.FairQueue) -> None:
    class Local(fq.Queueable):
        def execute(self, ctx: fq.Context) -> None: ...

    with pytest.raises(fq.HandlerNotFound, match="module level"):
        app.enqueue(Local(), org="org-1")
    with pytest.raises(fq.HandlerNotFound, match="module level"):
        app.future(lambda: None)
    with pytest.raises(fq.InvalidArgument, match="Queueable"):
        app.enqueue(object(), org="org-1")  # type: ignore[arg-type]
    assert stored(app) == 0


def test_a_future_name_registers_once() -> None:
    with pytest.raises(fq.InvalidArgument, match="already registered"):
        sample.app.future(sample.record.fn)


def test_a_queueable_must_define_execute() -> None:
    with pytest.raises(TypeError, match="does not define execute"):

        class Lazy(fq.Queueable):
            pass


@pytest.mark.parametrize(
    ("field", "value"),
    [("cap", 0), ("slots", -1), ("weight", float("nan")), ("max_delay", 0), ("min", -1), ("futures_per_transaction", -1)],
)
def test_bad_limits_name_the_value(field: str, value: object) -> None:
    with pytest.raises(fq.InvalidArgument, match=field):
        fq.Limits(**{field: value})  # type: ignore[arg-type]


def test_a_min_above_the_cap_is_refused_and_with_no_cap_any_min_stands() -> None:
    with pytest.raises(fq.InvalidArgument, match="invalid min 13: expected at most the cap \\(12\\)"):
        fq.Limits(cap=12, min=13)
    assert fq.Limits(min=13).cap is None  # fair_share's default: no cap to stay under


def test_bad_per_kind_limits_name_the_kind() -> None:
    with pytest.raises(fq.InvalidArgument, match="'bogus'"):
        fq.Limits(timeouts={"bogus": 1.0})
    with pytest.raises(fq.InvalidArgument, match="timeouts\\['batch'\\]"):
        fq.Limits(timeouts={"future": 1.0, "queueable": 1.0, "scheduled": 1.0})


def test_an_unknown_policy_is_refused() -> None:
    with pytest.raises(fq.InvalidArgument, match="fair_share, peek_set"):
        fq.FairQueue(":memory:", policy="round_robin")
