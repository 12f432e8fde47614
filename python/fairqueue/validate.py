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
    "check_enum",
    "check_id",
    "check_int",
    "check_kind",
    "check_limit",
    "check_name",
    "check_number",
    "check_org",
    "check_policy",
    "check_seconds",
    "check_timezone",
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

_SHOWN = 80
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
        return _core.check_name(value, what)
    except InvalidArgument:
        raise InvalidArgument(f"invalid {what} {shown(value)}: expected {NAME_RULE}") from None


def check_org(org: object) -> str:
    """Returns ``org`` if it can name a tenant (see :data:`NAME_RULE`)."""
    return check_name(org, "org")


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
