"""Checks of the values users pass in, shared by every entry point.

Each check returns the value in the form the layers below use, or raises
:class:`~fairqueue.errors.InvalidArgument` naming the value (as :func:`shown`
prints it) and what is expected. Names — orgs, keys, schedule names, duplicate
signatures — follow one rule, the core's own (``fairqueue._core.check_name``),
so nothing the API accepts is refused later by a worker.
"""

from __future__ import annotations

import enum
import math
import re
from datetime import timedelta
from typing import Optional, TypeVar, Union
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from fairqueue import _core
from fairqueue.errors import InvalidArgument
from fairqueue.kinds import KINDS, POLICIES, Policy

__all__ = [
    "MAX_ID",
    "MAX_SECONDS",
    "U32_MAX",
    "NAME_RULE",
    "DEFAULT_COST",
    "DEFAULT_PRIORITY",
    "DEFAULT_QUEUE",
    "MAX_COST",
    "MAX_PRIORITY",
    "check_cost",
    "check_enum",
    "check_flow_options",
    "check_id",
    "check_int",
    "check_kind",
    "check_limit",
    "check_name",
    "check_number",
    "check_org",
    "check_key",
    "check_policy",
    "check_priority",
    "check_queue",
    "check_seconds",
    "check_timezone",
    "served_queues",
    "shown",
]

E = TypeVar("E", bound=enum.Enum)

NAME_RULE: str = _core.NAME_RULE
"""What an org, key, schedule name or duplicate signature may be."""

MAX_ID = 2**63 - 1
"""The largest job or schedule id a store can hold (a signed 64-bit integer)."""
U32_MAX = 2**32 - 1
"""The largest count of slots the dispatcher core holds (an unsigned 32-bit integer)."""
MAX_SECONDS = 10 * 365 * 24 * 3600.0
"""The longest duration (leases, timeouts, delays) the core's nanosecond clock is given: ten years."""

DEFAULT_QUEUE = "default"
"""The named queue a job waits in unless its declaration or its enqueue names another."""
DEFAULT_PRIORITY = 5
"""A job's priority unless given: the middle of 0 to :data:`MAX_PRIORITY`."""
MAX_PRIORITY = 9
"""The highest priority (0 is the lowest); higher starts sooner within its own line."""
DEFAULT_COST = 1
"""The units a job's rate limits are charged unless given."""
MAX_COST = 1_000_000
"""The most units one job may cost (the core's bound)."""

_SHOWN = 80
# The kinds of name the core's own check_name says in its errors; ours may say others.
_CORE_WHATS = ("org", "key", "schedule name", "duplicate signature")
_ZONE = re.compile(r"[A-Za-z0-9_+\-]+(/[A-Za-z0-9_+\-]+)*")


def shown(value: object) -> str:
    """``repr(value)`` for an error message: at most 80 characters, and never an
    exception of its own (a user's ``__repr__`` may raise; a huge int cannot print)."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 64:
        return f"an integer of {value.bit_length()} bits"
    try:
        text = repr(value)
    except Exception:
        return f"a {type(value).__qualname__} (its repr raised)"
    if not isinstance(text, str):
        return f"a {type(value).__qualname__}"
    return text if len(text) <= _SHOWN else f"{text[:_SHOWN]}… ({len(text)} characters)"


def check_name(value: object, what: str = "org") -> str:
    """Returns ``value`` if it is a name within :data:`NAME_RULE`; ``what`` says which
    kind of name (``"org"``, ``"key"``, ``"schedule name"``, ``"duplicate signature"``)."""
    if not isinstance(value, str):
        raise InvalidArgument(f"invalid {what} {shown(value)}: expected a str of {NAME_RULE}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        raise InvalidArgument(
            f"invalid {what} {shown(value)}: character {e.start} is a lone surrogate, which is not Unicode text; "
            f"expected {NAME_RULE}"
        ) from None
    try:
        return _core.check_name(value, what if what in _CORE_WHATS else "key")
    except InvalidArgument:
        raise InvalidArgument(f"invalid {what} {shown(value)}: expected {NAME_RULE}") from None


def check_org(org: object) -> str:
    """Returns ``org`` if it can name a tenant (see :data:`NAME_RULE`)."""
    return check_name(org, "org")


def check_key(key: object) -> str:
    """Returns ``key`` if it can be a concurrency key (see :data:`NAME_RULE`): a user,
    an integration, a resource — any short name."""
    try:
        return check_name(key, "key")
    except InvalidArgument as e:
        raise InvalidArgument(f"{e}; a concurrency key names whom the job's work is for, e.g. key='user-42'") from None


def check_queue(queue: object) -> str:
    """Returns ``queue`` if it can name a queue (see :data:`NAME_RULE`), e.g. ``"reports"``."""
    try:
        return check_name(queue, "queue")
    except InvalidArgument as e:
        raise InvalidArgument(f"{e}; a queue is a name such as 'reports' that workers serve "
                              "(fairqueue worker APP --queues reports,default)") from None  # fmt: skip


def served_queues(queues: object) -> Optional[tuple[str, ...]]:
    """What a worker's ``queues=`` serves: None (every queue), or the named queues
    (a non-empty list or tuple of names; a lone str is refused, being one name's letters)."""
    if queues is None:
        return None
    if isinstance(queues, str) or not isinstance(queues, (list, tuple, set, frozenset)) or not queues:
        raise InvalidArgument(
            f"invalid queues {shown(queues)}: expected a non-empty list of queue names, e.g. queues=['reports', "
            "'default'] (or None to serve every queue)"
        )
    names = [check_queue(q) for q in queues]
    # A set has no order of its own: sorted, so the registry shows the same for the same set.
    return tuple(sorted(set(names)) if isinstance(queues, (set, frozenset)) else dict.fromkeys(names))


def check_priority(priority: object) -> int:
    """Returns ``priority`` if it is an int from 0 to :data:`MAX_PRIORITY`."""
    if not isinstance(priority, int) or isinstance(priority, bool) or not 0 <= priority <= MAX_PRIORITY:
        raise InvalidArgument(
            f"invalid priority {shown(priority)}: expected an integer from 0 to {MAX_PRIORITY} "
            f"(higher starts sooner within its org's own line; default {DEFAULT_PRIORITY})"
        )
    return priority


def check_cost(cost: object) -> int:
    """Returns ``cost`` if it is an int from 1 to :data:`MAX_COST`."""
    if not isinstance(cost, int) or isinstance(cost, bool) or not 1 <= cost <= MAX_COST:
        raise InvalidArgument(
            f"invalid cost {shown(cost)}: expected an integer from 1 to {MAX_COST:,} (the units its rate limits "
            f"are charged, e.g. the API calls the job makes; default {DEFAULT_COST})"
        )
    return cost


def check_flow_options(policy: str, key: object, priority: object, cost: object) -> tuple[Optional[str], int, int]:
    """``(key, priority, cost)`` checked, and allowed under ``policy``: ``peek_set`` keeps
    the reference platform's exact semantics, so it refuses a key, a priority other than
    :data:`DEFAULT_PRIORITY` and a cost other than :data:`DEFAULT_COST` (the core refuses
    them too; refusing at the enqueue tells the caller, not a worker's log)."""
    checked_key = None if key is None else check_key(key)
    checked_priority, checked_cost = check_priority(priority), check_cost(cost)
    if policy == "peek_set":
        given = [f"{name}={shown(value)}" for name, value, default in
                 (("key", checked_key, None), ("priority", checked_priority, DEFAULT_PRIORITY),
                  ("cost", checked_cost, DEFAULT_COST)) if value != default]  # fmt: skip
        if given:
            raise InvalidArgument(
                f"{', '.join(given)} refused: the queue's policy is peek_set, which keeps the reference platform's "
                "exact semantics; keys, priorities and rate limits (and so costs) are fair_share features. Drop "
                "them, or use FairQueue(policy='fair_share')"
            )
    return checked_key, checked_priority, checked_cost


def check_kind(kind: object) -> str:
    """Returns ``kind`` if it is one of :data:`~fairqueue.limits.KINDS`."""
    for known in KINDS:
        if kind == known:
            return known
    raise InvalidArgument(f"invalid kind {shown(kind)}: expected one of {', '.join(KINDS)}")


def check_policy(policy: object) -> Policy:
    """Returns ``policy`` if it is one of :data:`~fairqueue.limits.POLICIES`."""
    for known in POLICIES:
        if policy == known:
            return known
    raise InvalidArgument(f"invalid policy {shown(policy)}: expected one of {', '.join(POLICIES)}")


def check_int(name: str, value: object, least: int, most: int) -> int:
    """``value`` if it is an int (not a bool) from ``least`` to ``most``."""
    if not isinstance(value, int) or isinstance(value, bool) or not least <= value <= most:
        raise InvalidArgument(f"invalid {name} {shown(value)}: expected an integer from {least:,} to {most:,}")
    return value


def check_id(name: str, value: object) -> int:
    """A job or schedule id: an integer from 1 to :data:`MAX_ID`."""
    return check_int(name, value, 1, MAX_ID)


def check_number(name: str, value: object, *, least: float = 0.0, most: float = math.inf, above: bool = False) -> float:
    """``value`` as a finite float from ``least`` (or above it, with ``above``) to ``most``."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            number = float(value)
        except OverflowError:
            number = math.inf
        if math.isfinite(number) and (number > least if above else number >= least) and number <= most:
            return number
    bound = f"greater than {least:g}" if above else f"at least {least:g}"
    upper = f" and at most {most:g}" if math.isfinite(most) else ""
    raise InvalidArgument(f"invalid {name} {shown(value)}: expected a finite number {bound}{upper}")


def check_seconds(name: str, value: Union[None, float, timedelta]) -> float:
    """``value`` (seconds or a timedelta; None is 0) as seconds >= 0."""
    if value is None:
        return 0.0
    if isinstance(value, timedelta):
        return check_number(name, value.total_seconds())
    try:
        return check_number(name, value)
    except InvalidArgument:
        raise InvalidArgument(f"invalid {name} {shown(value)}: expected seconds >= 0 or a timedelta") from None


def check_timezone(zone: object) -> ZoneInfo:
    """The zone named ``zone`` if it is an IANA time zone name this machine knows
    (``"UTC"``, ``"Europe/Berlin"``)."""
    if not isinstance(zone, str):
        raise InvalidArgument(f"the time zone is an IANA name such as 'Europe/Berlin', not {shown(zone)}")
    # The name becomes a file path inside the zone database: only its own characters.
    if len(zone) <= 64 and _ZONE.fullmatch(zone):
        try:
            return ZoneInfo(zone)
        except (ZoneInfoNotFoundError, ValueError, OSError):
            pass
    raise InvalidArgument(
        f"unknown time zone {shown(zone)}: expected an IANA name such as 'Europe/Berlin' (install tzdata if none is known)"
    )


def check_enum(cls: type[E], name: str, value: Union[None, str, E]) -> Optional[E]:
    """``value`` as a member of ``cls`` (None stays None); ``name`` says what it is in the error."""
    if value is None or isinstance(value, cls):
        return value
    try:
        if isinstance(value, str):
            return cls(value)
    except ValueError:
        pass
    raise InvalidArgument(
        f"invalid {name} {shown(value)}: expected one of {', '.join(str(m.value) for m in cls)}"
    )


def check_limit(limit: object) -> int:
    """A listing's ``limit``: an integer from 1 up."""
    return check_int("limit", limit, 1, MAX_ID)
