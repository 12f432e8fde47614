"""Many worker processes on one PostgreSQL store, as many hosts would run them:
each (org, kind) cap holds across all of them at every instant, every job runs
exactly once, and a SIGKILLed host's jobs are re-delivered by the others.

Each worker is a process of its own, in a session (process group) of its own,
with its own connections: all they share is the database, as separate hosts do.
"""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from test_crash import SUPPORT

from fairqueue.storage.postgres import PostgresStorage

CAP = 3


def worker_env(url: str, effects: Path, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "FQ_STORE": url,
        "FQ_EFFECTS": str(effects),
        "FQ_CAP": str(CAP),
        "PYTHONPATH": os.pathsep.join([str(SUPPORT), os.environ.get("PYTHONPATH", "")]),
        **extra,
    }


def start_host(environment: dict[str, str], slots: int = 4) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "fairqueue", "worker", "fq_sample_jobs:app", "--slots", str(slots)],
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def statuses(conn: psycopg.Connection[Any], schema: str) -> dict[str, int]:
    rows = conn.execute(f'SELECT status, COUNT(*) FROM "{schema}".fq_jobs GROUP BY status').fetchall()
    return {status: n for status, n in rows}


@pytest.fixture
def pg_url(pg_dsn: str, pg_schema: str) -> Iterator[str]:
    """A store URL in this test's own schema, created before any worker starts."""
    url = f"{pg_dsn}?schema={pg_schema}"
    PostgresStorage(pg_dsn, schema=pg_schema).close()
    yield url


def enqueue(url: str, jobs: dict[str, int], seconds: float) -> None:
    import fq_sample_jobs as sample
    from fairqueue.storage import open_storage

    original = sample.app.storage
    sample.app.storage = open_storage(url)
    try:
        for org, n in jobs.items():
            sample.spin_logged.delay_many(org, [(seconds,)] * n)
    finally:
        sample.app.storage.close()
        sample.app.storage = original


def max_overlap(lines: list[str]) -> dict[str, int]:
    """The most jobs of each org whose logged run intervals overlapped at one instant."""
    events: dict[str, list[tuple[float, int]]] = collections.defaultdict(list)
    for line in lines:
        what, org, _, at, _ = line.split()
        # At equal times an end sorts before a start: touching intervals do not overlap.
        events[org].append((float(at), 1 if what == "start" else -1))
    most: dict[str, int] = {}
    for org, points in events.items():
        level = peak = 0
        for _, step in sorted(points):
            level += step
            peak = max(peak, level)
        most[org] = peak
    return most


@pytest.mark.timeout(300)
def test_four_hosts_never_hold_more_than_an_orgs_cap_together(pg_url: str, pg_dsn: str, pg_schema: str, tmp_path: Path) -> None:
    effects = tmp_path / "effects.log"
    quiet = {f"org-{i:02d}": 20 for i in range(20)}
    enqueue(pg_url, {"noisy": 400, **quiet}, 0.02)
    total = 400 + 20 * 20

    sampled: dict[str, int] = collections.Counter()
    stop = threading.Event()

    def sample_processing() -> None:
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            while not stop.is_set():
                rows = conn.execute(
                    f"SELECT org, COUNT(*) FROM \"{pg_schema}\".fq_jobs WHERE status = 'processing' GROUP BY org"
                ).fetchall()
                for org, n in rows:
                    sampled[org] = max(sampled[org], n)

    sampler = threading.Thread(target=sample_processing)
    sampler.start()
    hosts = [start_host(worker_env(pg_url, effects)) for _ in range(4)]
    try:
        deadline = time.monotonic() + 240
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            while statuses(conn, pg_schema).get("completed", 0) < total:
                assert time.monotonic() < deadline, f"unfinished: {statuses(conn, pg_schema)}"
                assert all(h.poll() is None for h in hosts), "a worker died"
                time.sleep(0.1)
    finally:
        stop.set()
        sampler.join()
        for h in hosts:
            h.send_signal(signal.SIGTERM)
        codes = [h.wait(timeout=60) for h in hosts]
    assert codes == [0, 0, 0, 0], "SIGTERM drains and exits 0"

    lines = effects.read_text().splitlines()
    starts = collections.Counter(line.split()[2] for line in lines if line.startswith("start"))
    assert len(starts) == total and set(starts.values()) == {1}, "every job ran exactly once"
    overlap = max_overlap(lines)
    assert max(sampled.values()) <= CAP, f"the store saw an org over its cap: {sampled}"
    assert max(overlap.values()) <= CAP, f"handlers of one org overlapped beyond the cap: {overlap}"
    # The cap really bound: the flood ran at its cap.
    assert sampled["noisy"] == CAP and overlap["noisy"] == CAP
    # Every host's dispatcher chose the flood's oldest jobs; those another host took
    # first were replaced by the flood's next ones, so all four shared it.
    flood_by_host = collections.Counter(line.split()[4] for line in lines if line.startswith("start noisy "))
    assert len(flood_by_host) == 4, f"no host may be starved of the flood: {flood_by_host}"
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        attempts = conn.execute(f'SELECT MAX(attempts) FROM "{pg_schema}".fq_jobs').fetchone()
    assert attempts == (1,), "no job was delivered twice"


@pytest.mark.timeout(300)
def test_a_sigkilled_hosts_jobs_are_re_delivered_by_the_others(pg_url: str, pg_dsn: str, pg_schema: str, tmp_path: Path) -> None:
    effects = tmp_path / "effects.log"
    enqueue(pg_url, {f"org-{i}": 100 for i in range(6)}, 0.05)
    total = 600
    environment = worker_env(pg_url, effects, FQ_LEASE="1.0")
    hosts = [start_host(environment) for _ in range(3)]
    victim = hosts[0]
    try:
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            deadline = time.monotonic() + 60
            # Kill it while it holds running jobs, which the others must take over.
            while True:
                held = conn.execute(
                    f"SELECT COUNT(*) FROM \"{pg_schema}\".fq_jobs WHERE status = 'processing' AND lease_owner LIKE %s",
                    (f"%:{victim.pid}:%",),
                ).fetchone()
                if held and held[0] >= 2:
                    break
                assert time.monotonic() < deadline, "the victim never ran jobs"
                time.sleep(0.01)
            os.killpg(victim.pid, signal.SIGKILL)
            victim.wait()
            deadline = time.monotonic() + 180
            while statuses(conn, pg_schema).get("completed", 0) < total:
                assert time.monotonic() < deadline, f"unfinished: {statuses(conn, pg_schema)}"
                assert all(h.poll() is None for h in hosts[1:]), "a surviving worker died"
                time.sleep(0.1)
            rows = conn.execute(f'SELECT id, attempts, lease_owner FROM "{pg_schema}".fq_jobs').fetchall()
    finally:
        for h in hosts[1:]:
            h.send_signal(signal.SIGTERM)
        codes = [h.wait(timeout=60) for h in hosts[1:]]
    assert codes == [0, 0]
    starts = collections.Counter(int(line.split()[2]) for line in effects.read_text().splitlines() if line.startswith("start"))
    attempts = {job_id: n for job_id, n, _ in rows}
    assert set(starts) == set(attempts), "every job ran"
    redelivered = {job_id for job_id, n in attempts.items() if n >= 2}
    assert redelivered, "the killed host's running jobs were delivered again"
    assert all(f":{victim.pid}:" not in (owner or "") for job_id, _, owner in rows if job_id in redelivered)
    assert all(n == 1 for job_id, n in starts.items() if job_id not in redelivered), "only re-deliveries repeat"
    assert len(redelivered) <= 4, "at most the victim's 4 slots were running"
