"""Limits (SPEC §4): what one org and one queue may do, with the reference defaults.

Exceeding a limit at enqueue raises :class:`~fairqueue.errors.LimitExceeded` and
changes nothing; at run time it fails that job only.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal, Optional

from fairqueue.errors import InvalidArgument

__all__ = ["Limits", "KINDS", "POLICIES", "Policy", "DEFAULT_SCOPE", "MAX_SCOPE"]

KINDS = ("future", "queueable", "batch", "scheduled")
"""The request kinds; limits are kept per org and per kind."""

Policy = Literal["fair_share", "peek_set"]
POLICIES: tuple[Policy, ...] = ("fair_share", "peek_set")
"""The flow-control policies; ``fair_share`` is the default."""

DEFAULT_SCOPE = 200
"""Records per batch chunk unless the batch asks for another size."""
MAX_SCOPE = 2000
"""The most records one batch chunk may hold."""

_MINUTE = 60.0


def _per_kind(value: Mapping[str, Optional[float]], name: str) -> dict[str, Optional[float]]:
    unknown = sorted(set(value) - set(KINDS))
    if unknown:
        raise InvalidArgument(f"invalid {name} kind {unknown[0]!r}: expected one of {', '.join(KINDS)}")
    return dict(value)


@dataclass(frozen=True)
class Limits:
    """Every configurable limit of a queue, with the reference platform's defaults.

    Args:
        slots: worker slots per worker process.
        cap: most slots one org may hold at once, per kind.
        min: slots reserved per (org, kind) under ``fair_share``.
        weight: share weight per (org, kind) under ``fair_share``.
        peek_set: how far ``peek_set`` scans past a capped org's head.
        extended_delay: seconds per kind; None exempts the kind (batch).
        kind_slots: global slot limit per kind; missing or None means no limit.
        futures_per_transaction: futures one transaction may enqueue.
        queueables_per_sync_transaction: queueables a ``with app.transaction()`` block may enqueue.
        queueables_per_async_transaction: queueables a running job may enqueue (chaining).
        max_chain_depth: deepest chain allowed, None for unlimited; a job's options may lower it.
        max_delay: longest enqueue delay, seconds (10 minutes).
        max_payload_bytes: largest JSON payload of one job.
        timeouts: seconds a handler may run, per kind.
        lease: seconds a worker holds a job without a heartbeat before it is re-delivered.
        max_attempts: deliveries before a job whose worker keeps dying is failed.
        finalizer_requeues: consecutive re-enqueues a finalizer may make.
        daily_executions: async executions (jobs stored) one org may have in any
            rolling 24 hours; per-org overrides with :meth:`FairQueue.set_daily_limit`.
        schedules_per_org: schedules (``app.schedule``) one org may have waiting.
    """

    slots: int = 13
    cap: int = 12
    min: int = 0
    weight: float = 1.0
    peek_set: int = 2000
    extended_delay: Mapping[str, Optional[float]] = field(
        default_factory=lambda: {"future": 5 * _MINUTE, "queueable": 5 * _MINUTE, "batch": None, "scheduled": 5 * _MINUTE}
    )
    kind_slots: Mapping[str, Optional[int]] = field(default_factory=dict)
    futures_per_transaction: int = 50
    queueables_per_sync_transaction: int = 50
    queueables_per_async_transaction: int = 1
    max_chain_depth: Optional[int] = None
    max_delay: float = 10 * _MINUTE
    max_payload_bytes: int = 1 << 20
    timeouts: Mapping[str, float] = field(
        default_factory=lambda: {"future": 300.0, "queueable": 300.0, "batch": 600.0, "scheduled": 300.0}
    )
    lease: float = 60.0
    max_attempts: int = 3
    finalizer_requeues: int = 5
    daily_executions: int = 250_000
    schedules_per_org: int = 100

    def __post_init__(self) -> None:
        for name in ("slots", "cap", "peek_set", "max_payload_bytes", "max_attempts", "daily_executions",
                     "schedules_per_org"):  # fmt: skip
            self._check_int(name, 1)
        for name in ("min", "futures_per_transaction", "queueables_per_sync_transaction",
                     "queueables_per_async_transaction", "finalizer_requeues"):  # fmt: skip
            self._check_int(name, 0)
        if self.max_chain_depth is not None:
            self._check_int("max_chain_depth", 0)
        if self.min > self.cap:
            raise InvalidArgument(f"invalid min {self.min}: expected at most the cap ({self.cap})")
        for name in ("weight", "lease", "max_delay"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise InvalidArgument(f"invalid {name} {value!r}: expected a finite number greater than 0")
        delays = _per_kind(self.extended_delay, "extended_delay")
        for kind, delay in delays.items():
            if delay is not None and (not math.isfinite(delay) or delay < 0):
                raise InvalidArgument(f"invalid extended_delay[{kind!r}] {delay!r}: expected seconds >= 0 or None")
        for kind, slots in _per_kind(self.kind_slots, "kind_slots").items():
            if slots is not None and (not isinstance(slots, int) or slots < 0):
                raise InvalidArgument(f"invalid kind_slots[{kind!r}] {slots!r}: expected 0 or more slots, or None")
        timeouts = _per_kind(self.timeouts, "timeouts")
        for kind in KINDS:
            value = timeouts.get(kind)
            if value is None or not math.isfinite(value) or value <= 0:
                raise InvalidArgument(f"invalid timeouts[{kind!r}] {value!r}: expected seconds > 0 for every kind")

    def _check_int(self, name: str, least: int) -> None:
        value = getattr(self, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < least:
            raise InvalidArgument(f"invalid {name} {value!r}: expected an integer >= {least}")
