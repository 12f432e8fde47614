"""``fairqueue worker --mode process`` as a real process: a cold child's start-up is
not charged to a job's timeout, and SIGTERM with ``--grace`` stops in time without
running any job twice."""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest

import fairqueue as fq
import fq_process_jobs as jobs
from conftest import wait_until
from fairqueue.records import JobStatus
from fairqueue.storage.sqlite import SQLiteStorage

SUPPORT = Path(__file__).resolve().parents[1] / "support"
# Generous: the machine may be loaded; every wait ends as soon as its state is seen.
WAIT = 120.0


@pytest.fixture
def app(tmp_path: Path) -> Iterator[fq.FairQueue]:
    """The process-mode jobs' app, on a fresh SQLite file for this test."""
    original = jobs.app.storage
    jobs.app.storage = SQLiteStorage(tmp_path / "fq.db")
    try:
        yield jobs.app
    finally:
        jobs.app.storage.close()
        jobs.app.storage = original


def worker_process(app: fq.FairQueue, log: IO[str], *args: str, **env: str) -> subprocess.Popen[str]:
    environment = {
        **os.environ,
        "FQ_STORE": str(app.storage.path),  # type: ignore[attr-defined]
        **env,
        "PYTHONPATH": os.pathsep.join([str(SUPPORT), os.environ.get("PYTHONPATH", "")]),
    }
    return subprocess.Popen(
        [sys.executable, "-m", "fairqueue", "worker", "fq_process_jobs:app", "--no-conservation", *args],
        env=environment, stdout=log, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


def statuses(app: fq.FairQueue, ids: list[int]) -> dict[int, JobStatus]:
    records = {i: app.get(i) for i in ids}
    return {i: r.status for i, r in records.items() if r is not None}


def lines(path: Path) -> list[int]:
    return [int(line) for line in path.read_text().split()] if path.exists() else []


def test_a_cold_process_slot_does_not_eat_a_jobs_timeout(app: fq.FairQueue, tmp_path: Path) -> None:
    # Each child takes 3 s to import the app; the jobs may run 2 s, from when a ready child takes them.
    ids = [jobs.quick.delay(f"org-{i}").id for i in range(4)]
    with open(tmp_path / "worker.log", "w") as log:
        proc = worker_process(app, log, "--mode", "process", "--slots", "4", FQ_IMPORT_DELAY="3")
        try:
            finished = (JobStatus.COMPLETED, JobStatus.FAILED)
            wait_until(
                lambda: all(s in finished for s in statuses(app, ids).values()) and len(statuses(app, ids)) == 4,
                timeout=WAIT, what="the worker to finish the 4 jobs",
            )  # fmt: skip
            failed = {i: (r.extended_status if (r := app.get(i)) else None) for i in ids}
            assert all(s is JobStatus.COMPLETED for s in statuses(app, ids).values()), failed
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=WAIT) == 0, (tmp_path / "worker.log").read_text()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def test_sigterm_with_grace_in_process_mode_exits_in_time_and_runs_no_job_twice(
    app: fq.FairQueue, tmp_path: Path
) -> None:
    starts, effects = tmp_path / "starts.log", tmp_path / "effects.log"
    files = {"FQ_STARTS": str(starts), "FQ_EFFECTS": str(effects)}
    short = [jobs.slow_effect.delay("org-short", 0.2).id for _ in range(4)]
    slow = [jobs.slow_effect.delay("org-slow", 30).id for _ in range(8)]
    grace = 2.0
    log_path = tmp_path / "worker.log"
    with open(log_path, "w") as log:
        proc = worker_process(app, log, "--mode", "process", "--slots", "4", "--grace", str(grace), **files)
        try:
            # The short jobs are done and the 4 slots all run a 30 s job, each started in its child.
            def four_slow_running() -> list[int]:
                now = statuses(app, slow + short)
                running = [i for i, s in now.items() if s is JobStatus.PROCESSING]
                done = all(now[i] is JobStatus.COMPLETED for i in short)
                started = set(lines(starts))
                return running if done and len(running) == 4 and started >= set(running) else []

            interrupted = wait_until(four_slow_running, timeout=WAIT, what="4 slow jobs to be running")
            signalled = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=WAIT)
            took = time.monotonic() - signalled
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    print(f"exited {took:.2f} s after SIGTERM (grace {grace:g} s)")
    assert code == 0, log_path.read_text()
    assert took <= grace + 2, f"took {took:.2f} s to exit after SIGTERM with --grace {grace:g}\n{log_path.read_text()}"
    for job_id in interrupted:
        record = app.get(job_id)
        assert record is not None and record.status is JobStatus.QUEUED, record
        assert record.extended_status == "re-queued: worker stopped"
    assert not set(lines(effects)) & set(interrupted), "a stopped job's side effect happened"

    # A second worker (short sleeps now) drains everything; each job's effect happens once.
    with open(log_path, "a") as log:
        proc = worker_process(app, log, "--slots", "4", FQ_SLEEP_CAP="0.1", **files)
        try:
            wait_until(
                lambda: all(s is JobStatus.COMPLETED for s in statuses(app, slow + short).values()),
                timeout=WAIT, what="the second worker to drain the queue",
            )  # fmt: skip
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=WAIT) == 0, log_path.read_text()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    runs = collections.Counter(lines(effects))
    assert runs == collections.Counter(slow + short), runs
