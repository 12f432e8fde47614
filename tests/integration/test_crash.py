"""Crash tests with real processes and real SIGKILLs: nothing acknowledged is lost,
and a side effect repeats only for a job that was running at a kill."""

from __future__ import annotations

import collections
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

import pytest

SUPPORT = Path(__file__).resolve().parents[1] / "support"

ENQUEUER = """
import sys
import fq_sample_jobs as sample
start, total = int(sys.argv[1]), int(sys.argv[2])
for first in range(start, total, 50):
    with sample.app.transaction():
        handles = [sample.spin.delay(f"org-{i % 7}", 0.002) for i in range(first, min(first + 50, total))]
    sys.stdout.write(f"{min(first + 50, total)} {' '.join(str(h.id) for h in handles)}\\n")
    sys.stdout.flush()
"""


def env(store: Path, effects: Path, cap: str = "12") -> dict[str, str]:
    return {
        **os.environ,
        "FQ_STORE": str(store),
        "FQ_CAP": cap,
        "FQ_EFFECTS": str(effects),
        "FQ_LEASE": "1.0",
        "FQ_SLOTS": "4",
        "PYTHONPATH": os.pathsep.join([str(SUPPORT), os.environ.get("PYTHONPATH", "")]),
    }


def start_worker(environment: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "fairqueue", "worker", "fq_sample_jobs:app", "--slots", "4"],
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def counts(store: Path) -> dict[str, int]:
    with closing(sqlite3.connect(store, timeout=30)) as db:
        return dict(db.execute("SELECT status, COUNT(*) FROM fq_jobs GROUP BY status").fetchall())


@pytest.mark.timeout(600)
# Capped, the workers' turns are Python's; with no cap (fair_share's default), native code's.
@pytest.mark.parametrize("cap", ["12", "none"], ids=["capped", "native-turns"])
def test_sigkilled_workers_and_enqueuers_lose_nothing(tmp_path: Path, cap: str) -> None:
    store, effects = tmp_path / "fq.db", tmp_path / "effects.log"
    environment = env(store, effects, cap)
    rng = random.Random(20261124)
    total = 10_000
    acknowledged: set[int] = set()
    enqueued_upto = 0
    worker_kills = enqueuer_kills = 0

    def start_enqueuer() -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-c", ENQUEUER, str(enqueued_upto), str(total)],
            env=environment,
            stdout=subprocess.PIPE,
            text=True,
        )

    def read_acks(proc: subprocess.Popen[str]) -> None:
        nonlocal enqueued_upto
        assert proc.stdout is not None
        for line in proc.stdout:
            upto, *ids = line.split()
            enqueued_upto = int(upto)
            acknowledged.update(int(i) for i in ids)

    # Enqueue in batches while the enqueuer itself is killed mid-stream a few times.
    for _ in range(4):
        proc = start_enqueuer()
        time.sleep(rng.uniform(0.2, 0.5))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        enqueuer_kills += 1
        read_acks(proc)
        proc.stdout.close()  # type: ignore[union-attr]
    proc = start_enqueuer()

    # Meanwhile workers drain and are SIGKILLed at random points: mid-job, mid-commit.
    worker = start_worker(environment)
    try:
        while worker_kills < 20:
            time.sleep(rng.uniform(0.15, 0.6))
            worker.send_signal(signal.SIGKILL)
            worker.wait()
            worker_kills += 1
            worker = start_worker(environment)
        assert proc.wait(timeout=120) == 0
        read_acks(proc)
        proc.stdout.close()  # type: ignore[union-attr]

        # A last worker finishes everything, then drains on SIGTERM and exits 0.
        deadline = time.monotonic() + 300
        while set(counts(store)) - {"completed"}:
            assert "failed" not in counts(store), f"jobs failed: {counts(store)}"
            assert time.monotonic() < deadline, f"jobs left unfinished: {counts(store)}"
            assert worker.poll() is None, "the worker died"
            time.sleep(0.1)
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=60) == 0
    finally:
        for left in (worker, proc):  # on a failure, no process outlives the test
            if left.poll() is None:
                left.kill()
                left.wait()
            if left.stdout is not None:
                left.stdout.close()

    with closing(sqlite3.connect(store)) as db:
        attempts = dict(db.execute("SELECT id, attempts FROM fq_jobs").fetchall())
    runs = collections.Counter(int(line) for line in effects.read_text().split())
    assert enqueuer_kills >= 4 and worker_kills >= 20
    assert len(acknowledged) >= total - 50 * enqueuer_kills
    assert acknowledged <= set(attempts), "an acknowledged enqueue was lost"
    assert set(runs) == set(attempts), "every stored job ran"
    assert max(runs.values()) <= 2, f"a side effect was seen more than twice: {runs.most_common(3)}"
    repeated = {job_id for job_id, n in runs.items() if n > 1}
    assert all(attempts[job_id] >= 2 for job_id in repeated), "a repeat must show as a redelivery"
    # Only jobs running at a kill repeat: at most the slots of each killed worker.
    assert len(repeated) <= 4 * worker_kills
