"""The in-memory store: the reference implementation of the storage interface,
for tests and simulation. Nothing survives the process."""

from __future__ import annotations

import bisect
import threading
from collections.abc import Sequence
from typing import Any, Optional

from fairqueue.errors import DuplicateSignature, StorageError
from fairqueue.records import Finish, JobRecord, JobStatus, NewJob, PendingJob
from fairqueue.storage import Storage

__all__ = ["MemoryStorage"]


class MemoryStorage(Storage):
    """A store held in dicts, safe to share between threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jobs: dict[int, JobRecord] = {}
        self._next_id = 1
        # Indexes so the worker's frequent calls do not scan every job.
        self._ready_log: list[tuple[int, int]] = []  # (ready_seq, job id), in seq order
        self._ready_seq: dict[int, int] = {}  # job id -> its current ready_seq
        self._signatures: dict[str, int] = {}  # live duplicate signature -> job id
        self._processing: set[int] = set()

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
            self._processing.add(job_id)
        else:
            self._processing.discard(job_id)
        if record.status.finished and record.duplicate_signature:
            self._signatures.pop(record.duplicate_signature, None)
        return record

    def _insert(self, jobs: Sequence[NewJob], now: float) -> list[int]:
        ids = []
        for j in jobs:
            job_id, self._next_id = self._next_id, self._next_id + 1
            self._jobs[job_id] = JobRecord(
                id=job_id, org=j.org, kind=j.kind, handler=j.handler, payload=j.payload,
                status=JobStatus.HOLDING, created_at=now, run_at=j.run_at, started_at=None,  # queued just below
                finished_at=None, attempts=0, items_processed=0, items_total=None, error_count=0,
                extended_status=None, parent_id=j.parent_id, chain_depth=j.chain_depth,
                duplicate_signature=j.duplicate_signature, lease_owner=None, lease_expires_at=None,
                cancel_requested=False,
            )  # fmt: skip
            self._set(job_id, status=JobStatus.QUEUED)
            if j.duplicate_signature:
                self._signatures[j.duplicate_signature] = job_id
            ids.append(job_id)
        return ids

    # ----- the interface ----------------------------------------------------------------

    def job_enqueue(self, jobs: Sequence[NewJob], now: float) -> list[int]:
        signatures = [j.duplicate_signature for j in jobs if j.duplicate_signature]
        with self._lock:
            if any(s in self._signatures for s in signatures) or len(set(signatures)) < len(signatures):
                raise DuplicateSignature(
                    f"a job with duplicate signature among {signatures!r} is already holding, queued or running; "
                    "nothing was enqueued"
                )
            return self._insert(jobs, now)

    def job_signature_taken(self, signature: str) -> bool:
        with self._lock:
            return signature in self._signatures

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

    def job_pending(self, after_seq: int = 0, limit: Optional[int] = None) -> list[PendingJob]:
        pending = []
        with self._lock:
            for seq, job_id in self._ready_log[bisect.bisect_right(self._ready_log, (after_seq, float("inf"))) :]:
                r = self._jobs[job_id]
                if r.status is JobStatus.QUEUED and self._ready_seq[job_id] == seq:
                    pending.append(PendingJob(r.id, r.org, r.kind, r.run_at, r.attempts, seq))
                    if limit is not None and len(pending) == limit:
                        break
        return pending

    def job_counts(self) -> dict[tuple[str, str, JobStatus], int]:
        counts: dict[tuple[str, str, JobStatus], int] = {}
        with self._lock:
            for r in self._jobs.values():
                key = (r.org, r.kind, r.status)
                counts[key] = counts.get(key, 0) + 1
        return counts

    def job_claim(self, job_ids: Sequence[int], worker: str, lease_until: float, now: float) -> list[JobRecord]:
        with self._lock:
            return [
                self._set(
                    job_id,
                    status=JobStatus.PROCESSING,
                    lease_owner=worker,
                    lease_expires_at=lease_until,
                    started_at=self._jobs[job_id].started_at or now,
                    attempts=self._jobs[job_id].attempts + 1,
                )
                for job_id in job_ids
                if job_id in self._jobs and self._jobs[job_id].status is JobStatus.QUEUED
            ]

    def job_heartbeat(self, job_ids: Sequence[int], worker: str, lease_until: float) -> None:
        with self._lock:
            for job_id in job_ids:
                r = self._jobs.get(job_id)
                if r and r.status is JobStatus.PROCESSING and r.lease_owner == worker:
                    self._set(job_id, lease_expires_at=lease_until)

    def job_finish(self, finishes: Sequence[Finish]) -> list[int]:
        for f in finishes:
            if f.status not in (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.QUEUED):
                raise StorageError(f"cannot finish job {f.job_id} as {f.status.value!r}: expected completed, failed or queued")
        applied = []
        with self._lock:
            for f in finishes:
                r = self._jobs.get(f.job_id)
                if not r or r.status is not JobStatus.PROCESSING or r.lease_owner != f.worker:
                    continue
                errors = r.error_count + (f.error is not None)
                common = {"status": f.status, "lease_owner": None, "lease_expires_at": None, "error_count": errors}
                if f.status is JobStatus.QUEUED:
                    self._set(f.job_id, run_at=f.retry_at, extended_status=f.error, **common)
                else:
                    self._set(f.job_id, finished_at=f.at, extended_status=f.error or r.extended_status, **common)
                applied.append(f.job_id)
                if not f.children:
                    continue
                taken = [c.duplicate_signature for c in f.children if c.duplicate_signature in self._signatures]
                self._insert([c for c in f.children if c.duplicate_signature not in taken], f.at)
                if taken:
                    self._set(
                        f.job_id,
                        extended_status=f"child not enqueued: duplicate signature {taken!r} already queued or running",
                    )
        return applied

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

    def job_abort(self, job_id: int, now: float, org: Optional[str] = None) -> Optional[JobStatus]:
        with self._lock:
            r = self._jobs.get(job_id)
            if r is None or (org is not None and r.org != org):
                return None
            if r.status in (JobStatus.HOLDING, JobStatus.QUEUED):
                self._set(job_id, status=JobStatus.ABORTED, finished_at=now, extended_status="aborted while waiting")
                return JobStatus.ABORTED
            if r.status in (JobStatus.PREPARING, JobStatus.PROCESSING):
                self._set(job_id, cancel_requested=True)
            return r.status

    def close(self) -> None:
        """Nothing to release."""
