"""A thread-mode worker on the embedded store under fair_share's defaults takes its
usual turns in native code (``SQLiteStorage.job_turn_in_line``: completions stored,
slots filled and jobs claimed in Rust, the claimed rows handed to the slots as they
are). What it leaves to Python — failures, results, children, batches, timeouts, a
stop, a full disk, a cap set at runtime — must come out as on the Python turns.
Real SQLite files, a worker in this process."""

from __future__ import annotations

import collections
import sqlite3
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

import fq_native_jobs as native
from conftest import wait_until
from fairqueue.records import JobStatus
from fairqueue.storage.sqlite import SQLiteStorage


class Spied(SQLiteStorage):
    """Counts the worker's native turns and the jobs they started (the behaviour under
    test is the jobs' records; this only shows which turns produced them)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.native_turns_run = 0
        self.started_natively = 0

    def job_turn_in_line(self, *args: Any, **kwargs: Any) -> Any:
        turn = super().job_turn_in_line(*args, **kwargs)
        self.native_turns_run += 1
        self.started_natively += turn.started
        return turn


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Spied]:
    original = native.app.storage
    native.app.storage = store = Spied(tmp_path / "fq.db")
    native.runs.clear()
    native.release.clear()
    native.gate.clear()
    try:
        yield store
    finally:
        native.release.set()
        native.gate.set()
        native.app.settings.forget()
        store.close()
        native.app.storage = original


def test_a_drain_runs_every_job_once_through_native_turns(store: Spied) -> None:
    ids = [h.id for org in ("a", "b", "c", "d") for h in native.record.delay_many(org, [(f"{org}{i}",) for i in range(500)])]
    with native.app.worker(slots=16) as worker:
        wait_until(lambda: worker.completed >= len(ids), timeout=120, what="the drain")
    records = {r.id: r for r in native.app.jobs(limit=10_000)}
    assert all(records[i].status is JobStatus.COMPLETED for i in ids)
    assert all(records[i].attempts == 1 and records[i].handler_attempts == 1 for i in ids)
    assert all(records[i].finished_at is not None and records[i].lease_owner is None for i in ids)
    ran = collections.Counter(job_id for _, _, job_id in native.runs)
    assert sorted(ran) == sorted(ids) and set(ran.values()) == {1}, "every job ran, and none twice"
    assert store.started_natively > len(ids) // 2, "most jobs were started by native turns"


def test_outcomes_other_than_a_plain_completion_are_stored_as_on_python_turns(store: Spied) -> None:
    plain = [native.record.delay("a", f"p{i}").id for i in range(50)]
    failing = [native.fails.delay("b", f"f{i}").id for i in range(10)]
    answers = [native.answer.delay("c", i) for i in range(10)]
    parents = [native.app.enqueue(native.Parent(f"k{i}"), org="d").id for i in range(10)]
    batch = native.app.execute_batch(native.Numbers(35), org="e", scope=10)
    with native.app.worker(slots=8):
        assert [handle.result(30) for handle in answers] == [2 * i for i in range(10)]
        wait_until(lambda: len([r for r in native.runs if str(r[0]).endswith("-child")]) == 10, timeout=30,
                   what="the children")  # fmt: skip
        wait_until(lambda: native.app.get(batch.id).status.finished, timeout=30, what="the batch")
        wait_until(lambda: all(native.app.get(i).status.finished for i in plain + failing + parents),
                   timeout=30, what="every job")  # fmt: skip
    assert all(native.app.get(i).status is JobStatus.COMPLETED for i in plain + parents)
    for job_id in failing:
        record = native.app.get(job_id)
        assert record is not None and record.status is JobStatus.FAILED and "refuses" in (record.extended_status or "")
    done = native.app.get(batch.id)
    assert done is not None and done.status is JobStatus.COMPLETED and done.items_processed == 35
    chunks = sorted(i for tag, _, ids in native.runs if tag == "chunk" for i in ids)
    assert chunks == list(range(35))


def test_a_job_over_its_timeout_fails_and_the_others_complete(store: Spied) -> None:
    hung = native.hangs.delay("a").id
    others = [native.record.delay("b", f"o{i}").id for i in range(100)]
    with native.app.worker(slots=4):
        wait_until(lambda: native.app.get(hung).status.finished, timeout=30, what="the timeout")
        wait_until(lambda: all(native.app.get(i).status is JobStatus.COMPLETED for i in others), timeout=30,
                   what="the other jobs")  # fmt: skip
    record = native.app.get(hung)
    assert record is not None and record.status is JobStatus.FAILED and "TimeoutError" in (record.extended_status or "")


@pytest.mark.parametrize("turns", ["native", "python"])
def test_a_job_that_returned_in_time_is_not_timed_out_while_its_outcome_waits_for_the_store(store: Spied, turns: str) -> None:
    # Two jobs return while another writer holds the store, so the worker's turn that
    # stores them waits; two more return during that wait, within their 4 s timeout,
    # and their outcomes wait for the store past it. All four completed.
    if turns == "python":
        native.app.set_limits("a", cap=100)  # a cap: the worker's turns are Python's
    first = [native.brief.delay("a", f"t{i}", "gate").id for i in range(2)]
    then = [native.brief.delay("a", f"u{i}", "release").id for i in range(2)]
    with native.app.worker(slots=4):
        wait_until(lambda: len(native.runs) == 4, timeout=30, what="the jobs to start")
        with closing(sqlite3.connect(store.path, timeout=30, isolation_level=None)) as writer:
            writer.execute("BEGIN IMMEDIATE")
            native.gate.set()
            time.sleep(0.5)  # the worker's turn meets the held store (if not yet, the test asks less of it)
            native.release.set()
            time.sleep(6)  # the store stays held past the handlers' timeout
            writer.execute("COMMIT")
        wait_until(lambda: all(native.app.get(i).status.finished for i in first + then), timeout=60, what="the outcomes")
    records = [native.app.get(i) for i in first + then]
    assert [r.status for r in records] == [JobStatus.COMPLETED] * 4, [r.extended_status for r in records]
    assert (store.native_turns_run > 0) == (turns == "native")


def test_a_stop_gives_back_what_runs_past_its_grace_and_a_second_worker_runs_it_once(store: Spied) -> None:
    blocked = [native.blocked.delay("a", f"b{i}").id for i in range(3)]
    quick = [native.record.delay("b", f"q{i}").id for i in range(200)]
    worker = native.app.worker(slots=4).start()
    wait_until(lambda: len([r for r in native.runs if str(r[0]).startswith("b")]) == 3, timeout=30,
               what="the blocked jobs to start")  # fmt: skip
    wait_until(lambda: all(native.app.get(i).status is JobStatus.COMPLETED for i in quick), timeout=60,
               what="the quick jobs, on the one free slot")  # fmt: skip
    worker.stop(grace=0.3)
    assert [native.app.get(i).status for i in blocked] == [JobStatus.QUEUED] * 3
    native.release.set()
    with native.app.worker(slots=4):
        wait_until(lambda: all(native.app.get(i).status is JobStatus.COMPLETED for i in blocked), timeout=30,
                   what="the given-back jobs")  # fmt: skip
    assert collections.Counter(r[0] for r in native.runs if str(r[0]).startswith("q")) == {f"q{i}": 1 for i in range(200)}


def test_a_cap_set_while_draining_holds_from_then_on(store: Spied) -> None:
    held = [h.id for h in native.blocked.delay_many("a", [(f"h{i}",) for i in range(6)])]
    with native.app.worker(slots=8) as worker:
        wait_until(lambda: len(native.runs) == 6, timeout=30, what="6 jobs of one org running: no cap")
        native.app.set_limits("a", cap=2)
        wait_until(lambda: worker.admissions.version == native.app.settings.version, timeout=30,
                   what="the worker to load the cap")  # fmt: skip
        assert not worker.admissions.unlimited(), "a cap: the worker's claims count it (Python turns)"
        later = [h.id for h in native.gated.delay_many("a", [(f"g{i}",) for i in range(4)])]
        native.release.set()
        wait_until(lambda: all(native.app.get(i).status is JobStatus.COMPLETED for i in held), timeout=30,
                   what="the first jobs to end")  # fmt: skip
        wait_until(lambda: len([r for r in native.runs if str(r[0]).startswith("g")]) == 2, timeout=30,
                   what="2 of the later jobs to start")  # fmt: skip
        running = [r for r in native.app.jobs(status="processing", limit=100) if r.org == "a"]
        assert len(running) == 2, "the cap of 2 holds"
        native.gate.set()
        wait_until(lambda: all(native.app.get(i).status is JobStatus.COMPLETED for i in later), timeout=30,
                   what="the later jobs")  # fmt: skip
    native.app.set_limits("a", cap=None)


def test_a_full_disk_mid_drain_loses_nothing_and_runs_every_job_once(small_disk: Path, caplog: pytest.LogCaptureFixture) -> None:
    from conftest import fill

    original = native.app.storage
    native.app.storage = store = Spied(small_disk / "fq.db")
    native.runs.clear()
    native.gate.clear()
    try:
        ids = [h.id for h in native.gated.delay_many("a", [(f"t{i}",) for i in range(300)])]
        with caplog.at_level("WARNING", logger="fairqueue.worker"), native.app.worker(slots=8) as worker:
            wait_until(lambda: len(native.runs) == 8, timeout=60, what="the first jobs to start")
            filler = fill(small_disk)
            native.gate.set()  # their completions meet the full disk
            wait_until(lambda: "disk is full" in caplog.text and "retrying in" in caplog.text, timeout=60,
                       what="the worker to meet the full disk and wait")  # fmt: skip
            filler.unlink()
            wait_until(lambda: len(native.app.jobs(status="completed", limit=1000)) == len(ids), timeout=120,
                       what="every job to complete once space is back")  # fmt: skip
            assert worker.crash is None
        ran = collections.Counter(job_id for _, _, job_id in native.runs)
        assert sorted(ran) == sorted(ids) and set(ran.values()) == {1}, "every job ran, and none twice"
        assert store.started_natively > len(ids) // 2
    finally:
        native.gate.set()
        store.close()
        native.app.storage = original
