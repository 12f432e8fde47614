"""The worker: feeds the Rust dispatcher from the store, runs handlers in slots,
and writes outcomes back in batches.

One loop thread does the worker's storage I/O and talks to the dispatcher core:
it picks up queued jobs, claims what the core grants, commits outcomes, and runs
the periodic duties (:mod:`fairqueue.runtime.duties`). Handler slots
(:mod:`fairqueue.runtime.slots`) only run handlers and hand their outcome back
through a queue; the one store access a handler's own code can make is the
enqueue-time check described in :mod:`fairqueue.enqueue` (a child's duplicate
signature and its org's daily usage), read from the handler's thread so the
handler can react to a refusal. ``async def`` handlers run on one event loop
thread. Outcomes and the jobs handlers enqueued are committed together (group
commit), so a crash either keeps both or neither.

On a store with native turns (the embedded store), a thread-mode worker whose claims
have no cap, rate limit or pause to count (fair_share's defaults) takes its usual
turns in Rust with the interpreter released (``Storage.job_turn_in_line``): plain
completions come back from the slots as ``(lease, job id)``, the claimed rows go to
the slots as they are, and a slot builds the job's record and task itself, so the
loop makes no Python object per job. The loop comes back to Python when a duty, a
timeout or a delayed job is due, every ``poll_interval`` (its next look at the
store), when anything else needs it (an outcome with more than its end to store, a
claim to sort out, a stop, a settings change), and when nothing runs; all of that
is handled as on a Python turn.
"""

from __future__ import annotations

import collections
import logging
import math
import os
import queue
import random
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Optional

from fairqueue._core import Dispatcher, Grant
from fairqueue.conservation import ResourceMonitor
from fairqueue.enqueue import FutureFunction
from fairqueue.errors import HandlerNotFound, InvalidArgument, StorageError, StorageFull, StorageUnavailable, UnknownLease
from fairqueue.handlers import resolve
from fairqueue.records import Claimed, Finish, HistoryEntry, JobRecord, JobStatus, PendingJob, WorkerInfo
from fairqueue.runtime.core import Admissions, CoreSettings, build_dispatcher
from fairqueue.runtime.duties import Duty
from fairqueue.runtime.duties.affinity import Affinity
from fairqueue.runtime.duties.alert_evaluation import AlertEvaluation
from fairqueue.runtime.duties.cancel_requests import CancelRequests
from fairqueue.runtime.duties.dead_workers import DeadWorkers
from fairqueue.runtime.duties.heartbeats import Heartbeats
from fairqueue.runtime.duties.history_sampling import HistorySampling
from fairqueue.runtime.duties.lease_sweep import LeaseSweep
from fairqueue.runtime.duties.presence import Presence
from fairqueue.runtime.duties.pruning import Pruning
from fairqueue.runtime.duties.schedule_firing import ScheduleFiring
from fairqueue.runtime.duties.settings_sync import SettingsSync
from fairqueue.runtime.duties.taken_jobs import TakenJobs
from fairqueue.runtime.duties.webhook_delivery import WebhookDelivering
from fairqueue.runtime.health import HealthServer
from fairqueue.runtime.metrics import WorkerMetrics
from fairqueue.runtime.outcome import COMPLETED, Outcome
from fairqueue.runtime.queue_app import QueueApp
from fairqueue.runtime.runner import Runner
from fairqueue.runtime.slots import Slots
from fairqueue.runtime.task import Task
from fairqueue.tenants import Tenants
from fairqueue.validate import U32_MAX, check_int, check_number, served_queues, shown

__all__ = ["EXIT_CRASHED", "EXIT_OK", "Worker"]

log = logging.getLogger("fairqueue.worker")

# How many queued jobs one store read hands the dispatcher at most.
_PAGE = 10_000
# Outcomes written per group commit at most.
_BATCH = 1_000
# Seconds before a job left queued by a capped claim is offered to the store again.
_CAP_RETRY = 0.05

# A store that is full or unavailable is tried again after a capped exponential
# back-off with jitter (seconds): 0.5, 1, 2, … 30, each drawn from its upper half.
_RETRY_FIRST, _RETRY_MOST = 0.5, 30.0

EXIT_OK = 0
"""``Worker.run``'s (and ``fairqueue worker``'s) exit code after a requested stop that drained."""
EXIT_CRASHED = 70
"""The exit code after the worker's loop crashed (sysexits' EX_SOFTWARE): a supervisor
with ``Restart=on-failure`` restarts it; the log says why."""


class Worker:
    """Runs an app's jobs.

    Args:
        app: the application (a :class:`fairqueue.FairQueue`) whose store and limits to use.
        slots: handler slots (default: ``app.limits.slots``).
        name: identifies this worker's leases in the store (default host:pid:n).
        poll_interval: seconds between looks at the store when nothing wakes the worker
            (default 0.05; 1.0 on a store that announces new jobs, such as PostgreSQL's
            LISTEN/NOTIFY, where the look is only a safety net).
        mode: ``"thread"`` runs handlers in threads of this process (timeouts are
            soft: a hung thread is abandoned and replaced); ``"process"`` runs each
            slot's handlers in a child process, for CPU-bound work, hard timeouts
            (the child is killed) and handlers that may crash their process.
        app_path: ``module:attribute`` of the app, which process slots import.
        dispatcher: the dispatcher to feed, for simulation and baselines; by default
            a :class:`fairqueue.Dispatcher` built from the app's policy and limits.
        conservation: the resource monitor whose capacity limits how many slots are
            filled (SPEC §2.3); default ``app.conservation`` (None: no throttling).
            The worker starts it if it is not running and stops it if it started it.
        metrics_port: serve Prometheus metrics on this port while the worker runs
            (None, the default: no endpoint; 0: any free port, see ``metrics.address``).
        metrics_host: the address the endpoint listens on (loopback unless told otherwise).
        health_port: serve ``/livez`` and ``/readyz`` on this port while the worker runs
            (None, the default: no endpoint; 0: any free port, see ``health.address``);
            see :mod:`fairqueue.runtime.health`.
        health_host: the address the health endpoints listen on (loopback by default).
        store_retry_for: seconds the worker keeps retrying a store that is full or
            unavailable (:class:`~fairqueue.errors.StorageFull`,
            :class:`~fairqueue.errors.StorageUnavailable`), each retry logged, before
            its loop gives up and crashes (exit code :data:`EXIT_CRASHED`); None, the
            default, retries for as long as it takes. Outcomes not yet stored are kept
            and stored once the store answers again.
        queues: the named queues it serves (``["reports", "default"]``); None, the
            default, serves every queue. Jobs of other queues are never fed to its
            dispatcher, so it never runs them.
        affinity: with other workers on the store, serve this worker's home orgs first
            (see :mod:`fairqueue.runtime.duties.affinity`): workers then choose different
            jobs rather than all the same ones. A preference, never a partition: every
            worker still serves every org. Off by default (False): measured, it cost a
            flooded org's other users' waits (benches/README, "Many workers on one store").
    """

    _count = 0

    def __init__(
        self,
        app: QueueApp,
        *,
        slots: Optional[int] = None,
        name: Optional[str] = None,
        poll_interval: Optional[float] = None,
        mode: str = "thread",
        app_path: Optional[str] = None,
        dispatcher: Optional[Dispatcher] = None,
        conservation: Optional[ResourceMonitor] = None,
        metrics_port: Optional[int] = None,
        metrics_host: str = "127.0.0.1",
        health_port: Optional[int] = None,
        health_host: str = "127.0.0.1",
        store_retry_for: Optional[float] = None,
        queues: Optional[Sequence[str]] = None,
        affinity: bool = False,
    ) -> None:
        limits = app.settings.limits
        self.app = app
        self.slots = check_int("slots", slots if slots is not None else limits.slots, 1, U32_MAX)
        if mode not in ("thread", "process"):
            raise InvalidArgument(f"invalid mode {shown(mode)}: expected 'thread' or 'process'")
        if mode == "process" and not app_path:
            raise InvalidArgument("mode='process' needs app_path='module:attribute' so child processes can import the app")
        for option, port in (("metrics_port", metrics_port), ("health_port", health_port)):
            if port is not None:
                check_int(option, port, 0, 65535)
        self.mode = mode
        self.app_path = app_path
        self.store_retry_for = None if store_retry_for is None else check_number("store_retry_for", store_retry_for)
        self._unsaved: list[tuple[Task, Outcome]] = []
        self._drain_deadline: Optional[float] = None
        self._trouble_since: Optional[float] = None
        self._troubles = 0
        self.runner = Runner(app)
        Worker._count += 1
        self.name = name or f"{socket.gethostname()}:{os.getpid()}:{Worker._count}"
        self.queues = served_queues(queues)
        """The named queues this worker serves; None: every queue."""
        self.info = WorkerInfo(self.name, socket.gethostname(), os.getpid(), mode, self.slots, time.time(), self.queues)
        """What the store's worker registry says of this worker (``fairqueue workers``)."""
        self._registered = False
        self.store = app.storage
        """The store this worker runs (the app's when the worker was made)."""
        self._poll_interval = poll_interval
        self.poll_interval = 0.05 if poll_interval is None else poll_interval
        self._unsubscribe: Optional[Callable[[], None]] = None
        self._unsubscribe_settings: Optional[Callable[[], None]] = None
        self._queued_news = threading.Event()
        self._last_pick_up = 0.0
        self.core = dispatcher or build_dispatcher(app.settings, self.slots)
        self.tenants = Tenants(lambda: self.store, app.settings)
        """The stored tenant settings this worker follows."""
        self.core_settings = CoreSettings(self.core, app.settings)
        self.admissions = Admissions(app.settings)
        self.settings_sync = SettingsSync(self.tenants, self.core_settings, self._reread_pending)
        self.conservation = conservation if conservation is not None else app.conservation
        self._owns_monitor = False
        self._capacity = 1.0
        self._seen_seq = 0
        # The running tasks by lease, from their start until the store took their outcome.
        # Thread slots add the tasks of rows a turn in Rust claimed, so the loop reads it
        # through snapshots (list(...), which no other thread can interleave).
        self._running: dict[int, Task] = {}
        # Thread mode: claimed jobs that were running when a worker died, each waiting
        # to run alone, and the one running alone now.
        self._suspects: collections.deque[Task] = collections.deque()
        self._alone: Optional[Task] = None
        # Outcomes other than a plain completion (those come back through the slots' line).
        self._outcomes: queue.SimpleQueue[tuple[Task, Outcome]] = queue.SimpleQueue()
        # Whether the usual turn may run in the store's native code: thread slots, the
        # built-in core (a subclass may change what it grants) and a store that has one.
        self._line_turns = mode == "thread" and type(self.core) is Dispatcher and self.store.native_turns
        self.pool = Slots(self.name, self.runner, app_path if mode == "process" else None, self._deliver,
                          self._start_row, in_line=self._line_turns)  # fmt: skip
        """The handler slots."""
        self._main: Optional[threading.Thread] = None
        self._stopping = threading.Event()
        # True while the loop may be asleep: only then must a finished slot wake it
        # (Event.set per job costs a lock and a notify).
        self._idle = False
        self._stopped = threading.Event()
        self._grace = 30.0
        self.completed = 0
        """Jobs this worker has finished (any outcome), for progress displays."""
        self._timeouts: dict[tuple[str, str], float] = {}
        every = min(1.0, limits.lease / 3)
        self.history = HistorySampling(self.store, every)
        self.alerting = AlertEvaluation(app.alerts, self.core, self.history, every, worker=self.name)
        def running() -> list[Task]:
            # Finished jobs whose outcome the store has not taken yet still hold their lease.
            return [*self._running.values(), *(task for task, _ in self._unsaved)]

        self.dead_workers = DeadWorkers(self.store, every, self._on_queued)
        self.taken_jobs = TakenJobs(self.store, self.name, self.core)
        self.duties: list[Duty] = [
            self.settings_sync,
            self.taken_jobs,
            Presence(self.store, self.name, every, running),
            self.dead_workers,
            Heartbeats(self.store, self.core, self.name, limits.lease, running),
            LeaseSweep(self.store, every),
            ScheduleFiring(self.store, app.settings, every, self._queued_news.set),
            self.alerting,
            self.history,
            CancelRequests(self.store, every, running),
            Pruning(self.store, app.retention),
            WebhookDelivering(self.store, app.alerts, every),
        ]
        """The periodic duties, run in this order when due (see :mod:`fairqueue.runtime.duties`)."""
        self.affinity = Affinity(self.store, self.name, self.core_settings) if affinity else None
        """Weights this worker's home orgs up (None: ``affinity=False``)."""
        if self.affinity is not None:
            self.duties.append(self.affinity)
        self._due = [0.0] * len(self.duties)
        self._metrics_at = (metrics_host, metrics_port) if metrics_port is not None else None
        self.metrics: Optional[WorkerMetrics] = (
            WorkerMetrics(lambda: self.store, self.core) if metrics_port is not None else None
        )
        """The worker's Prometheus metrics (None unless a ``metrics_port`` was given)."""
        self.last_turn: Optional[float] = None
        """``time.monotonic()`` of the loop's last turn (None before the first)."""
        self.crash: Optional[BaseException] = None
        """What ended the loop, if it crashed."""
        self._health_at = (health_host, health_port) if health_port is not None else None
        self.health: Optional[HealthServer] = None
        """The health endpoints, once serving (None unless a ``health_port`` was given)."""

    # ----- lifecycle -------------------------------------------------------------------

    def start(self) -> Worker:
        """Starts the worker's threads and returns at once."""
        if self.conservation is not None and not self.conservation.running:
            self.conservation.start()
            self._owns_monitor = True
        if self.metrics is not None and self._metrics_at is not None:
            host, port = self._metrics_at
            self.metrics.serve(port, host)
        if self._health_at is not None:
            host, port = self._health_at
            self.health = HealthServer(lambda: self.last_turn, self.store, host, port).start()
        self.settings_sync.run(time.time(), force=True)
        self._unsubscribe_settings = self.store.settings_subscribe(self._on_settings_changed)
        self._unsubscribe = self.store.job_queued_subscribe(self._on_queued)
        if self._unsubscribe is not None and self._poll_interval is None:
            self.poll_interval = 1.0
        for _ in range(self.slots):
            self.pool.spawn()
        self._main = threading.Thread(target=self._run_loop, name=f"fairqueue-loop-{self.name}", daemon=True)
        self._main.start()
        return self

    def stop(self, grace: float = 30.0) -> None:
        """Stops taking work, lets running jobs finish for up to ``grace`` seconds,
        re-queues the rest, and returns when the worker has stopped (in process mode,
        the children still running a job at the deadline are stopped first)."""
        self._grace = grace
        self._stopping.set()
        self._attend()
        if self._main is not None:
            self._main.join()

    def run(self, grace: float = 30.0) -> int:
        """Runs until SIGTERM or SIGINT, then lets running jobs finish for up to
        ``grace`` seconds, re-queues the rest, and returns the exit code:
        :data:`EXIT_OK` after the requested stop, :data:`EXIT_CRASHED` if the loop
        crashed (its error is logged and kept in :attr:`crash`)."""
        self._grace = grace

        def on_signal(signum: int, _frame: Any) -> None:
            log.info("fairqueue worker %s: signal %d, draining", self.name, signum)
            self._stopping.set()
            self._attend()

        previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            self.start()
            while not self._stopped.wait(0.2):
                pass
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
        return EXIT_CRASHED if self.crash is not None else EXIT_OK

    def __enter__(self) -> Worker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ----- the loop ----------------------------------------------------------------------

    def _run_loop(self) -> None:
        try:
            self._loop_body()
        except BaseException as e:
            # Logged with the traceback, kept for run()'s exit code; not re-raised into
            # the thread's excepthook, which would only print it a second time.
            self.crash = e
            log.exception("fairqueue worker %s: loop crashed, exiting with code %d", self.name, EXIT_CRASHED)
        finally:
            self._leave()
            # Handler threads exit on the sentinel; a hung one (timed out) is abandoned.
            self.pool.close()
            self.runner.close()
            if self._unsubscribe is not None:
                self._unsubscribe()
            if self._unsubscribe_settings is not None:
                self._unsubscribe_settings()
            if self.metrics is not None:
                self.metrics.close()
            if self.health is not None:
                self.health.close()
            if self._owns_monitor and self.conservation is not None:
                self.conservation.stop(timeout=5)
            self._stopped.set()

    def _loop_body(self) -> None:
        wakeup = self.app.enqueuer.wakeup
        while True:
            self.last_turn = time.monotonic()
            wakeup.clear()
            now = time.time()
            try:
                if self._iterate(now):
                    return
            except (StorageFull, StorageUnavailable) as trouble:
                self._wait_out(trouble)
                continue
            self._trouble_since, self._troubles = None, 0
            self._idle = True
            if self._outcomes.empty() and not self.pool.line.completions():
                wakeup.wait(self._sleep_for(now))
            self._idle = False

    def _iterate(self, now: float) -> bool:
        """One pass of the loop; True once a requested stop has drained. A store that
        is full or unavailable raises out of it with nothing lost: outcomes it did not
        take wait in ``_unsaved``, grants it did not claim are offered again later."""
        if not self._registered:
            self._join(now)
        # Kept in _unsaved (and heartbeated) until the store has taken them: any store
        # call of the turn may fail first, the pick-up's as much as the commit's.
        outcomes = self._unsaved = self._unsaved + self._take_outcomes()
        if not self._stopping.is_set():
            self._turn(outcomes, now)
            now = time.time()  # a turn in native code may have lasted up to poll_interval
        else:
            if self._drain_deadline is None:
                self._drain_deadline = time.monotonic() + self._grace
                # Process slots hand their children no more jobs; those not handed over come back now.
                self.pool.hold()
            outcomes = outcomes + self._plain_outcomes()
            if outcomes:
                self._store_outcomes(outcomes, now)
            if (not self._running and not self.pool.line.rows_waiting()) or time.monotonic() >= self._drain_deadline:
                if self._running or self.pool.line.rows_waiting():
                    self._requeue_running(now)
                # Idle children exit now (and are reaped) rather than at interpreter exit.
                self.pool.close()
                self.pool.join()
                return True
        self._run_alone()
        self._enforce_timeouts(now)
        self._run_duties(now)
        return False

    def _join(self, now: float) -> None:
        """Registers this worker (its proof of life taken) and frees what dead workers
        and lapsed leases hold, before the first claim."""
        self.store.worker_register(self.info, now)
        self._registered = True
        log.info(
            "fairqueue worker %s: started (pid %d, mode %s, %d slots, store %s); %s",
            self.name, self.info.pid, self.mode, self.slots, type(self.store).__name__,
            self.conservation.describe() if self.conservation is not None else "resource conservation: off",
            extra={"worker": self.name},
        )  # fmt: skip
        self.dead_workers.run(now)
        self.store.job_requeue_expired(now)

    def _leave(self) -> None:
        """Leaves the registry. After a crash, first stops what still runs here (process
        slots' children; thread jobs are asked to cancel): once this worker's proof of
        life is released, its jobs are another worker's to run."""
        if self.crash is not None:
            self.pool.hold()
            self.pool.interrupt()
            self.pool.take_unstarted()  # not started: their leases lapse, and other workers run them
            for task in list(self._running.values()):
                task.cancel.set()
        if not self._registered:
            return
        try:
            self.store.worker_leave(self.name)
        except StorageError as e:
            log.warning("fairqueue worker %s: could not leave the registry (%s); a live worker reaps it",
                        self.name, e)  # fmt: skip

    def _wait_out(self, trouble: StorageError) -> None:
        """The store is full or unavailable: log it, wait a capped, jittered back-off
        (cut short by a stop), and let the loop try again — unless the operator's
        ``store_retry_for`` is over, or a stop's grace is, which crash the loop."""
        started = self._trouble_since = self._trouble_since or time.monotonic()
        self._troubles += 1
        waited = time.monotonic() - started
        if self.store_retry_for is not None and waited >= self.store_retry_for:
            raise trouble
        if self._drain_deadline is not None and time.monotonic() >= self._drain_deadline:
            log.error("fairqueue worker %s: stopping, and the store still fails: %d outcomes not stored; their "
                      "jobs are re-delivered once their lease lapses", self.name, len(self._unsaved))  # fmt: skip
            raise trouble
        delay = min(_RETRY_MOST, _RETRY_FIRST * 2 ** min(self._troubles - 1, 16)) * random.uniform(0.5, 1.0)
        log.warning("fairqueue worker %s: %s (attempt %d, %.0f s so far); retrying in %.1f s",
                    self.name, trouble, self._troubles, waited, delay)  # fmt: skip
        self._stopping.wait(delay)

    def _run_duties(self, now: float) -> None:
        for i, duty in enumerate(self.duties):
            if now >= self._due[i]:
                self._due[i] = now + duty.every
                duty.run(now)

    def _sleep_for(self, now: float) -> float:
        wake = self.core.next_wakeup()
        deadlines = [t.deadline for t in list(self._running.values())]
        until = min([self.poll_interval] + ([wake - now] if wake is not None else []) + [d - time.monotonic() for d in deadlines])
        return max(until, 0.0)

    def _deliver(self, task: Task, outcome: Outcome) -> None:
        """A slot's outcome, handed to the loop (called from the slot's thread)."""
        if not self._line_turns:
            self._outcomes.put((task, outcome))
        elif outcome is COMPLETED:
            self.pool.line.done(task.lease, task.record.id)
        else:
            self._outcomes.put((task, outcome))
            self.pool.line.attend()  # the loop stores it (and sorts out what it asks for) in Python
        if self._idle:
            self.app.enqueuer.wakeup.set()

    def _on_settings_changed(self) -> None:
        # From the store's listener thread: the loop loads the settings at its next turn.
        self._due[self.duties.index(self.settings_sync)] = 0.0
        self._attend()

    def _on_queued(self) -> None:
        self._queued_news.set()
        self._attend()

    def _attend(self) -> None:
        """Wakes the loop: from its sleep, and from turns it runs in native code."""
        self.app.enqueuer.wakeup.set()
        self.pool.line.attend()

    def _pick_up(self, now: float) -> None:
        """Feeds the dispatcher every job that became queued since the last look.

        On a store that announces queued jobs the look is skipped unless one was
        announced or ``poll_interval`` has passed (a safety net for a lost
        notification): during a drain nothing new is queued, and each look is a
        round trip to the database.
        """
        if self._unsubscribe is not None:
            if not self._queued_news.is_set() and now - self._last_pick_up < self.poll_interval:
                return
            self._queued_news.clear()
        self._last_pick_up = now
        while True:
            pending = self.store.job_pending(after_seq=self._seen_seq, limit=_PAGE, queues=self.queues)
            if not pending:
                return
            settings = self.app.settings
            kept = pending
            if settings.pauses() or settings.default_org_settings():
                # Paused jobs stay out of the core until their pause ends (then all are read again).
                for p in pending:
                    self.core_settings.see(p.org)
                kept = [p for p in pending if settings.paused(p.org, p.kind, p.key, p.queue) is None]
            try:
                self.core.enqueue_many([p[:7] for p in kept], skip_held=True)
            except InvalidArgument:
                self._feed_one_by_one(kept, now)
            self._seen_seq = pending[-1].ready_seq
            if len(pending) < _PAGE:
                return

    def pick_up(self) -> None:
        """Feeds the dispatcher every job queued since the last look, now (benchmarks
        time the pick-up of a large backlog with it)."""
        self._pick_up(time.time())

    def _feed_one_by_one(self, pending: list[PendingJob], now: float) -> None:
        """A page the dispatcher refused as a whole: feed it job by job, and fail the
        jobs whose stored row it cannot take (a kind or org fairqueue never writes)."""
        malformed: list[tuple[int, str]] = []
        for p in pending:
            try:
                self.core.enqueue_many([p[:7]], skip_held=True)
            except InvalidArgument as e:
                malformed.append((p.id, f"MalformedRecord: job {p.id}'s stored row cannot be dispatched: {e}"))
        if not malformed:
            return
        log.error("fairqueue worker %s: failing %d malformed stored jobs: %s", self.name, len(malformed), malformed)
        lease_until = now + self.app.settings.limits.lease
        claimed = {r.id for r in self.store.job_claim([i for i, _ in malformed], self.name, lease_until, now)}
        self.store.job_finish([Finish(i, self.name, JobStatus.FAILED, now, error) for i, error in malformed if i in claimed])

    def _turn(self, outcomes: list[tuple[Task, Outcome]], now: float) -> None:
        """One turn: the outcomes that came in free their slots, the dispatcher fills
        the free slots, and the store records both in one call (one transaction on
        SQLite) — in the store's native code when it can (:meth:`_line_turn`)."""
        in_line = self._line_turns and not (self._suspects or self._alone) and self.admissions.unlimited()
        if not in_line:
            outcomes = self._unsaved = outcomes + self._plain_outcomes()
        elif outcomes:
            # Outcomes with more to store than their end: in a transaction of their own, first.
            self._store_outcomes(outcomes, now)
            outcomes = []
        if outcomes:
            self._release_all([task for task, _ in outcomes])
        self._pick_up(now)
        self._apply_capacity(now)
        if in_line:
            self._line_turn(now)
            return
        # While a suspect waits for the running jobs to finish, or runs, nothing new starts.
        grants = self.core.dispatch() if not (self._suspects or self._alone) else []
        if not outcomes and not grants:
            return
        lease_until = now + self.app.settings.limits.lease
        # The store holds the claim to the caps and rate limits of the settings version
        # this worker loaded, across every worker and host (or refuses it as stale).
        admission = self.admissions.build(self._lines(grants))
        ids = [g.id for g in grants]
        try:
            applied, claim = self.store.job_finish_and_claim(
                self._finishes(outcomes, now), ids, self.name, lease_until, now, admission
            )
        except (StorageFull, StorageUnavailable):
            # Nothing was stored: the outcomes wait in _unsaved for the next try, the
            # grants go back to the core, to be dispatched again once the store answers.
            for grant in grants:
                self.core.retry(grant.lease, now + _RETRY_FIRST)
            raise
        self._unsaved = []
        if outcomes:
            self._settle(outcomes, applied)
        if claim.stale:
            # The settings changed since this worker loaded them: load them, offer the grants again.
            for grant in grants:
                self.core.retry(grant.lease, now)
            self.settings_sync.run(now, force=True)
        elif grants:
            self._start(grants, ids, claim, now)

    def _line_turn(self, now: float) -> None:
        """The usual turns in the store's native code, the interpreter released: the
        slots' plain completions stored and the free slots filled, the claimed jobs put
        in the slots' line as rows (no Python object per job here: a slot makes each
        task, see :meth:`_start_row`), until this loop's Python is due (a duty, a
        timeout, a delayed job, the next look at the store) or is asked for
        (:meth:`_attend`). What the native turns leave — completions they did not
        store, a claim to sort out — is handled as in a Python turn."""
        limits = self.app.settings.limits
        until = min(now + self.poll_interval, *self._due)
        wake = self.core.next_wakeup()
        if wake is not None:
            until = min(until, wake)
        deadlines = [t.deadline for t in list(self._running.values())]
        if deadlines:
            until = min(until, now + min(deadlines) - time.monotonic())
        turn = self.store.job_turn_in_line(
            self.pool.line, self.core, self.name, limits.lease, self.admissions.version, limits.max_attempts,
            _RETRY_FIRST, until,
        )  # fmt: skip
        now = time.time()
        running, metrics = self._running, self.metrics
        for lease, _ in turn.applied:
            task = running.pop(lease, None)
            if metrics is not None and task is not None:
                metrics.finished_one(task.record, JobStatus.COMPLETED, ran_for=time.monotonic() - task.started)
        self.completed += len(turn.applied)
        for org in turn.orgs:
            self.alerting.job_started(org)
        if turn.not_applied:
            tasks = [running.get(lease) for lease, _ in turn.not_applied]
            self._store_outcomes([(t, COMPLETED) for t in tasks if t is not None and not t.timed_out], now)
        if turn.claim.stale:
            for grant in turn.grants:
                self.core.retry(grant.lease, now)
            self.settings_sync.run(now, force=True)
        elif turn.grants:
            self._start(turn.grants, [g.id for g in turn.grants], turn.claim, now)

    def _start_row(self, lease: int, row: tuple[Any, ...]) -> Task:
        """The task of a row a native turn claimed, now running (called from the thread
        slot that took the row)."""
        record = self.store.claimed_record(row)
        timeout = self._timeouts.get((record.kind, record.handler))
        if timeout is None:
            timeout = self._timeout(record.kind, record.handler)
        task = Task(lease, record, timeout)
        self._running[lease] = task
        if self.metrics is not None:
            self.metrics.started(record)
        return task

    def _apply_capacity(self, now: float) -> None:
        if self.conservation is not None:
            capacity = self.conservation.capacity
            if 0 < capacity < 1 / self.slots:
                # floor(slots × capacity) would pause a small worker outright; slow it to one slot instead.
                capacity = 1 / self.slots
            if capacity != self._capacity:
                self.core.set_capacity(capacity)
                if (capacity < 1) != (self._capacity < 1):
                    periods = self.conservation.current_periods
                    self.history.record(HistoryEntry(
                        now, "throttle_start" if capacity < 1 else "throttle_end", None, capacity,
                        {"worker": self.name, "resources": [p.resource for p in periods]},
                    ))  # fmt: skip
                    self.app.alerts.condition(
                        "throttle", None, capacity < 1,
                        f"worker {self.name}: resource conservation "
                        + (f"throttles it to {capacity:.0%} of its slots" if capacity < 1 else "no longer throttles it"),
                        {"worker": self.name, "capacity": capacity},
                    )  # fmt: skip
                self._capacity = capacity

    def _start(self, grants: list[Grant], ids: list[int], claim: Claimed, now: float) -> None:
        """Hands each claimed job to a handler slot; offers at-cap ones again shortly."""
        starts: Iterable[tuple[int, JobRecord]]
        if claim.at_cap or claim.paused or claim.rate_limited or [r.id for r in claim] != ids:
            starts = self._sort_out(grants, claim, now)
        else:
            # The usual claim: every grant claimed as granted, in order (no stand-ins, nothing left queued).
            starts = zip([g.lease for g in grants], claim)
        max_attempts = self.app.settings.limits.max_attempts
        timeouts = self._timeouts
        job_started = self.alerting.job_started
        metrics = self.metrics
        suspects_too = self.mode == "thread"
        submit = self.pool.submit
        started = time.monotonic()
        for lease, record in starts:
            timeout = timeouts.get((record.kind, record.handler))
            if timeout is None:
                timeout = self._timeout(record.kind, record.handler)
            task = Task(lease, record, timeout, started)
            self._running[lease] = task
            job_started(record.org)
            if metrics is not None:
                metrics.started(record)
            lost = record.attempts - record.handler_attempts - 1  # earlier deliveries that never reached an outcome
            if lost >= max_attempts:
                error = (
                    f"delivered {lost} times without an outcome (its worker died or stalled each time); "
                    f"the limit is {max_attempts} (Limits.max_attempts)"
                )
                self._outcomes.put((task, Outcome(JobStatus.FAILED, error=error)))
            elif suspects_too and record.worker_deaths:
                # It was running when a thread-mode worker died: if it is what kills its
                # workers, it must take no other job down with it (see _run_alone).
                self._suspects.append(task)
                task.deadline = math.inf
            else:
                submit(task)

    def _sort_out(self, grants: list[Grant], claim: Claimed, now: float) -> list[tuple[int, JobRecord]]:
        """The (lease, record) pairs to start of a claim that did not take every grant as
        granted; the grants left queued go back to the core, each as its reason says."""
        claimed = {r.id: r for r in claim}
        at_cap = set(claim.at_cap)
        paused = set(claim.paused)
        stand_ins = self._stand_ins(claim, {g.id for g in grants})
        starts: list[tuple[int, JobRecord]] = []
        for grant in grants:
            if grant.id in at_cap:
                # Other workers sharing the store hold the pair's cap: offer it again shortly.
                self.core.retry(grant.lease, now + _CAP_RETRY)
                continue
            if grant.id in paused:
                # Paused since this worker fed it to its core: out of the core until resumed.
                self.core.gone(grant.lease)
                continue
            if grant.id in claim.rate_limited:
                # Other workers used the rate limit's room: offer it again when the store says it has room.
                self.core.retry(grant.lease, claim.rate_limited[grant.id])
                continue
            record = claimed.get(grant.id)
            if record is None and stand_ins.get((grant.org, grant.kind)):
                # Another worker took the job; the store gave us the pair's next one,
                # which runs under this grant's slot (same org and kind, same charge).
                record = stand_ins[(grant.org, grant.kind)].pop()
            if record is None:
                # Aborted, or claimed by another worker process, since we last looked:
                # look again at once, the dispatcher may hold more jobs others took. Not
                # charged: the slot ran nothing (the worker that runs the job charges it).
                self.core.gone(grant.lease)
                self.app.enqueuer.wakeup.set()
                continue
            starts.append((grant.lease, record))
        return starts

    def _run_alone(self) -> None:
        """Starts the next suspect once every other job of this worker has finished.

        A job that was running when its thread-mode worker died may have killed it, or
        may have been an innocent bystander; run alone, a second death is its own
        doing, and only it is quarantined for it (``Storage.worker_reap``)."""
        if self._alone is not None:
            if self._running.get(self._alone.lease) is self._alone:
                return
            self.store.worker_alone(self.name, None)
            self._alone = None
        waiting = {t.lease for t in self._suspects}
        if not waiting or any(lease not in waiting for lease in list(self._running)):
            return
        task = self._suspects.popleft()
        if self._running.get(task.lease) is not task:
            return  # given back or failed meanwhile (a stop, its attempts used up)
        log.warning(
            "fairqueue worker %s: job %d was running when a worker died; running it alone",
            self.name, task.record.id, extra={"job_id": task.record.id, "org": task.record.org},
        )  # fmt: skip
        self.store.worker_alone(self.name, task.record.id)
        task.started = time.monotonic()
        task.deadline = task.started + task.timeout
        self._alone = task
        self.pool.submit(task)

    def _stand_ins(self, claim: Claimed, granted: set[int]) -> dict[tuple[str, str], list[JobRecord]]:
        """The claimed jobs the dispatcher did not grant, by pair, taken out of the dispatcher."""
        stand_ins: dict[tuple[str, str], list[JobRecord]] = {}
        for record in claim:
            if record.id in granted:
                continue
            if self.core.holds(record.id) and self.core.abort(record.id) is not None:
                # Still running here under a lapsed lease (the store re-queued it): its
                # task will finish it; the claim's lease expires and the store re-queues it.
                continue
            stand_ins.setdefault((record.org, record.kind), []).append(record)
        return stand_ins

    def _timeout(self, kind: str, handler_path: str) -> float:
        """Seconds a job of this kind and handler may run (a future may set its own)."""
        timeout = self._timeouts.get((kind, handler_path))
        if timeout is None:
            timeout = self.app.settings.limits.timeouts[kind]
            try:
                handler = resolve(handler_path)
            except HandlerNotFound:
                return timeout  # the handler thread records the error; looked up again next time
            if isinstance(handler, FutureFunction) and handler.timeout is not None:
                timeout = handler.timeout
            self._timeouts[(kind, handler_path)] = timeout
        return timeout

    def _lines(self, grants: list[Grant]) -> list[tuple[str, str, Optional[str]]]:
        """Each grant's (org, kind, key): what its claim's limits are looked up by."""
        if not self.admissions.needs_keys():
            return [(g.org, g.kind, None) for g in grants]
        return [(g.org, g.kind, self.core.request_options(g.id)["key"]) for g in grants]

    def _reread_pending(self) -> None:
        """A pause ended: read every queued job again (the core skips those it holds)."""
        self._seen_seq = 0
        self._queued_news.set()

    def _take_outcomes(self) -> list[tuple[Task, Outcome]]:
        """The handler threads' outcomes so far, of tasks still ours (not timed out)."""
        outcomes: list[tuple[Task, Outcome]] = []
        while len(outcomes) < _BATCH:
            try:
                outcomes.append(self._outcomes.get_nowait())
            except queue.Empty:
                break
        return [(t, o) for t, o in outcomes if self._running.get(t.lease) is t and not t.timed_out]

    def _store_outcomes(self, outcomes: list[tuple[Task, Outcome]], now: float) -> None:
        """Frees the outcomes' slots and stores them in a transaction of their own; kept
        in ``_unsaved`` until the store has taken them."""
        self._unsaved = outcomes
        self._release_all([task for task, _ in outcomes])
        applied = self.store.job_finish(self._finishes(outcomes, now))
        self._unsaved = []
        self._settle(outcomes, applied)

    def _plain_outcomes(self) -> list[tuple[Task, Outcome]]:
        """The plain completions in the slots' line (of tasks still ours), as outcomes."""
        tasks = [self._running.get(lease) for lease, _ in self.pool.line.take_done()]
        return [(t, COMPLETED) for t in tasks if t is not None and not t.timed_out]

    def _finishes(self, outcomes: list[tuple[Task, Outcome]], now: float) -> list[Finish]:
        settings = self.app.settings
        return [
            Finish(t.record.id, self.name, o.status, now, o.error, o.retry_at, o.children, o.progress,
                   settings.daily_limits(c.org for c in o.children) if o.children else None, o.given_back,
                   o.ran, o.result, o.attempt_error)
            for t, o in outcomes
        ]  # fmt: skip

    def _settle(self, outcomes: list[tuple[Task, Outcome]], applied: list[int]) -> None:
        """After the outcomes are stored: metrics, batch error events, and jobs whose
        outcome did not apply (our lease had lapsed) back into the dispatcher."""
        self.completed += len(outcomes)
        done = set(applied)
        if self.metrics is not None:
            for task, outcome in outcomes:
                if task.record.id in done:
                    self.metrics.finished_one(task.record, outcome.status, ran_for=time.monotonic() - task.started,
                                              given_back=outcome.given_back)  # fmt: skip
        if any(o.progress and o.progress.errors for _, o in outcomes):
            self.app.publish_batch_errors(
                [e for t, o in outcomes if o.progress and t.record.id in done for e in o.progress.errors]
            )
        if len(applied) < len(outcomes):
            self._reclaim_lost([t.record.id for t, _ in outcomes if t.record.id not in done])
        if any(o.children for _, o in outcomes):
            self.app.enqueuer.wakeup.set()

    def _reclaim_lost(self, job_ids: list[int]) -> None:
        """Our lease on these jobs lapsed while they ran (the loop stalled past it) and
        the store queued them again; _pick_up skipped them while we still held them,
        so queue them in the dispatcher now."""
        for job_id in job_ids:
            record = self.store.job_get(job_id)
            if record is not None and record.status is JobStatus.QUEUED:
                self.core.enqueue_many([(record.id, record.org, record.kind, record.run_at)], skip_held=True)

    def _release_all(self, tasks: list[Task]) -> None:
        """Releases many tasks at once (one call into the core), as :meth:`_release` does one."""
        for task in tasks:
            self._running.pop(task.lease, None)
        try:
            self.core.ack_many([task.lease for task in tasks])
        except UnknownLease:
            # Some lease lapsed while the loop stalled, so the core acked none: one by one.
            for task in tasks:
                self._release(task)

    def _release(self, task: Task) -> None:
        # Popped, not deleted: an outcome the store did not take is released again when retried.
        self._running.pop(task.lease, None)
        # The store owns the job's next step (a retry re-enters through _pick_up).
        try:
            self.core.ack(task.lease)
        except UnknownLease:
            pass  # the core's lease lapsed while the loop stalled; it released the slot then

    def _enforce_timeouts(self, now: float) -> None:
        if self.mode == "process":
            return  # process slots kill their own overdue child
        overdue = [t for t in list(self._running.values()) if not t.timed_out and time.monotonic() > t.deadline]
        if not overdue:
            return
        for task in overdue:
            task.timed_out = True
            task.cancel.set()
        ran = {t.lease: time.monotonic() - t.started for t in overdue}
        self.store.job_finish(
            [
                Finish(t.record.id, self.name, JobStatus.FAILED, now,
                       error=f"TimeoutError: ran {ran[t.lease]:.1f} s, over its timeout of {t.timeout:g} s")
                for t in overdue
            ]
        )  # fmt: skip
        for task in overdue:
            if self.metrics is not None:
                self.metrics.finished_one(task.record, JobStatus.FAILED, ran_for=ran[task.lease])
            self._release(task)
            # The hung thread cannot be killed; a fresh one takes its slot.
            self.pool.spawn()

    def _requeue_running(self, now: float) -> None:
        """Grace is over: give the still-running jobs back to the queue.

        Process slots first stop and reap the children still running a job, so none
        runs on once it is queued again; what those slots deliver (a job that finished
        meanwhile, or a re-queue) is committed as it is, and the rest re-queued.
        """
        self.pool.interrupt()
        self.pool.take_unstarted()  # their tasks are in _running now: re-queued below
        outcomes = self._take_outcomes() + self._plain_outcomes()
        if outcomes:
            now = time.time()
            self._store_outcomes(outcomes, now)
        running = [t for t in list(self._running.values()) if not t.timed_out]
        self.store.job_finish(
            [Finish(t.record.id, self.name, JobStatus.QUEUED, now, error="re-queued: worker stopped", given_back=True)
             for t in running]  # fmt: skip
        )
        for task in running:
            task.cancel.set()
            if self.metrics is not None:
                self.metrics.finished_one(task.record, JobStatus.QUEUED, given_back=True)
            self._release(task)
