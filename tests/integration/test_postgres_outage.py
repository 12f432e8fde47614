"""A PostgreSQL server stopped for longer than the store's connection wait, and
started again, is survived by the worker processes running on it: the same
processes resume and drain every job, nothing lost, and a job whose side effect
happened twice shows it in ``attempts``.

The server is the test's own (:mod:`private_postgres`), never the shared one.
"""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import psycopg
import pytest

import fq_outage_jobs as outage_jobs
from fairqueue.errors import InvalidArgument
from fairqueue.runtime import EXIT_CRASHED, EXIT_OK
from fairqueue.storage.postgres import PostgresStorage
from private_postgres import PrivatePostgres, private_postgres

SUPPORT = Path(__file__).resolve().parents[1] / "support"
SCHEMA = "fq_outage"
JOBS = 400
# Seconds the store waits for a connection before an operation raises
# StorageUnavailable (the pools' wait too): the outage must outlast it.
CONNECT_TIMEOUT = 3.0


def enqueue(server: PrivatePostgres, orgs: int, per_org: int) -> set[int]:
    """Enqueues ``per_org`` 50 ms jobs for each of ``orgs`` orgs (creating the schema); their ids."""
    store = PostgresStorage(server.dsn, schema=SCHEMA, connect_timeout=CONNECT_TIMEOUT)
    original, outage_jobs.app.storage = outage_jobs.app.storage, store
    try:
        return {h.id for org in range(orgs) for h in outage_jobs.touch.delay_many(f"org-{org}", [(0.05,)] * per_org)}
    finally:
        outage_jobs.app.storage = original
        store.close()


def start_worker(server: PrivatePostgres, effects: Path, log: Path, *args: str) -> subprocess.Popen[bytes]:
    environment = {
        **os.environ,
        "FQ_PG_DSN": server.dsn,
        "FQ_PG_SCHEMA": SCHEMA,
        "FQ_CONNECT_TIMEOUT": str(CONNECT_TIMEOUT),
        "FQ_EFFECTS": str(effects),
        "PYTHONPATH": os.pathsep.join([str(SUPPORT), os.environ.get("PYTHONPATH", "")]),
    }
    with open(log, "wb") as err:
        return subprocess.Popen(
            [sys.executable, "-m", "fairqueue", "worker", "fq_outage_jobs:app", "--slots", "4", "--no-conservation", *args],
            env=environment, stdout=subprocess.DEVNULL, stderr=err, start_new_session=True,
        )  # fmt: skip


def statuses(dsn: str) -> dict[str, int]:
    with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as conn:
        rows = conn.execute(f"SELECT status, COUNT(*) FROM {SCHEMA}.fq_jobs GROUP BY status").fetchall()
    return {status: n for status, n in rows}


def wait_for(what: str, predicate: Any, workers: list[subprocess.Popen[bytes]], logs: list[Path], timeout: float = 90) -> None:
    """Polls ``predicate`` until true; fails at once if a worker exits, or after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not predicate():
        for w, log in zip(workers, logs):
            assert w.poll() is None, f"worker {w.pid} exited ({w.returncode}) waiting for {what}:\n{log.read_text()[-4000:]}"
        assert time.monotonic() < deadline, f"timed out after {timeout} s waiting for {what}"
        time.sleep(0.05)


def pool_timeouts(log: Path) -> int:
    """How many times the worker logged an operation that waited out the pool."""
    return log.read_text().count("PoolTimeout")


@contextmanager
def killed_on_failure(workers: list[subprocess.Popen[bytes]]) -> Iterator[None]:
    """SIGKILLs the workers if the block fails (a worker stopped with the server down may wait for it)."""
    try:
        yield
    except BaseException:
        for w in workers:
            if w.poll() is None:
                w.kill()
                w.wait()
        raise


def effect_lines(effects: Path) -> list[tuple[int, int, float]]:
    if not effects.exists():
        return []
    return [(int(job), int(pid), float(at)) for job, pid, at in (line.split() for line in effects.read_text().splitlines())]


@dataclass
class Outage:
    """What one run of the outage scenario left behind."""

    ids: set[int]
    runs: list[tuple[int, int, float]]
    attempts: dict[int, int]
    pids: list[int]
    restarted: float
    codes: list[Optional[int]]
    logs: list[str]


@pytest.fixture(scope="module")
def outage(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Outage]:
    """Two worker processes drain JOBS jobs through an outage of the server: stopped
    (fast shutdown) until each worker has met two pool timeouts, then started again
    on the same port; once every job is completed, both are SIGTERMed."""
    tmp_path = tmp_path_factory.mktemp("outage")
    effects = tmp_path / "effects.log"
    with private_postgres() as server:
        ids = enqueue(server, 4, JOBS // 4)
        logs = [tmp_path / f"worker-{i}.log" for i in range(2)]
        workers = [start_worker(server, effects, log) for log in logs]
        with killed_on_failure(workers):
            wait_for("some jobs to complete", lambda: statuses(server.dsn).get("completed", 0) >= 40, workers, logs)
            server.stop("fast")
            # Down until each worker has met two pool timeouts: an operation waited the
            # whole connection wait, and the loop went on to try again after it.
            wait_for("two pool timeouts in each worker", lambda: all(pool_timeouts(log) >= 2 for log in logs), workers, logs)
            server.start()
            restarted = time.time()
            wait_for("every job to complete", lambda: statuses(server.dsn) == {"completed": JOBS}, workers, logs)
            pids = [w.pid for w in workers]
            for w in workers:
                w.send_signal(signal.SIGTERM)
            codes = [w.wait(timeout=60) for w in workers]
        with psycopg.connect(server.dsn, autocommit=True) as conn:
            attempts = dict(conn.execute(f"SELECT id, attempts FROM {SCHEMA}.fq_jobs").fetchall())
    yield Outage(ids, effect_lines(effects), attempts, pids, restarted, codes, [log.read_text() for log in logs])


def test_running_workers_survive_an_outage_longer_than_the_connection_wait(outage: Outage) -> None:
    assert outage.codes == [EXIT_OK, EXIT_OK], [log[-4000:] for log in outage.logs]
    after = {pid for _, pid, at in outage.runs if at > outage.restarted}
    assert after == set(outage.pids), f"both workers resumed after the restart (ran jobs: {after}, workers: {outage.pids})"
    counts = collections.Counter(job for job, _, _ in outage.runs)
    assert set(counts) == outage.ids, "every job ran; nothing ran that was not enqueued"
    unrecorded = {job: (n, outage.attempts[job]) for job, n in counts.items() if n > outage.attempts[job]}
    assert not unrecorded, f"side effects repeated beyond the recorded attempts (runs, attempts): {unrecorded}"


def test_jobs_that_finish_while_the_server_is_down_run_once(outage: Outage) -> None:
    counts = collections.Counter(job for job, _, _ in outage.runs)
    again = sorted(job for job, n in counts.items() if n > 1)
    assert not again, f"{len(again)} jobs ran twice: {again}"


def test_a_stop_while_the_server_is_down_ends_after_its_grace_and_says_so(tmp_path: Path) -> None:
    effects, log = tmp_path / "effects.log", tmp_path / "worker.log"
    with private_postgres() as server:
        enqueue(server, 1, 200)
        worker = start_worker(server, effects, log, "--grace", "1")
        with killed_on_failure([worker]):
            wait_for("some jobs to complete", lambda: statuses(server.dsn).get("completed", 0) >= 8, [worker], [log])
            server.stop("fast")
            # Jobs that were running have finished by now, their outcomes held for the store.
            wait_for("a pool timeout", lambda: pool_timeouts(log) >= 1, [worker], [log])
            worker.send_signal(signal.SIGTERM)
            # The grace, a pool wait already begun and one more: well within this.
            code = worker.wait(timeout=1 + 3 * CONNECT_TIMEOUT + 10)
    assert code == EXIT_CRASHED, log.read_text()[-4000:]
    assert "outcomes not stored" in log.read_text()


@pytest.mark.parametrize("wait", [0, -1, float("nan"), float("inf"), "3"])
def test_the_connection_wait_is_checked(wait: object) -> None:
    with pytest.raises(InvalidArgument, match="invalid connect_timeout"):
        PostgresStorage("postgresql://nobody@127.0.0.1:1/none", connect_timeout=wait)  # type: ignore[arg-type]
