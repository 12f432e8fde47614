"""A worker's handler slots: threads that run handlers, or threads that each feed
a child process running them (``mode="process"``).

Slots do no storage I/O and never touch the dispatcher: they take tasks from one
queue and hand each outcome to the loop through a callback. A worker whose turns run
in native code hands them its jobs through its line (:class:`fairqueue._core.SlotLine`)
instead, as the rows the turns claimed: a thread slot makes each one's task itself
(the worker's ``start``), so that the loop builds no Python object per job. Other
workers hand over Python tasks through a ``queue.SimpleQueue``, which costs less per
task than the line (measured: the in-memory store drained 0.7x as fast through it).

A process slot starts its child (which imports the app) as soon as the slot is
spawned, and again when its child died, and takes a task only once the child
said it is ready: a cold start never counts against a job's timeout, whose clock
starts when the job is handed to the ready child. On stop, process slots hand
their children no more jobs (:meth:`Slots.hold`), and at the end of grace the
children still running one are stopped and reaped (:meth:`Slots.interrupt`) before
the worker re-queues their jobs, so no job runs on in a child once it is queued
again.
"""

from __future__ import annotations

import ctypes
import logging
import math
import multiprocessing
import os
import queue
import signal
import threading
import time
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection, wait
from types import FrameType
from typing import Any, Optional, Union

from fairqueue._core import SlotLine
from fairqueue.errors import HandlerNotFound
from fairqueue.handlers import resolve
from fairqueue.records import JobRecord, JobStatus
from fairqueue.runtime.outcome import Outcome
from fairqueue.runtime.queue_app import QueueApp
from fairqueue.runtime.runner import Runner
from fairqueue.runtime.task import Task

__all__ = ["Slots"]

log = logging.getLogger("fairqueue.worker")

_STOPPED = Outcome(JobStatus.QUEUED, error="re-queued: worker stopped", given_back=True)
"""A job a stopping process slot did not run to its end (the worker re-queues it)."""
# Seconds between a stopping slot's looks while its child is still starting.
_START_POLL = 0.1


class _ProcessSlot:
    """One process slot's state, shared by its thread and the loop's stop calls."""

    __slots__ = ("thread", "child", "busy")

    def __init__(self) -> None:
        self.thread: Optional[threading.Thread] = None
        self.child: Optional[Child] = None
        self.busy = False
        """True from the hand-over of a job to the child until its outcome is delivered."""


class Slots:
    """Handler slots fed from one task queue.

    Args:
        name: the worker's name (in thread names and logs).
        runner: runs a job in this process (thread mode).
        app_path: ``module:attribute`` of the app, which child processes import
            (process mode); None runs handlers in threads.
        deliver: called from a slot with each task and its outcome.
        start: called from a thread slot with a claimed row's ``(lease, row)``, which
            the line carries for a turn run in Rust: returns its task, now running.
        in_line: the jobs come through :attr:`line` (a worker whose turns run in
            native code; thread slots only).
    """

    def __init__(
        self,
        name: str,
        runner: Runner,
        app_path: Optional[str],
        deliver: Callable[[Task, Outcome], None],
        start: Callable[[int, tuple[Any, ...]], Task],
        in_line: bool = False,
    ) -> None:
        self.name = name
        self.runner = runner
        self.app_path = app_path
        self.deliver = deliver
        self.start = start
        self.threads: list[threading.Thread] = []
        self.line = SlotLine()
        """With ``in_line``: the tasks and claimed rows waiting for a slot, and the plain
        completions back."""
        self._tasks: Union[SlotLine, queue.SimpleQueue[Optional[Task]]] = self.line if in_line else queue.SimpleQueue()
        self._closed = False
        self._process_slots: list[_ProcessSlot] = []
        self._halt = threading.Event()
        self._changed = threading.Condition()
        """Guards the process slots' ``child`` and ``busy``; notified when a slot turns free."""

    def spawn(self) -> None:
        """Starts one more slot (at start, and to replace one a hung handler holds).

        A process slot starts its child at once, and takes a task when the child is ready.
        """
        if self.app_path is None:
            thread = threading.Thread(target=self._thread_slot, name=f"fairqueue-slot-{self.name}", daemon=True)
        else:
            slot = _ProcessSlot()
            thread = threading.Thread(
                target=self._process_slot, args=(slot,), name=f"fairqueue-slot-{self.name}", daemon=True
            )
            slot.thread = thread
            self._process_slots.append(slot)
        self.threads.append(thread)
        thread.start()

    def submit(self, task: Task) -> None:
        """Hands ``task`` to the next free slot."""
        if self.app_path is not None:
            # Not running yet: a process slot sets the deadline when its ready child takes the job.
            task.deadline = math.inf
        self._tasks.put(task)

    def take_unstarted(self) -> list[Task]:
        """The tasks no slot has taken yet, taken out (each claimed row's task made now):
        a stopping or crashed worker gives their jobs back."""
        return [item if isinstance(item, Task) else self.start(*item) for item in self._drain() if item is not None]

    def _drain(self) -> list[Any]:
        """Everything waiting for a slot, taken out."""
        if isinstance(self._tasks, SlotLine):
            return self._tasks.drain()
        items: list[Any] = []
        while True:
            try:
                items.append(self._tasks.get_nowait())
            except queue.Empty:
                return items

    def hold(self) -> None:
        """The worker is stopping: process slots hand their children no more jobs, and
        the tasks no child has taken come back at once as re-queued outcomes (thread
        slots go on as before: the worker hands them nothing new)."""
        if self.app_path is None:
            return
        self._halt.set()
        for item in self._drain():
            if item is None:
                self._tasks.put(None)
            else:
                self.deliver(item, _STOPPED)

    def interrupt(self, kill_after: float = 1.0) -> None:
        """Grace is over: stops the children still running a job and reaps them.

        Each gets SIGTERM (which a child honours only from its parent, see
        :func:`_child_main`), then SIGKILL if it is still running after ``kill_after``
        seconds. Returns once each such slot has delivered its task's outcome: the
        job's own if it finished first, else a re-queued one (the job's effects were
        cut short with its process). No-op for thread slots.
        """
        if self.app_path is None:
            return
        self._halt.set()
        with self._changed:
            busy = [s for s in self._process_slots if s.busy]
            children = [s.child for s in busy if s.child is not None]
        if not busy:
            return
        log.info("fairqueue worker %s: grace is over, stopping %d job processes", self.name, len(busy))
        for child in children:
            child.terminate()
        with self._changed:
            done = self._changed.wait_for(lambda: not any(s.busy for s in busy), timeout=kill_after)
        if done:
            return
        for child in children:
            child.process.kill()
        with self._changed:
            if not self._changed.wait_for(lambda: not any(s.busy for s in busy), timeout=10):
                log.error("fairqueue worker %s: a job process outlived SIGKILL by 10 s", self.name)

    def close(self) -> None:
        """Tells every slot to exit once it is free (a hung one is abandoned); a
        process slot then stops its child."""
        if self._closed:
            return
        self._closed = True
        for _ in self.threads:
            self._tasks.put(None)

    def join(self, timeout: float = 5.0) -> None:
        """After :meth:`close`: waits up to ``timeout`` seconds for the process slots
        to exit, having stopped their children (thread slots are not waited for: a
        hung handler thread cannot be stopped)."""
        deadline = time.monotonic() + timeout
        for slot in self._process_slots:
            if slot.thread is not None:
                slot.thread.join(max(deadline - time.monotonic(), 0.0))

    def _thread_slot(self) -> None:
        take = self._tasks.take if isinstance(self._tasks, SlotLine) else self._tasks.get
        while True:
            item = take()
            if item is None:
                return
            try:
                task = item if isinstance(item, Task) else self.start(*item)
            except Exception:  # a fault of fairqueue's own: the job's lease lapses and the store re-queues it
                log.exception("fairqueue worker %s: a claimed job could not be started", self.name)
                continue
            try:
                outcome = self.runner.execute(task.record, task.cancel)
            except Exception as e:  # a fault of fairqueue's own: the job fails, the slot lives on
                log.exception("fairqueue worker %s: running job %d failed outside its handler", self.name, task.record.id)
                outcome = Outcome(JobStatus.FAILED, error=f"{type(e).__name__} in fairqueue's runner: {e}")
            # The handler has returned: its timeout is over, however long the outcome
            # then waits for the store (a turn held up by another writer).
            task.deadline = math.inf
            self.deliver(task, outcome)
            if task.timed_out:
                return  # a replacement thread already took this slot

    def _process_slot(self, slot: _ProcessSlot) -> None:
        assert self.app_path is not None
        start_error: Optional[str] = None
        try:
            while True:
                if slot.child is None and start_error is None and not self._halt.is_set():
                    start_error = self._start_child(slot)
                task = self._tasks.get() if isinstance(self._tasks, queue.SimpleQueue) else self._tasks.take()
                if task is None:
                    return
                timeout = task.timeout
                if slot.child is None and not self._halt.is_set():
                    start_error = self._start_child(slot)  # the last start failed: try again for this job
                with self._changed:
                    halted = self._halt.is_set()
                    child = None if halted else slot.child
                    slot.busy = child is not None
                if halted:
                    self.deliver(task, _STOPPED)
                    continue
                if child is None:
                    self.deliver(task, Outcome(JobStatus.FAILED, error=f"its worker process could not start: {start_error}"))
                    continue
                task.started = time.monotonic()
                task.deadline = task.started + timeout
                outcome = child.run(task.record, timeout)
                if outcome is None:
                    if child.stopped:
                        outcome = _STOPPED
                    else:
                        outcome = Outcome(
                            JobStatus.FAILED,
                            error=f"the job's worker process died while running it (exit code {child.process.exitcode})",
                        )
                if not child.alive:
                    child.close()
                    slot.child = None
                try:
                    self.deliver(task, outcome)
                finally:
                    with self._changed:
                        slot.busy = False
                        self._changed.notify_all()
        finally:
            if slot.child is not None:
                slot.child.stop()

    def _start_child(self, slot: _ProcessSlot) -> Optional[str]:
        """Starts the slot's child and waits until it is ready: None, or why it could not start."""
        assert self.app_path is not None
        child = Child(self.app_path)
        error = child.wait_ready(self._halt)
        if error is None:
            with self._changed:
                slot.child = child
            return None
        if self._halt.is_set():
            child.terminate()
        child.stop()
        if not self._halt.is_set():
            log.error("fairqueue worker %s: a job process could not start: %s", self.name, child.start_traceback or error)
        return error


class Child:
    """One process slot's child: runs jobs sent down a pipe, one at a time."""

    def __init__(self, app_path: str) -> None:
        context = multiprocessing.get_context("spawn")
        self.conn, child_end = context.Pipe()
        # Set by the parent just before it sends SIGTERM: the child honours a SIGTERM only then.
        self._stop_flag = context.RawValue(ctypes.c_bool, False)
        self.stopped = False
        """True once the parent stopped the child (its job is to be re-queued, not failed)."""
        self.start_traceback = ""
        """The traceback of the child's failed start (see :meth:`wait_ready`)."""
        self.process = context.Process(target=_child_main, args=(child_end, app_path, self._stop_flag), daemon=True)
        self.process.start()
        child_end.close()

    @property
    def alive(self) -> bool:
        """Whether the child process is running."""
        return self.process.is_alive()

    def wait_ready(self, halt: threading.Event) -> Optional[str]:
        """Waits for the child to import the app: None once it is ready, else why not
        (its import error, its death, or ``halt`` set while it was starting)."""
        while not wait([self.conn, self.process.sentinel], _START_POLL):
            if halt.is_set():
                return "the worker stopped while it was starting"
        try:
            message = self.conn.recv()
        except (EOFError, OSError):
            self.process.join()
            return f"it exited with code {self.process.exitcode} while importing the app"
        if message == ("ready",):
            return None
        _, error, self.start_traceback = message
        return str(error)

    def run(self, record: JobRecord, timeout: float) -> Optional[Outcome]:
        """Runs one delivery in the child: its outcome, a timeout failure past
        ``timeout`` seconds (the child is killed), or None if the child died first."""
        started = time.monotonic()
        try:
            self.conn.send(record)
        except OSError:
            self.process.join()
            return None
        if not wait([self.conn, self.process.sentinel], timeout):
            self.kill()
            return Outcome(
                JobStatus.FAILED,
                error=f"TimeoutError: ran {time.monotonic() - started:.1f} s, over its timeout of {timeout:g} s "
                "(its process was killed)",
            )
        # An outcome sent just before the child exited is still in the pipe.
        if self.conn.poll():
            try:
                outcome: Outcome = self.conn.recv()
                return outcome
            except (EOFError, OSError):
                pass
        self.process.join()
        return None

    def terminate(self) -> None:
        """Asks the child to exit at once, even mid-job (SIGTERM, honoured since the flag says so)."""
        self.stopped = True
        self._stop_flag.value = True
        self.process.terminate()

    def kill(self) -> None:
        """Kills the child at once."""
        self.process.kill()
        self.process.join()
        self.conn.close()

    def close(self) -> None:
        """Releases the pipe of a child that has exited."""
        self.process.join()
        self.conn.close()

    def stop(self) -> None:
        """Asks an idle child to exit, and kills it if it does not within 5 s."""
        if self.alive:
            try:
                self.conn.send(None)
            except OSError:
                pass
            self.process.join(timeout=5)
        if self.alive:
            self.kill()
        self.conn.close()


def _child_main(conn: Connection, app_path: str, stop_flag: ctypes.c_bool) -> None:
    # The parent decides when to stop: a terminal's Ctrl-C to the group must not kill a child
    # mid-job, nor must a SIGTERM to the whole group (a supervisor's stop), which the parent
    # answers by draining. A SIGTERM counts only once the parent set stop_flag, just before
    # sending its own: then the child exits at once (its job is re-queued by the parent).
    def on_sigterm(signum: int, _frame: Optional[FrameType]) -> None:
        if stop_flag.value:
            os._exit(128 + signum)

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, on_sigterm)
    try:
        app = resolve(app_path)
        if not isinstance(app, QueueApp):
            raise HandlerNotFound(f"{app_path!r} is not a fairqueue.FairQueue")
        runner = Runner(app)
    except BaseException as e:
        conn.send(("error", f"{type(e).__name__}: {e}", traceback.format_exc()))
        return
    conn.send(("ready",))
    try:
        while True:
            try:
                record: Any = conn.recv()
            except EOFError:
                return
            if record is None:
                return
            conn.send(runner.execute(record))
    finally:
        runner.close()
