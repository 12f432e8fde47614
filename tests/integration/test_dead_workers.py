"""Dead workers are noticed in seconds, not leases: real worker processes, really
SIGKILLed (or killed by their own job), on both shared stores."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import fairqueue as fq
import fq_sample_jobs as sample
from conftest import wait_until
from fairqueue.records import JobStatus
from fairqueue.storage import Storage, open_storage

SUPPORT = Path(__file__).resolve().parents[1] / "support"


def start_worker(store_url: str, effects: Path, slots: int, **env: str) -> subprocess.Popen[bytes]:
    environment = {
        **os.environ, "FQ_STORE": store_url, "FQ_EFFECTS": str(effects), "FQ_LEASE": "60", **env,
        "PYTHONPATH": os.pathsep.join([str(SUPPORT), os.environ.get("PYTHONPATH", "")]),
    }  # fmt: skip
    return subprocess.Popen(
        [sys.executable, "-m", "fairqueue", "worker", "fq_sample_jobs:app", "--slots", str(slots), "--no-conservation"],
        env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip


def starts(effects: Path) -> list[tuple[int, int, float]]:
    """(job id, pid, wall time) of every run's start, from spin_logged's lines."""
    lines = effects.read_text().splitlines() if effects.exists() else []
    return [(int(job), int(pid), float(at)) for kind, _, job, at, pid in (line.split() for line in lines) if kind == "start"]


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield str(tmp_path / "fq.db")
    else:
        dsn, schema = request.getfixturevalue("pg_dsn"), request.getfixturevalue("pg_schema")
        yield f"{dsn}?schema={schema}"


def test_a_sigkilled_workers_jobs_run_again_on_another_worker_within_seconds_not_a_lease(
    store_url: str, tmp_path: Path
) -> None:
    effects = tmp_path / "effects"
    store: Storage = open_storage(store_url)
    original, sample.app.storage = sample.app.storage, store
    workers = []
    try:
        workers = [start_worker(store_url, effects, slots=2, FQ_CAP="2") for _ in range(2)]
        wait_until(lambda: len([w for w in store.worker_list() if w.alive]) == 2, timeout=120,
                   what="both workers to register")  # fmt: skip
        jobs = [sample.spin_logged.delay("org-1", 1.5).id for _ in range(2)]
        # The org's cap is 2: with both jobs running, nothing else of it may start anywhere.
        first_job, victim_pid, _ = wait_until(lambda: starts(effects), timeout=120, what="a job to start")[0]
        [victim] = [w for w in workers if w.pid == victim_pid]
        [survivor] = [w for w in workers if w is not victim]
        os.killpg(victim.pid, signal.SIGKILL)
        killed_at = time.time()
        victim.wait(timeout=60)
        lost = {job for job, pid, at in starts(effects) if pid == victim.pid}
        assert first_job in lost
        again = wait_until(lambda: [s for s in starts(effects) if s[1] == survivor.pid and s[0] in lost and s[2] > killed_at],
                           timeout=120, what="the survivor to run the dead worker's jobs")  # fmt: skip
        took = min(at for _, _, at in again) - killed_at
        print(f"re-delivered {took:.2f} s after the kill (lease 60 s)")
        # Far below the 60 s lease whatever the machine's load (measured: ~1-3 s).
        assert took < 30, f"the dead worker's jobs started again {took:.1f} s after the kill"
        wait_until(lambda: all(store.job_get(j).status is JobStatus.COMPLETED for j in jobs), timeout=120,  # type: ignore[union-attr]
                   what="both jobs to complete")  # fmt: skip
        for job_id in lost:
            record = store.job_get(job_id)
            assert record is not None and record.attempts == 2, "the redelivery shows in attempts"
        assert [w.info.pid for w in store.worker_list()] == [survivor.pid], "the dead worker left the registry"
        survivor.send_signal(signal.SIGTERM)
        assert survivor.wait(timeout=60) == 0
        assert store.worker_list() == [], "a stopped worker leaves the registry"
    finally:
        for w in workers:
            if w.poll() is None:
                os.killpg(w.pid, signal.SIGKILL)
                w.wait()
        sample.app.storage = original
        store.close()


def test_a_job_that_kills_its_thread_mode_worker_does_so_at_most_twice(app: fq.FairQueue, tmp_path: Path) -> None:
    # A supervisor that restarts the worker whenever it dies, as systemd would.
    store = str(app.storage.path)  # type: ignore[attr-defined]
    killer = sample.die.delay("org-1").id
    others = [sample.spin.delay(f"org-{n % 3}", 0.01).id for n in range(20)]
    deaths: list[int] = []
    worker = start_worker(store, tmp_path / "effects", slots=4)
    try:
        deadline = time.monotonic() + 180
        while app.get(killer).status is not JobStatus.FAILED:  # type: ignore[union-attr]
            assert time.monotonic() < deadline, f"the killer is {app.get(killer)} after {len(deaths)} deaths"
            if worker.poll() is not None:
                deaths.append(worker.returncode)
                assert len(deaths) <= 2, f"the job killed its worker {len(deaths)} times"
                worker = start_worker(store, tmp_path / "effects", slots=4)
            time.sleep(0.05)
        record = app.get(killer)
        assert record is not None and record.extended_status is not None
        assert record.extended_status.startswith("killed its worker"), record.extended_status
        assert deaths == [17, 17], "each death was the job's os._exit(17)"
        wait_until(lambda: all(app.get(j).status is JobStatus.COMPLETED for j in others), timeout=120,  # type: ignore[union-attr]
                   what=f"the other jobs to complete: {[(app.get(j).status, app.get(j).extended_status) for j in others]}")  # type: ignore[union-attr]
        assert worker.poll() is None, "the quarantined job killed no third worker"
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=60) == 0
    finally:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()
