"""The Rust dispatcher through its Python binding, on a virtual clock.

These pin, from Python, what seed 001 describes (the worked example, the extended
delay, batch's exemption), lease expiry and re-delivery, and that every kind of
bad input raises the typed error from :mod:`fairqueue.errors` and changes nothing.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest

from fairqueue import Dispatcher
from fairqueue.errors import (
    DuplicateRequest,
    FairQueueError,
    InvalidArgument,
    UnknownKind,
    UnknownLease,
    UnknownPolicy,
)

DELAY = 300.0
"""The reference extended delay for futures: five minutes."""


def seed_dispatcher(**overrides: Any) -> Dispatcher:
    """The seed's setting: 13 slots, cap 12, a peek set of 15, leases that never lapse by accident."""
    kwargs: dict[str, Any] = dict(policy="peek_set", slots=13, cap=12, peek_set=15, lease=86_400.0, virtual_time=0.0)
    kwargs.update(overrides)
    return Dispatcher(**kwargs)


def ids(grants: list[Any]) -> list[int]:
    return [g.id for g in grants]


# ----- seed 001 ------------------------------------------------------------------------


def test_seed_example_thirteenth_slot_skips_the_capped_org() -> None:
    d = seed_dispatcher()
    for i in range(1, 14):
        d.enqueue(i, "org-1")
    d.enqueue(101, "org-2")
    d.enqueue(102, "org-2")
    d.enqueue(14, "org-1")
    d.enqueue(15, "org-1")

    grants = d.dispatch(13)

    assert ids(grants) == [*range(1, 13), 101]
    assert all(g.org == "org-1" and g.kind == "future" and g.attempt == 1 for g in grants[:12])
    assert grants[12].org == "org-2"
    # The 13th org-1 request keeps its place at the front; nothing was delayed.
    assert d.locate(13) == {"state": "queued", "ahead_in_pair": 0, "ahead_in_queue": 0}
    assert d.locate(102)["ahead_in_queue"] == 1
    stats = d.stats()
    assert (stats["queued"], stats["delayed"], stats["running"]) == (4, 0, 13)
    assert stats["extended_delays"] == 0
    assert d.take_events() == []
    assert d.pair_stats("org-1", "future")["running"] == 12

    assert d.dispatch(13) == [], "every slot is busy"
    d.ack(grants[0].lease)
    assert ids(d.dispatch(13)) == [13], "a freed org-1 slot takes the head, now under cap"


def _peek_set_full_of_org1(kind: str) -> tuple[Dispatcher, list[Any]]:
    """Org 1 runs 12 (its cap) and has 15 more in front of org 2's two requests."""
    d = seed_dispatcher()
    d.enqueue_many([(i, "org-1", kind) for i in range(1, 13)])
    running = d.dispatch(12)
    assert ids(running) == list(range(1, 13))
    d.enqueue_many([(i, "org-1", kind) for i in range(13, 28)])
    d.enqueue_many([(101, "org-2", "future"), (102, "org-2", "future")])
    return d, running


def test_extended_delay_moves_the_capped_peek_set_back_for_five_minutes() -> None:
    d, org1_running = _peek_set_full_of_org1("future")
    d.set_time(1_000.0)
    now = d.now()
    assert d.locate(101)["ahead_in_queue"] == 15, "org 2 is just outside the peek set"

    grants = d.dispatch(1)

    assert ids(grants) == [101]
    for i in range(13, 28):
        assert d.locate(i) == {"state": "delayed", "due": now + DELAY}
    assert d.take_events() == [
        {"event": "extended_delay", "org": "org-1", "kind": "future", "count": 15, "until": now + DELAY}
    ]
    stats = d.stats()
    assert (stats["queued"], stats["delayed"], stats["running"], stats["extended_delays"]) == (1, 15, 13, 15)
    assert d.next_wakeup() == now + DELAY

    # Not a nanosecond early: org 1's slots are free but its requests wait out the delay.
    for g in org1_running:
        d.ack(g.lease)
    d.ack(grants[0].lease)
    assert ids(d.dispatch()) == [102]
    d.advance(DELAY - 0.001)
    assert d.dispatch() == []
    d.advance(0.001)
    assert ids(d.dispatch()) == list(range(13, 25)), "back in their original order, cap 12"


def test_batch_is_exempt_from_extended_delay() -> None:
    d, _ = _peek_set_full_of_org1("batch")

    assert d.dispatch(1) == [], "org 2 is outside the peek set and the peek set stays put"

    assert d.take_events() == []
    stats = d.stats()
    assert (stats["queued"], stats["delayed"], stats["extended_delays"]) == (17, 0, 0)
    for position, i in enumerate(range(13, 28)):
        assert d.locate(i)["state"] == "queued"
        assert d.locate(i)["ahead_in_queue"] == position


def test_fair_share_never_delays_a_capped_backlog() -> None:
    d = seed_dispatcher(policy="fair_share")
    d.enqueue_many([(i, "org-1", "future") for i in range(1, 28)])
    assert len(d.dispatch(12)) == 12
    d.enqueue(101, "org-2")

    assert ids(d.dispatch()) == [101]
    assert d.stats()["delayed"] == 0
    assert d.take_events() == []


# ----- leases ------------------------------------------------------------------------


def test_lease_expiry_redelivers_as_attempt_two_and_retires_the_old_lease() -> None:
    d = Dispatcher(policy="peek_set", lease=30.0, virtual_time=0.0)
    d.enqueue(7, "org-1")
    (first,) = d.dispatch()
    assert (first.id, first.attempt, first.expires_at) == (7, 1, 30.0)

    d.advance(29.0)
    assert d.dispatch() == [], "still leased"
    d.advance(1.0)
    (second,) = d.dispatch()

    assert (second.id, second.org, second.attempt) == (7, "org-1", 2)
    assert second.lease != first.lease
    assert second.expires_at == 60.0
    events = d.take_events()
    assert events == [{"event": "lease_expired", "org": "org-1", "kind": "future", "id": 7, "attempt": 1}]
    before = d.stats()
    with pytest.raises(UnknownLease):
        d.ack(first.lease)
    assert d.stats() == before
    assert d.ack(second.lease).id == 7
    stats = d.stats()
    assert (stats["dispatched"], stats["released"], stats["expired"], stats["acked"]) == (2, 2, 1, 1)
    assert not d.holds(7)


def test_heartbeat_keeps_a_lease_alive() -> None:
    d = Dispatcher(lease=30.0, virtual_time=0.0)
    d.enqueue(1, "org-1")
    (g,) = d.dispatch()
    d.advance(20.0)
    assert d.heartbeat(g.lease) == 50.0
    d.advance(20.0)
    assert d.dispatch() == []
    assert d.locate(1)["state"] == "running"
    d.ack(g.lease)


def test_a_grant_gone_before_it_ran_leaves_and_is_not_charged() -> None:
    """A worker whose claim found its grant's job taken by another worker releases it
    with gone(): the org is not charged for a slot that ran nothing, so it keeps its turn."""
    for release, next_id in (("ack", 3), ("gone", 2)):
        d = Dispatcher(policy="fair_share", slots=1, virtual_time=0.0)
        d.enqueue_many([(1, "org-a", "future"), (2, "org-a", "future"), (3, "org-b", "future")])
        (g,) = d.dispatch()
        d.advance(1.0)
        assert getattr(d, release)(g.lease).run_time == 1.0
        assert not d.holds(1)
        assert ids(d.dispatch()) == [next_id], release
        assert d.stats()["gone"] == (release == "gone")


# ----- bad input: a typed error, and nothing changes ------------------------------------


def _busy(policy: str = "peek_set") -> tuple[Dispatcher, list[Any]]:
    """A dispatcher with requests queued, delayed and running, and one acked lease."""
    d = Dispatcher(policy=policy, slots=3, cap=2, virtual_time=10.0)
    d.enqueue_many([(1, "org-1", "future"), (2, "org-1", "future"), (3, "org-2", "batch"), (4, "org-1", "future")])
    d.enqueue(5, "org-2", "queueable", run_at=100.0)
    grants = d.dispatch(2)
    d.ack(grants[0].lease)
    return d, grants


def _snapshot(d: Dispatcher) -> tuple[Any, ...]:
    return (
        d.stats(),
        {i: d.locate(i) for i in range(1, 6) if d.holds(i)},
        d.limits("org-1", "future"),
        d.next_wakeup(),
        d.now(),
    )


BAD_CALLS: list[tuple[str, type[Exception], Callable[[Dispatcher, list[Any]], object]]] = [
    ("empty org", InvalidArgument, lambda d, g: d.enqueue(10, "")),
    ("org with a newline", InvalidArgument, lambda d, g: d.enqueue(10, "org\n1")),
    ("org with NUL", InvalidArgument, lambda d, g: d.enqueue(10, "org\x001")),
    ("org with a tab", InvalidArgument, lambda d, g: d.enqueue(10, "org\t1")),
    ("org of 256 characters", InvalidArgument, lambda d, g: d.enqueue(10, "o" * 256)),
    ("unknown kind", UnknownKind, lambda d, g: d.enqueue(10, "org-1", "cron")),
    ("kind with other case", UnknownKind, lambda d, g: d.enqueue(10, "org-1", "Future")),
    ("negative run_at", InvalidArgument, lambda d, g: d.enqueue(10, "org-1", run_at=-1.0)),
    ("NaN run_at", InvalidArgument, lambda d, g: d.enqueue(10, "org-1", run_at=math.nan)),
    ("infinite run_at", InvalidArgument, lambda d, g: d.enqueue(10, "org-1", run_at=math.inf)),
    ("negative id", InvalidArgument, lambda d, g: d.enqueue(-1, "org-1")),
    ("id above 2**64 - 1", InvalidArgument, lambda d, g: d.enqueue(2**64, "org-1")),
    ("duplicate queued id", DuplicateRequest, lambda d, g: d.enqueue(4, "org-1")),
    ("duplicate running id", DuplicateRequest, lambda d, g: d.enqueue(g[1].id, "org-3")),
    ("duplicate delayed id", DuplicateRequest, lambda d, g: d.enqueue(5, "org-1")),
    ("ack of a never-issued lease", UnknownLease, lambda d, g: d.ack(999_999)),
    ("ack of an acked lease", UnknownLease, lambda d, g: d.ack(g[0].lease)),
    ("fail of an acked lease", UnknownLease, lambda d, g: d.fail(g[0].lease)),
    ("retry of an acked lease", UnknownLease, lambda d, g: d.retry(g[0].lease, 20.0)),
    ("heartbeat of an acked lease", UnknownLease, lambda d, g: d.heartbeat(g[0].lease)),
    ("ack of a negative lease", InvalidArgument, lambda d, g: d.ack(-1)),
    ("ack_many with one acked lease", UnknownLease, lambda d, g: d.ack_many([g[1].lease, g[0].lease])),
    ("cap 0", InvalidArgument, lambda d, g: d.set_limits("org-1", "future", cap=0)),
    ("negative cap", InvalidArgument, lambda d, g: d.set_limits("org-1", "future", cap=-1)),
    ("min above cap", InvalidArgument, lambda d, g: d.set_limits("org-1", "future", cap=2, min=3)),
    ("min above the current cap", InvalidArgument, lambda d, g: d.set_limits("org-1", "future", min=3)),
    ("NaN weight", InvalidArgument, lambda d, g: d.set_limits("org-1", "future", weight=math.nan)),
    ("weight 0", InvalidArgument, lambda d, g: d.set_limits("org-1", "future", weight=0.0)),
    ("weight -1", InvalidArgument, lambda d, g: d.set_limits("org-1", "future", weight=-1.0)),
    ("infinite weight", InvalidArgument, lambda d, g: d.set_limits("org-1", "future", weight=math.inf)),
    ("limits of an unknown kind", UnknownKind, lambda d, g: d.set_limits("org-1", "cron", cap=3)),
    ("default cap 0", InvalidArgument, lambda d, g: d.set_default_limits("future", cap=0)),
    ("capacity 1.5", InvalidArgument, lambda d, g: d.set_capacity(1.5)),
    ("capacity NaN", InvalidArgument, lambda d, g: d.set_capacity(math.nan)),
    ("capacity -0.1", InvalidArgument, lambda d, g: d.set_capacity(-0.1)),
    ("slots 0", InvalidArgument, lambda d, g: d.set_slots(0)),
    ("retry at NaN", InvalidArgument, lambda d, g: d.retry(g[1].lease, math.nan)),
    ("advance by a negative time", InvalidArgument, lambda d, g: d.advance(-1.0)),
    ("dispatch a negative number", InvalidArgument, lambda d, g: d.dispatch(-1)),
    (
        "enqueue_many with one unknown kind",
        UnknownKind,
        lambda d, g: d.enqueue_many([(10, "org-1", "future"), (11, "org-9", "cron"), (12, "org-1", "future")]),
    ),
    (
        "enqueue_many with one empty org",
        InvalidArgument,
        lambda d, g: d.enqueue_many([(10, "org-1", "future"), (11, "", "future")]),
    ),
    (
        "enqueue_many with one duplicate id",
        DuplicateRequest,
        lambda d, g: d.enqueue_many([(10, "org-1", "future"), (4, "org-9", "future")]),
    ),
    (
        "enqueue_many repeating an id",
        DuplicateRequest,
        lambda d, g: d.enqueue_many([(10, "org-1", "future"), (10, "org-1", "future")]),
    ),
    (
        "enqueue_many with one malformed tuple",
        InvalidArgument,
        lambda d, g: d.enqueue_many([(10, "org-1", "future"), (11, "org-1")]),  # type: ignore[list-item]
    ),
    (
        "enqueue_many with one negative id",
        InvalidArgument,
        lambda d, g: d.enqueue_many([(10, "org-1", "future"), (-11, "org-1", "future")]),
    ),
    (
        "enqueue_many with one NaN run_at",
        InvalidArgument,
        lambda d, g: d.enqueue_many([(10, "org-1", "future"), (11, "org-1", "future", math.nan)]),
    ),
]


@pytest.mark.parametrize("policy", ["peek_set", "fair_share"])
@pytest.mark.parametrize(("case", "error", "call"), BAD_CALLS, ids=[c[0] for c in BAD_CALLS])
def test_bad_input_raises_a_typed_error_and_changes_nothing(
    policy: str, case: str, error: type[Exception], call: Callable[[Dispatcher, list[Any]], object]
) -> None:
    d, grants = _busy(policy)
    before = _snapshot(d)

    with pytest.raises(error) as raised:
        call(d, grants)

    assert isinstance(raised.value, FairQueueError)
    assert str(raised.value), "the message says what was wrong"
    assert _snapshot(d) == before
    # Nothing half-done either: none of the ids a failed enqueue named is held.
    assert not any(d.holds(i) for i in (10, 11, 12))


BAD_CONFIGS: list[tuple[str, type[Exception], dict[str, Any]]] = [
    ("unknown policy", UnknownPolicy, {"policy": "round_robin"}),
    ("empty policy", UnknownPolicy, {"policy": ""}),
    ("cap 0", InvalidArgument, {"cap": 0}),
    ("negative cap", InvalidArgument, {"cap": -3}),
    ("min above cap", InvalidArgument, {"cap": 2, "min": 3}),
    ("weight NaN", InvalidArgument, {"weight": math.nan}),
    ("weight 0", InvalidArgument, {"weight": 0.0}),
    ("weight -1", InvalidArgument, {"weight": -1.0}),
    ("slots 0", InvalidArgument, {"slots": 0}),
    ("peek set 0", InvalidArgument, {"peek_set": 0}),
    ("negative lease", InvalidArgument, {"lease": -1.0}),
    ("NaN virtual time", InvalidArgument, {"virtual_time": math.nan}),
    ("negative virtual time", InvalidArgument, {"virtual_time": -5.0}),
    ("extended delay of an unknown kind", UnknownKind, {"extended_delay": {"cron": 60.0}}),
    ("negative extended delay", InvalidArgument, {"extended_delay": {"future": -60.0}}),
    ("negative kind slots", InvalidArgument, {"kind_slots": {"batch": -1}}),
]


@pytest.mark.parametrize(("case", "error", "kwargs"), BAD_CONFIGS, ids=[c[0] for c in BAD_CONFIGS])
def test_bad_configuration_is_refused(case: str, error: type[Exception], kwargs: dict[str, Any]) -> None:
    with pytest.raises(error):
        Dispatcher(**kwargs)


def test_capacity_below_one_leaves_slots_unfilled() -> None:
    d = Dispatcher(slots=10, cap=10, virtual_time=0.0)
    d.enqueue_many([(i, "org-1", "future") for i in range(20)])
    d.set_capacity(0.55)
    assert len(d.dispatch()) == 5
    assert d.stats()["effective_slots"] == 5


def test_bad_input_errors_are_also_builtin_errors() -> None:
    """Callers who do not know fairqueue's classes can still catch the usual builtins."""
    d = Dispatcher(virtual_time=0.0)
    with pytest.raises(ValueError):
        d.enqueue(1, "")
    with pytest.raises(LookupError):
        d.ack(12345)


@pytest.mark.parametrize("many", [False, True])
def test_a_refused_enqueue_does_not_register_its_org(many: bool) -> None:
    d = Dispatcher(virtual_time=0.0)
    d.enqueue(1, "org-a")
    with pytest.raises(DuplicateRequest):
        if many:
            d.enqueue_many([(2, "ghost", "future"), (1, "org-a", "future")])
        else:
            d.enqueue(1, "ghost")
    with pytest.raises(InvalidArgument):
        d.pair_stats("ghost", "future")
