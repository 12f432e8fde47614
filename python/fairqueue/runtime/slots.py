"""A worker's handler slots: threads that run handlers, or threads that each feed
a child process running them (``mode="process"``).

Slots do no storage I/O and never touch the dispatcher: they take tasks from one
queue and hand each outcome to the loop through a callback.
"""

from __future__ import annotations

import logging
import multiprocessing
import queue
import signal
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Optional

from fairqueue.errors import HandlerNotFound
from fairqueue.handlers import resolve
from fairqueue.records import JobRecord, JobStatus
from fairqueue.runtime.outcome import Outcome
from fairqueue.runtime.queue_app import QueueApp
from fairqueue.runtime.runner import Runner
from fairqueue.runtime.task import Task

__all__ = ["Slots"]

log = logging.getLogger("fairqueue.worker")


class Slots:
    """Handler slots fed from one task queue.

    Args:
        name: the worker's name (in thread names and logs).
        runner: runs a job in this process (thread mode).
        app_path: ``module:attribute`` of the app, which child processes import
            (process mode); None runs handlers in threads.
        deliver: called from a slot with each task and its outcome.
    """

    def __init__(
        self, name: str, runner: Runner, app_path: Optional[str], deliver: Callable[[Task, Outcome], None]
    ) -> None:
        self.name = name
        self.runner = runner
        self.app_path = app_path
        self.deliver = deliver
        self.threads: list[threading.Thread] = []
        self._tasks: queue.SimpleQueue[Optional[Task]] = queue.SimpleQueue()

    def spawn(self) -> None:
        """Starts one more slot (at start, and to replace one a hung handler holds)."""
        target = self._process_slot if self.app_path is not None else self._thread_slot
        thread = threading.Thread(target=target, name=f"fairqueue-slot-{self.name}", daemon=True)
        self.threads.append(thread)
        thread.start()

    def submit(self, task: Task) -> None:
        """Hands ``task`` to the next free slot."""
        self._tasks.put(task)

    def close(self) -> None:
        """Tells every slot to exit once it is free (a hung one is abandoned)."""
        for _ in self.threads:
            self._tasks.put(None)

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
            self.deliver(task, outcome)
            if task.timed_out:
                return  # a replacement thread already took this slot

    def _process_slot(self) -> None:
        assert self.app_path is not None
        child: Optional[Child] = None
        try:
            while True:
                task = self._tasks.get()
                if task is None:
                    return
                if child is None:
                    child = Child(self.app_path)
                outcome = child.run(task.record, task.timeout)
                if not child.alive:
                    child = None
                self.deliver(task, outcome)
        finally:
            if child is not None:
                child.stop()


class Child:
    """One process slot's child: runs jobs sent down a pipe, one at a time."""

    def __init__(self, app_path: str) -> None:
        context = multiprocessing.get_context("spawn")
        self.conn, child_end = context.Pipe()
        self.process = context.Process(target=_child_main, args=(child_end, app_path), daemon=True)
        self.process.start()
        child_end.close()

    @property
    def alive(self) -> bool:
        """Whether the child process is running."""
        return self.process.is_alive()

    def run(self, record: JobRecord, timeout: float) -> Outcome:
        """Runs one delivery in the child; kills it past ``timeout`` seconds."""
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
        """Kills the child at once."""
        self.process.kill()
        self.process.join()
        self.conn.close()

    def stop(self) -> None:
        """Asks the child to exit, and kills it if it does not within 5 s."""
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
    app = resolve(app_path)
    if not isinstance(app, QueueApp):
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
