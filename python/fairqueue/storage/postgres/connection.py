"""One PostgreSQL store's connections: the pools, the transaction helper, locks and wake-ups."""

from __future__ import annotations

import contextlib
import logging
import re
import select
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
    "LOCK_PRUNE",
    "LOCK_PUBLISH",
    "LOCK_SETTINGS",
    "LOCK_TRIGGERS",
    "LOCK_UPGRADE",
    "LOCK_USAGE",
    "LOCK_WORKER",
    "RETRIES",
    "Cursor",
    "Database",
    "Listener",
    "dropped_by_server",
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
LOCK_CAP = 0x46510003  # second key: hashtext(schema, org), taken by claims that check an org's caps or rates
LOCK_USAGE = 0x46510004  # second key: hashtext(schema, org)
LOCK_TRIGGERS = 0x46510005  # second key: hashtext(schema, org)
LOCK_FLEX = 0x46510006  # second key: hashtext(schema, org)
LOCK_WORKER = 0x46510007  # second key: a worker's random key (session-level, see .workers)
LOCK_PRUNE = 0x46510008  # second key: hashtext(schema), tried by each prune transaction (see .retention)
# Second key: hashtext(schema); exclusive for a settings change, shared by each claim
# that checks its settings version (see .settings).
LOCK_SETTINGS = 0x46510009

# Deadlocks are possible only between multi-row updates that meet rows in
# different orders (a late heartbeat against a re-delivery); the loser is rolled
# back whole and simply runs again.
RETRIES = 5


def _without_commit_flush(conn: psycopg.Connection[Any]) -> None:
    conn.execute(QUERIES["commit_without_flush"])


def dropped_by_server(conn: psycopg.Connection[Any] | psycopg.AsyncConnection[Any]) -> bool:
    """Whether an idle connection has something to read: the server's farewell (a
    terminated backend, a restart) or end of file. An idle pooled connection listens
    to nothing, so a healthy one has nothing; asked without waiting."""
    readable, _, _ = select.select([conn.fileno()], [], [], 0)
    return bool(readable)


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
        # Within 63 bytes: schemas are at most 53 characters.
        self.settings_channel = f"fq_conf_{schema}"
        """The channel every settings change is announced on (payload: the new version)."""
        self.where = f"schema {schema!r}"
        """The store as messages name it."""
        self.sql = bind(self.s)
        """Every named statement (:mod:`.queries`), for this schema."""
        self.connect_timeout = connect_timeout
        self.listener = Listener(self)
        """The store's one LISTEN connection, for wake-ups and settings changes."""
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
        """Closes every pooled connection and the LISTEN connection."""
        self.listener.close()
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

    def statement(self, body: Callable[[Cursor], T], jobs: Sequence[NewJob] = ()) -> T:
        """Runs ``body``, one statement that writes, as its own transaction (autocommit:
        one round trip, no BEGIN or COMMIT); returns what ``body`` returns.

        For a statement that takes a lock others wait for (the shared publish lock of
        an enqueue, :func:`.jobs.insert_published`): it is granted and released on the
        server, never across a round trip of this client, so a client that stalls
        holds nobody up. Committed durably. Run again after a deadlock or
        serialization failure (the statement was rolled back whole), and on another
        connection when the pooled one was dropped by the server before the statement
        went out (a restart); never once it went out and the connection broke (its
        commit may have happened). Other errors are translated as in :meth:`transaction`.
        """
        for attempt in range(RETRIES):
            try:
                with self.pool.connection() as conn:
                    if attempt < RETRIES - 1 and dropped_by_server(conn):
                        conn.close()  # the pool replaces a closed connection
                        continue
                    with conn.cursor() as cur:
                        return body(cur)
            except (pg_errors.DeadlockDetected, pg_errors.SerializationFailure) as e:
                if attempt == RETRIES - 1:
                    raise translate(e, self.where, conflicts=RETRIES) from e
            except psycopg.OperationalError as e:
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

    def subscribe(self, callback: Callable[[], None], channel: Optional[str] = None) -> Callable[[], None]:
        """LISTENs on ``channel`` (default :attr:`channel`) and calls ``callback`` for each
        notification on it, on :attr:`listener`'s one connection (see :class:`Listener`).
        Returns the function that stops listening."""
        return self.listener.subscribe(self.channel if channel is None else channel, callback)


class Listener:
    """One LISTEN connection of a store (outside the pools), shared by the subscribers
    of every channel it carries: job wake-ups and settings changes.

    Started by the first subscriber and closed when the last one leaves; it
    reconnects if it drops. A subscriber is called once as soon as its channel is
    listened to, and once on every reconnect, since notifications sent while away
    are lost; then once per notification on its channel (from the listening thread).
    """

    # Seconds a new subscriber of a live connection waits at most for its LISTEN:
    # the thread looks for new channels between waits for notifications.
    POLL = 0.2

    def __init__(self, db: Database) -> None:
        self.db = db
        self._lock = threading.Lock()
        self._subscribers: dict[str, list[Callable[[], None]]] = {}
        self._unheard: list[tuple[str, Callable[[], None]]] = []  # to call once their channel is listened to
        self._thread: Optional[threading.Thread] = None
        self._stop = threading.Event()

    def subscribe(self, channel: str, callback: Callable[[], None]) -> Callable[[], None]:
        """Calls ``callback`` for each notification on ``channel``; returns the unsubscribe function."""
        # A bound method compares equal to another of the same object: wrap it, so that
        # unsubscribing removes this subscription and no other.
        def subscriber() -> None:
            callback()

        with self._lock:
            self._subscribers.setdefault(channel, []).append(subscriber)
            self._unheard.append((channel, subscriber))
            if self._thread is None:
                self._stop = threading.Event()
                self._thread = threading.Thread(
                    target=self._listen, args=(self._stop,), name=f"fairqueue-listen-{self.db.schema}", daemon=True
                )
                self._thread.start()

        def unsubscribe() -> None:
            with self._lock:
                listeners = self._subscribers.get(channel, [])
                if subscriber in listeners:
                    listeners.remove(subscriber)
                if not listeners:
                    self._subscribers.pop(channel, None)
                self._unheard = [(c, s) for c, s in self._unheard if s is not subscriber]
                thread, stop = (self._thread, self._stop) if not self._subscribers else (None, None)
                if thread is not None:
                    self._thread = None
            if thread is not None and stop is not None:
                stop.set()
                if thread is not threading.current_thread():
                    thread.join(timeout=5)

        return unsubscribe

    def close(self) -> None:
        """Stops listening, for every subscriber."""
        with self._lock:
            self._subscribers.clear()
            self._unheard.clear()
            thread, self._thread = self._thread, None
            self._stop.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)

    def _listen(self, stop: threading.Event) -> None:
        lost = False
        db = self.db
        while not stop.is_set():
            try:
                with psycopg.connect(db.dsn, autocommit=True, connect_timeout=max(1, round(db.connect_timeout))) as conn:
                    listened: set[str] = set()
                    with self._lock:  # every subscriber may have missed something while away
                        self._unheard = [(c, s) for c, ss in self._subscribers.items() for s in ss]
                    if lost:
                        log.info("fairqueue %s: LISTEN connection restored", db.where)
                        lost = False
                    while not stop.is_set():
                        with self._lock:
                            wanted = set(self._subscribers)
                        for channel in sorted(wanted - listened):
                            conn.execute(f'LISTEN "{channel}"')
                        for channel in sorted(listened - wanted):
                            conn.execute(f'UNLISTEN "{channel}"')
                        listened = wanted
                        with self._lock:
                            greet = [s for c, s in self._unheard if c in listened]
                            self._unheard = [(c, s) for c, s in self._unheard if c not in listened]
                        for subscriber in greet:
                            subscriber()
                        for note in conn.notifies(timeout=self.POLL):
                            with self._lock:
                                subscribers = list(self._subscribers.get(note.channel, ()))
                            for subscriber in subscribers:
                                subscriber()
            except psycopg.Error as e:
                # Once per outage: the retries, one a second, would flood the log.
                (log.debug if lost else log.warning)(
                    "fairqueue %s: LISTEN connection lost (%s); reconnecting every second", db.where, " ".join(str(e).split())
                )
                lost = True
                stop.wait(1.0)
