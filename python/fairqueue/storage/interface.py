"""The storage interface: the :class:`Storage` ABC every backend implements, and the
rules they share (flex admission, caps, daily usage).

The store is the truth; the dispatcher core is rebuilt from it at start-up.
Methods are named noun-first (``job_enqueue``, ``job_claim``, …); workers reach
storage only through this interface. ``tests/storage_conformance`` runs the same
suite against every backend.
"""

from __future__ import annotations

import abc
import asyncio
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, ClassVar, NamedTuple, Optional

from fairqueue._core import Dispatcher, Grant, SlotLine
from fairqueue.errors import DailyLimitExceeded, FlexQueueFull, InvalidArgument, LimitExceeded, StorageError
from fairqueue.records import (
    Admission,
    BatchErrorEvent,
    Candidate,
    Claimed,
    Finish,
    HistoryEntry,
    JobRecord,
    JobStatus,
    NewJob,
    NewTrigger,
    PendingJob,
    RateScope,
    Reaped,
    SettingChange,
    SettingRow,
    TriggerRecord,
    TriggerState,
    WaitingFacts,
    WorkerInfo,
    WorkerRecord,
)

__all__ = [
    "Storage",
    "LineTurn",
    "check_finishes",
    "job_filter",
    "FEW_STATUSES",
    "LIVE_STATUSES",
    "FINISHED_SQL",
    "SCHEMA_VERSION",
    "FinishedCallback",
    "NextFire",
    "DailyUsage",
    "USAGE_BUCKET",
    "Admitted",
    "Held",
    "admit",
    "merge_settings",
    "capped_scopes",
    "rate_scope_text",
    "rate_scopes",
    "check_daily_limits",
    "scheduled_job",
    "flex_admit",
    "flex_order",
    "FLEX_ACTIVE",
    "FLEX_HOLDING",
    "DEATHS_TO_QUARANTINE",
    "dead_worker_outcome",
    "live_worker_named",
    "RERUNNABLE",
    "rerun_note",
    "WebhookDelivery",
]

SCHEMA_VERSION = 9
"""The schema this fairqueue writes; a store with a higher version is refused."""

FinishedCallback = Callable[[Optional[Sequence[int]]], None]
"""What :meth:`Storage.job_finished_subscribe` calls: with the ids of jobs whose
outcome was just stored, or None (some may have been missed: look at every job)."""


NextFire = Callable[[TriggerRecord, float], Optional[float]]
"""Given a schedule and the time now, its first fire time after now (None: no more)."""

LIVE_STATUSES = (JobStatus.HOLDING, JobStatus.QUEUED, JobStatus.PROCESSING)
"""What ``job_counts(live=True)`` counts: every status a stored job waits or runs in
(``preparing`` is the reference platform's, never stored here)."""

FINISHED_SQL = ", ".join(f"'{status.value}'" for status in JobStatus if status.finished)
"""The finished statuses as an SQL list, for ``status IN (…)``: what the reads of
jobs finished since a time name."""

FEW_STATUSES = (JobStatus.HOLDING, JobStatus.PROCESSING)
"""Statuses few jobs are in at once (bounded by slots and the flex queue), each with
a partial index: a SQL store lists them by reading that index and sorting, because a
newest-first walk of the primary key, the planners' choice, reads the whole history
when none is found near its end."""

USAGE_BUCKET = 3600.0
"""Seconds per usage bucket: the daily limit's window is the current hour and the 23 before it."""
_WINDOW = 24


def usage_hour(now: float) -> int:
    """The usage bucket ``now`` falls in."""
    return int(now // USAGE_BUCKET)


@dataclass(frozen=True)
class DailyUsage:
    """An org's async executions counted in the rolling 24-hour window.

    The window is whole hours (the current one and the 23 before it), so an
    execution is counted for 23 to 24 hours. ``oldest_hour`` is the oldest
    bucket that still counts (None: nothing counted).
    """

    org: str
    count: int
    oldest_hour: Optional[int]

    @property
    def resets_at(self) -> Optional[float]:
        """When the oldest counted executions leave the window (Unix time), or None."""
        return None if self.oldest_hour is None else (self.oldest_hour + _WINDOW) * USAGE_BUCKET

    @staticmethod
    def window_start(now: float) -> int:
        """The oldest bucket inside the window at ``now``."""
        return usage_hour(now) - _WINDOW + 1


FLEX_ACTIVE = 5
"""Batch jobs one org may have queued or running; more wait in its flex queue."""
FLEX_HOLDING = 100
"""Batch jobs one org's flex queue holds; one more is refused."""


DEATHS_TO_QUARANTINE = 2
"""A job that was running in a thread-mode worker each time that worker died, this many
times, is failed ("killed its worker") instead of being delivered again: a job that
calls ``os._exit`` or crashes the interpreter takes every job of its worker down with
it, so it must not be handed to worker after worker."""


def dead_worker_outcome(
    worker: str, mode: str, job_id: int, deaths: int, alone: Optional[int]
) -> tuple[JobStatus, str, int]:
    """What becomes of a job ``worker`` held when it died: its status, extended status
    and count of worker deaths it has been through so far (``deaths`` before this one).

    Only a thread-mode worker's death is counted (in process mode a job can only kill
    its own child), and only against a job that may have caused it: the job the worker
    ran ``alone`` if it was running one (see :meth:`Storage.worker_alone`), else every
    job it held that had never been at a death (one that had is only ever run alone,
    so it was waiting)."""
    if mode == "thread" and (job_id == alone if alone is not None else deaths == 0):
        deaths += 1
    if deaths >= DEATHS_TO_QUARANTINE:
        return JobStatus.FAILED, (
            f"killed its worker: thread-mode workers died {deaths} times while running it (last: {worker}); "
            "it is not delivered again. Run it in a worker with mode='process' (a crash then ends only its "
            "child), fix it, and enqueue it anew"
        ), deaths  # fmt: skip
    return JobStatus.QUEUED, f"worker {worker} died while running it; re-delivered", deaths


RERUNNABLE = (JobStatus.FAILED, JobStatus.DISCARDED, JobStatus.ABORTED)
"""The statuses :meth:`Storage.job_rerun` queues again."""


def rerun_note(status: str, before: Optional[str]) -> str:
    """The extended status of a re-run job that was ``status`` (with ``before``)."""
    return f"re-run by request (was {status}" + (f": {before})" if before else ")")


def live_worker_named(name: str, pid: int, host: str) -> InvalidArgument:
    """The error for registering a worker under the name of one that is alive (``pid`` on ``host``)."""
    return InvalidArgument(
        f"a live worker named {name!r} is registered (pid {pid} on {host!r}): give each worker "
        "its own name (the default, host:pid:n, is unique)"
    )


def flex_full(org: str) -> FlexQueueFull:
    return FlexQueueFull(
        org,
        f"org {org!r} has {FLEX_ACTIVE} batch jobs queued or running and {FLEX_HOLDING} holding in its flex queue, "
        "the most allowed; wait for one to finish, or abort one"
    )


def flex_admit(jobs: Sequence[NewJob], counts: Callable[[str], tuple[int, int]]) -> list[JobStatus]:
    """The status each of ``jobs`` starts in: batch jobs beyond an org's
    :data:`FLEX_ACTIVE` queued-or-running ones hold, in order; ``counts(org)`` gives
    (active, holding) now. Raises :class:`~fairqueue.errors.LimitExceeded` past
    :data:`FLEX_HOLDING` holding."""
    seen: dict[str, list[int]] = {}
    statuses = []
    for j in jobs:
        if j.kind != "batch":
            statuses.append(JobStatus.QUEUED)
            continue
        active_holding = seen.setdefault(j.org, list(counts(j.org)))
        if active_holding[0] < FLEX_ACTIVE:
            active_holding[0] += 1
            statuses.append(JobStatus.QUEUED)
        elif active_holding[1] < FLEX_HOLDING:
            active_holding[1] += 1
            statuses.append(JobStatus.HOLDING)
        else:
            raise flex_full(j.org)
    return statuses


def flex_order(order: list[int], job_id: int, before: Optional[int], after: Optional[int], to: Optional[str]) -> list[int]:
    """``order`` (holding job ids) with ``job_id`` moved as :meth:`Storage.flex_move` says."""
    where = {"before": before, "after": after, "to": to}
    if sum(v is not None for v in where.values()) != 1:
        raise InvalidArgument(f"flex_move takes exactly one of before=, after= or to=, not {where}")
    if to is not None and to not in ("front", "end"):
        raise InvalidArgument(f"invalid to={to!r}: expected 'front' or 'end'")
    for name, other in (("job", job_id), ("before", before), ("after", after)):
        if other is not None and other not in order:
            raise InvalidArgument(f"{name} {other} is not holding in this org's flex queue (holding: {order})")
    if job_id in (before, after):
        raise InvalidArgument(f"cannot move job {job_id} before or after itself")
    rest = [i for i in order if i != job_id]
    if to == "front":
        return [job_id, *rest]
    if to == "end":
        return [*rest, job_id]
    anchor = rest.index(before if before is not None else after)  # type: ignore[arg-type]
    at = anchor if before is not None else anchor + 1
    return [*rest[:at], job_id, *rest[at:]]


def scheduled_job(trigger: TriggerRecord) -> NewJob:
    """The job one fire of ``trigger`` enqueues."""
    return NewJob(org=trigger.org, kind="scheduled", handler=trigger.handler, payload=trigger.payload,
                  queue=trigger.queue, priority=trigger.priority, cost=trigger.cost)


def too_many_schedules(org: str, count: int, most: int) -> LimitExceeded:
    return LimitExceeded(
        f"org {org!r} already has {count} schedules, the most allowed ({most}); abort one before adding another"
    )


def schedule_name_taken(org: str, name: str) -> InvalidArgument:
    return InvalidArgument(f"org {org!r} already has a schedule named {name!r}: abort it first, or choose another name")


def check_daily_limits(
    jobs: Sequence[NewJob], limits: Mapping[str, int], usage: Callable[[str], DailyUsage], now: float
) -> None:
    """Raises :class:`~fairqueue.errors.DailyLimitExceeded` if ``jobs`` would take an org over its limit."""
    adding: dict[str, int] = {}
    for j in jobs:
        adding[j.org] = adding.get(j.org, 0) + 1
    for org, n in adding.items():
        limit = limits.get(org)
        if limit is None:
            continue
        counted = usage(org)
        if counted.count + n > limit:
            resets_at = counted.resets_at if counted.resets_at is not None else now + _WINDOW * USAGE_BUCKET
            raise DailyLimitExceeded(org, counted.count, n, limit, resets_at)


def refused_fires(
    due: Sequence[TriggerRecord],
    daily_limit: Optional[Callable[[str], int]],
    usage: Callable[[str], DailyUsage],
    now: float,
) -> dict[int, str]:
    """The fires among ``due`` (in order, the earlier counting first) that would take
    their org past its daily limit: trigger id -> the error its failed job records."""
    if daily_limit is None:
        return {}
    refused: dict[int, str] = {}
    counted: dict[str, DailyUsage] = {}
    adding: dict[str, int] = {}
    for t in due:
        if t.org not in counted:
            counted[t.org] = usage(t.org)
        limit, used = daily_limit(t.org), counted[t.org].count + adding.get(t.org, 0)
        if used < limit:
            adding[t.org] = adding.get(t.org, 0) + 1
            continue
        resets_at = counted[t.org].resets_at
        when = ""
        if resets_at is not None:
            when = f"; capacity returns at {datetime.fromtimestamp(resets_at, timezone.utc):%Y-%m-%d %H:%M} UTC"
        refused[t.id] = (
            f"DailyLimitExceeded: org {t.org!r} has used {used:,} of its daily limit of {limit:,} async executions, "
            f"so this fire of schedule {t.name!r} did not run{when}. Raise the limit with app.set_daily_limit"
        )
    return refused


class LineTurn(NamedTuple):
    """What a worker turn run in the store's native code did (see
    :meth:`Storage.job_turn_in_line`)."""

    applied: list[tuple[int, int]]
    """The plain completions stored, as ``(lease, job id)``."""
    not_applied: list[tuple[int, int]]
    """The plain completions this turn did not store (``(lease, job id)``): the job is
    no longer the worker's, or its end needs the store's other statements (a batch)."""
    started: int
    """How many claimed jobs went into the line as rows, for the slots to start."""
    orgs: list[str]
    """Their distinct orgs."""
    grants: list[Grant]
    """A claim the worker must sort out (see ``Storage.job_turn_in_line``): its grants."""
    claim: Claimed
    """... and what it claimed."""


@dataclass(frozen=True)
class WebhookDelivery:
    """One event's POST to one webhook, as the outbox holds it."""

    id: int
    event_id: str
    url: str
    body: str
    attempts: int
    """Attempts made before this one."""
    created_at: float


class Storage(abc.ABC):
    """What fairqueue needs from a store. Every method is atomic: it happens whole or not at all."""

    schema_version: int = SCHEMA_VERSION
    """The schema version this store creates and migrates its data to (a store may be
    ahead of the version every store shares, :data:`SCHEMA_VERSION`)."""

    @abc.abstractmethod
    def job_enqueue(
        self, jobs: Sequence[NewJob], now: float, daily_limits: Optional[Mapping[str, int]] = None
    ) -> list[int]:
        """Persists ``jobs`` as queued (or holding) and returns their ids, in order.

        Durable before it returns. All or none: a duplicate signature among them
        raises :class:`~fairqueue.errors.DuplicateSignature` and stores nothing.

        Every stored job counts as one async execution of its org (:meth:`usage_daily`;
        children stored by :meth:`job_finish` count too). ``daily_limits`` maps orgs
        to the most executions they may have in the rolling 24 hours: checked and
        counted in the same transaction as the insert, so the limit holds across
        every process and host; over it, :class:`~fairqueue.errors.DailyLimitExceeded`
        is raised and nothing is stored.
        """

    @abc.abstractmethod
    def usage_daily(self, org: str, now: float) -> DailyUsage:
        """``org``'s async executions counted in the 24-hour window at ``now``."""

    def job_enqueue_in(
        self, connection: Any, jobs: Sequence[NewJob], now: float, daily_limits: Optional[Mapping[str, int]] = None
    ) -> list[int]:
        """Persists ``jobs`` inside the caller's own transaction on ``connection``.

        Only a store in the caller's database can do this (PostgreSQL); the others
        refuse it (see :meth:`check_connection`).
        """
        self.check_connection(connection)
        raise AssertionError("unreachable")  # pragma: no cover

    @abc.abstractmethod
    def trigger_create(self, trigger: NewTrigger, now: float, max_per_org: int) -> int:
        """Stores a waiting schedule and returns its id.

        Raises :class:`~fairqueue.errors.LimitExceeded` if its org already has
        ``max_per_org`` waiting schedules, and
        :class:`~fairqueue.errors.InvalidArgument` if one of them has the same
        name; both checked in the same transaction as the insert.
        """

    @abc.abstractmethod
    def trigger_get(self, trigger_id: int) -> Optional[TriggerRecord]:
        """The schedule ``trigger_id``, or None."""

    @abc.abstractmethod
    def trigger_list(self, *, org: Optional[str] = None, state: Optional[TriggerState] = None) -> list[TriggerRecord]:
        """Schedules matching every given filter, oldest first."""

    @abc.abstractmethod
    def trigger_abort(self, trigger_id: int, org: Optional[str] = None) -> Optional[TriggerState]:
        """Stops a schedule for good; returns the state it was in (None: no such
        schedule, or not ``org``'s). Jobs it already enqueued are not touched."""

    @abc.abstractmethod
    def trigger_fire_due(
        self,
        now: float,
        next_fire: NextFire,
        limit: int = 100,
        daily_limit: Optional[Callable[[str], int]] = None,
    ) -> list[int]:
        """Fires every waiting schedule whose ``next_fire_at`` is at or before ``now``
        (``limit`` at most per call); returns the ids of the jobs enqueued.

        Per schedule, one transaction enqueues its job (a ``scheduled`` job of its
        org, counted in the org's daily usage) and moves ``next_fire_at`` to
        ``next_fire(record, now)``, the first fire time after ``now``: after
        downtime a schedule that missed several fire times fires once. None
        completes the schedule. Any number of workers on any number of hosts may
        call this at once: each due fire happens exactly once.

        With ``daily_limit`` (an org's daily limit), a fire that would take its org
        past it stores its job as failed, with the reason (see
        :func:`refused_fires`), not counted and not returned; the schedule moves on.
        """

    def job_queued_subscribe(self, callback: Callable[[], None]) -> Optional[Callable[[], None]]:
        """Calls ``callback`` (from a background thread) soon after any process, on
        any host, commits a job into the queued state, so workers need not poll
        tightly. Returns the function that unsubscribes, or None if this store cannot
        tell (workers then poll)."""
        return None

    def check_connection(self, connection: Any) -> None:
        """Raises :class:`~fairqueue.errors.InvalidArgument` unless jobs can be enqueued on ``connection``."""
        raise InvalidArgument(
            f"connection= joins the caller's database transaction, which needs the PostgreSQL store; "
            f"this app's store is {type(self).__name__}: use FairQueue('postgresql://…'), or drop connection="
        )

    # ----- finishes heard, and the async client (``await …_async``) ------------------------

    native_turns: ClassVar[bool] = False
    """True if the store has :meth:`job_turn_in_line`: a worker's usual turn in native code."""

    hears_every_finish: ClassVar[bool] = False
    """True if :meth:`job_finished_subscribe` hears every outcome stored by any process
    sharing the store; False if only this process's (waiters then also read on a back-off)."""

    def job_finished_subscribe(self, callback: FinishedCallback) -> Optional[Callable[[], None]]:
        """Calls ``callback`` with the ids of jobs soon after their outcome (completed,
        failed, discarded, aborted while waiting) is committed, so that a waiting
        :class:`~fairqueue.jobs.JobHandle` need not poll; ``callback(None)`` means some
        may have been missed (a listening connection was made again): look at all.
        It may run in any thread, with a store lock held: it must be quick and must not
        call the store. An id may be named when its outcome did not apply (its lease had
        lapsed). Returns the function that unsubscribes, or None if this store cannot tell."""
        return None

    async def job_enqueue_async(
        self, jobs: Sequence[NewJob], now: float, daily_limits: Optional[Mapping[str, int]] = None
    ) -> list[int]:
        """:meth:`job_enqueue` for a coroutine: the event loop runs on meanwhile. Here
        on a thread of the loop's default executor (a thread hop, what a store without
        an async driver can do; ``benches/README.md`` says what it costs)."""
        return await asyncio.to_thread(self.job_enqueue, jobs, now, daily_limits)

    async def job_enqueue_in_async(
        self, connection: Any, jobs: Sequence[NewJob], now: float, daily_limits: Optional[Mapping[str, int]] = None
    ) -> list[int]:
        """:meth:`job_enqueue_in` on the caller's async connection (psycopg's
        ``AsyncConnection``); only a store in the caller's database can do it."""
        self.check_connection_async(connection)
        raise AssertionError("unreachable")  # pragma: no cover

    def check_connection_async(self, connection: Any) -> None:
        """Raises :class:`~fairqueue.errors.InvalidArgument` unless jobs can be enqueued on
        the async connection ``connection``."""
        self.check_connection(connection)

    async def job_get_async(self, job_id: int) -> Optional[JobRecord]:
        """:meth:`job_get` for a coroutine (here a thread hop, as :meth:`job_enqueue_async`)."""
        return await asyncio.to_thread(self.job_get, job_id)

    @abc.abstractmethod
    def job_get(self, job_id: int) -> Optional[JobRecord]:
        """The record of ``job_id``, or None."""

    @abc.abstractmethod
    def job_list(
        self,
        *,
        org: Optional[str] = None,
        kind: Optional[str] = None,
        status: Optional[JobStatus] = None,
        before_id: Optional[int] = None,
        limit: int = 100,
    ) -> list[JobRecord]:
        """Records matching every given filter, newest first, ``limit`` at most."""

    @abc.abstractmethod
    def job_pending(
        self, after_seq: int = 0, limit: Optional[int] = None, queues: Optional[Sequence[str]] = None
    ) -> list[PendingJob]:
        """Queued jobs with ``ready_seq`` > ``after_seq``, in that order: what a dispatcher must hold.

        With ``queues``, only the jobs of those named queues (a worker serving them);
        ``limit`` counts the jobs returned."""

    def job_left_queue(self, since: float, worker: str) -> list[int]:
        """Jobs that other workers took off the queue: those processing under another
        worker's lease now, and those finished (in any final status) at or after
        ``since``, by anyone.

        Every worker's dispatcher holds every queued job it serves; one that another
        worker took stays there until this worker grants it and finds it gone, and
        meanwhile it holds its line back (see :class:`fairqueue.runtime.duties.taken_jobs.TakenJobs`,
        which removes them). Read through indexes whose size is the running jobs and
        the recent finishes, not the backlog. A store that cannot tell returns ``[]``:
        its workers then learn of a taken job only when their claim misses it."""
        return []

    @abc.abstractmethod
    def job_signature_taken(self, signature: str) -> bool:
        """True while a job with this duplicate signature is holding, queued or running."""

    @abc.abstractmethod
    def job_cancel_requested(self, job_ids: Sequence[int]) -> list[int]:
        """Those of ``job_ids`` an abort asked to stop (see :meth:`job_abort`), in one read."""

    @abc.abstractmethod
    def job_counts(self, live: bool = False) -> dict[tuple[str, str, JobStatus], int]:
        """How many jobs each (org, kind) has in each status.

        ``live=True`` counts only the jobs still waiting or running (holding,
        queued, processing), read through their own indexes: its cost follows the
        backlog, not the store's history, so workers can ask it every few seconds.
        """

    @abc.abstractmethod
    def job_claim(
        self,
        job_ids: Sequence[int],
        worker: str,
        lease_until: float,
        now: float,
        admission: Optional[Admission] = None,
    ) -> Claimed:
        """Moves the still-queued jobs among ``job_ids`` to processing under ``worker``'s lease.

        Returns the records of the jobs claimed; a job aborted or claimed by another
        worker meanwhile is left out. Increments ``attempts``.

        A store that worker processes share (SQLite, PostgreSQL) claims a *stand-in*
        for each asked-for job another worker took meanwhile: the highest-priority (then
        oldest) ready queued job of the same line (org, kind, key, queue) that was not
        asked for, so that workers whose
        dispatchers chose the same jobs all get work instead of racing for it. Stand-ins
        follow the asked-for records in the result; the caller recognises them by id.

        ``admission`` holds the claim to the caps and rate limits of the scopes its
        jobs fall under, across every worker and host (see :class:`Admission`):
        candidates are admitted in the order of ``job_ids`` by :func:`admit`, checked
        and claimed in one transaction that serialises with every other claim of the
        same org and with every settings change (:meth:`settings_write`); the ids left
        queued are listed in :attr:`Claimed.at_cap` and :attr:`Claimed.rate_limited`.
        An admission built from settings older than the store's claims nothing
        (:attr:`Claimed.stale`). Without one, nothing is limited.
        """

    @abc.abstractmethod
    def job_heartbeat(self, job_ids: Sequence[int], worker: str, lease_until: float) -> None:
        """Extends ``worker``'s leases on ``job_ids``."""

    @abc.abstractmethod
    def job_finish(self, finishes: Sequence[Finish]) -> list[int]:
        """Records outcomes and their children in one transaction (group commit).

        Returns the ids whose outcome applied. An outcome whose worker no longer
        holds the job's lease is ignored, children included. A child whose duplicate
        signature is taken is not stored; the parent's extended status says so.
        """

    def job_finish_and_claim(
        self,
        finishes: Sequence[Finish],
        job_ids: Sequence[int],
        worker: str,
        lease_until: float,
        now: float,
        admission: Optional[Admission] = None,
    ) -> tuple[list[int], Claimed]:
        """A worker's turn: :meth:`job_finish` of ``finishes``, then :meth:`job_claim`
        of ``job_ids``; returns both results. A store that can commits both in one
        transaction (the outcomes first, so the slots they free count for the claim)."""
        applied = self.job_finish(finishes) if finishes else []
        return applied, self.job_claim(job_ids, worker, lease_until, now, admission) if job_ids else Claimed()

    def job_turn_in_line(
        self,
        line: SlotLine,
        core: Dispatcher,
        worker: str,
        lease: float,
        version: Optional[int],
        max_attempts: int,
        retry_delay: float,
        until: float,
    ) -> LineTurn:
        """A thread-mode worker's usual turns in the store's native code, until ``until``
        (UNIX seconds) or until the worker needs its Python (a store with
        :attr:`native_turns` only; other workers' turns are Python's).

        For claims with no cap, rate limit or pause to check, at the settings
        ``version``: each turn takes the plain completions the slots put in ``line``,
        releases their slots in ``core``, fills the free slots, stores the completions
        and claims the granted jobs for leases of ``lease`` seconds (as
        :meth:`job_finish_and_claim`), and puts the claimed rows in ``line``, where a
        slot makes each one's task (:meth:`claimed_record`); between turns it waits for
        a completion. It returns once ``until`` passes, ``line.attend()`` is called, no
        slot is leased, a completion was not stored, or a claim did not take every grant
        as granted (stand-ins, jobs gone, a job that was running when a worker died or
        has had ``max_attempts`` deliveries without an outcome) or was stale: such a
        claim starts nothing, and its grants and records are returned for the worker to
        start. If the store fails, nothing is lost: the completions wait in the line,
        the grants are offered again ``retry_delay`` seconds later, and the error is
        raised.
        """
        raise NotImplementedError(f"{type(self).__name__} has no turn in native code")

    def claimed_record(self, row: tuple[Any, ...]) -> JobRecord:
        """The record of a row :meth:`job_turn_in_line` claimed."""
        raise NotImplementedError(f"{type(self).__name__} has no turn in native code")

    @abc.abstractmethod
    def history_append(self, entries: Sequence[HistoryEntry]) -> None:
        """Records ``entries`` (one transaction, no fsync: history may lose its last second)."""

    @abc.abstractmethod
    def history_read(self, since: float, kinds: Optional[Sequence[str]] = None) -> list[HistoryEntry]:
        """Entries at or after ``since`` (of ``kinds`` only, if given), oldest first."""

    @abc.abstractmethod
    def job_waiting_facts(self, record: JobRecord, now: float, window: float) -> WaitingFacts:
        """Counts around ``record`` for explaining its wait; "finished" counts jobs
        whose ``finished_at`` is within ``window`` seconds before ``now``."""

    @abc.abstractmethod
    def flex_list(self, org: str) -> list[JobRecord]:
        """``org``'s holding batch jobs in flex-queue order (the next to start first)."""

    @abc.abstractmethod
    def flex_move(self, job_id: int, org: str, *, before: Optional[int] = None, after: Optional[int] = None,
                  to: Optional[str] = None) -> list[int]:  # fmt: skip
        """Moves holding batch ``job_id`` of ``org`` before or after another of its
        holding jobs, or ``to`` ``"front"`` / ``"end"``; returns the new order.

        Raises :class:`~fairqueue.errors.InvalidArgument` if either job is not
        holding in ``org``'s flex queue.
        """

    @abc.abstractmethod
    def batch_errors(self, job_id: int) -> list[BatchErrorEvent]:
        """The error events of batch ``job_id``, oldest first."""

    @abc.abstractmethod
    def job_requeue_expired(self, now: float) -> list[int]:
        """Puts processing jobs whose lease expired back in the queue; returns their ids.

        Workers call it every second or so; a store whose flex-queue promotion can be
        cut off by a crash also starts here any holding batch that has room."""

    # ----- retention (the pruner duty, ``fairqueue db prune``) ---------------------------
    # Each call is one short transaction that deletes at most ``limit`` rows, so a
    # pruner never holds a long lock; with ``dry_run`` it counts them and deletes nothing.
    # Only one process deletes at a time (PostgreSQL: a transaction advisory lock that a
    # busy call skips, returning 0; SQLite: its single writer).

    @abc.abstractmethod
    def job_prune(self, finished_before: Mapping[JobStatus, float], limit: int, dry_run: bool = False) -> int:
        """Deletes at most ``limit`` finished jobs, each of a status in ``finished_before``
        that finished before its cutoff there, oldest first, with their batch error
        events and flex rows; returns how many. A job still referenced as a child's
        ``parent_id`` or a schedule's ``last_job_id`` may go: those are plain ids.

        Raises:
            InvalidArgument: a status in ``finished_before`` that is not finished.
        """

    @abc.abstractmethod
    def history_prune(self, before: Optional[float], downsample_before: Optional[float], limit: int,
                      dry_run: bool = False) -> int:  # fmt: skip
        """Deletes at most ``limit`` history entries: those recorded before ``before``,
        then samples (:data:`~fairqueue.retention.SAMPLED_HISTORY`) recorded before
        ``downsample_before`` beyond one per whole minute per (kind, org), the minute's
        highest (the earliest of equals). None skips that step. Returns how many."""

    @abc.abstractmethod
    def usage_prune(self, now: float, limit: int, dry_run: bool = False) -> int:
        """Deletes at most ``limit`` usage counters older than the daily window at ``now``
        (:meth:`DailyUsage.window_start`); returns how many."""

    @abc.abstractmethod
    def rate_state_prune(self, before: float, limit: int, dry_run: bool = False) -> int:
        """Deletes at most ``limit`` rate-limit states whose theoretical arrival time is
        before ``before`` (a scope idle that long has its whole burst again, as with no
        state); returns how many. Per-user keys would otherwise leave a row each for ever."""

    @abc.abstractmethod
    def batch_errors_prune(self, before: float, limit: int, dry_run: bool = False) -> int:
        """Deletes at most ``limit`` batch error events recorded before ``before``, oldest
        first (in the order they were stored, up to the first one that is not), whether
        or not their job is kept; returns how many."""

    def space_reclaim(self, limit: int) -> int:
        """Hands free pages left by deletes back to the file system, ``limit`` at most,
        where the store holds them (SQLite's incremental vacuum); returns how many. Other
        stores reuse their free space in place (PostgreSQL's autovacuum): 0."""
        return 0

    @abc.abstractmethod
    def worker_register(self, worker: WorkerInfo, now: float) -> None:
        """Adds ``worker`` to the registry and takes its proof of life: a lock that only
        its process (on PostgreSQL, its database session) holds, which the operating
        system (the server) releases the moment the process (the session) ends, so that
        a death is known at once and a stopped-but-alive worker is never declared dead.
        The store holds the lock until :meth:`worker_leave`.

        A registered worker of the same name that is dead is reaped first.

        Raises:
            InvalidArgument: a live worker has this name.
        """

    @abc.abstractmethod
    def worker_seen(self, name: str, now: float) -> bool:
        """Records that registered worker ``name`` is alive now. Returns False if its
        proof of life had been lost meanwhile (its lock connection dropped) and was
        taken again: other workers may have reaped it meanwhile, so the jobs it runs
        may have been re-delivered (their outcomes are refused, as for a lapsed lease)."""

    @abc.abstractmethod
    def worker_alone(self, name: str, job_id: Optional[int]) -> None:
        """Records that worker ``name`` is about to run job ``job_id`` with no other job
        running beside it (None: it no longer is), before it starts: if the worker dies
        meanwhile, that job alone is held to account (:func:`dead_worker_outcome`)."""

    @abc.abstractmethod
    def worker_list(self) -> list[WorkerRecord]:
        """The registered workers, by name."""

    @abc.abstractmethod
    def worker_reap(self, now: float) -> Reaped:
        """Removes the registered workers whose proof of life is gone, and queues their
        processing jobs again at once (with the redelivery in their extended status,
        see :func:`dead_worker_outcome`), so that their slots under every cap are free
        without waiting for their leases to lapse. Concurrent callers reap each worker once."""

    @abc.abstractmethod
    def worker_leave(self, name: str) -> None:
        """Releases ``name``'s proof of life and removes it from the registry, unless it
        still holds jobs: then a live worker's next sweep reaps it (and queues them again).
        Releasing needs no database, so it happens even when the store cannot be reached."""

    # ----- alerts (episodes once per fleet) and the webhook outbox ------------------------

    @abc.abstractmethod
    def alert_episodes(self) -> dict[str, float]:
        """The alert episodes open now: key (``"wait_predicted:acme"``) -> when it opened."""

    @abc.abstractmethod
    def alert_episode_set(self, key: str, open: bool, now: float, event_id: str,
                          deliveries: Sequence[tuple[str, str]]) -> bool:  # fmt: skip
        """Opens (``open``) or closes episode ``key`` at ``now`` if it is not so already,
        and in the same transaction puts the event's ``deliveries`` ((url, JSON body)
        pairs, under ``event_id``) in the webhook outbox. Returns whether this call made
        the change: of many workers that see the same change, exactly one gets True,
        and only its event is sent."""

    @abc.abstractmethod
    def webhook_outbox_add(self, event_id: str, deliveries: Sequence[tuple[str, str]], now: float) -> None:
        """Puts an event's ``deliveries`` ((url, JSON body) pairs) in the webhook outbox,
        due at once. An (event id, url) already there is left as it is."""

    @abc.abstractmethod
    def webhook_outbox_claim(self, now: float, limit: int, hold: float) -> list[WebhookDelivery]:
        """Takes up to ``limit`` undelivered deliveries due at ``now``, oldest first, and
        moves them ``hold`` seconds on, so no other worker takes them while this one
        posts them (one it never settles is taken again after ``hold``)."""

    @abc.abstractmethod
    def webhook_outbox_settle(self, delivery_id: int, now: float, error: Optional[str] = None,
                              retry_at: Optional[float] = None) -> None:  # fmt: skip
        """Records one attempt of a claimed delivery: delivered at ``now`` (no ``error``),
        or failed with ``error`` and due again at ``retry_at`` (None: given up)."""

    @abc.abstractmethod
    def webhook_outbox_prune(self, before: float, limit: int) -> int:
        """Deletes up to ``limit`` deliveries created before ``before`` that were
        delivered or given up on; returns how many."""

    # ----- tenant settings (fairqueue.tenants) ---------------------------------------------

    @abc.abstractmethod
    def settings_version(self) -> int:
        """The version of the stored settings: it grows with every committed change."""

    @abc.abstractmethod
    def settings_read(self) -> tuple[int, list[SettingRow]]:
        """Every stored settings row with the version they are at, from one snapshot."""

    @abc.abstractmethod
    def settings_write(self, changes: Sequence[SettingChange], now: float, by: Optional[str] = None) -> int:
        """Applies ``changes`` in one transaction and returns the new version.

        Each change patches one row: its ``values`` are merged into the row's (a value
        of None removes that field; a row left with no field is deleted). The
        transaction serialises with every claim (:meth:`job_claim`), so a claim
        committed after it applies the new settings (and one built from older settings
        claims nothing).
        """

    @abc.abstractmethod
    def rate_states(self, scopes: Sequence[RateScope]) -> dict[RateScope, float]:
        """The stored GCRA state (theoretical arrival time) of each of ``scopes`` that has one."""

    def settings_subscribe(self, callback: Callable[[], None]) -> Optional[Callable[[], None]]:
        """Calls ``callback`` (from another thread) soon after any process changes the
        settings; returns the unsubscribe function, or None if this store does not
        announce changes (readers then poll :meth:`settings_version`)."""
        return None

    @abc.abstractmethod
    def job_rerun(self, job_ids: Sequence[int], now: float, org: Optional[str] = None) -> list[int]:
        """Queues the failed, discarded and aborted jobs among ``job_ids`` (of ``org``
        only, when given) again, as new deliveries of the same records: unfinished,
        their handler attempts back to 0 (a fresh retry budget; ``attempts`` and
        ``errors`` keep their history), the extended status saying it was a re-run.
        Batches, and jobs whose duplicate signature a live job holds now, are left
        as they are. Returns the ids queued, in order."""

    @abc.abstractmethod
    def job_abort(self, job_id: int, now: float, org: Optional[str] = None) -> Optional[JobStatus]:
        """Aborts ``job_id`` (only if it belongs to ``org``, when given).

        Holding or queued: becomes aborted and never runs. Processing: the cancel
        flag is set for the handler to see. Returns the status after the call, or
        None if there is no such job (for that org).
        """

    @abc.abstractmethod
    def close(self) -> None:
        """Releases the store's resources."""

    def __enter__(self) -> Storage:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def job_filter(
    mark: str,
    org: Optional[str],
    kind: Optional[str],
    status: Optional[JobStatus],
    before_id: Optional[int],
) -> tuple[str, list[Any]]:
    """:meth:`Storage.job_list`'s filters as a SQL condition with ``mark`` placeholders, and its parameters."""
    where = ["1 = 1"]
    params: list[Any] = []
    tests = (("org =", org), ("kind =", kind), ("status =", status.value if status else None), ("id <", before_id))
    for test, value in tests:
        if value is not None:
            where.append(f"{test} {mark}")
            params.append(value)
    return " AND ".join(where), params


def check_finishes(finishes: Iterable[Finish]) -> None:
    """Refuses an outcome no delivery can end in."""
    for f in finishes:
        if f.status not in _OUTCOMES:
            raise StorageError(
                f"cannot finish job {f.job_id} as {f.status.value!r}: expected completed, failed, discarded or queued"
            )


_OUTCOMES = (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.DISCARDED, JobStatus.QUEUED)


@dataclass
class Held:
    """Jobs processing now in each capped scope a claim's candidates fall under."""

    pairs: dict[tuple[str, str], int] = field(default_factory=dict)
    orgs: dict[str, int] = field(default_factory=dict)
    keys: dict[tuple[str, Optional[str]], int] = field(default_factory=dict)


@dataclass
class Admitted:
    """What :func:`admit` decided: the ids to claim, in order, and the rest with why."""

    ids: list[int] = field(default_factory=list)
    at_cap: list[int] = field(default_factory=list)
    paused: list[int] = field(default_factory=list)
    rate_limited: dict[int, float] = field(default_factory=dict)
    tats: dict[RateScope, float] = field(default_factory=dict)
    """The rate-limit states the claim moved: store them in its transaction."""


def capped_scopes(
    candidates: Sequence[Candidate], admission: Admission
) -> tuple[set[tuple[str, str]], set[str], set[tuple[str, Optional[str]]]]:
    """The capped pairs, orgs and keys among ``candidates``: what a claim counts."""
    pair_caps, org_caps, key_caps = admission.pair_caps, admission.org_caps, admission.key_caps
    pairs = {(c.org, c.kind) for c in candidates if (c.org, c.kind) in pair_caps} if pair_caps else set()
    orgs = {c.org for c in candidates if c.org in org_caps} if org_caps else set()
    keys = {(c.org, c.key) for c in candidates if (c.org, c.key) in key_caps} if key_caps else set()
    return pairs, orgs, keys


def rate_scope_text(scope: RateScope) -> str:
    """How a SQL store keys a rate limit's state: the scope as a compact JSON array."""
    return json.dumps(list(scope), ensure_ascii=False, separators=(",", ":"))


def rate_scopes(candidates: Iterable[Candidate], admission: Admission) -> set[RateScope]:
    """The rate-limited scopes among ``candidates``: whose state a claim reads and locks."""
    return {scope for c in candidates for scope in admission.rate_scopes(c)}


def admit(
    candidates: Iterable[Candidate], held: Held, tats: Mapping[RateScope, float], admission: Admission, now: float
) -> Admitted:
    """Splits queued candidates, in the order a worker's core chose them, into those
    that fit under every cap and rate limit they fall under and the rest.

    Caps count ``held`` (processing now) plus what this claim admits. Rate limits are
    GCRA: a scope's theoretical arrival time ``tat`` moves ``cost × interval`` per
    admitted job, and a job fits while ``tat`` stays within ``burst × interval`` of
    now; one that does not learns the instant it will (:attr:`Admitted.rate_limited`),
    and the jobs after it in the same scope wait for it (a costly job is not starved
    by cheaper ones behind it).
    A job is charged to its rate limits only once it fits under its caps too.
    """
    pairs, orgs, keys = dict(held.pairs), dict(held.orgs), dict(held.keys)
    pair_caps, org_caps, key_caps = admission.pair_caps, admission.org_caps, admission.key_caps
    paused, rated = bool(admission.paused), bool(admission.rates)
    state = dict(tats)
    waiting: dict[RateScope, float] = {}  # scope -> when the job it holds back will have room
    out = Admitted()
    for c in candidates:
        org = c.org
        if paused and admission.pauses(c):
            out.paused.append(c.id)
            continue
        pair = (org, c.kind)
        key = (org, c.key) if key_caps else None
        if (
            (pair_caps and pairs.get(pair, 0) >= pair_caps.get(pair, _NO_CAP))
            or (org_caps and orgs.get(org, 0) >= org_caps.get(org, _NO_CAP))
            or (key is not None and keys.get(key, 0) >= key_caps.get(key, _NO_CAP))
        ):
            out.at_cap.append(c.id)
            continue
        if rated:
            moved: dict[RateScope, float] = {}
            room = now
            for scope in admission.rate_scopes(c):
                rate = admission.rates[scope]
                # The store keeps times as floats (the core, integer nanoseconds): each
                # admitted job's sum rounds by up to half a last place of a UNIX time
                # (0.12 µs today): a run of n jobs may start up to n/2 last places early.
                after = max(state.get(scope, now), now) + c.cost * rate.interval
                # A float's last bits must not refuse a job that fits exactly.
                latest = now + rate.burst * rate.interval * (1 + 1e-9)
                if after > latest:
                    room = max(room, after - rate.burst * rate.interval)
                # A scope's jobs start in the order given: none passes one that waits for room.
                room = max(room, waiting.get(scope, now))
                moved[scope] = after
            if room > now:
                out.rate_limited[c.id] = room
                for scope in moved:
                    waiting[scope] = max(waiting.get(scope, now), room)
                continue
            state.update(moved)
            out.tats.update(moved)
        # Only the capped counts matter (an uncapped scope's count is never read).
        if pair_caps:
            pairs[pair] = pairs.get(pair, 0) + 1
        if org_caps:
            orgs[org] = orgs.get(org, 0) + 1
        if key is not None:
            keys[key] = keys.get(key, 0) + 1
        out.ids.append(c.id)
    return out


_NO_CAP = float("inf")


def merge_settings(
    changes: Iterable[SettingChange], current: Callable[[tuple[str, str, str, str]], Optional[SettingRow]]
) -> list[tuple[SettingChange, dict[str, Any]]]:
    """Each change with the values its row will have once applied (empty: delete the
    row), given ``current`` (a row's stored state, None if it has none). Changes to one
    row apply in order."""
    rows: dict[tuple[str, str, str, str], dict[str, Any]] = {}
    merged: list[tuple[SettingChange, dict[str, Any]]] = []
    for change in changes:
        where = (change.scope, change.name, change.kind, change.key)
        if where not in rows:
            row = current(where)
            rows[where] = dict(row.values) if row is not None else {}
        values = rows[where]
        for field_name, value in change.values.items():
            if value is None:
                values.pop(field_name, None)
            else:
                values[field_name] = value
        merged.append((change, dict(values)))
    return merged
