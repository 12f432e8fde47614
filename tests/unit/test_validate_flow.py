"""The checks of a job's key, priority, cost and queue, and of a worker's queues:
each error names the value, the limit and what to do."""

from __future__ import annotations

import pytest

from fairqueue.errors import InvalidArgument
from fairqueue.validate import (
    NAME_RULE,
    check_cost,
    check_flow_options,
    check_key,
    check_priority,
    check_queue,
    served_queues,
)


def refused(check: object, value: object) -> str:
    with pytest.raises(InvalidArgument) as raised:
        check(value)  # type: ignore[operator]
    return str(raised.value)


def test_a_key_follows_the_cores_name_rule() -> None:
    assert check_key("user-42") == "user-42"
    for bad in ("", " user", "a\nb", "x" * 256, 42, None):
        message = refused(check_key, bad)
        assert message.startswith("invalid key ") and NAME_RULE in message and "key='user-42'" in message, message


def test_a_queue_follows_the_name_rule_and_says_how_workers_serve_it() -> None:
    assert check_queue("reports") == "reports"
    message = refused(check_queue, "reports ")
    assert "invalid queue 'reports '" in message and NAME_RULE in message and "--queues" in message, message


@pytest.mark.parametrize("bad", [-1, 10, 5.0, True, "9", None])
def test_a_priority_is_an_int_from_0_to_9(bad: object) -> None:
    message = refused(check_priority, bad)
    assert f"invalid priority {bad!r}: expected an integer from 0 to 9" in message and "default 5" in message


@pytest.mark.parametrize("bad", [0, -3, 1_000_001, 2.5, False])
def test_a_cost_is_an_int_from_1_to_a_million(bad: object) -> None:
    message = refused(check_cost, bad)
    assert f"invalid cost {bad!r}: expected an integer from 1 to 1,000,000" in message and "rate limits" in message


def test_the_bounds_themselves_are_allowed() -> None:
    assert [check_priority(0), check_priority(9), check_cost(1), check_cost(1_000_000)] == [0, 9, 1, 1_000_000]


def test_peek_set_refuses_every_fair_share_option_at_once_and_says_why() -> None:
    assert check_flow_options("peek_set", None, 5, 1) == (None, 5, 1)
    assert check_flow_options("fair_share", "u", 9, 7) == ("u", 9, 7)
    with pytest.raises(InvalidArgument) as raised:
        check_flow_options("peek_set", "u", 9, 7)
    message = str(raised.value)
    assert message.startswith("key='u', priority=9, cost=7 refused: the queue's policy is peek_set")
    assert "reference platform's exact semantics" in message and "policy='fair_share'" in message


def test_a_workers_queues_are_a_list_of_names_or_none() -> None:
    assert served_queues(None) is None
    assert served_queues(["reports", "default", "reports"]) == ("reports", "default")
    assert served_queues({"b", "a"}) == ("a", "b")
    for bad in ("reports", [], 3):
        assert "expected a non-empty list of queue names" in refused(served_queues, bad)
    assert "invalid queue 7" in refused(served_queues, ["ok", 7])
