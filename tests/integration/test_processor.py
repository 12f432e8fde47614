"""AsyncProcessor: a queueable up to its threshold, a batch above it, on lists and on queries."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

import fairqueue as fq
import fq_sample_jobs as sample
from fairqueue.errors import InvalidArgument


def people(n: int) -> list[dict[str, object]]:
    return [{"id": i, "name": f"person {i}"} for i in range(n)]


def processed() -> list[int]:
    return sorted(i for tag, ids in sample.runs if tag == "names" for i in ids)


@pytest.mark.parametrize(("count", "kind", "deliveries"), [(9, "queueable", 1), (10, "queueable", 1), (11, "batch", 4)])
def test_a_list_runs_as_a_queueable_up_to_the_threshold_and_as_a_batch_above(
    app: fq.FairQueue, count: int, kind: str, deliveries: int
) -> None:
    with app.testing() as run:
        handle = sample.Names().get(people(count)).kickoff(org="acme", app=app)
    record = run.get(handle.id)
    assert record is not None and record.kind == kind and record.status is fq.JobStatus.COMPLETED
    assert processed() == list(range(count)) and record.items_processed == count
    assert run.order == [handle.id] * deliveries, "a queueable is one delivery; a batch one per 4-record chunk + finish"


@pytest.mark.parametrize(("count", "kind"), [(9, "queueable"), (11, "batch")])
def test_a_query_is_counted_and_picks_the_same_way(app: fq.FairQueue, tmp_path: Path, count: int, kind: str) -> None:
    shop = tmp_path / "shop.db"
    with sqlite3.connect(shop) as db:
        db.execute("CREATE TABLE contacts (id INTEGER PRIMARY KEY, name TEXT)")
        db.executemany("INSERT INTO contacts VALUES (?, ?)", [(i, f"p{i}") for i in range(100)])
    query = fq.Query(str(shop), "SELECT id, name FROM contacts WHERE id < ? ORDER BY id", (count,))
    assert sample.Names().get(query).count() == count
    with app.testing() as run:
        handle = sample.Names().get(query).kickoff(org="acme", app=app)
    assert run.get(handle.id).kind == kind  # type: ignore[union-attr]
    assert processed() == list(range(count))


@pytest.mark.parametrize("count", [5, 11])
def test_a_failure_is_the_same_error_event_either_way(app: fq.FairQueue, count: int) -> None:
    records = people(count)
    records[2]["name"] = "bad"
    heard: list[fq.BatchErrorEvent] = []
    app.on_batch_error(heard.append)
    try:
        with app.testing() as run:
            handle = sample.Names().get(records).kickoff(org="acme", app=app)
    finally:
        app._batch_error_callbacks.clear()
    [event] = run.batch_errors(handle.id)
    assert heard == [event] and event.phase == "EXECUTE" and event.exception_type == "ValueError"
    assert 2 in event.record_ids
    record = run.get(handle.id)
    assert record is not None and record.status is fq.JobStatus.COMPLETED and record.error_count == 1


def test_bad_processor_use_is_refused(app: fq.FairQueue) -> None:
    with pytest.raises(InvalidArgument, match="takes a list of records or a fairqueue.Query"):
        sample.Names().get("SELECT 1")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="needs an app"):
        sample.Names().get(people(1)).kickoff(org="acme")
    with pytest.raises(TypeError, match="does not define inner_execute"):

        class Nothing(fq.AsyncProcessor):
            pass
