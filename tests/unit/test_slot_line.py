"""The slots' line (``fairqueue._core.SlotLine``) and the embedded store's native
worker turns through it (``SQLiteStorage.job_turn_in_line``), on a real SQLite file
and the real dispatcher core, with threads standing in for the slots."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import fairqueue as fq
from fairqueue._core import Dispatcher, SlotLine
from fairqueue.records import JobStatus
from fairqueue.storage.interface import LineTurn
from fairqueue.storage.sqlite import SQLiteStorage

WAIT = 30.0  # seconds a thread hand-off may take on a loaded machine before the test fails


def test_objects_come_out_in_the_order_put_in_and_drain_takes_the_rest() -> None:
    line = SlotLine()
    for item in ("a", "b", None, "c"):
        line.put(item)
    assert [line.take(), line.take(), line.take()] == ["a", "b", None]
    assert line.drain() == ["c"] and line.drain() == []
    assert line.rows_waiting() == 0


def test_a_take_waits_for_the_next_put_with_the_interpreter_released() -> None:
    line = SlotLine()
    got: list[Any] = []
    taker = threading.Thread(target=lambda: got.append(line.take()))
    taker.start()
    for _ in range(300_000):  # longer than a switch interval: ends only if the waiting taker lets go of the interpreter
        pass
    assert not got
    line.put("job")
    taker.join(WAIT)
    assert got == ["job"]


def test_completions_are_taken_once_in_the_order_done() -> None:
    line = SlotLine()
    line.done(7, 70)
    line.done(3, 30)
    assert line.completions() == 2
    assert line.take_done() == [(7, 70), (3, 30)]
    assert line.take_done() == [] and line.completions() == 0


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SQLiteStorage]:
    store = SQLiteStorage(tmp_path / "fq.db")
    try:
        yield store
    finally:
        store.close()


def queued(store: SQLiteStorage, org: str, n: int) -> list[int]:
    app = fq.FairQueue(store)
    return [app.enqueue(fq.Queueable(), org=org).id for _ in range(n)]


def fed(store: SQLiteStorage, slots: int) -> Dispatcher:
    core = Dispatcher(slots=slots)
    core.enqueue_many([p[:7] for p in store.job_pending()], skip_held=True)
    return core


def turns(store: SQLiteStorage, line: SlotLine, core: Dispatcher, until: float) -> LineTurn:
    return store.job_turn_in_line(line, core, "w1", 60.0, None, 25, 0.5, until)


def in_thread(work: Any) -> tuple[threading.Thread, list[Any]]:
    result: list[Any] = []
    thread = threading.Thread(target=lambda: result.append(work()))
    thread.start()
    return thread, result


def test_native_turns_claim_into_the_line_and_store_what_the_slots_complete(store: SQLiteStorage) -> None:
    ids = queued(store, "acme", 5)
    line, core = SlotLine(), fed(store, slots=3)
    thread, result = in_thread(lambda: turns(store, line, core, time.time() + 3600))
    rows = [line.take() for _ in range(3)]  # the first turn claimed 3: one per slot
    started = {store.claimed_record(row).id: lease for lease, row in rows}
    assert sorted(started) == ids[:3]
    assert all(store.job_get(i).status is JobStatus.PROCESSING for i in started)
    for job_id, lease in started.items():
        line.done(lease, job_id)  # the next turns store them and claim the last 2
    rows = [line.take() for _ in range(2)]
    for lease, row in rows:
        line.done(lease, store.claimed_record(row).id)
    thread.join(WAIT)  # nothing leased any more: the turns return
    assert not thread.is_alive()
    turn = result[0]
    assert sorted(job_id for _, job_id in turn.applied) == ids and turn.not_applied == []
    assert turn.started == 5 and turn.orgs == ["acme"] and turn.grants == [] and not turn.claim.stale
    assert [store.job_get(i).status for i in ids] == [JobStatus.COMPLETED] * 5


def test_native_turns_return_when_attended_and_leave_a_completion_of_a_lost_lease_to_python(
    store: SQLiteStorage,
) -> None:
    ids = queued(store, "acme", 2)
    line, core = SlotLine(), fed(store, slots=2)
    thread, result = in_thread(lambda: turns(store, line, core, time.time() + 3600))
    rows = [line.take() for _ in range(2)]
    line.attend()
    thread.join(WAIT)
    assert not thread.is_alive(), "attend() hands the loop back to Python"
    assert result[0].started == 2
    store.job_requeue_expired(time.time() + 120)  # the leases lapsed: the store took the jobs back
    for lease, row in rows:
        line.done(lease, store.claimed_record(row).id)
    turn = turns(store, line, core, time.time() + 3600)
    assert turn.applied == [] and sorted(job_id for _, job_id in turn.not_applied) == ids
    assert [store.job_get(i).status for i in ids] == [JobStatus.QUEUED] * 2
