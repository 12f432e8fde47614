"""A queue's settings: its policy, its limits, and the per-org overrides of both.

One :class:`QueueSettings` belongs to an app; the layers below it (enqueue,
explain, alerts, the worker, test mode) receive it rather than the app, and read
it when they act, so a change made through the app applies to what they do next.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, Optional

from fairqueue.errors import InvalidArgument
from fairqueue.kinds import Policy
from fairqueue.limits import Limits
from fairqueue.validate import MAX_ID, check_kind, check_org, check_policy, shown

__all__ = ["QueueSettings"]


class QueueSettings:
    """The policy, the limits and the per-org overrides of one queue.

    Args:
        policy: ``"fair_share"`` or ``"peek_set"``.
        limits: the queue's limits; the reference defaults if omitted.
    """

    def __init__(self, policy: Policy = "fair_share", limits: Optional[Limits] = None) -> None:
        self.policy: Policy = check_policy(policy)
        self.limits = limits or Limits()
        self._pairs: dict[tuple[str, str], dict[str, Any]] = {}
        self._daily: dict[str, int] = {}

    # ----- per (org, kind): cap, minimum, weight ------------------------------------------

    def set_pair(
        self, org: str, kind: str, *, cap: Optional[int] = None, min: Optional[int] = None, weight: Optional[float] = None
    ) -> None:
        """Overrides one (org, kind) pair's cap, reserved minimum or weight (the others keep their value)."""
        check_org(org)
        check_kind(kind)
        merged = self.pair(org, kind)
        merged.update({k: v for k, v in (("cap", cap), ("min", min), ("weight", weight)) if v is not None})
        # Limits validates the same three values with the same messages.
        Limits(cap=merged["cap"], min=merged["min"], weight=merged["weight"])
        self._pairs[(org, kind)] = merged

    def pair(self, org: str, kind: str) -> dict[str, Any]:
        """``{"cap", "min", "weight"}`` of one (org, kind) pair: its overrides, else the defaults."""
        defaults = {"cap": self.limits.cap, "min": self.limits.min, "weight": self.limits.weight}
        return {**defaults, **self._pairs.get((org, kind), {})}

    def pairs(self) -> Iterator[tuple[tuple[str, str], dict[str, Any]]]:
        """Every overridden pair with its values."""
        return iter(list(self._pairs.items()))

    def cap(self, org: str, kind: str) -> int:
        """The most ``kind`` slots ``org`` may hold at once, across every worker."""
        cap: int = self.pair(org, kind)["cap"]
        return cap

    # ----- per org: daily executions -------------------------------------------------------

    def set_daily_limit(self, org: str, executions: int) -> None:
        """Sets how many async executions ``org`` may have in any rolling 24 hours."""
        check_org(org)
        if not isinstance(executions, int) or isinstance(executions, bool) or not 0 <= executions <= MAX_ID:
            raise InvalidArgument(
                f"invalid daily limit {shown(executions)} for org {org!r}: expected an integer from 0 to {MAX_ID:,}"
            )
        self._daily[org] = executions

    def daily_limit(self, org: str) -> int:
        """The most async executions ``org`` may have in any rolling 24 hours."""
        return self._daily.get(org, self.limits.daily_executions)

    def daily_limits(self, orgs: Iterable[str]) -> dict[str, int]:
        """The daily limit of each of ``orgs`` (what the store checks an enqueue against)."""
        return {org: self.daily_limit(org) for org in set(orgs)}

    def clear_overrides(self) -> None:
        """Forgets every per-org override (back to the queue's limits)."""
        self._pairs.clear()
        self._daily.clear()
