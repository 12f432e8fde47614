"""AsyncProcessor: write the per-records logic once; fairqueue picks a queueable or
a batch by how many records there are (the pattern of seed 002).

.. code-block:: python

    class ContactNames(fq.AsyncProcessor):
        threshold = 500                       # optional: queueable up to 500 records

        def inner_execute(self, records):
            ...

    ContactNames().get(fq.Query("shop.db", "SELECT id, name FROM contacts")).kickoff(org="org-1")
    ContactNames().get([{"id": 1, "name": "Ada"}]).kickoff(org="org-1")

Up to ``threshold`` records run as one queueable (one delivery: ``inner_execute``
on all of them, then ``finish``); more run as a batch of ``scope``-record chunks.
Either way a failure records the same :class:`~fairqueue.records.BatchErrorEvent`
and ends the job ``completed`` with its ``error_count``, and ``finish`` runs. Set
``stateful = True`` to carry attributes from chunk to chunk, as for a batch.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass
from typing import Any, ClassVar, Optional, Union

from fairqueue.errors import InvalidArgument
from fairqueue.jobs import INHERIT, Batchable, Context, JobHandle, JobQueue, KeyOption, running_context
from fairqueue.limits import DEFAULT_SCOPE
from fairqueue.validate import check_org, shown

__all__ = ["AsyncProcessor", "Process", "Query"]


@dataclass(frozen=True)
class Query:
    """Records from a SQL query on your own database, read when the job runs.

    Args:
        database: a SQLite file path or a ``postgresql://`` URL.
        sql: the query; give it an ``ORDER BY`` so a batch resumed after a crash
            reads the records in the same order.
        params: its parameters (``?`` for SQLite, ``%s`` for PostgreSQL).

    Rows arrive as dicts of column name to value.
    """

    database: str
    sql: str
    params: tuple[Any, ...] = ()

    def count(self) -> int:
        """How many rows the query returns now."""
        for row in self._run(f"SELECT COUNT(*) AS n FROM ({self.sql}) AS counted"):
            return int(row["n"])
        return 0

    def rows(self) -> Iterator[dict[str, Any]]:
        """The query's rows, streamed; the connection closes when they are read or the iterator is closed."""
        return self._run(self.sql)

    def _run(self, sql: str) -> Iterator[dict[str, Any]]:
        if self.database.startswith(("postgresql://", "postgres://")):
            import psycopg
            from psycopg.rows import dict_row

            with psycopg.connect(self.database, row_factory=dict_row) as conn:
                yield from conn.execute(sql, self.params)
            return
        import sqlite3

        with closing(sqlite3.connect(self.database)) as db:
            db.row_factory = sqlite3.Row
            for row in db.execute(sql, self.params):
                yield dict(row)

    def state(self) -> dict[str, Any]:
        """The query as JSON-ready state (how a processor job stores its source)."""
        return {"database": self.database, "sql": self.sql, "params": list(self.params)}


class AsyncProcessor(Batchable):
    """Base class: subclass it and write ``inner_execute(records)``; optionally
    ``finish(ctx)``, ``threshold``, ``scope`` and ``stateful``."""

    threshold: ClassVar[int] = 200
    """The most records run as one queueable; more run as a batch."""
    scope: ClassVar[int] = DEFAULT_SCOPE
    """Records per chunk when run as a batch."""
    app: ClassVar[Optional[JobQueue]] = None
    """The app (a :class:`fairqueue.FairQueue`) :meth:`Process.kickoff` enqueues on unless told otherwise."""

    def inner_execute(self, records: list[Any]) -> None:
        """Processes records (all of them as a queueable, one chunk as a batch)."""
        raise NotImplementedError(f"{type(self).__qualname__} must define inner_execute(self, records)")

    def get(self, source: Union[Sequence[Any], Query]) -> Process:
        """What to process: a list of (JSON) records, or a :class:`Query`."""
        if not isinstance(source, (Query, list, tuple)):
            raise InvalidArgument(f"AsyncProcessor.get takes a list of records or a fairqueue.Query, not {shown(source)}")
        return Process(self, source)

    def start(self, ctx: Context) -> Iterator[Any]:
        source = vars(self)["_fq_source"]
        if "records" in source:
            return iter(source["records"])
        return Query(source["database"], source["sql"], tuple(source["params"])).rows()

    def execute(self, ctx: Context, scope: list[Any]) -> None:
        self.inner_execute(scope)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.inner_execute is AsyncProcessor.inner_execute:
            raise TypeError(f"{cls.__qualname__} subclasses AsyncProcessor but does not define inner_execute(self, records)")


class Process:
    """A processor bound to its records, ready to start (``AsyncProcessor.get``)."""

    def __init__(self, processor: AsyncProcessor, source: Union[Sequence[Any], Query]) -> None:
        self.processor = processor
        self.source = source

    def count(self) -> int:
        """How many records there are (a query is counted now)."""
        return self.source.count() if isinstance(self.source, Query) else len(self.source)

    def kickoff(
        self, *, org: str, app: Optional[JobQueue] = None, key: KeyOption = INHERIT, priority: Optional[int] = None,
        cost: Optional[int] = None, queue: Optional[str] = None,
    ) -> JobHandle:  # fmt: skip
        """Counts the records and starts a queueable (up to ``threshold``) or a batch
        (more) for ``org``, on ``app``: by default the processor class's ``app``
        attribute, or inside a running job, that job's queue. ``key``, ``priority``,
        ``cost`` and ``queue`` as for :meth:`fairqueue.FairQueue.enqueue` (the class's
        ``queue``, ``priority`` and ``cost`` attributes unless given)."""
        check_org(org)
        running = running_context()
        target = app or type(self.processor).app or (running.queue if running is not None else None)
        if target is None:
            raise InvalidArgument(
                f"{type(self.processor).__qualname__}.get(…).kickoff() needs an app: pass app=…, or set the "
                "class attribute app = your FairQueue"
            )
        count = self.count()
        processor = type(self.processor).__new__(type(self.processor))
        vars(processor).update(vars(self.processor))
        source = self.source.state() if isinstance(self.source, Query) else {"records": list(self.source)}
        vars(processor)["_fq_source"] = source
        flow: dict[str, Any] = {"key": key, "priority": priority, "cost": cost, "queue": queue}
        if count > self.processor.threshold:
            return target.execute_batch(processor, org=org, scope=self.processor.scope, **flow)
        return target.enqueue_whole_batch(processor, org=org, **flow)
