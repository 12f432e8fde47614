"""Job records: what a user submitted, its status and its history (SPEC §5)."""

from __future__ import annotations

import enum
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Optional

__all__ = [
    "JobStatus", "NewJob", "JobRecord", "PendingJob", "Finish",
    "Admission", "Candidate", "Rate", "RateScope", "SettingRow", "SettingChange",
]  # fmt: skip


class JobStatus(str, enum.Enum):
    """Where a job is in its life, as the reference ``AsyncApexJob`` names it."""

    HOLDING = "holding"
    QUEUED = "queued"
    PREPARING = "preparing"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"
    ABORTED = "aborted"
    DISCARDED = "discarded"
    """Given up on: its handler raised on every attempt its retry policy allowed."""

    @property
    def finished(self) -> bool:
        """True for the statuses a job never leaves."""
        return self in _FINISHED


_FINISHED = frozenset({JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.ABORTED, JobStatus.DISCARDED})


class NewJob(NamedTuple):
    """A job to enqueue. ``payload`` is JSON text, already validated by the caller
    (a named tuple: a bulk enqueue builds one per job)."""

    org: str
    kind: str
    handler: str
    payload: str
    run_at: Optional[float] = None
    parent_id: Optional[int] = None
    chain_depth: int = 0
    duplicate_signature: Optional[str] = None
    queue: str = "default"
    """The named queue it waits in: only workers serving that queue run it."""
    key: Optional[str] = None
    """Its concurrency key within its org (a user, an integration…); None: the org's default key."""
    priority: int = 5
    """0 to 9, higher first, within its own (org, kind, key) line (``fair_share``)."""
    cost: int = 1
    """Units its rate limits are charged when it starts."""


@dataclass(frozen=True)
class JobRecord:
    """One job's record (SPEC §5). Times are UNIX seconds."""

    id: int
    org: str
    kind: str
    handler: str
    payload: str
    status: JobStatus
    created_at: float
    run_at: Optional[float]
    started_at: Optional[float]
    finished_at: Optional[float]
    attempts: int
    items_processed: int
    items_total: Optional[int]
    error_count: int
    extended_status: Optional[str]
    parent_id: Optional[int]
    chain_depth: int
    duplicate_signature: Optional[str]
    lease_owner: Optional[str]
    lease_expires_at: Optional[float]
    cancel_requested: bool
    handler_attempts: int = 0
    """Runs of its handler that ended (returned, raised, asked for a retry); unlike
    ``attempts`` (deliveries), a delivery lost to a dead or stopping worker is not one."""
    result: Optional[str] = None
    """The handler's return value as JSON text, once completed (None if it returned None)."""
    errors: Optional[str] = None
    """Every failed handler attempt's error, oldest first, as a JSON array of
    ``{"attempt", "at", "type", "message", "traceback"}`` (see :meth:`attempt_errors`)."""
    worker_deaths: int = 0
    """Deaths of thread-mode workers this job was running at (see
    :data:`fairqueue.storage.interface.DEATHS_TO_QUARANTINE`); a worker runs a job with
    any alone, so that one that kills its worker takes no other job down with it."""
    queue: str = "default"
    """The named queue it waits in (see :attr:`NewJob.queue`)."""
    key: Optional[str] = None
    """Its concurrency key within its org; None: the org's default key."""
    priority: int = 5
    """0 to 9, higher first, within its own (org, kind, key) line."""
    cost: int = 1
    """Units its rate limits are charged when it starts."""


    def attempt_errors(self) -> list[dict[str, Any]]:
        """:attr:`errors` decoded: one dict per failed handler attempt, oldest first."""
        return list(json.loads(self.errors)) if self.errors else []


class PendingJob(NamedTuple):
    """What the dispatcher core needs of a queued job to rebuild its queue (a named
    tuple: every worker reads one per queued job; its first seven fields are the
    core's request tuple).

    ``ready_seq`` grows every time any job becomes queued (enqueued, retried, its
    lease expired), so a worker that remembers the largest it has seen picks up
    exactly what changed since, whichever process changed it.
    """

    id: int
    org: str
    kind: str
    run_at: Optional[float]
    key: Optional[str]
    priority: int
    cost: int
    attempts: int
    ready_seq: int
    queue: str = "default"


@dataclass(frozen=True)
class BatchErrorEvent:
    """A batch phase that raised (the reference platform's ``BatchApexErrorEvent``).

    The batch goes on with its next chunk; ``record_ids`` are the ids of the
    failed chunk's records (a record's ``"id"`` key or ``id`` attribute, else its
    position in the batch).
    """

    job_id: int
    org: str
    phase: str
    """``"START"``, ``"EXECUTE"`` or ``"FINISH"``."""
    chunk: Optional[int]
    """The chunk's number (from 0) for ``EXECUTE``, else None."""
    record_ids: list[Any]
    exception_type: str
    message: str
    traceback: str
    at: float


class Progress(NamedTuple):
    """What a batch delivery changes on its job besides its status: the payload
    (the next chunk, the carried state), the item counts and the error events."""

    payload: str
    items_processed: int
    items_total: Optional[int]
    error_count: int
    errors: tuple[BatchErrorEvent, ...] = ()


class Finish(NamedTuple):
    """How a claimed job ended.

    ``status`` is ``completed`` or ``failed``, or ``queued`` to deliver it again at
    ``retry_at`` (None: as soon as possible). ``worker`` must be the job's current
    lease owner, so a worker whose lease expired cannot overwrite the outcome of
    the re-delivery. ``children`` are the jobs the handler enqueued; they are
    stored in the same transaction, only if the outcome applies.

    A named tuple rather than a dataclass: the worker builds one per job.
    """

    job_id: int
    worker: str
    status: JobStatus
    at: float
    error: Optional[str] = None
    retry_at: Optional[float] = None
    children: tuple[NewJob, ...] = ()
    progress: Optional[Progress] = None
    """A batch's progress: replaces the job's payload and counts, resets its
    attempts (each chunk is a delivery of its own) and stores the error events."""
    daily_limits: Optional[Mapping[str, int]] = None
    """The daily limits of the children's orgs: if storing the children would take
    an org past its limit, none of them is stored and the job's extended status
    says why (the outcome itself still applies)."""
    given_back: bool = False
    """With ``queued``: the job did not run to an outcome because its worker stopped
    (a stop-requeue). Its delivery is handed back — the job's ``attempts`` goes down
    by one, so rolling restarts never fail a long job — and it is not an error; the
    extended status (``error``) records it."""
    ran: bool = False
    """The handler ran to this outcome: the job's ``handler_attempts`` goes up by one."""
    result: Optional[str] = None
    """With ``completed``: the handler's return value, as JSON text."""
    attempt_error: Optional[str] = None
    """The handler attempt's error as a JSON object (type, message, traceback),
    appended to the job's ``errors``."""


class Claimed(list[JobRecord]):
    """The records a claim moved to processing, in the order the ids were asked for.

    ``at_cap`` lists the ids left queued because their (org, kind) already held
    its cap across every worker sharing the store; the caller offers them again
    when a slot frees. A job that was aborted or claimed by another worker
    meanwhile is in neither list (a stand-in of its pair may be claimed instead,
    see :meth:`fairqueue.storage.Storage.job_claim`).
    """

    def __init__(
        self,
        records: Iterable[JobRecord] = (),
        at_cap: Iterable[int] = (),
        rate_limited: Optional[Mapping[int, float]] = None,
        stale: bool = False,
        paused: Iterable[int] = (),
    ) -> None:
        super().__init__(records)
        self.at_cap: list[int] = list(at_cap)
        self.paused: list[int] = list(paused)
        """Asked-for ids left queued because a scope they fall under is paused."""
        self.rate_limited: dict[int, float] = dict(rate_limited or {})
        """Asked-for ids left queued because a rate limit they fall under had no room
        across the store, each with the instant it will have (UNIX seconds)."""
        self.stale = stale
        """True if the claim's :class:`Admission` was built from settings older than the
        store's: nothing was claimed; read the settings again and ask again."""


@dataclass(frozen=True)
class Rate:
    """A rate limit as a claim applies it (GCRA): at most ``rate`` units of cost per
    ``per`` seconds, in bursts of up to ``burst`` units."""

    rate: float
    per: float
    burst: int

    @property
    def interval(self) -> float:
        """Seconds one unit of cost occupies."""
        return self.per / self.rate


RateScope = tuple[str, str, str]
"""What a rate limit's state belongs to: ``(org, "org", "")``, ``(org, "kind", kind)``
or ``(org, "key", key)`` (a key's own limit, or its org's limit for every key)."""


class Candidate(NamedTuple):
    """A queued job a claim may take, with what its limits are counted by (a named
    tuple: a claim builds one per job)."""

    id: int
    org: str
    kind: str
    key: Optional[str] = None
    cost: int = 1
    queue: str = "default"


@dataclass(frozen=True)
class Admission:
    """What a claim holds the jobs it takes to, across every worker sharing the store.

    The worker builds it from the stored settings (and its code defaults) at
    ``version``; the store checks that version in the claim's transaction and, if a
    change committed since, claims nothing (:attr:`Claimed.stale`), so no claim ever
    applies settings older than the last change committed before it.

    Every map lists only the scopes the claim's jobs fall under; a scope missing is
    not limited. Caps count jobs processing; a cap of 0 pauses the scope.
    """

    version: Optional[int] = None
    """The settings version the rest was built from; None: do not check."""
    pair_caps: Mapping[tuple[str, str], int] = field(default_factory=dict)
    """Most jobs processing at once per (org, kind)."""
    org_caps: Mapping[str, int] = field(default_factory=dict)
    """Most jobs processing at once per org, all kinds and keys together."""
    key_caps: Mapping[tuple[str, Optional[str]], int] = field(default_factory=dict)
    """Most jobs processing at once per (org, key); key None is the org's jobs without one."""
    rates: Mapping[RateScope, Rate] = field(default_factory=dict)
    """The rate limits by scope (see :data:`RateScope`)."""
    paused: frozenset[tuple[str, ...]] = frozenset()
    """Scopes no job may start from: ``("org", org)``, ``("kind", org, kind)``,
    ``("key", org, key)``, ``("queue", queue)``."""

    def pauses(self, candidate: Candidate) -> bool:
        """True if a scope ``candidate`` falls under is paused."""
        if not self.paused:
            return False
        org = candidate.org
        return (
            ("org", org) in self.paused
            or ("kind", org, candidate.kind) in self.paused
            or ("queue", candidate.queue) in self.paused
            or (candidate.key is not None and ("key", org, candidate.key) in self.paused)
        )

    def rate_scopes(self, candidate: Candidate) -> list[RateScope]:
        """The rate-limited scopes ``candidate`` is charged to."""
        org = candidate.org
        scopes = [(org, "org", ""), (org, "kind", candidate.kind)]
        if candidate.key is not None:
            scopes.append((org, "key", candidate.key))
        return [scope for scope in scopes if scope in self.rates]


class TriggerState(str, enum.Enum):
    """Where a schedule stands."""

    WAITING = "waiting"
    """It fires at ``next_fire_at``."""
    COMPLETE = "complete"
    """Its expression has no fire time left (a year field that has passed)."""
    ABORTED = "aborted"
    """Aborted: it never fires again."""


@dataclass(frozen=True)
class NewTrigger:
    """A schedule to store: ``handler`` with ``payload`` runs as a ``scheduled`` job of
    ``org`` at each fire time of ``cron`` in ``timezone``, the first at ``next_fire_at``,
    in ``queue`` with ``priority`` and ``cost`` (its job class's)."""

    org: str
    name: str
    cron: str
    timezone: str
    handler: str
    payload: str
    next_fire_at: float
    queue: str = "default"
    priority: int = 5
    cost: int = 1


@dataclass(frozen=True)
class TriggerRecord:
    """A stored schedule and how often it fired (the reference platform's CronTrigger)."""

    id: int
    org: str
    name: str
    cron: str
    timezone: str
    handler: str
    payload: str
    state: TriggerState
    created_at: float
    next_fire_at: Optional[float]
    previous_fire_at: Optional[float]
    times_fired: int
    last_job_id: Optional[int]
    queue: str = "default"
    """The named queue its fires wait in."""
    priority: int = 5
    cost: int = 1


@dataclass(frozen=True)
class WaitingFacts:
    """What the store knows about why a job waits (see :func:`fairqueue.observe.explain`)."""

    ahead_in_line: int
    """Queued jobs of the same org and kind enqueued before it."""
    ahead_in_queue: int
    """Queued jobs of any org, due now, enqueued before it."""
    holders: list[int]
    """Ids of the processing jobs of the same org and kind (what holds its slots)."""
    finished_in_line: int
    """Jobs of the same org and kind finished within the window."""
    finished_in_queue: int
    """Jobs of any org finished within the window."""
    processing: int
    """Jobs processing anywhere now."""
    first_finished_at: Optional[float]
    """When the earliest of the jobs finished within the window finished: the
    rates are measured from then on, not over a window the queue was idle in."""
    active_lines: int = 1
    """(org, kind) pairs with jobs queued or processing: under ``fair_share`` the
    slots are shared among them."""


@dataclass(frozen=True)
class HistoryEntry:
    """One recorded fact, for charts and explanations after the fact.

    ``kind`` is ``pending`` / ``running`` (``value``: an org's jobs queued /
    processing at ``at``), ``throttle_start`` / ``throttle_end`` (a worker's
    capacity in ``figures``), ``extended_delay`` (an org's jobs put back until
    ``value``; kind and count in ``figures``) or ``pause_start`` / ``pause_end`` (a
    tenant pause and its resume; ``org`` None for a queue's, the scope and who in
    ``figures``).
    """

    at: float
    kind: str
    org: Optional[str]
    value: float
    figures: dict[str, Any]


@dataclass(frozen=True)
class WorkerInfo:
    """A worker process as it registers itself (``fairqueue workers`` lists them)."""

    name: str
    """Unique among the live workers of a store; owns the leases of the jobs it runs."""
    host: str
    pid: int
    mode: str
    """``"thread"`` or ``"process"``: whether a job can take the worker down with it."""
    slots: int
    started_at: float
    queues: Optional[tuple[str, ...]] = None
    """The named queues it serves; None: every queue."""


@dataclass(frozen=True)
class WorkerRecord:
    """A registered worker, as the store knows it."""

    info: WorkerInfo
    last_seen: float
    """When it last said it was alive (wall clock)."""
    alive: bool
    """Whether the store's proof of life holds: the worker's lock (a file lock on
    SQLite, a session advisory lock on PostgreSQL) is still held, so its process
    (and, on PostgreSQL, its connection) is up. A worker that is not alive is
    reaped by the next live worker's sweep."""
    running: int
    """Jobs it holds the lease of."""


@dataclass(frozen=True)
class Reaped:
    """What one sweep for dead workers did."""

    workers: list[str]
    """The dead workers removed from the registry."""
    requeued: list[int]
    """Their jobs, queued again (the redelivery recorded in the job's extended status)."""
    quarantined: list[int]
    """Their jobs failed instead: each was running in a thread-mode worker that died
    twice while running it, so it is likely what kills its workers."""


@dataclass(frozen=True)
class SettingRow:
    """One stored row of tenant settings (see :mod:`fairqueue.tenants`).

    ``scope`` is ``"org"`` (``name`` an org; ``kind`` and ``key`` empty), ``"kind"``
    (an org's kind), ``"key"`` (an org's concurrency key), ``"tier"`` (``name`` a tier;
    ``kind`` empty or one kind) or ``"queue"`` (``name`` a queue).
    """

    scope: str
    name: str
    kind: str
    key: str
    values: Mapping[str, Any]
    updated_at: float
    updated_by: Optional[str]


@dataclass(frozen=True)
class SettingChange:
    """A patch of one settings row: ``values`` merged into the row's, None removing a field."""

    scope: str
    name: str
    kind: str = ""
    key: str = ""
    values: Mapping[str, Any] = field(default_factory=dict)
