"""Type stubs of the native dispatcher core (private: import from ``fairqueue``)."""

from collections.abc import Mapping, Sequence
from typing import Any, Literal, Optional, TypedDict, Union, final

from typing_extensions import Self, disjoint_base

__all__ = ["Dispatcher", "EmbeddedTurns", "Grant", "Release", "SlotLine", "NAME_RULE", "check_name", "encode_payload", "simulate"]

_Policy = Literal["fair_share", "peek_set"]
_Shares = Literal["per_pair", "per_org"]
_RequestTuple = Union[
    tuple[int, str, str],
    tuple[int, str, str, Optional[float]],
    tuple[int, str, str, Optional[float], Optional[str]],
    tuple[int, str, str, Optional[float], Optional[str], Optional[int]],
    tuple[int, str, str, Optional[float], Optional[str], Optional[int], Optional[int]],
]

class _Limits(TypedDict):
    cap: int
    min: int
    weight: float

class _KeyLimits(TypedDict):
    cap: Optional[int]
    weight: float

class _OrgLimits(TypedDict):
    cap: Optional[int]
    min: int
    weight: float
    per_key: _KeyLimits

class _RateLimit(TypedDict):
    rate: float
    per: float
    burst: int
    waiting_until: Optional[float]

class _RequestOptions(TypedDict):
    key: Optional[str]
    priority: int
    cost: int

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
        aging: seconds a queued request waits to rise one priority level
            (``fair_share``): a priority-0 request that has waited ``9 × aging`` is
            ordered with priority-9 requests enqueued now.
        shares: what ``fair_share`` divides slot-time between at the top:
            ``"per_pair"`` (default, as before the hierarchy: each (org, kind) holds a
            share) or ``"per_org"`` (an org's share is its own however many kinds and
            keys it uses). Keys, priorities, org limits and rate limits work under both.

    Under ``peek_set`` (the reference platform's semantics) keys, priorities other
    than 5, costs other than 1, org and key limits and rate limits are refused with
    ``InvalidArgument``.
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
        aging: float = 10.0,
        shares: _Shares = "per_pair",
    ) -> Self: ...
    @property
    def policy(self) -> str: ...
    def enqueue(
        self,
        id: int,
        org: str,
        kind: str = "future",
        run_at: Optional[float] = None,
        *,
        key: Optional[str] = None,
        priority: int = 5,
        cost: int = 1,
    ) -> None:
        """Enqueues one request; ``run_at`` (seconds) delays it.

        ``key`` (a name, see :data:`NAME_RULE`) is its concurrency key; requests without
        one share the org's default key. ``priority`` (0 to 9, higher starts sooner,
        default 5) orders its own line (org, kind, key) only, with aging. ``cost`` (1 to
        1,000,000 units) is what its rate limits are charged when it starts; a cost over
        the burst of a limit it falls under is refused.
        """
    def enqueue_many(self, requests: Sequence[_RequestTuple], *, skip_held: bool = False) -> int:
        """Enqueues ``(id, org, kind[, run_at[, key[, priority[, cost]]]])`` tuples, all or
        none; returns how many. ``None`` fields take their defaults.

        With ``skip_held``, ids the dispatcher already holds are passed over instead of refused.
        """
    def request_options(self, id: int) -> _RequestOptions:
        """The concurrency key (None: the default key), priority and cost of request ``id``."""
    def holds(self, id: int) -> bool:
        """True while request ``id`` is queued, delayed or running."""
    def dispatch(self, max: Optional[int] = None) -> list[Grant]:
        """Fills up to ``max`` free slots (all free slots when None)."""
    def ack(self, lease: int) -> Release:
        """The request under ``lease`` is done."""
    def gone(self, lease: int) -> Release:
        """The request under ``lease`` never ran here (its store gave it to another
        worker, or it was aborted or paused meanwhile): it leaves, and its slot is not
        charged."""
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
    def set_org_limits(
        self,
        org: str,
        *,
        cap: Optional[int] = None,
        min: int = 0,
        weight: float = 1.0,
        per_key_cap: Optional[int] = None,
        per_key_weight: float = 1.0,
    ) -> None:
        """Sets an org's own limits, live (``fair_share``): the most slots it holds over all
        kinds (None: no org cap), slots reserved for it, its weight against other orgs
        (under ``shares="per_org"``), and the cap and weight of each of its named keys that
        has none of its own. Every value is set; omitted ones take their defaults."""
    def org_limits(self, org: str) -> _OrgLimits:
        """An org's own limits."""
    def set_key_limits(
        self, org: str, key: Optional[str], *, cap: Optional[int] = None, weight: float = 1.0, inherit: bool = False
    ) -> None:
        """Sets one concurrency key's cap (None: none) and weight among its org's keys, live
        (``fair_share``); ``key=None`` is the org's default key. With ``inherit`` the key
        takes its org's per-key limits again."""
    def key_limits(self, org: str, key: Optional[str]) -> _KeyLimits:
        """One concurrency key's limits (``key=None``: the org's default key)."""
    def set_rate_limit(
        self,
        org: str,
        rate: Optional[float],
        *,
        per: float = 1.0,
        burst: Optional[int] = None,
        kind: Optional[str] = None,
        key: Optional[str] = None,
        every_key: bool = False,
    ) -> None:
        """Sets (``rate=None``: removes) a rate limit, live (``fair_share``): at most
        ``rate`` units of cost per ``per`` seconds, in bursts of up to ``burst`` (default:
        one period's worth, at least 1). It applies to the org, or to one ``kind`` of it,
        or to one ``key`` of it, or with ``every_key`` to each of its named keys on its
        own. A job whose limit has no room waits until the instant it has (see
        ``next_wakeup``); its slot goes to other work meanwhile."""
    def rate_limit(
        self, org: str, *, kind: Optional[str] = None, key: Optional[str] = None, every_key: bool = False
    ) -> Optional[_RateLimit]:
        """The rate limit of a scope (as for ``set_rate_limit``), with ``waiting_until``:
        when the scope will have room for the job it waits for (None: not waiting)."""
    def org_stats(self, org: str) -> dict[str, object]:
        """Figures of one org: queued, running, virtual_time, rate, keys."""
    def key_stats(self, org: str, key: Optional[str]) -> dict[str, object]:
        """Figures of one concurrency key (``key=None``: the default key): queued, running,
        limits, rate."""
    def next_wakeup(self) -> Optional[float]:
        """When a delayed request becomes due, a lease expires or a rate-limited scope has
        room next (seconds)."""
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
    ``weighted``, ``noisy-user``, ``rate-limited``, ``priorities``) on the dispatcher
    with a virtual clock.

    ``policy`` is ``fair_share``, ``peek_set``, ``fifo`` (one queue, same caps) or
    ``fifo_uncapped``. Returns the report: ``orgs`` and ``groups`` rows with wait
    percentiles (seconds), ``keys`` rows per named concurrency key, ``makespan``,
    ``extended_delays``, ``series`` of pending requests per org, and ``table``, a
    rendered text table.
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

@final
class EmbeddedTurns:
    """The embedded store's pick-up and worker-turn statements on a connection of their
    own (``fairqueue.storage.sqlite`` runs them), with the interpreter released. SQLite's
    errors are raised as ``sqlite3.OperationalError(message, extended_code)``."""

    def __new__(cls, path: str, columns: str) -> EmbeddedTurns:
        """Opens the store at ``path``; a claim returns ``columns`` (comma-separated) of each job."""
    def pending(
        self, after_seq: int, limit: int, queues: Optional[str] = None
    ) -> list[tuple[int, str, str, Optional[float], Optional[str], int, int, int, int, str]]:
        """Queued jobs with ``ready_seq`` > ``after_seq`` in that order, ``limit`` at most
        (negative: all), of the queues in the JSON array ``queues`` (None: every queue):
        ``(id, org, kind, run_at, key, priority, cost, attempts, ready_seq, queue)``."""
    def turn(
        self,
        finishes: Sequence[tuple[int, str, float, bool]],
        asked: Sequence[int],
        worker: str,
        lease_until: float,
        now: float,
        version: Optional[int],
    ) -> tuple[list[int], list[tuple[Any, ...]], bool]:
        """One turn in one transaction: stores the plain outcomes ``finishes`` (``(id,
        worker, at, ran)``; batch jobs are skipped) and claims ``asked`` (see
        ``Storage.job_claim``). Returns the applied outcomes' ids, the claimed rows (in
        the store's column order) and whether the settings ``version`` was stale."""
    def worker_turns(
        self,
        line: SlotLine,
        core: Dispatcher,
        worker: str,
        lease: float,
        version: Optional[int],
        max_attempts: int,
        retry_delay: float,
        until: float,
    ) -> tuple[
        list[tuple[int, int]], list[tuple[int, int]], int, list[str], list[Grant], list[tuple[Any, ...]], bool
    ]:
        """A thread-mode worker's usual turns, with the interpreter released throughout,
        until ``until`` (UNIX seconds) or until the worker needs its Python: each turn
        takes the plain completions the slots put in ``line``, releases their slots in
        ``core``, fills the free slots, stores the completions and claims the granted
        jobs for ``worker`` in one transaction (as ``turn``), and puts the claimed rows in
        ``line``; between turns it sleeps until a slot completes a job. It returns once
        ``until`` passes, ``line.attend()`` is called, no slot is leased, a completion
        was not stored, or a claim did not take every grant as granted (or was stale):
        that claim's grants and rows are returned. If the store fails, the turn's
        completions go back into the line, its grants are offered again ``retry_delay``
        seconds later, and the error is raised. Returns ``(applied, not_applied,
        started, orgs, grants, rows, stale)``."""
    def close(self) -> None:
        """Closes the connection (later calls raise)."""

@final
class SlotLine:
    """The hand-off between a worker's loop and its handler slots, both ways: tasks
    (and rows a native turn claimed) to the slots, plain completions back."""

    def __new__(cls) -> SlotLine: ...
    def put(self, item: object) -> None:
        """Puts ``item`` in for the next free slot."""
    def take(self) -> Any:
        """The next item, waiting (the interpreter released) until there is one: an
        object put in, or a claimed row as ``(lease, row)``."""
    def drain(self) -> list[Any]:
        """Everything waiting, taken out (claimed rows as ``(lease, row)``)."""
    def rows_waiting(self) -> int:
        """How many claimed rows wait for a slot."""
    def done(self, lease: int, job_id: int) -> None:
        """A slot's job under ``lease`` completed with nothing to store but its end."""
    def completions(self) -> int:
        """How many plain completions wait to be taken."""
    def take_done(self) -> list[tuple[int, int]]:
        """The plain completions delivered so far, as ``(lease, job id)``, taken out."""
    def attend(self) -> None:
        """The worker's Python wants its loop back: turns in Rust return now, or after their next turn."""
