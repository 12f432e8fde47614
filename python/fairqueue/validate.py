"""Checks of the values users pass in, shared by every entry point.

Each check returns the value in the form the layers below use, or raises
:class:`~fairqueue.errors.InvalidArgument` naming the value and what is expected.
"""

from __future__ import annotations

import enum
import math
from datetime import timedelta
from typing import Optional, TypeVar, Union

from fairqueue.errors import InvalidArgument
from fairqueue.limits import KINDS, POLICIES, Policy

__all__ = ["check_org", "check_kind", "check_policy", "check_seconds", "check_enum", "check_limit"]

E = TypeVar("E", bound=enum.Enum)


def check_org(org: object) -> str:
    """Returns ``org`` if it can name a tenant: a str of 1 to 255 characters, none a control character."""
    if not isinstance(org, str) or not 0 < len(org) <= 255 or any(ord(c) < 32 or ord(c) == 127 for c in org):
        raise InvalidArgument(f"invalid org {org!r}: expected a string of 1 to 255 characters with no control characters")
    return org


def check_kind(kind: object) -> str:
    """Returns ``kind`` if it is one of :data:`~fairqueue.limits.KINDS`."""
    if kind not in KINDS:
        raise InvalidArgument(f"invalid kind {kind!r}: expected one of {', '.join(KINDS)}")
    assert isinstance(kind, str)
    return kind


def check_policy(policy: object) -> Policy:
    """Returns ``policy`` if it is one of :data:`~fairqueue.limits.POLICIES`."""
    for known in POLICIES:
        if policy == known:
            return known
    raise InvalidArgument(f"invalid policy {policy!r}: expected one of {', '.join(POLICIES)}")


def check_seconds(name: str, value: Union[None, float, timedelta]) -> float:
    """``value`` (seconds or a timedelta; None is 0) as seconds >= 0."""
    seconds = value.total_seconds() if isinstance(value, timedelta) else value
    if seconds is None:
        return 0.0
    if not isinstance(seconds, (int, float)) or isinstance(seconds, bool) or not math.isfinite(seconds) or seconds < 0:
        raise InvalidArgument(f"invalid {name} {value!r}: expected seconds >= 0 or a timedelta")
    return float(seconds)


def check_enum(cls: type[E], name: str, value: Union[None, str, E]) -> Optional[E]:
    """``value`` as a member of ``cls`` (None stays None); ``name`` says what it is in the error."""
    if value is None:
        return None
    try:
        return cls(value)
    except ValueError:
        raise InvalidArgument(
            f"invalid {name} {value!r}: expected one of {', '.join(str(m.value) for m in cls)}"
        ) from None


def check_limit(limit: object) -> int:
    """A listing's ``limit``: an integer >= 1."""
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
        raise InvalidArgument(f"invalid limit {limit!r}: expected an integer >= 1")
    return limit
