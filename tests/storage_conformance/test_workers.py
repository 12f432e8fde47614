"""The worker registry: registration, proof of life, and reaping the jobs of dead
workers at once (a real child process, really SIGKILLed, on the shared stores)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Optional

import pytest

from fairqueue.errors import InvalidArgument
from fairqueue.records import Admission, Finish, JobStatus, Reaped, WorkerInfo
from fairqueue.storage import Storage
from fairqueue.storage.postgres import PostgresStorage
from fairqueue.storage.sqlite import SQLiteStorage

from .builders import NOW, batch, job

# The child registers a worker, claims the jobs it is given, says so, and waits to be killed.
_CHILD = """
import json, sys, time
from fairqueue.records import WorkerInfo
spec = json.loads(sys.argv[1])
if spec["kind"] == "sqlite":
    from fairqueue.storage.sqlite import SQLiteStorage
    store = SQLiteStorage(spec["path"])
else:
    from fairqueue.storage.postgres import PostgresStorage
    store = PostgresStorage(spec["dsn"], schema=spec["schema"])
store.worker_register(WorkerInfo(spec["name"], "test-host", 1, spec["mode"], 4, time.time()), time.time())
claimed = store.job_claim(spec["jobs"], spec["name"], time.time() + 3600, time.time())
if spec["alone"] is not None:
    store.worker_alone(spec["name"], spec["alone"])
print(json.dumps([r.id for r in claimed]), flush=True)
time.sleep(3600)
"""


def info(name: str, mode: str = "thread") -> WorkerInfo:
    return WorkerInfo(name, "test-host", os.getpid(), mode, 4, NOW)


def spec_of(store: Storage) -> dict[str, object]:
    if isinstance(store, SQLiteStorage):
        return {"kind": "sqlite", "path": str(store.path)}
    assert isinstance(store, PostgresStorage)
    return {"kind": "postgres", "dsn": store.db.dsn, "schema": store.schema}


def run_and_kill(store: Storage, name: str, jobs: list[int], mode: str = "thread", alone: Optional[int] = None) -> list[int]:
    """A worker process that claims ``jobs`` (runs ``alone`` alone) and is then SIGKILLed;
    returns what it claimed."""
    spec = {**spec_of(store), "name": name, "jobs": jobs, "mode": mode, "alone": alone}
    with subprocess.Popen([sys.executable, "-c", _CHILD, json.dumps(spec)], stdout=subprocess.PIPE, text=True) as child:
        try:
            assert child.stdout is not None
            claimed: list[int] = json.loads(child.stdout.readline())
        finally:
            child.send_signal(signal.SIGKILL)
    return claimed


def reap_until(store: Storage, worker: str, deadline: float = 60.0) -> Reaped:
    """Sweeps until ``worker`` is reaped (PostgreSQL waits out a short silence first)."""
    until = time.monotonic() + deadline
    while time.monotonic() < until:
        reaped = store.worker_reap(time.time())
        if worker in reaped.workers:
            return reaped
        time.sleep(0.1)
    raise AssertionError(f"{worker} was not reaped within {deadline} s: {store.worker_list()}")


@pytest.fixture
def second(shared_store: Storage, tmp_path: Path) -> Iterator[Storage]:
    """Another store object on the same store (as another worker process would open it)."""
    if isinstance(shared_store, SQLiteStorage):
        other: Storage = SQLiteStorage(shared_store.path)
    else:
        assert isinstance(shared_store, PostgresStorage)
        other = PostgresStorage(shared_store.db.dsn, schema=shared_store.schema)
    with other:
        yield other


def test_a_registered_worker_is_listed_alive_with_the_jobs_it_holds_until_it_leaves(store: Storage) -> None:
    ids = store.job_enqueue([job(), job()], NOW)
    store.worker_register(info("w-1"), NOW)
    store.job_claim(ids[:1], "w-1", NOW + 60, NOW)
    assert store.worker_seen("w-1", NOW + 1) is True
    [listed] = store.worker_list()
    assert (listed.info.name, listed.info.mode, listed.info.slots, listed.alive, listed.running) == ("w-1", "thread", 4, True, 1)
    store.job_finish([Finish(ids[0], "w-1", JobStatus.COMPLETED, NOW + 2)])
    store.worker_leave("w-1")
    assert store.worker_list() == []


def test_a_name_a_live_worker_has_is_refused(store: Storage) -> None:
    store.worker_register(info("w-1"), NOW)
    with pytest.raises(InvalidArgument, match="a live worker named 'w-1' is registered"):
        store.worker_register(info("w-1"), NOW)
    assert [w.info.name for w in store.worker_list()] == ["w-1"]


def test_a_worker_that_leaves_holding_jobs_is_reaped_and_its_jobs_queued_at_once(store: Storage) -> None:
    # A worker whose loop crashed leaves without giving its jobs back: the next sweep
    # of any live worker frees them, long before their leases (an hour here) lapse.
    ids = store.job_enqueue([job(), job(org="org-2")], NOW)
    store.worker_register(info("w-crashed"), NOW)
    store.job_claim(ids, "w-crashed", NOW + 3600, NOW)
    store.worker_leave("w-crashed")
    reaped = reap_until(store, "w-crashed")
    assert reaped.requeued == ids and reaped.quarantined == []
    for job_id in ids:
        record = store.job_get(job_id)
        assert record is not None and record.status is JobStatus.QUEUED and record.lease_owner is None
        assert record.attempts == 1 and record.extended_status == "worker w-crashed died while running it; re-delivered"
        assert record.handler_attempts == 0, "a delivery lost with its worker is not a handler attempt"
    assert {p.id for p in store.job_pending()} == set(ids)
    assert store.worker_list() == []


def test_a_sigkilled_workers_jobs_are_queued_again_by_a_live_worker_and_its_cap_slots_freed(
    shared_store: Storage, second: Storage
) -> None:
    ids = shared_store.job_enqueue([job(), job()], NOW)
    shared_store.worker_register(info("w-live"), NOW)
    assert run_and_kill(shared_store, "w-dead", ids) == ids
    # At its cap of 2 while the dead worker holds both: nothing more of the pair may start.
    [third] = shared_store.job_enqueue([job()], NOW)
    assert shared_store.job_claim([third], "w-live", NOW + 60, NOW, Admission(pair_caps={("org-1", "future"): 2})).at_cap == [third]
    started = time.monotonic()
    reaped = reap_until(shared_store, "w-dead")
    assert time.monotonic() - started < 30  # seconds, not the hour-long lease
    assert reaped.requeued == ids
    assert [w.info.name for w in second.worker_list()] == ["w-live"]
    # Its slots are free: the live worker claims the pair again, up to the cap.
    claimed = shared_store.job_claim([third, *ids], "w-live", NOW + 60, NOW, Admission(pair_caps={("org-1", "future"): 2}))
    assert [r.id for r in claimed] == [third, ids[0]] and [r.attempts for r in claimed] == [1, 2]


def test_a_live_worker_in_another_process_is_never_reaped(shared_store: Storage, second: Storage) -> None:
    [job_id] = shared_store.job_enqueue([job()], NOW)
    second.worker_register(info("w-other"), NOW)
    second.job_claim([job_id], "w-other", NOW + 60, NOW)
    for _ in range(3):
        assert shared_store.worker_reap(time.time()) == Reaped([], [], [])
        assert [(w.info.name, w.alive) for w in shared_store.worker_list()] == [("w-other", True)]
    assert second.worker_seen("w-other", time.time()) is True
    record = shared_store.job_get(job_id)
    assert record is not None and record.status is JobStatus.PROCESSING


def test_a_job_that_was_running_when_its_thread_mode_worker_died_then_killed_it_alone_is_failed(
    shared_store: Storage,
) -> None:
    killer, bystander = shared_store.job_enqueue([job(), job()], NOW)
    assert run_and_kill(shared_store, "w-first", [killer, bystander]) == [killer, bystander]
    assert reap_until(shared_store, "w-first").requeued == [killer, bystander]
    assert [shared_store.job_get(j).worker_deaths for j in (killer, bystander)] == [1, 1]  # type: ignore[union-attr]
    # The next worker runs each suspect alone; the killer kills it again, the bystander waits.
    assert run_and_kill(shared_store, "w-second", [killer, bystander], alone=killer) == [killer, bystander]
    reaped = reap_until(shared_store, "w-second")
    assert reaped.quarantined == [killer] and reaped.requeued == [bystander]
    record = shared_store.job_get(killer)
    assert record is not None and record.status is JobStatus.FAILED and record.finished_at is not None
    assert record.extended_status is not None and record.extended_status.startswith("killed its worker")
    assert "mode='process'" in record.extended_status and record.error_count == 1
    waiting = shared_store.job_get(bystander)
    assert waiting is not None and waiting.status is JobStatus.QUEUED and waiting.worker_deaths == 1


def test_a_suspect_that_was_only_waiting_at_a_death_is_not_held_to_account(store: Storage) -> None:
    [suspect, fresh] = store.job_enqueue([job(), job()], NOW)
    store.worker_register(info("w-0"), NOW)
    store.job_claim([suspect], "w-0", NOW + 3600, NOW)
    store.worker_leave("w-0")
    reap_until(store, "w-0")
    store.worker_register(info("w-1"), NOW)
    store.job_claim([suspect, fresh], "w-1", NOW + 3600, NOW)  # nothing runs alone: the suspect waits
    store.worker_leave("w-1")
    assert reap_until(store, "w-1").requeued == [suspect, fresh]
    assert [store.job_get(j).worker_deaths for j in (suspect, fresh)] == [1, 1]  # type: ignore[union-attr]


def test_process_mode_deaths_are_not_held_against_the_job(store: Storage) -> None:
    # In process mode a job can only kill its own child: its worker's death was not its doing.
    [job_id] = store.job_enqueue([job()], NOW)
    for n in range(3):
        store.worker_register(info(f"w-{n}", mode="process"), NOW)
        store.job_claim([job_id], f"w-{n}", NOW + 3600, NOW)
        store.worker_leave(f"w-{n}")
        assert reap_until(store, f"w-{n}").requeued == [job_id]
    record = store.job_get(job_id)
    assert record is not None and record.status is JobStatus.QUEUED and record.attempts == 3


def test_a_quarantined_batch_lets_its_orgs_next_batch_start(store: Storage) -> None:
    ids = store.job_enqueue([batch() for _ in range(6)], NOW)
    holding = [i for i in ids if store.job_get(i).status is JobStatus.HOLDING]  # type: ignore[union-attr]
    assert holding, "more batches than may be active at once"
    first = ids[0]
    for n in range(2):
        store.worker_register(info(f"w-{n}"), NOW)
        assert [r.id for r in store.job_claim([first], f"w-{n}", NOW + 3600, NOW)] == [first]
        store.worker_alone(f"w-{n}", first)
        store.worker_leave(f"w-{n}")
        reap_until(store, f"w-{n}")
    assert store.job_get(first).status is JobStatus.FAILED  # type: ignore[union-attr]
    assert store.job_get(holding[0]).status is JobStatus.QUEUED  # type: ignore[union-attr]


def test_concurrent_sweeps_reap_each_dead_worker_once(shared_store: Storage, second: Storage) -> None:
    ids = shared_store.job_enqueue([job() for _ in range(20)], NOW)
    for n in range(4):
        shared_store.worker_register(info(f"w-{n}"), NOW)
        shared_store.job_claim(ids[n * 5:(n + 1) * 5], f"w-{n}", NOW + 3600, NOW)
        shared_store.worker_leave(f"w-{n}")
    results: list[Reaped] = []
    deadline = time.monotonic() + 60

    def sweep(s: Storage) -> None:
        while time.monotonic() < deadline and sum(len(r.workers) for r in results) < 4:
            results.append(s.worker_reap(time.time()))
            time.sleep(0.05)

    sweepers = [threading.Thread(target=sweep, args=(s,)) for s in (shared_store, second)]
    for t in sweepers:
        t.start()
    for t in sweepers:
        t.join()
    assert sorted(w for r in results for w in r.workers) == ["w-0", "w-1", "w-2", "w-3"]
    assert sorted(j for r in results for j in r.requeued) == ids
