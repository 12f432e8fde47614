"""Every public entry point, fed arbitrary values: it succeeds or raises a
``fairqueue`` error naming the value — never a TypeError, OverflowError,
UnicodeEncodeError or a user's ``__repr__`` error — and a refused call stores
nothing, while an accepted enqueue is run by test mode rather than failed as
malformed later (issue #18).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fairqueue as fq
import fq_edge_jobs as edge
from fairqueue import _core
from fairqueue.validate import check_org


class HostileRepr:
    """A user object whose repr raises (and whose str too)."""

    def __repr__(self) -> str:
        raise RuntimeError("repr refused")

    __str__ = __repr__


names = st.one_of(
    st.text(max_size=300),
    st.text(st.characters(codec="utf-8"), min_size=1, max_size=20),
    st.text(st.characters(categories=["Cc", "Cs", "Zs", "Zl"]), min_size=1, max_size=5),
    st.sampled_from(["é" * 128, "é" * 127, " acme", "acme ", "\u00a0", "a\u0085b", "\ud800", "ok", "org-1"]),
)
numbers = st.one_of(
    st.integers(),
    st.integers(min_value=2**31, max_value=2**70),
    st.sampled_from([0, -1, 2**63, 2**64, 10**400, True]),
    st.builds(lambda: 10**5000),  # too large even to print
    st.floats(allow_nan=True, allow_infinity=True),
)
anything = st.one_of(
    st.none(), names, numbers, st.binary(max_size=5), st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    st.timedeltas(), st.just(timedelta(days=10**6)),
)  # fmt: skip


def refused_or_run(call: Callable[[], Any]) -> None:
    """Runs ``call`` in test mode: a refusal must be a fairqueue error and store
    nothing; what it stored must then run to completion."""
    with edge.app.testing() as run:
        try:
            call()
        except fq.FairQueueError as e:
            assert str(e), "an error says what is wrong"
            refused = True
        else:
            refused = False
        stored_before_drain = run.storage.job_list(limit=1_000_000)
    if refused:
        assert stored_before_drain == [] and run.jobs() == [], "a refused call stored nothing"
    for record in run.jobs():
        assert record.status is fq.JobStatus.COMPLETED, f"accepted, then {record.status.value}: {record.extended_status}"


def only_fairqueue_errors(call: Callable[[], Any]) -> None:
    try:
        call()
    except fq.FairQueueError as e:
        assert str(e)


@settings(max_examples=300)
@given(names)
def test_the_python_name_check_is_the_cores(org: str) -> None:
    # The core decides at dispatch what the API accepted: they must agree on every name.
    try:
        check_org(org)
        accepted = True
    except fq.InvalidArgument:
        accepted = False
    core = fq.Dispatcher(slots=1)
    try:
        core.enqueue(1, org, "future")
        dispatched = True
    except (fq.InvalidArgument, UnicodeEncodeError):
        dispatched = False
    assert accepted == dispatched, org


@given(org=anything, a=anything)
def test_delay(org: Any, a: Any) -> None:
    refused_or_run(lambda: edge.accept.delay(org, a))


@given(org=names, args=st.lists(anything, max_size=3), named=st.dictionaries(st.sampled_from(["b", "c", "zz"]), anything))
def test_delay_binds_the_arguments_to_the_signature(org: str, args: list[Any], named: dict[str, Any]) -> None:
    refused_or_run(lambda: edge.pair.delay(org, *args, **named))


def test_forgetting_the_org_is_refused_at_enqueue() -> None:
    with edge.app.testing() as run:
        with pytest.raises(fq.InvalidArgument, match=r"cannot be called with 0 positional.*first argument of \.delay is the org"):
            edge.pair.delay("cust-42")
    assert run.jobs() == []


calls = st.one_of(
    st.lists(anything, max_size=3), st.dictionaries(st.one_of(names, st.integers()), anything, max_size=2), anything
)


@given(org=anything, calls=st.lists(calls, max_size=4))
def test_delay_many(org: Any, calls: list[Any]) -> None:
    refused_or_run(lambda: edge.pair.delay_many(org, calls))


@given(org=anything, delay=anything, depth=anything, signature=anything)
def test_enqueue(org: Any, delay: Any, depth: Any, signature: Any) -> None:
    def call() -> None:
        edge.app.enqueue(edge.Note(1), org=org, delay=delay, options=fq.AsyncOptions(max_depth=depth, duplicate_signature=signature))

    refused_or_run(call)


@given(org=anything, scope=anything, delay=anything, minutes=anything)
def test_batches(org: Any, scope: Any, delay: Any, minutes: Any) -> None:
    refused_or_run(lambda: edge.app.execute_batch(edge.Rows(3), org=org, scope=scope, delay=delay))
    refused_or_run(lambda: edge.app.schedule_batch(edge.Rows(3), minutes, org=org))


@given(name=anything, cron=st.one_of(anything, st.sampled_from(["0 0 12 * * ?", "*/5 * * * *", "0 61 * * * ?"])), org=anything,
       zone=st.one_of(anything, st.sampled_from(["UTC", "Europe/Berlin", "../etc/passwd", "x" * 10_000])))  # fmt: skip
def test_schedule(name: Any, cron: Any, org: Any, zone: Any) -> None:
    def call() -> None:
        with edge.app.testing() as run:
            try:
                edge.app.schedule(name, cron, edge.Note(1), org, timezone=zone)
            except fq.FairQueueError:
                assert run.storage.trigger_list() == []

    call()


@given(org=anything, kind=anything, cap=anything, minimum=anything, weight=anything, daily=anything)
def test_limits(org: Any, kind: Any, cap: Any, minimum: Any, weight: Any, daily: Any) -> None:
    app = fq.FairQueue(":memory:")
    only_fairqueue_errors(lambda: app.set_limits(org, kind, cap=cap, min=minimum, weight=weight))
    only_fairqueue_errors(lambda: app.set_daily_limit(org, daily))
    # Whatever was accepted, a worker's dispatcher can be built from it.
    app.worker(slots=1)


@given(field=st.sampled_from(["slots", "cap", "min", "weight", "peek_set", "lease", "max_delay", "max_payload_bytes",
                              "daily_executions", "max_chain_depth", "extended_delay", "kind_slots", "timeouts"]),
       value=st.one_of(anything, st.dictionaries(st.sampled_from(["future", "batch", "x"]), anything, max_size=2)))  # fmt: skip
def test_limits_fields(field: str, value: Any) -> None:
    try:
        limits = fq.Limits(**{field: value})
    except fq.FairQueueError as e:
        assert str(e)
        return
    # Accepted limits build a dispatcher: nothing refused only when a worker starts.
    fq.FairQueue(":memory:", limits=limits).worker(slots=1)


@given(job_id=anything, org=anything, kind=anything, status=anything, limit=anything)
def test_reads_and_control(job_id: Any, org: Any, kind: Any, status: Any, limit: Any) -> None:
    app = fq.FairQueue(":memory:")
    for call in (
        lambda: app.get(job_id), lambda: app.abort(job_id), lambda: app.explain(job_id), lambda: app.batch_errors(job_id),
        lambda: app.unschedule(job_id), lambda: app.move_to_front(job_id), lambda: app.move_before(1, job_id),
        lambda: app.jobs(org=org, kind=kind, status=status, limit=limit, before_id=job_id),
        lambda: app.org(org).jobs(), lambda: app.flex_queue(org), lambda: app.daily_usage(org),
        lambda: app.schedules(org=org, state=status),
    ):  # fmt: skip
        try:
            call()
        except (fq.FairQueueError, LookupError):
            pass


@given(after=anything)
def test_retry_and_finalizer(after: Any) -> None:
    only_fairqueue_errors(lambda: fq.Retry(after))


# A hostile repr is tried by hand: hypothesis itself prints its examples with repr.
@pytest.mark.parametrize(
    "call",
    [
        lambda: edge.app.enqueue(HostileRepr(), org="acme"),  # type: ignore[arg-type]
        lambda: edge.app.enqueue(edge.Note(1), org=HostileRepr()),  # type: ignore[arg-type]
        lambda: edge.accept.delay(HostileRepr()),  # type: ignore[arg-type]
        lambda: edge.accept.delay("acme", HostileRepr()),
        lambda: edge.accept.delay("acme", {HostileRepr(): 1}),
        lambda: edge.pair.delay_many("acme", [HostileRepr()]),
        lambda: edge.app.get(HostileRepr()),  # type: ignore[arg-type]
        lambda: edge.app.jobs(status=HostileRepr()),  # type: ignore[arg-type]
        lambda: edge.app.set_limits("acme", "future", cap=HostileRepr()),  # type: ignore[arg-type]
        lambda: edge.app.schedule("n", "0 0 12 * * ?", edge.Note(1), "acme", timezone=HostileRepr()),  # type: ignore[arg-type]
        lambda: fq.Limits(lease=HostileRepr()),  # type: ignore[arg-type]
        lambda: fq.AsyncOptions(duplicate_signature=HostileRepr()),  # type: ignore[arg-type]
    ],
)
def test_a_value_whose_repr_raises_is_refused_with_a_fairqueue_error(call: Callable[[], Any]) -> None:
    with pytest.raises((fq.InvalidArgument, fq.NotSerializable), match=r"its repr raised|HostileRepr"):
        call()


def test_error_messages_show_huge_values() -> None:
    with pytest.raises(fq.InvalidArgument, match=r"an integer of \d+ bits"):
        edge.app.get(10**5000)
    with pytest.raises(fq.InvalidArgument, match=r"lone surrogate"):
        edge.accept.delay("acme\ud800")
    assert math.isclose(fq.Retry(1).after, 1.0)
    assert _core.check_name("acme") == "acme"


@given(a=anything, b=anything, c=anything)
def test_the_public_dispatcher_raises_only_fairqueue_errors(a: Any, b: Any, c: Any) -> None:
    only_fairqueue_errors(lambda: fq.Dispatcher(slots=a, lease=b, cap=c))
    core = fq.Dispatcher(slots=2)
    for call in (
        lambda: core.enqueue(a, b, c), lambda: core.enqueue_many([(a, b, c)]), lambda: core.dispatch(a),
        lambda: core.ack(a), lambda: core.retry(a, b), lambda: core.set_limits(a, b, cap=c), lambda: core.limits(a, b),
        lambda: core.set_capacity(a), lambda: core.set_slots(a), lambda: core.abort(a), lambda: core.locate(a),
    ):  # fmt: skip
        only_fairqueue_errors(call)
