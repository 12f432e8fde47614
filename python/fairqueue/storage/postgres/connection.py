"""One PostgreSQL store's connections: the pools, the transaction helper, locks and wake-ups."""

from __future__ import annotations

import contextlib
import logging
import re
import threading
from collections.abc import Callable, Sequence
from typing import Any, Optional, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg
from psycopg import errors as pg_errors
from psycopg_pool import ConnectionPool

from fairqueue.errors import InvalidArgument
from fairqueue.records import NewJob
from fairqueue.validate import check_number

from .errors import translate
from .queries import QUERIES, bind

__all__ = [
    "DEFAULT_POOL_SIZE",
    "DEFAULT_SCHEMA",
    "LOCK_CAP",
    "LOCK_FLEX",
    "LOCK_PUBLISH",
    "LOCK_TRIGGERS",
    "LOCK_UPGRADE",
    "LOCK_USAGE",
    "LOCK_WORKER",
    "RETRIES",
    "Cursor",
    "Database",
    "split_url",
]

DEFAULT_SCHEMA = "fairqueue"
"""The schema fairqueue's tables live in unless another is chosen."""

DEFAULT_POOL_SIZE = 4
"""Connections one :class:`~fairqueue.storage.postgres.PostgresStorage` opens at most."""

log = logging.getLogger("fairqueue.storage.postgres")

T = TypeVar("T")
Cursor = psycopg.Cursor[tuple[Any, ...]]
_Pool = ConnectionPool[psycopg.Connection[tuple[Any, ...]]]

# Lower-case identifiers only: the schema name is also part of the NOTIFY channel
# and of SQL text, so it must need no quoting; 53 characters leaves room for the
# channel's "fairqueue_" prefix within PostgreSQL's 63-byte identifiers.
_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,52}")

# Advisory lock class ids ("FQ" + purpose); the second key is hashtext(schema).
LOCK_UPGRADE = 0x46510001
LOCK_PUBLISH = 0x46510002
LOCK_CAP = 0x46510003  # second key: hashtext(schema, org, kind), taken by claims
LOCK_USAGE = 0x46510004  # second key: hashtext(schema, org)
LOCK_TRIGGERS = 0x46510005  # second key: hashtext(schema, org)
LOCK_FLEX = 0x46510006  # second key: hashtext(schema, org)
LOCK_WORKER = 0x46510007  # second key: a worker's random key (session-level, see .workers)
LOCK_PRUNE = 0x46510008  # second key: hashtext(schema), tried by each prune transaction (see .retention)

# Deadlocks are possible only between multi-row updates that meet rows in
# different orders (a late heartbeat against a re-delivery); the loser is rolled
# back whole and simply runs again.
RETRIES = 5


def _without_commit_flush(conn: psycopg.Connection[Any]) -> None:
    conn.execute(QUERIES["commit_without_flush"])


def split_url(url: str) -> tuple[str, str]:
    """A ``postgresql://`` URL's libpq DSN and its fairqueue ``schema`` parameter (default ``fairqueue``)."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    schemas = [value for key, value in query if key == "schema"]
    rest = urlencode([(key, value) for key, value in query if key != "schema"])
    return urlunsplit(parts._replace(query=rest)), schemas[-1] if schemas else DEFAULT_SCHEMA


class Database:
    """The connections and statements of one store: what every operation module runs on.

    Args:
        dsn: a libpq connection string or URL.
        schema: the schema of fairqueue's tables (checked here).
        pool_size: connections per pool at most.
        connect_timeout: seconds to wait for a connection: the first one, and any
            one an operation waits for later, after which it raises
            :class:`~fairqueue.errors.StorageUnavailable` (which a worker waits out).

    Raises:
        InvalidArgument: ``schema``, ``pool_size`` or ``connect_timeout`` is malformed.
        StorageError: the server cannot be reached.
    """

    def __init__(self, dsn: str, *, schema: str, pool_size: int, connect_timeout: float) -> None:
        if not isinstance(schema, str) or not _SCHEMA_NAME.fullmatch(schema):
            raise InvalidArgument(
                f"schema {schema!r} is not a plain lower-case identifier: use letters a-z, digits and '_', "
                "starting with a letter or '_', at most 53 characters"
            )
        if pool_size < 1:
            raise InvalidArgument(f"pool_size {pool_size} must be at least 1")
        connect_timeout = check_number("connect_timeout", connect_timeout, above=True)
        self.dsn = dsn
        """What the pools connect to."""
        self.schema = schema
        """The schema holding fairqueue's tables."""
        self.s = f'"{schema}"'
        """The schema as SQL text (quoted)."""
        self.channel = f"fairqueue_{schema}"
        """The NOTIFY channel (see the package docstring)."""
        self.where = f"schema {schema!r}"
        """The store as messages name it."""
        self.sql = bind(self.s)
        """Every named statement (:mod:`.queries`), for this schema."""
        self.connect_timeout = connect_timeout
        # One plain connection first: an unreachable server or a missing database
        # is reported at once, in libpq's words, rather than as a pool timeout.
        try:
            with psycopg.connect(dsn, connect_timeout=max(1, round(connect_timeout))) as probe:
                info = probe.info
                self.where = f"schema {schema!r} of database {info.dbname!r} on {info.host}:{info.port}"
        except psycopg.Error as e:
            raise translate(e, self.where, stage="connect") from e
        # An operation waits connect_timeout for a connection (psycopg_pool's default
        # is 30 s), so an outage is reported, and logged by a waiting worker, within it.
        # A lost connection is retried in the background with a doubling delay
        # (1, 2, 4 … s): left to psycopg_pool's 5 minutes, a server back after an
        # outage of T seconds would be reached up to T seconds late. Cut off after
        # connect_timeout, the pool drops the attempt and connects afresh, at once,
        # when an operation next asks.
        options: dict[str, Any] = {
            "min_size": 1, "max_size": pool_size, "kwargs": {"autocommit": True}, "open": False,
            "timeout": connect_timeout, "reconnect_timeout": connect_timeout,
        }  # fmt: skip
        self.pool: _Pool = ConnectionPool(dsn, name=f"fairqueue-{schema}", **options)
        """Connections for durable commits (enqueues, aborts, schedules)."""
        # State changes (claims, outcomes, leases) commit without waiting for the WAL
        # flush (package docstring). A pool of their own with the setting made once
        # per connection lets each run as one statement, one round trip.
        self.fast_pool: _Pool = ConnectionPool(
            dsn, name=f"fairqueue-{schema}-fast", configure=_without_commit_flush, **options
        )
        """Connections whose commits do not wait for the WAL flush."""

    def open(self) -> None:
        """Opens both pools, waiting for their first connections."""
        self.pool.open(wait=True, timeout=self.connect_timeout)
        self.fast_pool.open(wait=True, timeout=self.connect_timeout)

    def close(self) -> None:
        """Closes every pooled connection."""
        self.pool.close()
        self.fast_pool.close()

    def transaction(
        self,
        body: Callable[[Cursor], T],
        durable: bool = True,
        block: bool = True,
        pipeline: bool = False,
        jobs: Sequence[NewJob] = (),
    ) -> T:
        """Runs ``body`` in one transaction on a pooled connection; commits if it returns.

        ``durable=False`` commits without waiting for the WAL flush (package
        docstring). ``block=False`` runs without BEGIN/COMMIT, for a read of one
        statement (which autocommit makes its own transaction) and two round trips
        less. ``pipeline=True`` runs it in pipeline mode: statements go out as they
        are executed, and one round trip waits for all sent so far only when a
        result is fetched (BEGIN travels with the first statement).

        Runs ``body`` again after a deadlock or serialization failure (all of it was
        rolled back), and after a pooled connection turned out broken before the
        commit was sent (a server restart; nothing was committed). Other database
        errors are translated (:func:`.errors.translate`; ``jobs``, the jobs
        ``body`` stores, name the signatures of a duplicate).
        """
        for attempt in range(RETRIES):
            retry_if_broken = True
            conn: Optional[psycopg.Connection[tuple[Any, ...]]] = None
            try:
                with (self.pool if durable else self.fast_pool).connection() as conn:
                    if not block:
                        with conn.cursor() as cur:
                            return body(cur)
                    with conn.pipeline() if pipeline else contextlib.nullcontext(), conn.transaction():
                        with conn.cursor() as cur:
                            result = body(cur)
                        # From here the COMMIT may have reached the server: never run twice.
                        retry_if_broken = False
                    return result
            except (pg_errors.DeadlockDetected, pg_errors.SerializationFailure) as e:
                if attempt == RETRIES - 1:
                    raise translate(e, self.where, conflicts=RETRIES) from e
            except psycopg.OperationalError as e:
                # The pool discards a broken connection when it comes back, so the
                # next attempt gets a fresh one.
                if not (retry_if_broken and conn is not None and conn.broken) or attempt == RETRIES - 1:
                    raise translate(e, self.where) from e
            except psycopg.Error as e:
                raise translate(e, self.where, jobs=jobs) from e
        raise AssertionError("unreachable")  # pragma: no cover

    def read(self, sql: str, params: Sequence[Any] = (), durable: bool = True) -> list[tuple[Any, ...]]:
        """The rows of one statement, its own transaction (one consistent snapshot);
        ``durable=False`` for a statement that writes, as in :meth:`transaction`."""

        def body(cur: Cursor) -> list[tuple[Any, ...]]:
            cur.execute(sql, params)
            return cur.fetchall()

        return self.transaction(body, durable=durable, block=False)

    def notify(self, cur: Cursor) -> None:
        """Announces on :attr:`channel` that a job became queued (delivered at commit)."""
        cur.execute(self.sql["notify"], (self.channel,))

    def lock_orgs(self, cur: Cursor, lock_class: int, orgs: Sequence[str]) -> None:
        """Takes ``lock_class``'s transaction-scoped advisory lock for each org, in one
        global order (so two transactions locking several orgs never deadlock)."""
        cur.execute(self.sql["lock_orgs"], (lock_class, self.schema, sorted(set(orgs))))

    def lock_schema(self, cur: Cursor, lock_class: int) -> None:
        """Takes ``lock_class``'s transaction-scoped advisory lock for this schema."""
        cur.execute(self.sql["lock_schema"], (lock_class, self.schema))

    def subscribe(self, callback: Callable[[], None]) -> Callable[[], None]:
        """LISTENs on :attr:`channel` on a connection of its own (outside the pools),
        reconnecting if it drops, and calls ``callback`` for each notification; each
        (re)connect calls it once, since notifications sent while away are lost.
        Returns the function that stops listening."""
        stop = threading.Event()

        def listen() -> None:
            lost = False
            while not stop.is_set():
                try:
                    with psycopg.connect(self.dsn, autocommit=True, connect_timeout=max(1, round(self.connect_timeout))) as conn:
                        conn.execute(f'LISTEN "{self.channel}"')
                        if lost:
                            log.info("fairqueue %s: LISTEN connection restored", self.where)
                            lost = False
                        callback()
                        while not stop.is_set():
                            for _ in conn.notifies(timeout=0.5):
                                callback()
                except psycopg.Error as e:
                    # Once per outage: the retries, one a second, would flood the log.
                    (log.debug if lost else log.warning)(
                        "fairqueue %s: LISTEN connection lost (%s); reconnecting every second", self.where, " ".join(str(e).split())
                    )
                    lost = True
                    stop.wait(1.0)

        thread = threading.Thread(target=listen, name=f"fairqueue-listen-{self.schema}", daemon=True)
        thread.start()

        def unsubscribe() -> None:
            stop.set()
            thread.join(timeout=5)

        return unsubscribe
