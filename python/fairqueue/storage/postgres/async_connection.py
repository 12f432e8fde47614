"""One PostgreSQL store's async connections: psycopg's ``AsyncConnectionPool``, one
per event loop, for the async client (``await fn.delay_async(…)``, ``await
handle.wait_async()``).

An async pool belongs to the loop it was opened on, so each loop that uses the
store gets its own, opened on its first use. A task of the loop holds it and closes
it when cancelled: ``asyncio.run`` and ASGI servers cancel every task as their loop
ends, and that must close the pool, because psycopg_pool's workers swallow a
cancellation that lands while they connect (the loop would then never finish
shutting down). The store's ``close`` stops them too.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Optional, TypeVar

import psycopg
from psycopg import errors as pg_errors
from psycopg_pool import AsyncConnectionPool

from fairqueue.records import NewJob

from .connection import RETRIES, Database, dropped_by_server
from .errors import translate

__all__ = ["AsyncCursor", "AsyncDatabase"]

T = TypeVar("T")
AsyncCursor = psycopg.AsyncCursor[tuple[Any, ...]]
_AsyncPool = AsyncConnectionPool[psycopg.AsyncConnection[tuple[Any, ...]]]


async def _hold(pool: _AsyncPool) -> None:
    """The task that holds one loop's pool: it closes the pool once cancelled."""
    try:
        await asyncio.get_running_loop().create_future()  # never set: runs until cancelled
    finally:
        await pool.close()


async def _stop(holder: asyncio.Task[None]) -> None:
    holder.cancel()
    await asyncio.gather(holder, return_exceptions=True)


class _LoopPool:
    """One loop's pool; ``opened`` is set once its first user has opened it (or failed to)."""

    def __init__(self, pool: _AsyncPool) -> None:
        self.pool = pool
        self.opened = asyncio.Event()
        self.holder: Optional[asyncio.Task[None]] = None


class AsyncDatabase:
    """The async connections of one store (:class:`.connection.Database` holds its
    sync pools, statements and settings, which these share)."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._lock = threading.Lock()
        self._pools: dict[asyncio.AbstractEventLoop, _LoopPool] = {}

    async def pool(self) -> _AsyncPool:
        """The running loop's pool, opened on first use (its connections made, or
        :class:`~fairqueue.errors.StorageUnavailable` after ``connect_timeout``)."""
        loop = asyncio.get_running_loop()
        while True:
            with self._lock:
                entry = self._pools.get(loop)
                first = entry is None
                if entry is None:
                    for gone in [other for other in self._pools if other.is_closed()]:
                        del self._pools[gone]  # its pool closed as that loop ended
                    # Fixed-size, all connected on open: a pool that grew in the background
                    # could be connecting as its loop ends, and say so in a warning.
                    size = self.db.pool.max_size
                    pool: _AsyncPool = AsyncConnectionPool(
                        self.db.dsn, name=f"fairqueue-{self.db.schema}-async", min_size=size,
                        max_size=size, kwargs={"autocommit": True}, open=False,
                        timeout=self.db.connect_timeout, reconnect_timeout=self.db.connect_timeout,
                    )  # fmt: skip
                    entry = self._pools[loop] = _LoopPool(pool)
            if not first:
                await entry.opened.wait()
                if entry.holder is not None:
                    return entry.pool
                continue  # its opener failed: try afresh
            try:
                await entry.pool.open(wait=True, timeout=self.db.connect_timeout)
            except BaseException as e:
                with self._lock:
                    self._pools.pop(loop, None)
                await entry.pool.close()
                if isinstance(e, psycopg.Error):
                    raise translate(e, self.db.where, stage="connect") from e
                raise
            finally:
                entry.opened.set()
            entry.holder = loop.create_task(_hold(entry.pool), name=f"fairqueue-{self.db.schema}-async-pool")
            return entry.pool

    async def transaction(self, body: Callable[[AsyncCursor], Awaitable[T]], jobs: Sequence[NewJob] = ()) -> T:
        """Runs ``body`` in one transaction on a pooled async connection; commits if it
        returns. Retries and translates errors as :meth:`.connection.Database.transaction`
        does (durable commits only: enqueues and reads)."""
        for attempt in range(RETRIES):
            retry_if_broken = True
            conn: Optional[psycopg.AsyncConnection[tuple[Any, ...]]] = None
            try:
                async with (await self.pool()).connection() as conn:
                    async with conn.transaction():
                        async with conn.cursor() as cur:
                            result = await body(cur)
                        # From here the COMMIT may have reached the server: never run twice.
                        retry_if_broken = False
                    return result
            except (pg_errors.DeadlockDetected, pg_errors.SerializationFailure) as e:
                if attempt == RETRIES - 1:
                    raise translate(e, self.db.where, conflicts=RETRIES) from e
            except psycopg.OperationalError as e:
                if not (retry_if_broken and conn is not None and conn.broken) or attempt == RETRIES - 1:
                    raise translate(e, self.db.where) from e
            except psycopg.Error as e:
                raise translate(e, self.db.where, jobs=jobs) from e
        raise AssertionError("unreachable")  # pragma: no cover

    async def statement(self, sql: str, params: Sequence[Any], jobs: Sequence[NewJob] = ()) -> list[tuple[Any, ...]]:
        """The rows of one statement that writes, its own transaction (autocommit),
        committed durably; retried and translated as :meth:`.connection.Database.statement`."""
        for attempt in range(RETRIES):
            try:
                async with (await self.pool()).connection() as conn:
                    if attempt < RETRIES - 1 and dropped_by_server(conn):
                        await conn.close()  # the pool replaces a closed connection
                        continue
                    async with conn.cursor() as cur:
                        await cur.execute(sql, params)
                        return await cur.fetchall()
            except (pg_errors.DeadlockDetected, pg_errors.SerializationFailure) as e:
                if attempt == RETRIES - 1:
                    raise translate(e, self.db.where, conflicts=RETRIES) from e
            except psycopg.OperationalError as e:
                raise translate(e, self.db.where) from e
            except psycopg.Error as e:
                raise translate(e, self.db.where, jobs=jobs) from e
        raise AssertionError("unreachable")  # pragma: no cover

    async def read(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """The rows of one statement (autocommit: its own transaction, one round trip)."""
        try:
            async with (await self.pool()).connection() as conn, conn.cursor() as cur:
                await cur.execute(sql, params)
                return await cur.fetchall()
        except psycopg.Error as e:
            raise translate(e, self.db.where) from e

    def close(self) -> None:
        """Closes every loop's pool that is still open, on its own loop (a loop that has
        ended closed its pool as it did)."""
        with self._lock:
            entries = list(self._pools.items())
            self._pools.clear()
        try:
            current: Optional[asyncio.AbstractEventLoop] = asyncio.get_running_loop()
        except RuntimeError:
            current = None
        for loop, entry in entries:
            holder = entry.holder
            if holder is None or loop.is_closed() or holder.done():
                continue
            if loop is current:  # called from a coroutine of that loop: closes as soon as it yields
                holder.cancel()
            elif loop.is_running():
                asyncio.run_coroutine_threadsafe(_stop(holder), loop).result(timeout=2 * self.db.connect_timeout)
            else:
                loop.run_until_complete(_stop(holder))
