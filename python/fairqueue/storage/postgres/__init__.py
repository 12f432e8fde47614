"""The PostgreSQL store: many worker processes on many hosts share one database.

Install it with ``pip install fairqueue[postgres]`` (psycopg 3 and psycopg_pool).

Everything lives in one schema (``fairqueue`` unless told otherwise), so the
store can sit beside the application's own tables in the same database. The
schema is versioned (``fq_meta``) and created or migrated by
:meth:`PostgresStorage.upgrade` (the numbered ``migrations/NNN_*.sql``), which
runs on open unless ``upgrade=False``; a schema written by a newer fairqueue is
refused with :class:`~fairqueue.errors.SchemaVersionError`.

How hosts stay out of each other's way:

* **Claims** lock the still-queued rows in id order (``SELECT … ORDER BY id FOR
  UPDATE``) and move them to processing in the same transaction. Two claimers
  racing for the same job serialise on its row lock; the second re-reads the row,
  finds it no longer queued and leaves it out. Locking in one global order means
  claimers never deadlock each other.
* **Outcomes, heartbeats and re-deliveries** apply only while the row is
  processing under the expected lease owner (or with an expired lease), so a late
  worker cannot overwrite the outcome of a re-delivery.
* **ready_seq in commit order.** A worker remembers the largest ``ready_seq`` it
  has seen and later asks only for larger ones (:class:`~fairqueue.records.PendingJob`).
  A sequence alone cannot promise that: a transaction that drew 10 may commit
  after one that drew 11 was already seen, and job 10 would be skipped forever.
  Every positive ``ready_seq`` is drawn from ``fq_ready_seq`` by a transaction
  holding the *publish lock* (a transaction-scoped advisory lock) until it ends,
  and :meth:`PostgresStorage.job_pending` reads only up to a *horizon*: in a
  statement of its own it takes the lock exclusively, which is granted only once
  no transaction holds it, and then reads the sequence's last value. Every number
  up to that value was drawn by a transaction that held the lock before the grant
  and has therefore ended (committed, so visible to the read that follows, or
  rolled back, so never visible); a number above it is left for a later read. So
  a reader never skips a job. Two kinds of transactions draw:

  - An enqueue in fairqueue's own transaction (:meth:`PostgresStorage.job_enqueue`
    without a batch) draws its jobs' final numbers in its insert, holding the lock
    *shared* (enqueuers never wait for each other) in one autocommit statement
    (its own transaction, one round trip), so the lock is held on the server from
    the insert to the commit and never across a round trip of the client: a
    stalled client cannot hold the readers up. The job's row is written
    once for its enqueue; there is no publish write.
  - A job that becomes queued any other way (an enqueue in the caller's own
    transaction, :meth:`PostgresStorage.job_enqueue_in`, which may stay open as
    long as the caller likes; the async client; a retry, an expired lease, a
    re-run, a batch let out of its flex queue) gets a *provisional* negative
    ``ready_seq`` (``-nextval('fq_queued_seq')``: its place in line) and no lock,
    and :meth:`PostgresStorage.job_pending` *publishes* committed provisional rows
    first: holding the lock exclusively, it numbers them from ``fq_ready_seq`` in
    provisional order and commits, then reads the horizon again.
* **Wake-ups**: every transaction that makes a job queued sends a NOTIFY on the
  channel ``fairqueue_<schema>`` (:attr:`PostgresStorage.channel`, payload
  ``"queued"``), delivered when it commits and never if it rolls back. Workers
  may ``LISTEN`` on it instead of polling.

Durability: enqueues, aborts and claims commit with the server's default
``synchronous_commit``, so they are on disk before the call returns — a claim
before its handler starts, so a job that runs again after a crash of the database
server always shows it in ``attempts``. (Measured: a worker turn's claim waiting
for the flush cost nothing visible, 5,528–5,989 vs 5,638–5,695 jobs/s with one
worker process and 6,339–6,482 vs 6,457–7,093 with four, alternating runs of
``benches/test_bench_postgres.py``; one flush serves a whole turn's claims and
outcomes.) Heartbeats, outcomes committed alone and re-deliveries commit with
``synchronous_commit = off``: they survive any crash of a client or host running
workers, and only a crash of the database server itself (or its power) can lose
the last fraction of a second of them, which at worst runs a job again
(at-least-once), recorded as such. A job's outcome and the children its handler
enqueued are committed together, so they are kept or lost together.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Optional

try:
    import psycopg
    import psycopg_pool  # noqa: F401 (the pools of .connection)
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError(
        "the PostgreSQL store needs psycopg 3 and psycopg_pool: pip install 'fairqueue[postgres]'"
    ) from e

from fairqueue.records import (
    Admission,
    BatchErrorEvent,
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
from fairqueue.storage.interface import DailyUsage, FinishedCallback, NextFire, Storage, WebhookDelivery, rate_scope_text

from . import alerts, claims, completions, flex, history, retention, settings, triggers, usage, workers

# Aliased: the interface's own parameters are named jobs and schema.
from . import jobs as _jobs
from . import schema as _schema
from .async_connection import AsyncDatabase
from .connection import DEFAULT_POOL_SIZE, DEFAULT_SCHEMA, Database, split_url
from .errors import translate

__all__ = ["DEFAULT_POOL_SIZE", "DEFAULT_SCHEMA", "PostgresStorage"]


class PostgresStorage(Storage):
    """A store in a PostgreSQL database, shared by any number of processes and hosts.

    Each method hands its work to the module of its group (:mod:`.jobs`,
    :mod:`.claims`, :mod:`.triggers`, :mod:`.flex`, :mod:`.usage`,
    :mod:`.history`, :mod:`.workers`; the schema in :mod:`.schema`), whose statements are in the
    ``.sql`` file of the same name.

    Args:
        dsn: a libpq connection string or ``postgresql://`` URL.
        schema: the schema that holds fairqueue's tables (lower-case letters,
            digits and ``_``); created if missing.
        pool_size: connections this store opens at most (one is opened up front).
        upgrade: create or migrate the schema on open (:meth:`upgrade`). With
            False, a missing or older schema is an error instead.
        connect_timeout: seconds to wait for a connection: the first, and any a call
            waits for from the pools (a server that stays down that long raises
            :class:`~fairqueue.errors.StorageUnavailable`, which a worker waits out).

    Raises:
        InvalidArgument: ``schema`` or ``pool_size`` is malformed.
        SchemaVersionError: the schema was written by a newer fairqueue.
        StorageError: the database cannot be reached, or (``upgrade=False``) the
            schema is missing or older than this fairqueue.
    """

    def __init__(
        self,
        dsn: str,
        *,
        schema: str = DEFAULT_SCHEMA,
        pool_size: int = DEFAULT_POOL_SIZE,
        upgrade: bool = True,
        connect_timeout: float = 10.0,
    ) -> None:
        self.db = Database(dsn, schema=schema, pool_size=pool_size, connect_timeout=connect_timeout)
        """The store's connections and statements, which its operation modules run on."""
        self.schema = schema
        """The schema holding fairqueue's tables."""
        self.channel = self.db.channel
        """The NOTIFY channel: a notification (payload ``"queued"``) follows every commit that queues a job."""
        self._registered: dict[str, tuple[WorkerInfo, workers.WorkerLock]] = {}
        self._completions = completions.Listener(self.db)
        self._async = AsyncDatabase(self.db)
        try:
            self.db.open()
            if upgrade:
                self.upgrade()
            else:
                _schema.check_version(self.db)
        except BaseException as e:
            self.db.close()
            if isinstance(e, psycopg.Error):
                raise translate(e, self.db.where, stage="open") from e
            raise

    @classmethod
    def from_url(cls, url: str) -> PostgresStorage:
        """Opens the store a ``postgresql://`` (or ``postgres://``) URL names.

        The URL is libpq's, plus one parameter of fairqueue's own, ``schema``
        (default ``fairqueue``): ``postgresql://app@db.internal/shop?schema=jobs``.
        """
        dsn, schema_name = split_url(url)
        return cls(dsn, schema=schema_name)

    def upgrade(self) -> int:
        """Creates the schema or migrates it to this fairqueue's version; returns that version.

        Idempotent and safe to run from many processes at once (they take turns on
        an advisory lock); all migrations apply in one transaction or none does.

        Raises:
            SchemaVersionError: the schema is newer than this fairqueue.
        """
        return _schema.upgrade(self.db)

    # ----- jobs ---------------------------------------------------------------------

    def job_enqueue(
        self, jobs: Sequence[NewJob], now: float, daily_limits: Optional[Mapping[str, int]] = None
    ) -> list[int]:
        """See :meth:`Storage.job_enqueue`; committed (durably) before it returns."""
        return _jobs.enqueue(self.db, jobs, now, daily_limits)

    def job_enqueue_in(
        self,
        conn: psycopg.Connection[Any],
        jobs: Sequence[NewJob],
        now: float,
        daily_limits: Optional[Mapping[str, int]] = None,
    ) -> list[int]:
        """Enqueues ``jobs`` inside the caller's own transaction on ``conn``; returns their ids.

        Nothing is committed here: when the caller commits, the jobs exist (and
        workers listening on :attr:`channel` are notified); when it rolls back,
        they never existed and no worker ever saw them. ``conn`` must be connected
        to this store's database. On a connection in autocommit mode with no
        transaction open there is no transaction to join: the jobs are committed
        before this returns, as :meth:`job_enqueue` would.

        A duplicate signature raises :class:`DuplicateSignature` and stores none of
        ``jobs``; the caller's transaction stays usable (the insert runs in a
        savepoint).

        Raises:
            DuplicateSignature: a live job already has one of the signatures.
            StorageError: the caller's transaction has already failed, or the
                database refused the insert.
        """
        return _jobs.enqueue_in(self.db, conn, jobs, now, daily_limits)

    def check_connection(self, connection: Any) -> None:
        """Raises :class:`InvalidArgument` unless ``connection`` is an open psycopg 3 connection."""
        _jobs.check_connection(connection)

    def job_queued_subscribe(self, callback: Callable[[], None]) -> Optional[Callable[[], None]]:
        """See :meth:`Storage.job_queued_subscribe`: LISTENs on :attr:`channel` on the
        store's one LISTEN connection (outside the pool, shared with
        :meth:`settings_subscribe`), reconnecting if it drops; each reconnect calls
        ``callback`` once, since notifications sent while it was away are lost."""
        return self.db.subscribe(callback)

    def job_get(self, job_id: int) -> Optional[JobRecord]:
        """See :meth:`Storage.job_get`."""
        return _jobs.get(self.db, job_id)

    # ----- finishes heard, and the async client ----------------------------------------

    hears_every_finish = True
    """Every outcome on every host is announced (:mod:`.completions`)."""

    def job_finished_subscribe(self, callback: FinishedCallback) -> Optional[Callable[[], None]]:
        """See :meth:`Storage.job_finished_subscribe`: one LISTEN connection per store on
        :mod:`.completions`' channel, shared by every subscriber, started by the first."""
        return self._completions.subscribe(callback)

    async def job_enqueue_async(
        self, jobs: Sequence[NewJob], now: float, daily_limits: Optional[Mapping[str, int]] = None
    ) -> list[int]:
        """See :meth:`Storage.job_enqueue_async`: through the running loop's async pool
        (:mod:`.async_connection`), no thread hop; committed (durably) before it returns."""
        return await _jobs.enqueue_async(self._async, jobs, now, daily_limits)

    async def job_enqueue_in_async(
        self,
        connection: psycopg.AsyncConnection[Any],
        jobs: Sequence[NewJob],
        now: float,
        daily_limits: Optional[Mapping[str, int]] = None,
    ) -> list[int]:
        """:meth:`job_enqueue_in` on the caller's ``AsyncConnection``, in its transaction."""
        return await _jobs.enqueue_in_async(self.db, connection, jobs, now, daily_limits)

    def check_connection_async(self, connection: Any) -> None:
        """Raises :class:`InvalidArgument` unless ``connection`` is an open psycopg 3 ``AsyncConnection``."""
        _jobs.check_async_connection(connection)

    async def job_get_async(self, job_id: int) -> Optional[JobRecord]:
        """See :meth:`Storage.job_get_async`: through the running loop's async pool."""
        return await _jobs.get_async(self._async, job_id)

    def job_list(
        self,
        *,
        org: Optional[str] = None,
        kind: Optional[str] = None,
        status: Optional[JobStatus] = None,
        before_id: Optional[int] = None,
        limit: int = 100,
    ) -> list[JobRecord]:
        """See :meth:`Storage.job_list`."""
        return _jobs.list_records(self.db, org, kind, status, before_id, limit)

    def job_signature_taken(self, signature: str) -> bool:
        """See :meth:`Storage.job_signature_taken`."""
        return _jobs.signature_taken(self.db, signature)

    def job_left_queue(self, since: float, worker: str) -> list[int]:
        """See :meth:`Storage.job_left_queue`: through the processing jobs' partial index
        and the index of finish times."""
        return _jobs.left_queue(self.db, since, worker)

    def job_cancel_requested(self, job_ids: Sequence[int]) -> list[int]:
        """See :meth:`Storage.job_cancel_requested`."""
        return _jobs.cancel_requested(self.db, job_ids)

    def job_counts(self, live: bool = False) -> dict[tuple[str, str, JobStatus], int]:
        """See :meth:`Storage.job_counts`."""
        return _jobs.counts(self.db, live)

    def job_waiting_facts(self, record: JobRecord, now: float, window: float) -> WaitingFacts:
        """See :meth:`Storage.job_waiting_facts`."""
        return _jobs.waiting_facts(self.db, record, now, window)

    def job_rerun(self, job_ids: Sequence[int], now: float, org: Optional[str] = None) -> list[int]:
        """See :meth:`Storage.job_rerun`: one transaction, committed durably, with a wake-up."""
        return _jobs.rerun(self.db, job_ids, org)

    def job_abort(self, job_id: int, now: float, org: Optional[str] = None) -> Optional[JobStatus]:
        """See :meth:`Storage.job_abort`."""
        return _jobs.abort(self.db, job_id, now, org)

    # ----- claims -------------------------------------------------------------------

    def job_pending(
        self, after_seq: int = 0, limit: Optional[int] = None, queues: Optional[Sequence[str]] = None
    ) -> list[PendingJob]:
        """See :meth:`Storage.job_pending`; publishes late commits first (:func:`.claims.pending`)."""
        return claims.pending(self.db, after_seq, limit, queues)

    def job_claim(
        self,
        job_ids: Sequence[int],
        worker: str,
        lease_until: float,
        now: float,
        admission: Optional[Admission] = None,
    ) -> Claimed:
        """See :meth:`Storage.job_claim`. Safe against any number of concurrent claimers on
        any host (:func:`.claims.claim` says how)."""
        return claims.claim(self.db, job_ids, worker, lease_until, now, admission)

    def job_finish_and_claim(
        self,
        finishes: Sequence[Finish],
        job_ids: Sequence[int],
        worker: str,
        lease_until: float,
        now: float,
        admission: Optional[Admission] = None,
    ) -> tuple[list[int], Claimed]:
        """See :meth:`Storage.job_finish_and_claim`: plain outcomes and the claim share
        one transaction (one commit); outcomes with children, retries or batch
        progress take :meth:`job_finish`'s own path first."""
        return claims.finish_and_claim(self.db, finishes, job_ids, worker, lease_until, now, admission)

    def job_heartbeat(self, job_ids: Sequence[int], worker: str, lease_until: float) -> None:
        """See :meth:`Storage.job_heartbeat`."""
        claims.heartbeat(self.db, job_ids, worker, lease_until)

    def job_finish(self, finishes: Sequence[Finish]) -> list[int]:
        """See :meth:`Storage.job_finish`: all outcomes and their children in one transaction."""
        return claims.finish(self.db, finishes)

    def job_requeue_expired(self, now: float) -> list[int]:
        """See :meth:`Storage.job_requeue_expired`. Concurrent callers requeue each job once."""
        return claims.requeue_expired(self.db, now)

    # ----- the worker registry --------------------------------------------------------

    def worker_register(self, worker: WorkerInfo, now: float) -> None:
        """See :meth:`Storage.worker_register`: the proof of life is a session advisory
        lock on a connection of the worker's own (:mod:`.workers`)."""
        self._registered[worker.name] = (worker, workers.register(self.db, worker, now))

    def worker_seen(self, name: str, now: float) -> bool:
        """See :meth:`Storage.worker_seen`; ``last_seen`` is the server's clock (hosts' clocks may differ)."""
        info, lock = self._registered[name]
        lock, held = workers.seen(self.db, info, lock)
        self._registered[name] = (info, lock)
        return held

    def worker_alone(self, name: str, job_id: Optional[int]) -> None:
        """See :meth:`Storage.worker_alone`."""
        workers.alone(self.db, name, job_id)

    def worker_list(self) -> list[WorkerRecord]:
        """See :meth:`Storage.worker_list`."""
        return workers.listed(self.db)

    def worker_reap(self, now: float) -> Reaped:
        """See :meth:`Storage.worker_reap`."""
        return workers.reap(self.db, list(self._registered), now)

    def worker_leave(self, name: str) -> None:
        """See :meth:`Storage.worker_leave`."""
        registered = self._registered.pop(name, None)
        if registered is not None:
            workers.leave(self.db, name, registered[1])

    # ----- tenant settings (see :mod:`.settings`) ----------------------------------------

    def settings_version(self) -> int:
        """See :meth:`Storage.settings_version`."""
        return settings.version(self.db)

    def settings_read(self) -> tuple[int, list[SettingRow]]:
        """See :meth:`Storage.settings_read`: the version and the rows from one snapshot."""
        return settings.read(self.db)

    def rate_states(self, scopes: Sequence[RateScope]) -> dict[RateScope, float]:
        """See :meth:`Storage.rate_states`."""
        texts = {rate_scope_text(scope): scope for scope in scopes}
        rows = self.db.read(self.db.sql["claim_rate_state"], (list(texts),)) if texts else []
        return {texts[text]: float(tat) for text, tat in rows}

    def settings_write(self, changes: Sequence[SettingChange], now: float, by: Optional[str] = None) -> int:
        """See :meth:`Storage.settings_write`: serialised with every claim on every host by
        an advisory lock (:mod:`.settings`), and announced on the settings channel."""
        return settings.write(self.db, changes, now, by)

    def settings_subscribe(self, callback: Callable[[], None]) -> Optional[Callable[[], None]]:
        """See :meth:`Storage.settings_subscribe`: LISTENs on the store's one LISTEN
        connection, the one :meth:`job_queued_subscribe` uses."""
        return settings.subscribe(self.db, callback)

    # ----- alerts and the webhook outbox (see :mod:`.alerts`) ---------------------------

    def alert_episodes(self) -> dict[str, float]:
        """See :meth:`Storage.alert_episodes`."""
        return alerts.episodes(self.db)

    def alert_episode_set(self, key: str, open: bool, now: float, event_id: str,
                          deliveries: Sequence[tuple[str, str]]) -> bool:  # fmt: skip
        """See :meth:`Storage.alert_episode_set`: one conditional statement flips it."""
        return alerts.episode_set(self.db, key, open, now, event_id, deliveries)

    def webhook_outbox_add(self, event_id: str, deliveries: Sequence[tuple[str, str]], now: float) -> None:
        """See :meth:`Storage.webhook_outbox_add`."""
        alerts.outbox_add(self.db, event_id, deliveries, now)

    def webhook_outbox_claim(self, now: float, limit: int, hold: float) -> list[WebhookDelivery]:
        """See :meth:`Storage.webhook_outbox_claim`; concurrent claimers skip each other's rows."""
        return alerts.outbox_claim(self.db, now, limit, hold)

    def webhook_outbox_settle(self, delivery_id: int, now: float, error: Optional[str] = None,
                              retry_at: Optional[float] = None) -> None:  # fmt: skip
        """See :meth:`Storage.webhook_outbox_settle`."""
        alerts.outbox_settle(self.db, delivery_id, now, error, retry_at)

    def webhook_outbox_prune(self, before: float, limit: int) -> int:
        """See :meth:`Storage.webhook_outbox_prune`."""
        return alerts.outbox_prune(self.db, before, limit)

    # ----- schedules ----------------------------------------------------------------

    def trigger_create(self, trigger: NewTrigger, now: float, max_per_org: int) -> int:
        """See :meth:`Storage.trigger_create`; creates for one org take turns (an advisory lock)."""
        return triggers.create(self.db, trigger, now, max_per_org)

    def trigger_get(self, trigger_id: int) -> Optional[TriggerRecord]:
        """See :meth:`Storage.trigger_get`."""
        return triggers.get(self.db, trigger_id)

    def trigger_list(self, *, org: Optional[str] = None, state: Optional[TriggerState] = None) -> list[TriggerRecord]:
        """See :meth:`Storage.trigger_list`."""
        return triggers.list_records(self.db, org, state)

    def trigger_abort(self, trigger_id: int, org: Optional[str] = None) -> Optional[TriggerState]:
        """See :meth:`Storage.trigger_abort`."""
        return triggers.abort(self.db, trigger_id, org)

    def trigger_fire_due(
        self, now: float, next_fire: NextFire, limit: int = 100, daily_limit: Optional[Callable[[str], int]] = None
    ) -> list[int]:
        """See :meth:`Storage.trigger_fire_due`; hosts firing at the same moment split
        the due schedules (:func:`.triggers.fire_due`)."""
        return triggers.fire_due(self.db, now, next_fire, limit, daily_limit)

    # ----- batches, usage, history --------------------------------------------------

    def flex_list(self, org: str) -> list[JobRecord]:
        """See :meth:`Storage.flex_list`."""
        return flex.list_records(self.db, org)

    def flex_move(self, job_id: int, org: str, *, before: Optional[int] = None, after: Optional[int] = None,
                  to: Optional[str] = None) -> list[int]:  # fmt: skip
        """See :meth:`Storage.flex_move`."""
        return flex.move(self.db, job_id, org, before, after, to)

    def batch_errors(self, job_id: int) -> list[BatchErrorEvent]:
        """See :meth:`Storage.batch_errors`."""
        return flex.batch_errors(self.db, job_id)

    def usage_daily(self, org: str, now: float) -> DailyUsage:
        """See :meth:`Storage.usage_daily`."""
        return usage.daily(self.db, org, now)

    def history_append(self, entries: Sequence[HistoryEntry]) -> None:
        """See :meth:`Storage.history_append`."""
        history.append(self.db, entries)

    def history_read(self, since: float, kinds: Optional[Sequence[str]] = None) -> list[HistoryEntry]:
        """See :meth:`Storage.history_read`."""
        return history.read(self.db, since, kinds)

    # ----- retention (:mod:`.retention`) --------------------------------------------------

    def job_prune(self, finished_before: Mapping[JobStatus, float], limit: int, dry_run: bool = False) -> int:
        """See :meth:`Storage.job_prune`; one host at a time (a tried advisory lock: 0 if busy)."""
        return retention.job_prune(self.db, finished_before, limit, dry_run)

    def history_prune(self, before: Optional[float], downsample_before: Optional[float], limit: int,
                      dry_run: bool = False) -> int:  # fmt: skip
        """See :meth:`Storage.history_prune`; one host at a time, as :meth:`job_prune`."""
        return retention.history_prune(self.db, before, downsample_before, limit, dry_run)

    def usage_prune(self, now: float, limit: int, dry_run: bool = False) -> int:
        """See :meth:`Storage.usage_prune`; one host at a time, as :meth:`job_prune`."""
        return retention.usage_prune(self.db, now, limit, dry_run)

    def rate_state_prune(self, before: float, limit: int, dry_run: bool = False) -> int:
        """See :meth:`Storage.rate_state_prune`; one host at a time, as :meth:`job_prune`."""
        return retention.rate_state_prune(self.db, before, limit, dry_run)

    def batch_errors_prune(self, before: float, limit: int, dry_run: bool = False) -> int:
        """See :meth:`Storage.batch_errors_prune`; one host at a time, as :meth:`job_prune`."""
        return retention.batch_errors_prune(self.db, before, limit, dry_run)

    def close(self) -> None:
        """Closes every pooled connection (and the lock of any worker that did not leave:
        the next live worker reaps it)."""
        for _, lock in self._registered.values():
            lock.release()
        self._registered.clear()
        self._completions.close()
        self._async.close()
        self.db.close()
