"""The PostgreSQL store's one translation of database errors into fairqueue's.

Every ``psycopg.Error`` that leaves the store goes through :func:`translate`
(as River's drivers go through one ``interpretError``), so what a caller can
catch is decided here: :class:`~fairqueue.errors.DuplicateSignature` for a live
duplicate signature; :class:`~fairqueue.errors.StorageFull` for a full disk,
:class:`~fairqueue.errors.StorageUnavailable` for a server that cannot be reached,
is shutting down or whose pool stayed busy (both heal: a worker waits and retries),
:class:`~fairqueue.errors.StorageCorrupt` for data the server reports damaged;
:class:`~fairqueue.errors.StorageError` for the rest.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import psycopg
from psycopg import errors as pg_errors

from fairqueue.errors import (
    DuplicateSignature,
    FairQueueError,
    StorageCorrupt,
    StorageError,
    StorageFull,
    StorageUnavailable,
)
from fairqueue.records import NewJob

__all__ = ["SIGNATURE_INDEX", "Stage", "duplicate", "translate"]

SIGNATURE_INDEX = "fq_jobs_signature"
"""The unique index that keeps one live job per duplicate signature."""

Stage = Literal["connect", "open", "run"]
"""What the store was doing: reaching the server, opening its pools, or running an operation."""


def duplicate(jobs: Sequence[NewJob]) -> DuplicateSignature:
    """The error of an enqueue of ``jobs`` refused for a live duplicate signature (nothing stored)."""
    signatures = [j.duplicate_signature for j in jobs if j.duplicate_signature]
    return DuplicateSignature(
        f"a job with duplicate signature among {signatures!r} is already holding, queued or running; "
        "nothing was enqueued"
    )


def translate(
    error: psycopg.Error,
    where: str,
    *,
    stage: Stage = "run",
    jobs: Sequence[NewJob] = (),
    conflicts: int = 0,
) -> FairQueueError:
    """The fairqueue error to raise (``from error``) for a database error.

    Args:
        error: what psycopg raised.
        where: the store, as its messages name it (schema, database, host).
        stage: ``"connect"`` for the first connection, ``"open"`` for opening the
            pools, ``"run"`` for an operation.
        jobs: the jobs the operation was storing: a violation of the signature
            index becomes :class:`DuplicateSignature` naming their signatures.
        conflicts: how many deadlocks or serialization failures the operation
            met before giving up (0: it did not retry).
    """
    if stage == "connect":
        return StorageUnavailable(f"cannot connect to PostgreSQL for fairqueue {where}: {str(error).strip()}")
    if stage == "open":
        return StorageError(f"cannot open fairqueue {where}: {error}")
    if isinstance(error, pg_errors.UniqueViolation) and error.diag.constraint_name == SIGNATURE_INDEX:
        return duplicate(jobs)
    if isinstance(error, pg_errors.DiskFull):
        return StorageFull(f"fairqueue {where}: the database server's disk is full ({error}); nothing was written")
    if isinstance(error, (pg_errors.DataCorrupted, pg_errors.IndexCorrupted)):
        return StorageCorrupt(f"fairqueue {where}: the server reports damaged data ({error}); restore from a backup")
    if isinstance(error, psycopg.OperationalError) and not conflicts:
        # Connection lost, server shutting down (AdminShutdown), the pool's wait over
        # (PoolTimeout): nothing was committed, and it heals.
        return StorageUnavailable(f"fairqueue {where}: the database is unavailable ({type(error).__name__}: {error})")
    if conflicts:
        return StorageError(f"fairqueue {where}: gave up after {conflicts} conflicts: {error}")
    return StorageError(f"fairqueue {where}: {type(error).__name__}: {error}")
