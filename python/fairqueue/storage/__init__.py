"""Storage: one interface, implemented by every backend.

The store is the truth; the dispatcher core is rebuilt from it at start-up.
Methods are named noun-first (``job_enqueue``, ``job_claim``, …); workers reach
storage only through this interface. ``tests/storage_conformance`` runs the same
suite against every backend.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import Optional

from fairqueue.records import Finish, JobRecord, JobStatus, NewJob, PendingJob

__all__ = ["Storage", "SCHEMA_VERSION", "open_storage"]

SCHEMA_VERSION = 1
"""The schema this fairqueue writes; a store with a higher version is refused."""


class Storage(abc.ABC):
    """What fairqueue needs from a store. Every method is atomic: it happens whole or not at all."""

    @abc.abstractmethod
    def job_enqueue(self, jobs: Sequence[NewJob], now: float) -> list[int]:
        """Persists ``jobs`` as queued (or holding) and returns their ids, in order.

        Durable before it returns. All or none: a duplicate signature among them
        raises :class:`~fairqueue.errors.DuplicateSignature` and stores nothing.
        """

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
    def job_pending(self, after_seq: int = 0, limit: Optional[int] = None) -> list[PendingJob]:
        """Queued jobs with ``ready_seq`` > ``after_seq``, in that order: what a dispatcher must hold."""

    @abc.abstractmethod
    def job_signature_taken(self, signature: str) -> bool:
        """True while a job with this duplicate signature is holding, queued or running."""

    @abc.abstractmethod
    def job_counts(self) -> dict[tuple[str, str, JobStatus], int]:
        """How many jobs each (org, kind) has in each status."""

    @abc.abstractmethod
    def job_claim(self, job_ids: Sequence[int], worker: str, lease_until: float, now: float) -> list[JobRecord]:
        """Moves the still-queued jobs among ``job_ids`` to processing under ``worker``'s lease.

        Returns the records of the jobs claimed; a job aborted or claimed by another
        worker meanwhile is left out. Increments ``attempts``.
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

    @abc.abstractmethod
    def job_requeue_expired(self, now: float) -> list[int]:
        """Puts processing jobs whose lease expired back in the queue; returns their ids."""

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


def open_storage(url: str) -> Storage:
    """Opens the store named by ``url``: ``":memory:"`` or a SQLite file path."""
    if url == ":memory:":
        from fairqueue.storage.memory import MemoryStorage

        return MemoryStorage()
    from fairqueue.storage.sqlite import SQLiteStorage

    return SQLiteStorage(url)
