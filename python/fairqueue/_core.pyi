"""Type stubs of the native dispatcher core (private: import from ``fairqueue``)."""

from collections.abc import Mapping, Sequence
from typing import Any, Literal, Optional, TypedDict, Union, final

from typing_extensions import Self, disjoint_base

__all__ = ["Dispatcher", "Grant", "Release", "NAME_RULE", "check_name", "encode_payload", "simulate"]

_Policy = Literal["fair_share", "peek_set"]
_RequestTuple = Union[tuple[int, str, str], tuple[int, str, str, Optional[float]]]

class _Limits(TypedDict):
    cap: int
    min: int
    weight: float

@final
class Grant:
    """A request handed to a free slot. Run it, then ack, fail or retry its lease."""

    @property
    def lease(self) -> int: ...
    @property
    def id(self) -> int: ...
    @property
    def org(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def attempt(self) -> int: ...
    @property
    def expires_at(self) -> float: ...

@final
class Release:
    """A released slot: which request ran and for how long (seconds)."""

    @property
    def id(self) -> int: ...
    @property
    def org(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def run_time(self) -> float: ...

@disjoint_base
class Dispatcher:
    """The fair multi-tenant dispatcher, implemented in Rust.

    Args:
        policy: ``"fair_share"`` (default) or ``"peek_set"`` (the reference platform's).
        slots: worker slots on this node (at least 1).
        peek_set: how many requests at the front ``peek_set`` may scan (at least 1).
        cap: default most slots one org may hold per kind (at least 1).
        min: default slots reserved per (org, kind) under ``fair_share`` (0 to cap).
        weight: default share weight per (org, kind) under ``fair_share`` (> 0).
        extended_delay: seconds per kind name; ``None`` exempts the kind. Defaults:
            5 minutes for future, queueable and scheduled; batch exempt.
        kind_slots: global slot limit per kind name; ``None`` means no limit.
        lease: seconds a dispatched request may run without a heartbeat.
        virtual_time: if given, the dispatcher runs on a virtual clock starting
            here (seconds), moved only by ``advance`` and ``set_time``.
    """

    def __new__(
        cls,
        *,
        policy: _Policy = "fair_share",
        slots: int = 13,
        peek_set: int = 2000,
        cap: int = 12,
        min: int = 0,
        weight: float = 1.0,
        extended_delay: Optional[Mapping[str, Optional[float]]] = None,
        kind_slots: Optional[Mapping[str, Optional[int]]] = None,
        lease: float = 60.0,
        virtual_time: Optional[float] = None,
    ) -> Self: ...
    @property
    def policy(self) -> str: ...
    def enqueue(self, id: int, org: str, kind: str = "future", run_at: Optional[float] = None) -> None:
        """Enqueues one request; ``run_at`` (seconds) delays it."""
    def enqueue_many(self, requests: Sequence[_RequestTuple], *, skip_held: bool = False) -> int:
        """Enqueues ``(id, org, kind[, run_at])`` tuples, all or none; returns how many.

        With ``skip_held``, ids the dispatcher already holds are passed over instead of refused.
        """
    def holds(self, id: int) -> bool:
        """True while request ``id`` is queued, delayed or running."""
    def dispatch(self, max: Optional[int] = None) -> list[Grant]:
        """Fills up to ``max`` free slots (all free slots when None)."""
    def ack(self, lease: int) -> Release:
        """The request under ``lease`` is done."""
    def ack_many(self, leases: Sequence[int]) -> int:
        """Acks many leases, all or none; returns how many."""
    def fail(self, lease: int) -> Release:
        """The request under ``lease`` failed for good."""
    def retry(self, lease: int, at: float) -> Release:
        """The request under ``lease`` failed; deliver it again at ``at`` (seconds)."""
    def heartbeat(self, lease: int) -> float:
        """Extends ``lease``; returns its new expiry (seconds)."""
    def abort(self, id: int) -> Optional[int]:
        """Removes a queued or delayed request (None), or returns the lease of a running one."""
    def locate(self, id: int) -> dict[str, object]:
        """Where request ``id`` is: ``{"state": "queued" | "delayed" | "running", ...}``."""
    def set_limits(
        self,
        org: str,
        kind: str,
        *,
        cap: Optional[int] = None,
        min: Optional[int] = None,
        weight: Optional[float] = None,
    ) -> None:
        """Sets one (org, kind) pair's limits, live; omitted ones keep their value."""
    def limits(self, org: str, kind: str) -> _Limits:
        """The limits of one (org, kind) pair."""
    def set_default_limits(self, kind: str, *, cap: int, min: int = 0, weight: float = 1.0) -> None:
        """Sets the limits of every pair of ``kind`` without an override."""
    def set_slots(self, slots: int) -> None:
        """Sets the number of worker slots."""
    def set_kind_slots(self, kind: str, slots: Optional[int]) -> None:
        """Sets a kind's global slot limit (None: no limit; 0 pauses the kind)."""
    def set_capacity(self, capacity: float) -> None:
        """Sets the capacity factor (0 to 1) from resource conservation."""
    def stats(self) -> dict[str, Union[int, float]]:
        """Queue-wide figures and lifetime counters."""
    def pair_stats(self, org: str, kind: str) -> dict[str, object]:
        """Figures of one (org, kind) pair."""
    def take_events(self) -> list[dict[str, object]]:
        """Events since the last call (extended delays, expired leases), oldest first."""
    def next_wakeup(self) -> Optional[float]:
        """When a delayed request becomes due or a lease expires next (seconds)."""
    def now(self) -> float:
        """The dispatcher's current time (seconds)."""
    def advance(self, seconds: float) -> None:
        """Moves a virtual clock forward."""
    def set_time(self, t: float) -> None:
        """Sets a virtual clock (never backwards)."""

def simulate(
    scenario: str,
    policy: str = "fair_share",
    *,
    flood: Optional[int] = None,
    seed: int = 1,
    horizon: Optional[float] = None,
) -> dict[str, Any]:
    """Runs a built-in scenario (``seed``, ``seed-extended``, ``noisy``, ``two-orgs``,
    ``weighted``) on the dispatcher with a virtual clock.

    ``policy`` is ``fair_share``, ``peek_set``, ``fifo`` (one queue, same caps) or
    ``fifo_uncapped``. Returns the report: ``orgs`` and ``groups`` rows with wait
    percentiles (seconds), ``makespan``, ``extended_delays``, ``series`` of pending
    requests per org, and ``table``, a rendered text table.
    """

def encode_payload(payload: object, place: str, max_bytes: int, /) -> str:
    """The JSON text of ``payload`` (UTF-8, no spaces), refusing what JSON cannot carry
    faithfully and payloads over ``max_bytes``.

    Raises ``NotSerializable`` naming the first refused value, as ``place`` plus the
    path to it, and ``LimitExceeded`` naming the size and the limit.
    """

NAME_RULE: str
"""What an org, a key, a schedule name or a duplicate signature may be, in words."""

def check_name(value: object, what: str = "org") -> str:
    """``value`` if it is a name within :data:`NAME_RULE`; ``what`` (``"org"``, ``"key"``,
    ``"schedule name"`` or ``"duplicate signature"``) names it in the error.

    Raises ``InvalidArgument`` naming the value and the rule (for a non-str or a str
    with a lone surrogate too).
    """
