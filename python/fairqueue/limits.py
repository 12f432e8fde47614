"""Limits (SPEC §4): what one org and one queue may do, with the reference defaults.

Exceeding a limit at enqueue raises :class:`~fairqueue.errors.LimitExceeded` and
changes nothing; at run time it fails that job only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Optional, Union

from fairqueue.errors import InvalidArgument
from fairqueue.kinds import KINDS
from fairqueue.retry import DEFAULT_RETRY, RetryPolicy
from fairqueue.validate import MAX_ID, MAX_SECONDS, U32_MAX, check_int, check_number, shown

__all__ = ["Limits", "RateLimit", "DEFAULT_SCOPE", "MAX_SCOPE", "PRIORITY_AGING", "REFERENCE_CAP"]

DEFAULT_SCOPE = 200
"""Records per batch chunk unless the batch asks for another size."""
MAX_SCOPE = 2000
"""The most records one batch chunk may hold."""

_MINUTE = 60.0

REFERENCE_CAP = 12
"""The reference platform's per-org cap per kind: ``peek_set``'s default (see :attr:`Limits.cap`)."""

PRIORITY_AGING = 10.0
"""Seconds a queued job waits to rise one priority level (``fair_share``): a priority-0
job that has waited 90 s is ordered with priority-9 jobs enqueued now, so a stream of
high-priority work slows low-priority work down but never stops it."""


def _per_kind(value: object, name: str) -> dict[str, Optional[float]]:
    if not isinstance(value, Mapping):
        raise InvalidArgument(f"invalid {name} {shown(value)}: expected a mapping of kind to value")
    unknown = [k for k in value if k not in KINDS]
    if unknown:
        raise InvalidArgument(f"invalid {name} kind {shown(unknown[0])}: expected one of {', '.join(KINDS)}")
    return dict(value)


@dataclass(frozen=True)
class Limits:
    """Every configurable limit of a queue, with the reference platform's defaults.

    Args:
        slots: worker slots per worker process.
        cap: most slots one org may hold at once, per kind, across every worker; None
            (the default) means the policy's: ``peek_set`` keeps the reference
            platform's 12, ``fair_share`` has no cap — shares decide, so a tenant alone
            uses every slot of every worker, and a cap is a limit the user sets.
        min: slots reserved per (org, kind) under ``fair_share``.
        weight: share weight per (org, kind) under ``fair_share``.
        peek_set: how far ``peek_set`` scans past a capped org's head.
        extended_delay: seconds per kind; None exempts the kind (batch).
        kind_slots: global slot limit per kind; missing or None means no limit.
        futures_per_transaction: futures one transaction may enqueue.
        queueables_per_sync_transaction: queueables a ``with app.transaction()`` block may enqueue.
        queueables_per_async_transaction: queueables a running job may enqueue (chaining).
        max_chain_depth: deepest chain allowed, None for unlimited; a job's options may lower it.
        max_delay: longest enqueue delay (or ``run_at`` ahead of now), seconds: one for
            every kind, or one per kind. Default 10 minutes (the reference's) for
            queueables, batches and schedules, 7 days for futures: a future is the
            "do this later" call of a web service (a reminder tomorrow, a follow-up in
            three days); a week covers those while a far-off job, whose code may have
            changed by then, belongs in a schedule (``app.schedule``).
        max_payload_bytes: largest JSON payload of one job.
        timeouts: seconds a handler may run, per kind.
        lease: seconds a worker holds a job without a heartbeat before it is re-delivered.
        max_attempts: deliveries lost without an outcome (a dead or stalled worker;
            not handler attempts, which ``retry`` bounds) before the job is failed.
        retry: what becomes of a job whose handler raised: one
            :class:`~fairqueue.retry.RetryPolicy` for every kind, or one per kind (kinds
            left out get :data:`~fairqueue.retry.DEFAULT_RETRY`); a handler's own policy
            (``@app.future(retry=…)``, a ``retry`` class attribute) comes first.
        finalizer_requeues: consecutive re-enqueues a finalizer may make.
        daily_executions: async executions (jobs stored) one org may have in any
            rolling 24 hours; per-org overrides with :meth:`FairQueue.set_daily_limit`.
        schedules_per_org: schedules (``app.schedule``) one org may have waiting.
    """

    slots: int = 13
    cap: Optional[int] = None
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
    max_delay: Union[float, Mapping[str, float]] = field(
        default_factory=lambda: {"future": 7 * 24 * 60 * _MINUTE, "queueable": 10 * _MINUTE, "batch": 10 * _MINUTE,
                                 "scheduled": 10 * _MINUTE}  # fmt: skip
    )
    max_payload_bytes: int = 1 << 20
    timeouts: Mapping[str, float] = field(
        default_factory=lambda: {"future": 300.0, "queueable": 300.0, "batch": 600.0, "scheduled": 300.0}
    )
    lease: float = 60.0
    max_attempts: int = 3
    retry: Union[RetryPolicy, Mapping[str, RetryPolicy]] = DEFAULT_RETRY
    finalizer_requeues: int = 5
    daily_executions: int = 250_000
    schedules_per_org: int = 100

    def __post_init__(self) -> None:
        # The core keeps slot counts in 32 bits; the stores keep counts and sizes in 64.
        for name in ("slots", "peek_set"):
            check_int(name, getattr(self, name), 1, U32_MAX)
        if self.cap is not None:
            check_int("cap", self.cap, 1, U32_MAX)
        check_int("min", self.min, 0, U32_MAX)
        for name in ("max_payload_bytes", "max_attempts", "daily_executions", "schedules_per_org"):
            check_int(name, getattr(self, name), 1, MAX_ID)
        for name in ("futures_per_transaction", "queueables_per_sync_transaction",
                     "queueables_per_async_transaction", "finalizer_requeues"):  # fmt: skip
            check_int(name, getattr(self, name), 0, MAX_ID)
        if self.max_chain_depth is not None:
            check_int("max_chain_depth", self.max_chain_depth, 0, MAX_ID)
        if self.cap is not None and self.min > self.cap:
            raise InvalidArgument(f"invalid min {self.min}: expected at most the cap ({self.cap})")
        check_number("weight", self.weight, above=True, most=1e9)
        # The core counts leases in nanoseconds; below a millisecond a lease is no lease.
        check_number("lease", self.lease, least=0.001, most=MAX_SECONDS)
        if isinstance(self.max_delay, Mapping):
            given = _per_kind(self.max_delay, "max_delay")
            delays = {kind: given.get(kind, 10 * _MINUTE) for kind in KINDS}
        else:
            delays = dict.fromkeys(KINDS, self.max_delay)
        for kind, delay in delays.items():
            check_number(f"max_delay[{kind!r}]", delay, above=True, most=MAX_SECONDS)
        object.__setattr__(self, "max_delay", delays)
        for kind, delay in _per_kind(self.extended_delay, "extended_delay").items():
            if delay is not None:
                check_number(f"extended_delay[{kind!r}]", delay, most=MAX_SECONDS)
        for kind, slots in _per_kind(self.kind_slots, "kind_slots").items():
            if slots is not None:
                check_int(f"kind_slots[{kind!r}]", slots, 0, U32_MAX)
        if isinstance(self.retry, RetryPolicy):
            object.__setattr__(self, "retry", dict.fromkeys(KINDS, self.retry))
        else:
            policies: dict[str, Any] = dict(_per_kind(self.retry, "retry"))
            for kind, policy in policies.items():
                if not isinstance(policy, RetryPolicy):
                    raise InvalidArgument(f"invalid retry[{kind!r}] {shown(policy)}: expected a fairqueue.RetryPolicy")
            object.__setattr__(self, "retry", {kind: policies.get(kind, DEFAULT_RETRY) for kind in KINDS})
        timeouts = _per_kind(self.timeouts, "timeouts")
        for kind in KINDS:
            if timeouts.get(kind) is None:
                raise InvalidArgument(f"invalid timeouts[{kind!r}]: missing; give every kind a timeout in seconds")
            check_number(f"timeouts[{kind!r}]", timeouts[kind], above=True, most=MAX_SECONDS)


@dataclass(frozen=True)
class RateLimit:
    """At most ``rate`` units of cost per ``per`` seconds, in bursts of up to ``burst``
    units (default: one period's worth, at least 1) — a GCRA limit, held by the store
    across every worker and host: over any window of ``t`` seconds a scope limited so
    starts at most ``rate × t / per + burst`` units.

    A job's cost (``cost=`` at enqueue, default 1) is what it is charged when it
    starts; a job whose limit has no room waits, without polling, for the instant it
    has, and its slot goes to other work meanwhile.

    Args:
        rate: units per period (> 0).
        per: the period in seconds (> 0; default 1).
        burst: most units started at once after an idle spell.
    """

    rate: float
    per: float = 1.0
    burst: Optional[int] = None

    def __post_init__(self) -> None:
        check_number("rate", self.rate, above=True, most=1e9)
        check_number("per", self.per, above=True, most=MAX_SECONDS)
        burst = self.burst if self.burst is not None else max(1, int(self.rate))
        check_int("burst", burst, 1, 1_000_000_000)
        object.__setattr__(self, "burst", burst)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form stored in the settings rows."""
        return {"rate": self.rate, "per": self.per, "burst": self.burst}

    @classmethod
    def from_dict(cls, value: Mapping[str, Any]) -> RateLimit:
        """The limit :meth:`to_dict` stored."""
        return cls(float(value["rate"]), float(value["per"]), int(value["burst"]))

    @classmethod
    def parse(cls, text: str, burst: Optional[int] = None) -> RateLimit:
        """``"10/s"``, ``"600/min"``, ``"5/2.5s"``, ``"1000/h"`` or ``"100/day"``: what the CLI takes."""
        rate_text, _, unit = text.partition("/")
        units = {"s": 1.0, "sec": 1.0, "second": 1.0, "m": 60.0, "min": 60.0, "minute": 60.0,
                 "h": 3600.0, "hour": 3600.0, "d": 86400.0, "day": 86400.0}  # fmt: skip
        number, name = unit, "s"
        for suffix in sorted(units, key=len, reverse=True):
            if unit.endswith(suffix):
                number, name = unit[: -len(suffix)], suffix
                break
        try:
            rate = float(rate_text)
            per = (float(number) if number else 1.0) * units[name]
        except (ValueError, KeyError):
            raise InvalidArgument(
                f"invalid rate limit {text!r}: expected RATE/PERIOD such as '10/s', '600/min', '5/2.5s' or '1000/h'"
            ) from None
        return cls(rate, per, burst)

    def __str__(self) -> str:
        per = f"{self.per:g}s" if self.per != 1 else "s"
        return f"{self.rate:g}/{per} (burst {self.burst})"
