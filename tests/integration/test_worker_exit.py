"""What a supervisor sees of a real worker process: its exit code and its health
endpoints."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import fairqueue as fq
import fq_sample_jobs as sample
from conftest import wait_until
from fairqueue.runtime import EXIT_CRASHED, EXIT_OK

SUPPORT = Path(__file__).resolve().parents[1] / "support"


def worker_process(app_path: str, *args: str, **env: str) -> subprocess.Popen[str]:
    environment = {**os.environ, **env, "PYTHONPATH": os.pathsep.join([str(SUPPORT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen(
        [sys.executable, "-m", "fairqueue", "worker", app_path, "--no-conservation", *args],
        env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def test_a_crashed_loop_exits_non_zero_and_says_why() -> None:
    proc = worker_process("fq_crash_store:app", "--slots", "2", FQ_FAIL_AFTER="3")
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == EXIT_CRASHED == 70, err
    assert "loop crashed" in err and "database or disk is full" in err


def test_a_requested_stop_exits_zero(app: fq.FairQueue) -> None:
    store = str(app.storage.path)  # type: ignore[attr-defined]
    sample.noop.delay("org-1")
    proc = worker_process("fq_sample_jobs:app", "--slots", "1", FQ_STORE=store)
    wait_until(lambda: app.jobs(status="completed"), timeout=60, what="the worker to run the job")
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == EXIT_OK, err


def get(url: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        with e:
            return e.code, json.loads(e.read())


def test_health_endpoints_answer_liveness_and_readiness(app: fq.FairQueue) -> None:
    with app.worker(slots=1, health_port=0) as worker:
        wait_until(lambda: worker.health is not None and worker.last_turn is not None, what="the first turn")
        assert worker.health is not None
        host, port = worker.health.address
        assert host == "127.0.0.1"
        status, body = get(f"http://{host}:{port}/livez")
        assert status == 200 and body["live"] is True and body["last_turn_seconds_ago"] < body["live_within"]
        status, body = get(f"http://{host}:{port}/readyz")
        assert status == 200 and body["ready"] is True and body["store"] == "ok"
        assert get(f"http://{host}:{port}/nope")[0] == 404
    # Stopped: the endpoint is gone with the worker.
    try:
        urllib.request.urlopen(f"http://{host}:{port}/livez", timeout=5)
        raise AssertionError("the health endpoint outlived its worker")
    except (urllib.error.URLError, ConnectionError):
        pass


def test_a_stuck_loop_is_not_live_and_a_broken_store_is_not_ready(tmp_path: Path) -> None:
    from fairqueue.runtime.health import LIVE_WITHIN, HealthServer
    from fairqueue.storage.sqlite import SQLiteStorage

    store = SQLiteStorage(tmp_path / "fq.db")
    turned = [time.monotonic()]
    server = HealthServer(lambda: turned[0], store, "127.0.0.1", 0).start()
    try:
        host, port = server.address
        assert get(f"http://{host}:{port}/livez")[0] == 200
        turned[0] = time.monotonic() - LIVE_WITHIN - 1  # as if the loop stopped turning
        status, body = get(f"http://{host}:{port}/livez")
        assert status == 503 and body["live"] is False
        turned[0] = time.monotonic()
        store.close()
        status, body = get(f"http://{host}:{port}/readyz")
        assert status == 503 and body["ready"] is False and body["store"]
    finally:
        server.close()


def test_each_worker_has_its_own_name_by_default(app: fq.FairQueue) -> None:
    # Leases are held by name: two workers of one process, or of two, never share one.
    a, b = app.worker(slots=1, health_port=0, metrics_port=0), app.worker(slots=1)
    assert a.name != b.name
    for worker in (a, b):
        host, pid, _ = worker.name.rsplit(":", 2)
        assert host and pid == str(os.getpid())


def test_three_stops_in_a_row_leave_a_long_job_queued_not_failed(tmp_path: Path) -> None:
    # A rolling deploy: each worker is stopped (SIGTERM, --grace 1) while the 30 s job runs.
    import fq_process_jobs as jobs
    from fairqueue.storage.sqlite import SQLiteStorage

    store = tmp_path / "fq.db"
    original = jobs.app.storage
    jobs.app.storage = SQLiteStorage(store)
    try:
        job = jobs.slow_effect.delay("org-1", 30.0)
        for stop in range(3):
            proc = worker_process("fq_process_jobs:app", "--slots", "1", "--grace", "1", FQ_STORE=str(store))
            wait_until(lambda: job.record().status is fq.JobStatus.PROCESSING, timeout=120, what=f"delivery {stop + 1}")
            proc.send_signal(signal.SIGTERM)
            _, err = proc.communicate(timeout=60)
            assert proc.returncode == EXIT_OK, err
            record = job.record()
            assert record.status is fq.JobStatus.QUEUED, record
            assert record.attempts == 0 and record.extended_status == "re-queued: worker stopped", record
        # Far from max_attempts: the next delivery is its first that counts.
        [claimed] = jobs.app.storage.job_claim([job.id], "w", time.time() + 60, time.time())
        assert claimed.attempts == 1
    finally:
        jobs.app.storage.close()
        jobs.app.storage = original
