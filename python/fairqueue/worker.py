"""The worker runtime: feeds the Rust dispatcher from the store, runs handlers in
slots, and writes outcomes back in batches.

One loop thread does all storage I/O and talks to the dispatcher core; handler
threads only run handlers and hand their outcome back through a queue (they never
touch the store). ``async def`` handlers run on one event loop thread. Outcomes and
the jobs handlers enqueued are committed together (group commit), so a crash
either keeps both or neither.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import queue
import signal
import socket
import threading
import time
from multiprocessing.connection import Connection
from collections.abc import Callable
from typing import Any, Optional

from fairqueue import jobs as _jobs
from fairqueue._core import Dispatcher, Grant
from fairqueue.alerts import AlertEvent
from fairqueue.app import FairQueue
from fairqueue.conservation import ResourceMonitor
from fairqueue.cron import next_fire
from fairqueue.errors import HandlerNotFound, InvalidArgument
from fairqueue.jobs import CancelFlag, FutureFunction
from fairqueue.metrics import WorkerMetrics
from fairqueue.records import Claimed, Finish, HistoryEntry, JobRecord, JobStatus, PendingJob
from fairqueue.runner import Outcome, Runner

__all__ = ["Worker"]

log = logging.getLogger("fairqueue.worker")

# How many queued jobs one store read hands the dispatcher at most.
_PAGE = 10_000
# Outcomes written per group commit at most.
_BATCH = 1_000
# Seconds between samples of each org's pending and running jobs (the dashboard's chart).
_SAMPLE_EVERY = 5.0
# Seconds before a job left queued by a capped claim is offered to the store again.
_CAP_RETRY = 0.05


class _Task:
    """A claimed job on its way to a handler thread (a slotted class: one per job)."""

    __slots__ = ("lease", "record", "cancel", "started", "deadline", "timed_out")

    def __init__(self, lease: int, record: JobRecord, timeout: float) -> None:
        self.lease = lease
        self.record = record
        self.cancel = CancelFlag()
        self.started = time.monotonic()
        self.deadline = self.started + timeout
        self.timed_out = False


class Worker:
    """Runs an app's jobs.

    Args:
        app: the application whose store and limits to use.
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
    """

    _count = 0

    def __init__(
        self,
        app: FairQueue,
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
    ) -> None:
        limits = app.limits
        self.app = app
        self.slots = slots if slots is not None else limits.slots
        if not isinstance(self.slots, int) or self.slots < 1:
            raise InvalidArgument(f"invalid slots {slots!r}: expected an integer >= 1")
        if mode not in ("thread", "process"):
            raise InvalidArgument(f"invalid mode {mode!r}: expected 'thread' or 'process'")
        if mode == "process" and not app_path:
            raise InvalidArgument("mode='process' needs app_path='module:attribute' so child processes can import the app")
        self.mode = mode
        self.app_path = app_path
        self.runner = Runner(app)
        Worker._count += 1
        self.name = name or f"{socket.gethostname()}:{os.getpid()}:{Worker._count}"
        self._poll_interval = poll_interval
        self.poll_interval = 0.05 if poll_interval is None else poll_interval
        self._unsubscribe: Optional[Callable[[], None]] = None
        self._queued_news = threading.Event()
        self._last_pick_up = 0.0
        self.core = dispatcher or Dispatcher(
            policy=app.policy,
            slots=self.slots,
            peek_set=limits.peek_set,
            cap=limits.cap,
            min=limits.min,
            weight=limits.weight,
            extended_delay=dict(limits.extended_delay),
            kind_slots=dict(limits.kind_slots),
            lease=limits.lease,
        )
        for (org, kind), values in app.org_limits.items():
            self.core.set_limits(org, kind, **values)
        self.conservation = conservation if conservation is not None else app.conservation
        self._owns_monitor = False
        self._capacity = 1.0
        self._seen_seq = 0
        self._running: dict[int, _Task] = {}
        self._tasks: queue.SimpleQueue[Optional[_Task]] = queue.SimpleQueue()
        self._outcomes: queue.SimpleQueue[tuple[_Task, Outcome]] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._main: Optional[threading.Thread] = None
        self._stopping = threading.Event()
        # True while the loop may be asleep: only then must a finished slot wake it
        # (Event.set per job costs a lock and a notify).
        self._idle = False
        self._stopped = threading.Event()
        self._grace = 30.0
        self._last_heartbeat = 0.0
        self._last_housekeeping = 0.0
        self.completed = 0
        """Jobs this worker has finished (any outcome), for progress displays."""
        self._history: list[HistoryEntry] = []
        self._last_sample = 0.0
        self._caps: dict[tuple[str, str], int] = {}
        self._timeouts: dict[tuple[str, str], float] = {}
        self._started_orgs: set[str] = set()
        if metrics_port is not None and (not isinstance(metrics_port, int) or not 0 <= metrics_port <= 65535):
            raise InvalidArgument(f"invalid metrics_port {metrics_port!r}: expected 0 to 65535")
        self._metrics_at = (metrics_host, metrics_port) if metrics_port is not None else None
        self.metrics: Optional[WorkerMetrics] = WorkerMetrics(self) if metrics_port is not None else None
        """The worker's Prometheus metrics (None unless a ``metrics_port`` was given)."""

    # ----- lifecycle -------------------------------------------------------------------

    def start(self) -> Worker:
        """Starts the worker's threads and returns at once."""
        if self.conservation is not None and not self.conservation.running:
            self.conservation.start()
            self._owns_monitor = True
        if self.metrics is not None and self._metrics_at is not None:
            host, port = self._metrics_at
            self.metrics.serve(port, host)
        self._unsubscribe = self.app.storage.job_queued_subscribe(self._on_queued)
        if self._unsubscribe is not None and self._poll_interval is None:
            self.poll_interval = 1.0
        for _ in range(self.slots):
            self._spawn_handler_thread()
        self._main = threading.Thread(target=self._run_loop, name=f"fairqueue-loop-{self.name}", daemon=True)
        self._main.start()
        return self

    def stop(self, grace: float = 30.0) -> None:
        """Stops taking work, lets running jobs finish for up to ``grace`` seconds,
        re-queues the rest, and returns when the worker has stopped."""
        self._grace = grace
        self._stopping.set()
        self.app.wakeup.set()
        if self._main is not None:
            self._main.join()

    def run(self, grace: float = 30.0) -> int:
        """Runs until SIGTERM or SIGINT, then lets running jobs finish for up to
        ``grace`` seconds, re-queues the rest, and returns the exit code (0)."""
        self._grace = grace

        def on_signal(signum: int, _frame: Any) -> None:
            log.info("fairqueue worker %s: signal %d, draining", self.name, signum)
            self._stopping.set()
            self.app.wakeup.set()

        previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            self.start()
            while not self._stopped.wait(0.2):
                pass
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
        return 0

    def __enter__(self) -> Worker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ----- the loop ----------------------------------------------------------------------

    def _run_loop(self) -> None:
        try:
            self._loop_body()
        except BaseException:
            log.exception("fairqueue worker %s: loop crashed", self.name)
            raise
        finally:
            for _ in self._threads:
                self._tasks.put(None)
            # Handler threads exit on the sentinel; a hung one (timed out) is abandoned.
            self.runner.close()
            if self._unsubscribe is not None:
                self._unsubscribe()
            if self.metrics is not None:
                self.metrics.close()
            if self._owns_monitor and self.conservation is not None:
                self.conservation.stop(timeout=5)
            self._stopped.set()

    def _loop_body(self) -> None:
        self.app.storage.job_requeue_expired(time.time())
        drain_deadline: Optional[float] = None
        while True:
            self.app.wakeup.clear()
            now = time.time()
            outcomes = self._take_outcomes()
            if self._stopping.is_set():
                if outcomes:
                    for task, _ in outcomes:
                        self._release(task)
                    self._settle(outcomes, self.app.storage.job_finish(self._finishes(outcomes, now)))
                if drain_deadline is None:
                    drain_deadline = time.monotonic() + self._grace
                if not self._running:
                    return
                if time.monotonic() >= drain_deadline:
                    self._requeue_running(now)
                    return
            else:
                self._turn(outcomes, now)
            self._enforce_timeouts(now)
            self._housekeeping(now)
            self._idle = True
            if self._outcomes.empty():
                self.app.wakeup.wait(self._sleep_for(now))
            self._idle = False

    def _sleep_for(self, now: float) -> float:
        wake = self.core.next_wakeup()
        deadlines = [t.deadline for t in self._running.values()]
        until = min([self.poll_interval] + ([wake - now] if wake is not None else []) + [d - time.monotonic() for d in deadlines])
        return max(until, 0.0)

    def _on_queued(self) -> None:
        self._queued_news.set()
        self.app.wakeup.set()

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
            pending = self.app.storage.job_pending(after_seq=self._seen_seq, limit=_PAGE)
            if not pending:
                return
            try:
                self.core.enqueue_many([p[:4] for p in pending], skip_held=True)
            except InvalidArgument:
                self._feed_one_by_one(pending, now)
            self._seen_seq = pending[-1].ready_seq
            if len(pending) < _PAGE:
                return

    def _feed_one_by_one(self, pending: list[PendingJob], now: float) -> None:
        """A page the dispatcher refused as a whole: feed it job by job, and fail the
        jobs whose stored row it cannot take (a kind or org fairqueue never writes)."""
        malformed: list[tuple[int, str]] = []
        for p in pending:
            try:
                self.core.enqueue_many([(p.id, p.org, p.kind, p.run_at)], skip_held=True)
            except InvalidArgument as e:
                malformed.append((p.id, f"MalformedRecord: job {p.id}'s stored row cannot be dispatched: {e}"))
        if not malformed:
            return
        log.error("fairqueue worker %s: failing %d malformed stored jobs: %s", self.name, len(malformed), malformed)
        lease_until = now + self.app.limits.lease
        claimed = {r.id for r in self.app.storage.job_claim([i for i, _ in malformed], self.name, lease_until, now)}
        self.app.storage.job_finish(
            [Finish(i, self.name, JobStatus.FAILED, now, error) for i, error in malformed if i in claimed]
        )

    def _turn(self, outcomes: list[tuple[_Task, Outcome]], now: float) -> None:
        """One turn: the outcomes that came in free their slots, the dispatcher fills
        the free slots, and the store records both in one call (one transaction on
        SQLite)."""
        for task, _ in outcomes:
            self._release(task)
        self._pick_up(now)
        self._apply_capacity(now)
        grants = self.core.dispatch()
        if not outcomes and not grants:
            return
        lease_until = now + self.app.limits.lease
        # The store holds each pair to the cap this worker's core applies, across every worker.
        caps = {(g.org, g.kind): self._cap(g.org, g.kind) for g in grants}
        applied, claim = self.app.storage.job_finish_and_claim(
            self._finishes(outcomes, now), [g.id for g in grants], self.name, lease_until, now, caps
        )
        if outcomes:
            self._settle(outcomes, applied)
        if grants:
            self._start(grants, claim, now)

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
                    self._history.append(HistoryEntry(
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

    def _start(self, grants: list[Grant], claim: Claimed, now: float) -> None:
        """Hands each claimed job to a handler slot; offers at-cap ones again shortly."""
        claimed = {r.id: r for r in claim}
        at_cap = set(claim.at_cap)
        stand_ins = self._stand_ins(claim, {g.id for g in grants})
        limits = self.app.limits
        for grant in grants:
            if grant.id in at_cap:
                # Other workers sharing the store hold the pair's cap: offer it again shortly.
                self.core.retry(grant.lease, now + _CAP_RETRY)
                continue
            record = claimed.get(grant.id)
            if record is None and stand_ins.get((grant.org, grant.kind)):
                # Another worker took the job; the store gave us the pair's next one,
                # which runs under this grant's slot (same org and kind, same charge).
                record = stand_ins[(grant.org, grant.kind)].pop()
            if record is None:
                # Aborted, or claimed by another worker process, since we last looked:
                # look again at once, the dispatcher may hold more jobs others took.
                self.core.ack(grant.lease)
                self.app.wakeup.set()
                continue
            task = _Task(grant.lease, record, self._timeout(record.kind, record.handler))
            self._running[grant.lease] = task
            self._started_orgs.add(record.org)
            if self.metrics is not None:
                self.metrics.started(record)
            if record.attempts > limits.max_attempts:
                error = (
                    f"delivered {record.attempts} times without finishing (its worker stopped each time); "
                    f"the limit is {limits.max_attempts}"
                )
                self._outcomes.put((task, Outcome(JobStatus.FAILED, error=error)))
            else:
                self._tasks.put(task)

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
            timeout = self.app.limits.timeouts[kind]
            try:
                handler = _jobs.resolve(handler_path)
            except HandlerNotFound:
                return timeout  # the handler thread records the error; looked up again next time
            if isinstance(handler, FutureFunction) and handler.timeout is not None:
                timeout = handler.timeout
            self._timeouts[(kind, handler_path)] = timeout
        return timeout

    def _cap(self, org: str, kind: str) -> int:
        """The pair's cap in this worker's core (read once: the worker sets its core's limits at start)."""
        cap = self._caps.get((org, kind))
        if cap is None:
            cap = self._caps[(org, kind)] = self.core.limits(org, kind)["cap"]
        return cap

    def _take_outcomes(self) -> list[tuple[_Task, Outcome]]:
        """The handler threads' outcomes so far, of tasks still ours (not timed out)."""
        outcomes: list[tuple[_Task, Outcome]] = []
        while len(outcomes) < _BATCH:
            try:
                outcomes.append(self._outcomes.get_nowait())
            except queue.Empty:
                break
        return [(t, o) for t, o in outcomes if self._running.get(t.lease) is t and not t.timed_out]

    def _finishes(self, outcomes: list[tuple[_Task, Outcome]], now: float) -> list[Finish]:
        return [
            Finish(t.record.id, self.name, o.status, now, o.error, o.retry_at, o.children, o.progress,
                   self.app._daily_limits_for(o.children) if o.children else None)
            for t, o in outcomes
        ]  # fmt: skip

    def _settle(self, outcomes: list[tuple[_Task, Outcome]], applied: list[int]) -> None:
        """After the outcomes are stored: metrics, batch error events, and jobs whose
        outcome did not apply (our lease had lapsed) back into the dispatcher."""
        self.completed += len(outcomes)
        done = set(applied)
        if self.metrics is not None:
            for task, outcome in outcomes:
                if task.record.id in done:
                    self.metrics.finished_one(task.record, outcome.status)
        if any(o.progress and o.progress.errors for _, o in outcomes):
            self.app._publish_batch_errors(
                [e for t, o in outcomes if o.progress and t.record.id in done for e in o.progress.errors]
            )
        if len(applied) < len(outcomes):
            self._reclaim_lost([t.record.id for t, _ in outcomes if t.record.id not in done])
        if any(o.children for _, o in outcomes):
            self.app.wakeup.set()

    def _reclaim_lost(self, job_ids: list[int]) -> None:
        """Our lease on these jobs lapsed while they ran (the loop stalled past it) and
        the store queued them again; _pick_up skipped them while we still held them,
        so queue them in the dispatcher now."""
        for job_id in job_ids:
            record = self.app.storage.job_get(job_id)
            if record is not None and record.status is JobStatus.QUEUED:
                self.core.enqueue_many([(record.id, record.org, record.kind, record.run_at)], skip_held=True)

    def _release(self, task: _Task) -> None:
        del self._running[task.lease]
        # The store owns the job's next step (a retry re-enters through _pick_up).
        self.core.ack(task.lease)

    def _enforce_timeouts(self, now: float) -> None:
        if self.mode == "process":
            return  # process slots kill their own overdue child
        overdue = [t for t in self._running.values() if not t.timed_out and time.monotonic() > t.deadline]
        if not overdue:
            return
        for task in overdue:
            task.timed_out = True
            task.cancel.set()
        limit = {t.lease: time.monotonic() - t.started for t in overdue}
        self.app.storage.job_finish(
            [
                Finish(t.record.id, self.name, JobStatus.FAILED, now,
                       error=f"TimeoutError: ran {limit[t.lease]:.1f} s, over its timeout of {self._timeout_of(t):g} s")
                for t in overdue
            ]
        )  # fmt: skip
        for task in overdue:
            self._release(task)
            # The hung thread cannot be killed; a fresh one takes its slot.
            self._spawn_handler_thread()

    def _timeout_of(self, task: _Task) -> float:
        return task.deadline - task.started

    def _housekeeping(self, now: float) -> None:
        lease = self.app.limits.lease
        if self._running and now - self._last_heartbeat >= lease / 3:
            self._last_heartbeat = now
            self.app.storage.job_heartbeat([t.record.id for t in self._running.values()], self.name, now + lease)
            for task in self._running.values():
                self.core.heartbeat(task.lease)
        if now - self._last_housekeeping >= min(1.0, lease / 3):
            self._last_housekeeping = now
            self.app.storage.job_requeue_expired(now)
            if self.app.storage.trigger_fire_due(now, next_fire, daily_limit=self.app.daily_limit):
                self._queued_news.set()
            self._alert(now)
            if self._running:
                by_id = {task.record.id: task for task in self._running.values()}
                for job_id in self.app.storage.job_cancel_requested(list(by_id)):
                    by_id[job_id].cancel.set()

    def _record_history(self, now: float) -> None:
        """Writes what explain and the dashboard need later: throttle periods and extended
        delays as they happen, and every few seconds each org's pending and running jobs
        (once per interval across all workers sharing the store, near enough)."""
        if now - self._last_sample >= _SAMPLE_EVERY:
            self._last_sample = now
            if not self.app.storage.history_read(now - _SAMPLE_EVERY * 0.9, ["pending"]):
                per_org: dict[str, list[int]] = {}
                for (org, _, status), n in self.app.storage.job_counts(live=True).items():
                    counts = per_org.setdefault(org, [0, 0])
                    if status in (JobStatus.QUEUED, JobStatus.HOLDING):
                        counts[0] += n
                    elif status is JobStatus.PROCESSING:
                        counts[1] += n
                for org, (pending, running) in sorted(per_org.items()):
                    if pending or running:
                        self._history.append(HistoryEntry(now, "pending", org, pending, {}))
                        self._history.append(HistoryEntry(now, "running", org, running, {}))
        if self._history:
            entries, self._history = self._history, []
            self.app.storage.history_append(entries)

    def _alert(self, now: float) -> None:
        alerts = self.app.alerts
        for event in self.core.take_events():
            if event.get("event") != "extended_delay":
                continue
            org, until = str(event["org"]), event["until"]
            assert isinstance(until, (int, float))
            self._history.append(HistoryEntry(
                now, "extended_delay", org, float(until), {"kind": event["kind"], "count": event["count"]}
            ))  # fmt: skip
            if alerts.watching():
                alerts.emit(AlertEvent(
                    "extended_delay", "once", org,
                    f"org {org!r}: {event['count']} {event['kind']} jobs put back until {event['until']:.0f} "
                    "(every job in the peek set was its, at its cap)",
                    {"kind": event["kind"], "count": event["count"], "until": event["until"]},
                ))  # fmt: skip
        try:
            started, self._started_orgs = self._started_orgs, set()
            alerts.evaluate(now, started)
            self._record_history(now)
        except Exception:
            log.exception("fairqueue worker %s: evaluating alerts or recording history failed", self.name)

    def _requeue_running(self, now: float) -> None:
        """Grace is over: give the still-running jobs back to the queue."""
        running = [t for t in self._running.values() if not t.timed_out]
        self.app.storage.job_finish(
            [Finish(t.record.id, self.name, JobStatus.QUEUED, now, error="re-queued: worker stopped") for t in running]
        )
        for task in running:
            task.cancel.set()
            self._release(task)

    # ----- handler threads ------------------------------------------------------------------

    def _spawn_handler_thread(self) -> None:
        target = self._process_slot if self.mode == "process" else self._thread_slot
        thread = threading.Thread(target=target, name=f"fairqueue-slot-{self.name}", daemon=True)
        self._threads.append(thread)
        thread.start()

    def _thread_slot(self) -> None:
        while True:
            task = self._tasks.get()
            if task is None:
                return
            try:
                outcome = self.runner.execute(task.record, task.cancel)
            except Exception as e:  # a fault of fairqueue's own: the job fails, the slot lives on
                log.exception("fairqueue worker %s: running job %d failed outside its handler", self.name, task.record.id)
                outcome = Outcome(JobStatus.FAILED, error=f"{type(e).__name__} in fairqueue's runner: {e}")
            self._outcomes.put((task, outcome))
            if self._idle:
                self.app.wakeup.set()
            if task.timed_out:
                return  # a replacement thread already took this slot

    def _process_slot(self) -> None:
        assert self.app_path is not None
        child: Optional[_Child] = None
        try:
            while True:
                task = self._tasks.get()
                if task is None:
                    return
                if child is None:
                    child = _Child(self.app_path)
                outcome = child.run(task.record, task.deadline - task.started)
                if not child.alive:
                    child = None
                self._outcomes.put((task, outcome))
                if self._idle:
                    self.app.wakeup.set()
        finally:
            if child is not None:
                child.stop()


class _Child:
    """One process slot's child: runs jobs sent down a pipe, one at a time."""

    def __init__(self, app_path: str) -> None:
        context = multiprocessing.get_context("spawn")
        self.conn, child_end = context.Pipe()
        self.process = context.Process(target=_child_main, args=(child_end, app_path), daemon=True)
        self.process.start()
        child_end.close()

    @property
    def alive(self) -> bool:
        return self.process.is_alive()

    def run(self, record: JobRecord, timeout: float) -> Outcome:
        started = time.monotonic()
        self.conn.send(record)
        if not self.conn.poll(timeout):
            self.kill()
            return Outcome(
                JobStatus.FAILED,
                error=f"TimeoutError: ran {time.monotonic() - started:.1f} s, over its timeout of {timeout:g} s "
                "(its process was killed)",
            )
        try:
            outcome: Outcome = self.conn.recv()
            return outcome
        except EOFError:
            self.process.join()
            return Outcome(
                JobStatus.FAILED,
                error=f"the job's worker process died while running it (exit code {self.process.exitcode})",
            )

    def kill(self) -> None:
        self.process.kill()
        self.process.join()
        self.conn.close()

    def stop(self) -> None:
        if self.alive:
            try:
                self.conn.send(None)
            except OSError:
                pass
            self.process.join(timeout=5)
        if self.alive:
            self.kill()
        self.conn.close()


def _child_main(conn: Connection, app_path: str) -> None:
    # The parent decides when to stop; a terminal's Ctrl-C or a SIGTERM to the group must not
    # kill a child mid-job.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    app = _jobs.resolve(app_path)
    if not isinstance(app, FairQueue):
        raise HandlerNotFound(f"{app_path!r} is not a fairqueue.FairQueue")
    runner = Runner(app)
    try:
        while True:
            try:
                record = conn.recv()
            except EOFError:
                return
            if record is None:
                return
            conn.send(runner.execute(record))
    finally:
        runner.close()
