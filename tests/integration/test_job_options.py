"""A job's queue, concurrency key, priority and cost, from every enqueue entry point
into its stored record (memory, SQLite and PostgreSQL), chaining included; the
peek_set refusal; and test mode ordering by priority in its core."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

import fairqueue as fq
import fq_flow_jobs as jobs
from fairqueue import _core
from fairqueue.storage import Storage
from fairqueue.storage.memory import MemoryStorage
from fairqueue.storage.sqlite import SQLiteStorage


def opened(request: pytest.FixtureRequest, tmp_path: Path, kind: str) -> Storage:
    if kind == "memory":
        return MemoryStorage()
    if kind == "sqlite":
        return SQLiteStorage(tmp_path / "fq.db")
    from fairqueue.storage.postgres import PostgresStorage

    return PostgresStorage(request.getfixturevalue("pg_dsn"), schema=request.getfixturevalue("pg_schema"))


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Storage]:
    """The flow jobs' app on a fresh store of each kind."""
    backend = opened(request, tmp_path, request.param)
    original, jobs.app.storage = jobs.app.storage, backend
    jobs.ran.clear()
    try:
        yield backend
    finally:
        jobs.app.policy = "fair_share"
        jobs.app.storage = original
        backend.close()


def flow(record: fq.JobRecord | None) -> tuple[str, str | None, int, int]:
    assert record is not None
    return record.queue, record.key, record.priority, record.cost


def test_every_entry_point_stores_the_jobs_queue_key_priority_and_cost(store: Storage) -> None:
    app = jobs.app
    assert flow(jobs.plain.delay("org-1", "a").record()) == ("default", None, 5, 1)
    assert flow(jobs.report.delay("org-1", "b").record()) == ("reports", None, 5, 1), "@app.future(queue=…)"
    call = jobs.plain.options(key="user-42", priority=9, cost=3, queue="gpu")
    assert flow(call.delay("org-1", "c").record()) == ("gpu", "user-42", 9, 3)
    assert flow(jobs.report.options(delay=30, key="user-1").delay("org-1", "d").record()) == ("reports", "user-1", 5, 1)
    assert flow(app.enqueue(jobs.Child("e"), org="org-1").record()) == ("reports", None, 7, 1), "class defaults"
    assert flow(app.enqueue(jobs.Child("f"), org="org-1", key="k", priority=0, cost=10, queue="q2").record()) == (
        "q2", "k", 0, 10)  # fmt: skip
    assert flow(app.execute_batch(jobs.Chunks(), org="org-1", key="user-7").record()) == ("reports", "user-7", 5, 3)
    assert flow(app.enqueue_whole_batch(jobs.Chunks(), org="org-1", priority=8).record()) == ("reports", None, 8, 3)
    handles = jobs.plain.delay_many("org-2", [["g"], ["h"]], key="bulk", priority=1, cost=2)
    assert [flow(h.record()) for h in handles] == [("default", "bulk", 1, 2)] * 2
    with app.transaction():
        held = [jobs.plain.options(key="tx", priority=6).delay("org-3", "i"),
                app.enqueue(jobs.Child("j"), org="org-3", key="tx")]  # fmt: skip
    assert [flow(h.record()) for h in held] == [("default", "tx", 6, 1), ("reports", "tx", 7, 1)]

    async def enqueue_async() -> list[fq.JobHandle]:
        one = await jobs.report.options(key="a-1", cost=5).delay_async("org-4", "k")
        two = await app.enqueue_async(jobs.Child("l"), org="org-4", key="a-2", priority=3)
        async with app.transaction_async():
            three = await jobs.plain.delay_async("org-4", "m")
        return [one, two, three]

    assert [flow(h.record()) for h in asyncio.run(enqueue_async())] == [
        ("reports", "a-1", 5, 5), ("reports", "a-2", 3, 1), ("default", None, 5, 1)]  # fmt: skip


def test_children_take_their_parents_key_but_their_own_queue_priority_and_cost(store: Storage) -> None:
    parent = jobs.app.enqueue(jobs.Parent("p"), org="org-1", key="user-42", priority=6)
    with jobs.app.worker(slots=2):
        assert parent.result(timeout=60) == {"key": "user-42"}
        children = {r.id: r for r in store.job_list(limit=100) if r.parent_id == parent.id}
        futures = [r for r in store.job_list(kind="future", limit=100)]
        for r in [*children.values(), *futures]:
            jobs.app.wait(r.id, timeout=60)
    by_tag = {tag: job_id for _, tag, job_id in jobs.ran}
    # The chained child counts against the same user's key; the one told key=None does not.
    assert flow(store.job_get(by_tag["p-inherits"])) == ("reports", "user-42", 7, 1)
    assert flow(store.job_get(by_tag["p-keyless"])) == ("default", None, 2, 4)
    assert flow(store.job_get(by_tag["p-future"])) == ("default", "user-42", 5, 1)
    inherits = store.job_get(by_tag["p-inherits"])
    assert inherits is not None and fq.jobs.result_of(inherits) == {"key": "user-42"}, "ctx.key in the child"


def test_a_job_for_another_org_enqueued_from_a_running_job_takes_no_key(store: Storage) -> None:
    ctx_less = jobs.app.enqueue(jobs.Child("x"), org="org-9")
    assert ctx_less.record().key is None, "outside a running job, key defaults to none"


@pytest.mark.parametrize(
    ("options", "refused"),
    [({"key": "user-1"}, "key='user-1'"), ({"priority": 9}, "priority=9"), ({"cost": 2}, "cost=2")],
)
def test_peek_set_refuses_keys_priorities_and_costs_at_enqueue_saying_why(
    store: Storage, options: dict[str, object], refused: str
) -> None:
    jobs.app.policy = "peek_set"
    with pytest.raises(fq.InvalidArgument) as raised:
        jobs.plain.options(**options).delay("org-1", "z")  # type: ignore[arg-type]
    message = str(raised.value)
    assert refused in message and "peek_set" in message and "fair_share" in message, message
    with pytest.raises(fq.InvalidArgument):
        jobs.app.enqueue(jobs.Parent("z"), org="org-1", **options)  # type: ignore[arg-type]
    # The defaults, and a named queue, are peek_set's too.
    assert flow(jobs.report.options(priority=5, cost=1, key=None).delay("org-1", "ok").record()) == (
        "reports", None, 5, 1)  # fmt: skip
    assert store.job_list(limit=10) and len(store.job_list(limit=10)) == 1, "nothing refused was stored"


def test_a_class_declaring_a_bad_priority_or_queue_is_refused_when_defined() -> None:
    with pytest.raises(fq.InvalidArgument, match=r"Bad: invalid priority 12: expected an integer from 0 to 9"):
        class Bad(fq.Queueable):
            priority = 12

            def execute(self, ctx: fq.Context) -> None: ...
    with pytest.raises(fq.InvalidArgument, match=r"invalid queue ' gpu'"):
        jobs.app.future(queue=" gpu")(print)


def test_test_mode_runs_a_priority_9_job_before_its_orgs_earlier_priority_5_jobs() -> None:
    with jobs.app.testing() as run:
        normal = [jobs.plain.delay("org-1", f"n{i}") for i in range(20)]
        urgent = jobs.plain.options(priority=9, key="user-1").delay("org-1", "urgent")
    assert run.order[0] == urgent.id, run.order
    assert run.order[1:] == [h.id for h in normal]
    assert flow(run.get(urgent.id)) == ("default", "user-1", 9, 1)


def test_the_core_holds_a_keys_cap_among_its_orgs_other_keys() -> None:
    # Per-key caps are not stored settings yet: the key is checked in the core itself.
    core = _core.Dispatcher(slots=4, virtual_time=0.0)
    core.set_key_limits("org-1", "user-1", cap=1)
    for i in range(3):
        core.enqueue(i + 1, "org-1", key="user-1")
        core.enqueue(i + 11, "org-1", key="user-2")
    granted = sorted(g.id for g in core.dispatch())
    assert [i for i in granted if i < 10] == [1] and len(granted) == 4, granted
    assert core.request_options(2) == {"key": "user-1", "priority": 5, "cost": 1}
