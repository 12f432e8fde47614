"""Several worker processes share one embedded file: every job runs exactly once."""

from __future__ import annotations

import collections
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

from test_crash import env

from fairqueue.storage.sqlite import SQLiteStorage


def test_three_worker_processes_share_one_file_and_run_each_job_once(tmp_path: Path) -> None:
    store, effects = tmp_path / "fq.db", tmp_path / "effects.log"
    environment = env(store, effects)
    import fq_sample_jobs as sample

    original = sample.app.storage
    sample.app.storage = SQLiteStorage(store)
    try:
        for org in range(10):
            sample.spin.delay_many(f"org-{org}", [(0.001,)] * 300)
    finally:
        sample.app.storage.close()
        sample.app.storage = original
    workers = [
        subprocess.Popen(
            [sys.executable, "-m", "fairqueue", "worker", "fq_sample_jobs:app", "--slots", "3"],
            env=environment,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(3)
    ]
    try:
        deadline = time.monotonic() + 120
        while True:
            with closing(sqlite3.connect(store, timeout=30)) as db:
                left = db.execute("SELECT COUNT(*) FROM fq_jobs WHERE status != 'completed'").fetchone()[0]
            if not left:
                break
            assert time.monotonic() < deadline, f"{left} jobs still unfinished"
            assert all(w.poll() is None for w in workers), "a worker died"
            time.sleep(0.05)
    finally:
        for w in workers:
            w.send_signal(signal.SIGTERM)
        codes = [w.wait(timeout=60) for w in workers]
    assert codes == [0, 0, 0], "SIGTERM drains and exits 0"
    runs = collections.Counter(effects.read_text().split())
    assert len(runs) == 3000 and set(runs.values()) == {1}
    with closing(sqlite3.connect(store)) as db:
        owners = dict(db.execute("SELECT attempts, COUNT(*) FROM fq_jobs GROUP BY attempts").fetchall())
    assert owners == {1: 3000}, "no job was delivered twice"
