"""Completions in the PostgreSQL store: outcomes announced on a channel of their own,
so that a waiting :class:`~fairqueue.jobs.JobHandle` on any host wakes when its job
finishes instead of polling.

The transaction that stores outcomes also sends their job ids on
``fq_done_<schema>`` (:func:`notify`); PostgreSQL delivers them when it commits.
Each store LISTENs on one connection of its own (:class:`Listener`), started by
its first subscriber and shared by all of them.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import Optional

import psycopg

from fairqueue.storage.interface import FinishedCallback
from fairqueue.storage.waiting import FinishedFanout

from .connection import Cursor, Database

__all__ = ["Listener", "channel", "notify", "parse"]

log = logging.getLogger("fairqueue.storage.postgres")


def channel(db: Database) -> str:
    """The completions channel of ``db``'s schema (at most 61 bytes: schemas are at most 53)."""
    return f"fq_done_{db.schema}"


def notify(db: Database, cur: Cursor, job_ids: Sequence[int]) -> None:
    """Announces the outcomes of ``job_ids`` in ``cur``'s transaction (delivered at commit).

    On a cursor of its own on the same connection, so that a result ``cur`` has
    yet to be read (a pipeline's) stays where it is."""
    if job_ids:
        cur.connection.cursor().execute(db.sql["completions_notify"], (channel(db), list(job_ids)))


def parse(payload: str) -> Optional[list[int]]:
    """The job ids of one notification; None if it is not ours (look at every job)."""
    try:
        return [int(part) for part in payload.split(",")]
    except ValueError:
        return None


class Listener:
    """One LISTEN connection on the completions channel, shared by every subscriber
    of one store; it reconnects after a loss and then tells subscribers to look at
    every job (``callback(None)``), since what was sent meanwhile is lost."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self._fanout = FinishedFanout()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def subscribe(self, callback: FinishedCallback) -> Callable[[], None]:
        """Calls ``callback`` with the ids of each notification (from the listening
        thread), and with None on every (re)connect. Returns the unsubscribe function."""
        unsubscribe = self._fanout.subscribe(callback)
        with self._lock:
            if self._thread is None and not self._stop.is_set():
                self._thread = threading.Thread(target=self._listen, name=f"fairqueue-done-{self.db.schema}", daemon=True)
                self._thread.start()
        return unsubscribe

    def _listen(self) -> None:
        lost = False
        timeout = max(1, round(self.db.connect_timeout))
        while not self._stop.is_set():
            try:
                with psycopg.connect(self.db.dsn, autocommit=True, connect_timeout=timeout) as conn:
                    conn.execute(f'LISTEN "{channel(self.db)}"')
                    if lost:
                        log.info("fairqueue %s: completions LISTEN connection restored", self.db.where)
                        lost = False
                    self._fanout.publish(None)  # anything may have finished before LISTEN took hold
                    while not self._stop.is_set():
                        for note in conn.notifies(timeout=0.5):
                            self._fanout.publish(parse(note.payload))
            except psycopg.Error as e:
                (log.debug if lost else log.warning)(
                    "fairqueue %s: completions LISTEN connection lost (%s); reconnecting every second",
                    self.db.where, " ".join(str(e).split()),
                )  # fmt: skip
                lost = True
                self._stop.wait(1.0)

    def close(self) -> None:
        """Stops listening (for good)."""
        self._stop.set()
        with self._lock:
            thread = self._thread
        if thread is not None:
            thread.join(timeout=5)
