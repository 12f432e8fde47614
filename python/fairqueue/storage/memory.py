"""The in-memory store: the reference implementation of the storage interface,
for tests and simulation. Nothing survives the process."""

from __future__ import annotations

import bisect
import dataclasses
import functools
import json
import math
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Optional, TypeVar

from fairqueue.errors import DuplicateSignature, LimitExceeded
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
from fairqueue.retention import DOWNSAMPLE_STEP, SAMPLED_HISTORY, prune_order
from fairqueue.storage.interface import (
    FLEX_ACTIVE,
    RERUNNABLE,
    DailyUsage,
    FinishedCallback,
    Held,
    NextFire,
    Storage,
    WebhookDelivery,
    admit,
    capped_scopes,
    check_daily_limits,
    check_finishes,
    dead_worker_outcome,
    flex_admit,
    flex_order,
    live_worker_named,
    merge_settings,
    refused_fires,
    rerun_note,
    schedule_name_taken,
    scheduled_job,
    too_many_schedules,
    usage_hour,
)
from fairqueue.storage.waiting import FinishedFanout

__all__ = ["MemoryStorage"]


_Scope = TypeVar("_Scope")


def _step(counts: dict[_Scope, int], scope: _Scope, step: int) -> None:
    """Moves one count, dropping it at zero (the maps stay as small as what runs)."""
    n = counts.get(scope, 0) + step
    if n:
        counts[scope] = n
    else:
        del counts[scope]


class MemoryStorage(Storage):
    """A store held in dicts, safe to share between threads.

    Its workers live in its process, so a worker's proof of life is its registration
    itself: it is dead only once it left while still holding jobs (its loop crashed).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jobs: dict[int, JobRecord] = {}
        self._next_id = 1
        # Indexes so the worker's frequent calls do not scan every job.
        self._ready_log: list[tuple[int, int]] = []  # (ready_seq, job id), in seq order
        self._ready_seq: dict[int, int] = {}  # job id -> its current ready_seq
        self._signatures: dict[str, int] = {}  # live duplicate signature -> job id
        self._processing: set[int] = set()
        self._held = Held()  # processing jobs per (org, kind), org and (org, key), kept by _set
        self._usage: dict[tuple[str, int], int] = {}  # (org, usage hour) -> jobs stored
        self._triggers: dict[int, TriggerRecord] = {}
        self._batch_errors: list[BatchErrorEvent] = []
        self._flex: dict[str, list[int]] = {}  # org -> holding batch job ids, in flex-queue order
        self._history: list[HistoryEntry] = []
        self._workers: dict[str, list[Any]] = {}  # name -> [info, last seen, alive, the job it runs alone]
        self._finished = FinishedFanout()  # waiters of job_finished_subscribe
        self._episodes: dict[str, float] = {}  # open alert episode -> when it opened
        self._outbox: dict[int, list[Any]] = {}  # id -> [event id, url, body, attempts, due, delivered, error, created]
        self._settings: dict[tuple[str, str, str, str], SettingRow] = {}
        self._settings_version = 0
        self._settings_listeners: list[Callable[[], None]] = []
        self._rate_state: dict[RateScope, float] = {}  # GCRA theoretical arrival time per rate-limited scope

    # ----- bookkeeping (lock held) ----------------------------------------------------

    def _set(self, job_id: int, **changes: Any) -> JobRecord:
        """Replaces a record and keeps the indexes in step with its status."""
        # A shallow copy with its fields replaced: the frozen record handed out
        # earlier stays as it was, without dataclasses.replace's re-validation.
        old = self._jobs[job_id]
        record = JobRecord.__new__(JobRecord)
        record.__dict__.update(old.__dict__, **changes)
        self._jobs[job_id] = record
        if record.status is JobStatus.QUEUED and "status" in changes:
            seq = len(self._ready_log) + 1
            self._ready_log.append((seq, job_id))
            self._ready_seq[job_id] = seq
        if record.status is JobStatus.PROCESSING:
            if job_id not in self._processing:
                self._processing.add(job_id)
                self._count_processing(record, 1)
        elif job_id in self._processing:
            self._processing.discard(job_id)
            self._count_processing(old, -1)
        finished = record.status.finished
        if finished and record.duplicate_signature:
            self._signatures.pop(record.duplicate_signature, None)
        if finished and "status" in changes and self._finished.listening:
            self._finished.publish((job_id,))  # every path to an outcome passes here, under the lock
        return record

    def _count_processing(self, record: JobRecord, step: int) -> None:
        """Keeps the processing counts per (org, kind), org and (org, key) that claims check caps against."""
        _step(self._held.pairs, (record.org, record.kind), step)
        _step(self._held.orgs, record.org, step)
        _step(self._held.keys, (record.org, record.key), step)

    def _usage_of(self, org: str, now: float) -> DailyUsage:
        start = DailyUsage.window_start(now)
        hours = [(hour, n) for (o, hour), n in self._usage.items() if o == org and hour >= start]
        return DailyUsage(org, sum(n for _, n in hours), min((h for h, _ in hours), default=None))

    def _flex_counts(self, org: str) -> tuple[int, int]:
        active = sum(
            1 for r in self._jobs.values()
            if r.org == org and r.kind == "batch" and r.status in (JobStatus.QUEUED, JobStatus.PREPARING, JobStatus.PROCESSING)
        )  # fmt: skip
        return active, len(self._flex.get(org, []))

    def _promote(self, org: str) -> None:
        """Starts ``org``'s next holding batch if it has room for one."""
        holding = self._flex.get(org)
        if holding and self._flex_counts(org)[0] < FLEX_ACTIVE:
            self._set(holding.pop(0), status=JobStatus.QUEUED)

    def _insert(self, jobs: Sequence[NewJob], now: float) -> list[int]:
        statuses = flex_admit(jobs, self._flex_counts) if any(j.kind == "batch" for j in jobs) else None
        hour = usage_hour(now)
        for j in jobs:
            self._usage[(j.org, hour)] = self._usage.get((j.org, hour), 0) + 1
        ids: list[int] = []
        for j in jobs:
            job_id = self._store_new(j, now, JobStatus.HOLDING)  # queued just below
            if statuses is not None and statuses[len(ids)] is JobStatus.HOLDING:
                self._flex.setdefault(j.org, []).append(job_id)
            else:
                self._set(job_id, status=JobStatus.QUEUED)
            if j.duplicate_signature:
                self._signatures[j.duplicate_signature] = job_id
            ids.append(job_id)
        return ids

    def _store_new(self, j: NewJob, now: float, status: JobStatus, error: Optional[str] = None) -> int:
        """Stores ``j``'s record with a new id (``error``: failed at ``now`` without running)."""
        job_id, self._next_id = self._next_id, self._next_id + 1
        self._jobs[job_id] = JobRecord(
            id=job_id, org=j.org, kind=j.kind, handler=j.handler, payload=j.payload,
            status=status, created_at=now, run_at=j.run_at, started_at=None,
            finished_at=None if error is None else now, attempts=0, items_processed=0, items_total=None,
            error_count=0 if error is None else 1, extended_status=error, parent_id=j.parent_id,
            chain_depth=j.chain_depth, duplicate_signature=j.duplicate_signature, lease_owner=None,
            lease_expires_at=None, cancel_requested=False, queue=j.queue, key=j.key, priority=j.priority, cost=j.cost,
        )  # fmt: skip
        return job_id

    # ----- the interface ----------------------------------------------------------------

    hears_every_finish = True  # its workers live in its process

    def job_finished_subscribe(self, callback: FinishedCallback) -> Optional[Callable[[], None]]:
        """See :meth:`Storage.job_finished_subscribe`: called in the thread storing the outcome."""
        return self._finished.subscribe(callback)

    def job_enqueue(
        self, jobs: Sequence[NewJob], now: float, daily_limits: Optional[Mapping[str, int]] = None
    ) -> list[int]:
        signatures = [j.duplicate_signature for j in jobs if j.duplicate_signature]
        with self._lock:
            if daily_limits:
                check_daily_limits(jobs, daily_limits, lambda org: self._usage_of(org, now), now)
            if any(s in self._signatures for s in signatures) or len(set(signatures)) < len(signatures):
                raise DuplicateSignature(
                    f"a job with duplicate signature among {signatures!r} is already holding, queued or running; "
                    "nothing was enqueued"
                )
            return self._insert(jobs, now)

    def usage_daily(self, org: str, now: float) -> DailyUsage:
        with self._lock:
            return self._usage_of(org, now)

    def trigger_create(self, trigger: NewTrigger, now: float, max_per_org: int) -> int:
        with self._lock:
            live = [t for t in self._triggers.values() if t.org == trigger.org and t.state is TriggerState.WAITING]
            if any(t.name == trigger.name for t in live):
                raise schedule_name_taken(trigger.org, trigger.name)
            if len(live) >= max_per_org:
                raise too_many_schedules(trigger.org, len(live), max_per_org)
            trigger_id = len(self._triggers) + 1
            self._triggers[trigger_id] = TriggerRecord(
                id=trigger_id, org=trigger.org, name=trigger.name, cron=trigger.cron, timezone=trigger.timezone,
                handler=trigger.handler, payload=trigger.payload, state=TriggerState.WAITING, created_at=now,
                next_fire_at=trigger.next_fire_at, previous_fire_at=None, times_fired=0, last_job_id=None,
                queue=trigger.queue, priority=trigger.priority, cost=trigger.cost,
            )  # fmt: skip
            return trigger_id

    def trigger_get(self, trigger_id: int) -> Optional[TriggerRecord]:
        with self._lock:
            return self._triggers.get(trigger_id)

    def trigger_list(self, *, org: Optional[str] = None, state: Optional[TriggerState] = None) -> list[TriggerRecord]:
        with self._lock:
            return [
                t
                for _, t in sorted(self._triggers.items())
                if (org is None or t.org == org) and (state is None or t.state is state)
            ]

    def trigger_abort(self, trigger_id: int, org: Optional[str] = None) -> Optional[TriggerState]:
        with self._lock:
            t = self._triggers.get(trigger_id)
            if t is None or (org is not None and t.org != org):
                return None
            if t.state is TriggerState.WAITING:
                self._triggers[trigger_id] = dataclasses.replace(t, state=TriggerState.ABORTED, next_fire_at=None)
            return t.state

    def trigger_fire_due(
        self, now: float, next_fire: NextFire, limit: int = 100, daily_limit: Optional[Callable[[str], int]] = None
    ) -> list[int]:
        fired: list[int] = []
        with self._lock:
            due = sorted(
                (t for t in self._triggers.values() if t.state is TriggerState.WAITING and t.next_fire_at is not None
                 and t.next_fire_at <= now),
                key=lambda t: (t.next_fire_at, t.id),
            )[:limit]  # fmt: skip
            refused = refused_fires(due, daily_limit, lambda org: self._usage_of(org, now), now)
            for t in due:
                if t.id in refused:
                    # Stored, not counted in the daily usage: it never runs.
                    job_id = self._store_new(scheduled_job(t), now, JobStatus.FAILED, refused[t.id])
                else:
                    [job_id] = self._insert([scheduled_job(t)], now)
                    fired.append(job_id)
                following = next_fire(t, now)
                self._triggers[t.id] = dataclasses.replace(
                    t,
                    state=TriggerState.WAITING if following is not None else TriggerState.COMPLETE,
                    next_fire_at=following,
                    previous_fire_at=t.next_fire_at,
                    times_fired=t.times_fired + 1,
                    last_job_id=job_id,
                )
        return fired

    def job_signature_taken(self, signature: str) -> bool:
        with self._lock:
            return signature in self._signatures

    def job_cancel_requested(self, job_ids: Sequence[int]) -> list[int]:
        with self._lock:
            return [i for i in job_ids if i in self._jobs and self._jobs[i].cancel_requested]

    def job_get(self, job_id: int) -> Optional[JobRecord]:
        with self._lock:
            return self._jobs.get(job_id)

    def job_list(
        self,
        *,
        org: Optional[str] = None,
        kind: Optional[str] = None,
        status: Optional[JobStatus] = None,
        before_id: Optional[int] = None,
        limit: int = 100,
    ) -> list[JobRecord]:
        with self._lock:
            matches = [
                r
                for job_id, r in sorted(self._jobs.items(), reverse=True)
                if (org is None or r.org == org)
                and (kind is None or r.kind == kind)
                and (status is None or r.status is status)
                and (before_id is None or job_id < before_id)
            ]
        return matches[:limit]

    def job_pending(
        self, after_seq: int = 0, limit: Optional[int] = None, queues: Optional[Sequence[str]] = None
    ) -> list[PendingJob]:
        pending = []
        served = None if queues is None else set(queues)
        with self._lock:
            for seq, job_id in self._ready_log[bisect.bisect_right(self._ready_log, (after_seq, float("inf"))) :]:
                r = self._jobs[job_id]
                if r.status is JobStatus.QUEUED and self._ready_seq[job_id] == seq and (served is None or r.queue in served):
                    pending.append(PendingJob(r.id, r.org, r.kind, r.run_at, r.key, r.priority, r.cost, r.attempts, seq, r.queue))
                    if limit is not None and len(pending) == limit:
                        break
        return pending

    def job_left_queue(self, since: float, worker: str) -> list[int]:
        with self._lock:
            return [
                r.id for r in self._jobs.values()
                if (r.status is JobStatus.PROCESSING and r.lease_owner != worker)
                or (r.finished_at is not None and r.finished_at >= since)
            ]  # fmt: skip

    def job_counts(self, live: bool = False) -> dict[tuple[str, str, JobStatus], int]:
        counts: dict[tuple[str, str, JobStatus], int] = {}
        with self._lock:
            for r in self._jobs.values():
                if live and r.status.finished:
                    continue
                key = (r.org, r.kind, r.status)
                counts[key] = counts.get(key, 0) + 1
        return counts

    def job_claim(
        self,
        job_ids: Sequence[int],
        worker: str,
        lease_until: float,
        now: float,
        admission: Optional[Admission] = None,
    ) -> Claimed:
        with self._lock:
            queued = [job_id for job_id in job_ids if job_id in self._jobs and self._jobs[job_id].status is JobStatus.QUEUED]
            at_cap: list[int] = []
            paused: list[int] = []
            rate_limited: dict[int, float] = {}
            if admission is not None:
                if admission.version is not None and admission.version != self._settings_version:
                    return Claimed(stale=True)
                candidates = [
                    Candidate(r.id, r.org, r.kind, r.key, r.cost, r.queue) for r in (self._jobs[i] for i in queued)
                ]
                pairs, orgs, keys = capped_scopes(candidates, admission)
                running = self._held
                held = Held(
                    {scope: running.pairs[scope] for scope in pairs if scope in running.pairs},
                    {scope: running.orgs[scope] for scope in orgs if scope in running.orgs},
                    {scope: running.keys[scope] for scope in keys if scope in running.keys},
                )
                admitted = admit(candidates, held, self._rate_state, admission, now)
                self._rate_state.update(admitted.tats)
                queued, at_cap, rate_limited, paused = admitted.ids, admitted.at_cap, admitted.rate_limited, admitted.paused
            return Claimed((self._claim_one(job_id, worker, lease_until, now) for job_id in queued),
                           at_cap, rate_limited, paused=paused)  # fmt: skip

    def _claim_one(self, job_id: int, worker: str, lease_until: float, now: float) -> JobRecord:
        """Claims a queued job: what ``_set(job_id, status=PROCESSING, …)`` does, less the
        checks that cannot apply to a queued job (no ready-log entry to add, not
        finished): a claim's per-job cost."""
        old = self._jobs[job_id]
        record = JobRecord.__new__(JobRecord)
        fields = record.__dict__
        fields.update(old.__dict__)
        fields["status"] = JobStatus.PROCESSING
        fields["lease_owner"] = worker
        fields["lease_expires_at"] = lease_until
        fields["started_at"] = old.started_at or now
        fields["attempts"] = old.attempts + 1
        self._jobs[job_id] = record
        self._processing.add(job_id)
        self._count_processing(record, 1)
        return record

    def job_heartbeat(self, job_ids: Sequence[int], worker: str, lease_until: float) -> None:
        with self._lock:
            for job_id in job_ids:
                r = self._jobs.get(job_id)
                if r and r.status is JobStatus.PROCESSING and r.lease_owner == worker:
                    self._set(job_id, lease_expires_at=lease_until)

    def job_finish(self, finishes: Sequence[Finish]) -> list[int]:
        check_finishes(finishes)
        applied = []
        with self._lock:
            for f in finishes:
                r = self._jobs.get(f.job_id)
                if not r or r.status is not JobStatus.PROCESSING or r.lease_owner != f.worker:
                    continue
                errors = r.error_count + (f.error is not None and not f.given_back)
                common: dict[str, Any] = {"status": f.status, "lease_owner": None, "lease_expires_at": None,
                                          "error_count": errors, "handler_attempts": r.handler_attempts + f.ran}  # fmt: skip
                if f.attempt_error is not None:
                    common["errors"] = json.dumps([*r.attempt_errors(), json.loads(f.attempt_error)])
                if f.status is JobStatus.QUEUED:
                    attempts = max(r.attempts - 1, 0) if f.given_back else r.attempts
                    self._set(f.job_id, run_at=f.retry_at, extended_status=f.error, attempts=attempts, **common)
                else:
                    self._set(f.job_id, finished_at=f.at, extended_status=f.error or r.extended_status, result=f.result, **common)
                    if r.kind == "batch":
                        self._promote(r.org)
                applied.append(f.job_id)
                if f.progress is not None:
                    p = f.progress
                    self._set(
                        f.job_id, payload=p.payload, items_processed=p.items_processed, items_total=p.items_total,
                        error_count=p.error_count, attempts=0 if f.status is JobStatus.QUEUED else r.attempts,
                    )  # fmt: skip
                    self._batch_errors.extend(p.errors)
                if not f.children:
                    continue
                # A signature a live job holds, or an earlier child of this outcome, is taken.
                seen: set[str] = set()
                children, taken = [], []
                for c in f.children:
                    signature = c.duplicate_signature
                    if signature and (signature in seen or signature in self._signatures):
                        taken.append(signature)
                        continue
                    if signature:
                        seen.add(signature)
                    children.append(c)
                try:
                    if f.daily_limits:
                        check_daily_limits(children, f.daily_limits, functools.partial(self._usage_of, now=f.at), f.at)
                    self._insert(children, f.at)
                except LimitExceeded as e:  # past the daily limit, or a batch child past a full flex queue
                    self._set(f.job_id, extended_status=f"children not enqueued: {e}")
                if taken:
                    self._set(
                        f.job_id,
                        extended_status=f"child not enqueued: duplicate signature {taken!r} already queued or running",
                    )
        return applied

    def history_append(self, entries: Sequence[HistoryEntry]) -> None:
        with self._lock:
            self._history.extend(entries)
            self._history.sort(key=lambda e: e.at)

    def history_read(self, since: float, kinds: Optional[Sequence[str]] = None) -> list[HistoryEntry]:
        with self._lock:
            start = bisect.bisect_left([e.at for e in self._history], since)
            return [e for e in self._history[start:] if kinds is None or e.kind in kinds]

    def job_waiting_facts(self, record: JobRecord, now: float, window: float) -> WaitingFacts:
        with self._lock:
            jobs = list(self._jobs.values())
        queued = [r for r in jobs if r.status is JobStatus.QUEUED and r.id < record.id]
        pair = [r for r in jobs if r.org == record.org and r.kind == record.kind]
        recent = [r for r in jobs if r.finished_at is not None and r.finished_at >= now - window]
        return WaitingFacts(
            ahead_in_line=sum(1 for r in queued if r.org == record.org and r.kind == record.kind),
            ahead_in_queue=sum(1 for r in queued if r.run_at is None or r.run_at <= now),
            holders=sorted(r.id for r in pair if r.status is JobStatus.PROCESSING),
            finished_in_line=sum(1 for r in recent if r.org == record.org and r.kind == record.kind),
            finished_in_queue=len(recent),
            processing=sum(1 for r in jobs if r.status is JobStatus.PROCESSING),
            first_finished_at=min((r.finished_at for r in recent if r.finished_at is not None), default=None),
            active_lines=len({(r.org, r.kind) for r in jobs if r.status in (JobStatus.QUEUED, JobStatus.PROCESSING)}),
        )

    def flex_list(self, org: str) -> list[JobRecord]:
        with self._lock:
            return [self._jobs[i] for i in self._flex.get(org, [])]

    def flex_move(self, job_id: int, org: str, *, before: Optional[int] = None, after: Optional[int] = None,
                  to: Optional[str] = None) -> list[int]:  # fmt: skip
        with self._lock:
            order = flex_order(list(self._flex.get(org, [])), job_id, before, after, to)
            self._flex[org] = order
            return list(order)

    def batch_errors(self, job_id: int) -> list[BatchErrorEvent]:
        with self._lock:
            return [e for e in self._batch_errors if e.job_id == job_id]

    def job_requeue_expired(self, now: float) -> list[int]:
        with self._lock:
            expired = sorted(
                job_id
                for job_id in self._processing
                if (self._jobs[job_id].lease_expires_at or now) < now
            )
            for job_id in expired:
                self._set(
                    job_id,
                    status=JobStatus.QUEUED,
                    lease_owner=None,
                    lease_expires_at=None,
                    extended_status="lease expired; re-delivered",
                )
        return expired

    def worker_register(self, worker: WorkerInfo, now: float) -> None:
        with self._lock:
            known = self._workers.get(worker.name)
            if known is not None and known[2]:
                raise live_worker_named(worker.name, known[0].pid, known[0].host)
        self.worker_reap(now)
        with self._lock:
            self._workers[worker.name] = [worker, now, True, None]

    def worker_seen(self, name: str, now: float) -> bool:
        with self._lock:
            if name in self._workers:
                self._workers[name][1] = now
        return True

    def worker_alone(self, name: str, job_id: Optional[int]) -> None:
        with self._lock:
            if name in self._workers:
                self._workers[name][3] = job_id

    def worker_list(self) -> list[WorkerRecord]:
        with self._lock:
            running: dict[Optional[str], int] = {}
            for job_id in self._processing:
                owner = self._jobs[job_id].lease_owner
                running[owner] = running.get(owner, 0) + 1
            return [
                WorkerRecord(info, seen, alive, running.get(name, 0))
                for name, (info, seen, alive, _) in sorted(self._workers.items())
            ]

    def worker_reap(self, now: float) -> Reaped:
        reaped = Reaped([], [], [])
        with self._lock:
            for name, (info, _, alive, alone) in list(self._workers.items()):
                if alive:
                    continue
                del self._workers[name]
                reaped.workers.append(name)
                for job_id in sorted(j for j in self._processing if self._jobs[j].lease_owner == name):
                    r = self._jobs[job_id]
                    status, note, deaths = dead_worker_outcome(name, info.mode, job_id, r.worker_deaths, alone)
                    common = {"status": status, "lease_owner": None, "lease_expires_at": None, "extended_status": note,
                              "worker_deaths": deaths}  # fmt: skip
                    if status is JobStatus.QUEUED:
                        self._set(job_id, **common)
                        reaped.requeued.append(job_id)
                    else:
                        self._set(job_id, finished_at=now, error_count=r.error_count + 1, **common)
                        reaped.quarantined.append(job_id)
                        if r.kind == "batch":
                            self._promote(r.org)
        return reaped

    def worker_leave(self, name: str) -> None:
        with self._lock:
            if name not in self._workers:
                return
            if any(self._jobs[j].lease_owner == name for j in self._processing):
                self._workers[name][2] = False
            else:
                del self._workers[name]

    def alert_episodes(self) -> dict[str, float]:
        with self._lock:
            return dict(self._episodes)

    def alert_episode_set(self, key: str, open: bool, now: float, event_id: str,
                          deliveries: Sequence[tuple[str, str]]) -> bool:  # fmt: skip
        with self._lock:
            if (key in self._episodes) == open:
                return False
            if open:
                self._episodes[key] = now
            else:
                del self._episodes[key]
            self._outbox_add(event_id, deliveries, now)
            return True

    def webhook_outbox_add(self, event_id: str, deliveries: Sequence[tuple[str, str]], now: float) -> None:
        with self._lock:
            self._outbox_add(event_id, deliveries, now)

    def _outbox_add(self, event_id: str, deliveries: Sequence[tuple[str, str]], now: float) -> None:
        taken = {(row[0], row[1]) for row in self._outbox.values()}
        for url, body in deliveries:
            if (event_id, url) not in taken:
                self._outbox[max(self._outbox, default=0) + 1] = [event_id, url, body, 0, now, None, None, now]

    def webhook_outbox_claim(self, now: float, limit: int, hold: float) -> list[WebhookDelivery]:
        with self._lock:
            due = sorted((row[4], i) for i, row in self._outbox.items()
                         if row[5] is None and row[4] is not None and row[4] <= now)[:limit]  # fmt: skip
            claimed = []
            for _, i in due:
                row = self._outbox[i]
                row[4] = now + hold
                claimed.append(WebhookDelivery(i, row[0], row[1], row[2], row[3], row[7]))
            return claimed

    def webhook_outbox_settle(self, delivery_id: int, now: float, error: Optional[str] = None,
                              retry_at: Optional[float] = None) -> None:  # fmt: skip
        with self._lock:
            row = self._outbox.get(delivery_id)
            if row is None:
                return
            row[3] += 1
            if error is None:
                row[4], row[5] = None, now
            else:
                row[4], row[6] = retry_at, error

    def webhook_outbox_prune(self, before: float, limit: int) -> int:
        with self._lock:
            done = [i for i, row in sorted(self._outbox.items()) if row[7] < before and row[4] is None][:limit]
            for i in done:
                del self._outbox[i]
            return len(done)

    def settings_version(self) -> int:
        with self._lock:
            return self._settings_version

    def settings_read(self) -> tuple[int, list[SettingRow]]:
        with self._lock:
            return self._settings_version, list(self._settings.values())

    def settings_write(self, changes: Sequence[SettingChange], now: float, by: Optional[str] = None) -> int:
        with self._lock:
            for change, merged in merge_settings(changes, self._settings.get):
                where = (change.scope, change.name, change.kind, change.key)
                if merged:
                    self._settings[where] = SettingRow(*where, merged, now, by)
                else:
                    self._settings.pop(where, None)
            self._settings_version += 1
            version, listeners = self._settings_version, list(self._settings_listeners)
        for callback in listeners:
            callback()
        return version

    def rate_states(self, scopes: Sequence[RateScope]) -> dict[RateScope, float]:
        with self._lock:
            return {scope: self._rate_state[scope] for scope in scopes if scope in self._rate_state}

    def settings_subscribe(self, callback: Callable[[], None]) -> Optional[Callable[[], None]]:
        with self._lock:
            self._settings_listeners.append(callback)

        def unsubscribe() -> None:
            with self._lock:
                if callback in self._settings_listeners:
                    self._settings_listeners.remove(callback)

        return unsubscribe

    def job_rerun(self, job_ids: Sequence[int], now: float, org: Optional[str] = None) -> list[int]:
        queued = []
        with self._lock:
            for job_id in sorted(set(job_ids)):
                r = self._jobs.get(job_id)
                if r is None or r.status not in RERUNNABLE or r.kind == "batch" or (org is not None and r.org != org):
                    continue
                if r.duplicate_signature is not None and r.duplicate_signature in self._signatures:
                    continue
                self._set(job_id, status=JobStatus.QUEUED, finished_at=None, run_at=None, handler_attempts=0,
                          cancel_requested=False, extended_status=rerun_note(r.status.value, r.extended_status))  # fmt: skip
                if r.duplicate_signature is not None:
                    self._signatures[r.duplicate_signature] = job_id
                queued.append(job_id)
        return queued

    def job_abort(self, job_id: int, now: float, org: Optional[str] = None) -> Optional[JobStatus]:
        with self._lock:
            r = self._jobs.get(job_id)
            if r is None or (org is not None and r.org != org):
                return None
            if r.status in (JobStatus.HOLDING, JobStatus.QUEUED):
                self._set(job_id, status=JobStatus.ABORTED, finished_at=now, extended_status="aborted while waiting")
                if r.status is JobStatus.HOLDING:
                    self._flex[r.org].remove(job_id)
                elif r.kind == "batch":
                    self._promote(r.org)
                return JobStatus.ABORTED
            if r.status in (JobStatus.PREPARING, JobStatus.PROCESSING):
                self._set(job_id, cancel_requested=True)
            return r.status

    # ----- retention ------------------------------------------------------------------------

    def job_prune(self, finished_before: Mapping[JobStatus, float], limit: int, dry_run: bool = False) -> int:
        order = prune_order(finished_before)
        with self._lock:
            gone: list[int] = []
            for status, cutoff in order:
                old = sorted((r.finished_at, r.id) for r in self._jobs.values()
                             if r.status is status and r.finished_at is not None and r.finished_at < cutoff)  # fmt: skip
                gone += [job_id for _, job_id in old[: limit - len(gone)]]
            if dry_run or not gone:
                return len(gone)
            dropped = set(gone)
            for job_id in gone:
                del self._jobs[job_id]
                self._ready_seq.pop(job_id, None)
            self._ready_log = [(seq, job_id) for seq, job_id in self._ready_log if job_id not in dropped]
            self._batch_errors = [e for e in self._batch_errors if e.job_id not in dropped]
            for org, holding in self._flex.items():
                self._flex[org] = [job_id for job_id in holding if job_id not in dropped]
            return len(gone)

    def history_prune(self, before: Optional[float], downsample_before: Optional[float], limit: int,
                      dry_run: bool = False) -> int:  # fmt: skip
        with self._lock:
            # Positions in time order (ties: the order they were appended, as the SQL stores' ids).
            gone = [i for i, e in enumerate(self._history) if before is not None and e.at < before][:limit]
            if downsample_before is not None and len(gone) < limit:
                edge = math.floor(downsample_before / DOWNSAMPLE_STEP) * DOWNSAMPLE_STEP
                kept: dict[tuple[str, Optional[str], int], tuple[float, float, int]] = {}
                for i, e in enumerate(self._history):
                    if e.kind in SAMPLED_HISTORY and e.at < edge and not (before is not None and e.at < before):
                        key = (e.kind, e.org, math.floor(e.at / DOWNSAMPLE_STEP))
                        kept[key] = min(kept.get(key, (-e.value, e.at, i)), (-e.value, e.at, i))
                keep = {i for _, _, i in kept.values()}
                extra = [i for i, e in enumerate(self._history) if e.kind in SAMPLED_HISTORY and e.at < edge
                         and not (before is not None and e.at < before) and i not in keep]  # fmt: skip
                gone += extra[: limit - len(gone)]
            if not dry_run:
                dropped = set(gone)
                self._history = [e for i, e in enumerate(self._history) if i not in dropped]
            return len(gone)

    def usage_prune(self, now: float, limit: int, dry_run: bool = False) -> int:
        start = DailyUsage.window_start(now)
        with self._lock:
            old = sorted(((hour, org) for org, hour in self._usage if hour < start))[:limit]
            if not dry_run:
                for hour, org in old:
                    del self._usage[(org, hour)]
            return len(old)

    def rate_state_prune(self, before: float, limit: int, dry_run: bool = False) -> int:
        with self._lock:
            old = [scope for scope, tat in self._rate_state.items() if tat < before][:limit]
            if not dry_run:
                for scope in old:
                    del self._rate_state[scope]
            return len(old)

    def batch_errors_prune(self, before: float, limit: int, dry_run: bool = False) -> int:
        with self._lock:
            n = 0
            while n < min(limit, len(self._batch_errors)) and self._batch_errors[n].at < before:
                n += 1
            if not dry_run:
                del self._batch_errors[:n]
            return n

    def close(self) -> None:
        """Nothing to release."""
