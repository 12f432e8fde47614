"""The in-memory store: the reference implementation of the storage interface,
for tests and simulation. Nothing survives the process."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Sequence
from typing import Optional

from fairqueue.errors import DuplicateSignature, StorageError
from fairqueue.records import Finish, JobRecord, JobStatus, NewJob, PendingJob
from fairqueue.storage import Storage

__all__ = ["MemoryStorage"]

_LIVE = (JobStatus.HOLDING, JobStatus.QUEUED, JobStatus.PREPARING, JobStatus.PROCESSING)


class MemoryStorage(Storage):
    """A store held in a dict, safe to share between threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._jobs: dict[int, JobRecord] = {}
        self._next_id = 1

    def _update(self, job_id: int, **changes: object) -> JobRecord:
        record = dataclasses.replace(self._jobs[job_id], **changes)  # type: ignore[arg-type]
        self._jobs[job_id] = record
        return record

    def job_enqueue(self, jobs: Sequence[NewJob], now: float) -> list[int]:
        with self._lock:
            taken = {r.duplicate_signature for r in self._jobs.values() if r.duplicate_signature and r.status in _LIVE}
            signatures = [j.duplicate_signature for j in jobs if j.duplicate_signature]
            if taken.intersection(signatures) or len(set(signatures)) < len(signatures):
                raise DuplicateSignature(
                    f"a job with duplicate signature among {signatures!r} is already holding, queued or running; "
                    "nothing was enqueued"
                )
            ids = []
            for j in jobs:
                job_id, self._next_id = self._next_id, self._next_id + 1
                self._jobs[job_id] = JobRecord(
                    id=job_id, org=j.org, kind=j.kind, handler=j.handler, payload=j.payload,
                    status=JobStatus.QUEUED, created_at=now, run_at=j.run_at, started_at=None,
                    finished_at=None, attempts=0, items_processed=0, items_total=None, error_count=0,
                    extended_status=None, parent_id=j.parent_id, chain_depth=j.chain_depth,
                    duplicate_signature=j.duplicate_signature, lease_owner=None, lease_expires_at=None,
                    cancel_requested=False,
                )  # fmt: skip
                ids.append(job_id)
            return ids

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

    def job_pending(self, after_id: int = 0, limit: Optional[int] = None) -> list[PendingJob]:
        with self._lock:
            pending = [
                PendingJob(r.id, r.org, r.kind, r.run_at, r.attempts)
                for job_id, r in sorted(self._jobs.items())
                if job_id > after_id and r.status is JobStatus.QUEUED
            ]
        return pending if limit is None else pending[:limit]

    def job_claim(self, job_ids: Sequence[int], worker: str, lease_until: float, now: float) -> list[JobRecord]:
        with self._lock:
            return [
                self._update(
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
                    self._update(job_id, lease_expires_at=lease_until)

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
                if f.status is JobStatus.QUEUED:
                    self._update(f.job_id, status=JobStatus.QUEUED, run_at=f.retry_at, lease_owner=None,
                                 lease_expires_at=None, extended_status=f.error, error_count=errors)  # fmt: skip
                else:
                    self._update(f.job_id, status=f.status, finished_at=f.at, lease_owner=None, lease_expires_at=None,
                                 extended_status=f.error or r.extended_status, error_count=errors)  # fmt: skip
                applied.append(f.job_id)
        return applied

    def job_requeue_expired(self, now: float) -> list[int]:
        with self._lock:
            expired = [
                job_id
                for job_id, r in sorted(self._jobs.items())
                if r.status is JobStatus.PROCESSING and r.lease_expires_at is not None and r.lease_expires_at < now
            ]
            for job_id in expired:
                self._update(job_id, status=JobStatus.QUEUED, lease_owner=None, lease_expires_at=None,
                             extended_status="lease expired; re-delivered")  # fmt: skip
        return expired

    def job_abort(self, job_id: int, now: float, org: Optional[str] = None) -> Optional[JobStatus]:
        with self._lock:
            r = self._jobs.get(job_id)
            if r is None or (org is not None and r.org != org):
                return None
            if r.status in (JobStatus.HOLDING, JobStatus.QUEUED):
                self._update(job_id, status=JobStatus.ABORTED, finished_at=now, extended_status="aborted while waiting")
                return JobStatus.ABORTED
            if r.status in (JobStatus.PREPARING, JobStatus.PROCESSING):
                self._update(job_id, cancel_requested=True)
            return r.status

    def close(self) -> None:
        """Nothing to release."""
