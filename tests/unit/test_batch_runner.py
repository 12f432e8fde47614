"""The batch runner alone: a batch delivered chunk by chunk through a memory
store (as a worker delivers it, without one), its progress, its carried state,
its error events, the single-chunk mode and a pager started again at a chunk.

The jobs are in ``tests/support/fq_batch_units.py``; each test's job has its own
tag, under which the job logs what its phases did.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any, Callable

import pytest

import fq_batch_units as units
from fairqueue.alerts import Alerts
from fairqueue.control import Control
from fairqueue.enqueue import Enqueuer, batch_payload
from fairqueue.errors import HandlerNotFound
from fairqueue.handlers import import_path
from fairqueue.jobs import Batchable, Context, running
from fairqueue.records import BatchErrorEvent, Finish, JobRecord, JobStatus, NewJob
from fairqueue.retry import NO_RETRY, RetryPolicy
from fairqueue.runtime.batch_runner import BatchRunner
from fairqueue.runtime.outcome import Outcome
from fairqueue.settings import QueueSettings
from fairqueue.storage.memory import MemoryStorage

T0 = 1_700_000_000.0
"""When the batch is enqueued (UNIX seconds); each delivery is a second later."""
LEASE = 60.0
WORKER = "worker-a"
MAX_BYTES = 1 << 20


def call(ctx: Context, fn: Callable[..., Any], args: list[Any], kwargs: dict[str, Any]) -> Any:
    """How the worker calls a phase (``Runner.in_context`` without the event loop)."""
    with running(ctx):
        return fn(*args, **kwargs)


class Queue:
    """A memory store, the enqueuer a job's context enqueues through, and the runners to close."""

    def __init__(self) -> None:
        self.store = MemoryStorage()
        self.settings = QueueSettings()
        self.enqueuer = Enqueuer(lambda: self.store, self.settings, Alerts(lambda: self.store, self.settings),
                                 Control(lambda: self.store, self.settings))  # fmt: skip
        self.runners: list[BatchRunner] = []
        self.now = T0

    def runner(self, policy: RetryPolicy = NO_RETRY) -> BatchRunner:
        """A batch runner, as one worker process has (a new one: a restarted process),
        under ``policy`` (by default a failed chunk is an error event at once)."""
        runner = BatchRunner(call, MAX_BYTES, lambda record: policy)
        self.runners.append(runner)
        return runner

    def submit(self, job: Batchable, scope: int, *, single_chunk: bool = False) -> int:
        path, payload = batch_payload(job, scope, MAX_BYTES, single_chunk=single_chunk)
        kind = "queueable" if single_chunk else "batch"  # as enqueue_whole_batch and execute_batch store them
        [job_id] = self.store.job_enqueue([NewJob("acme", kind, path, payload)], self.now)
        return job_id

    def claim(self, job_id: int) -> JobRecord:
        self.now += 1
        [record] = self.store.job_claim([job_id], WORKER, self.now + LEASE, self.now)
        return record

    def run(self, runner: BatchRunner, record: JobRecord) -> Outcome:
        """One delivery, with a context built as the worker's runner builds it."""
        body = json.loads(record.payload)
        ctx = Context(queue=self.enqueuer, limits=self.settings.limits, job_id=record.id, org=record.org,
                      kind=record.kind, attempt=record.attempts, chain_depth=record.chain_depth,
                      max_depth=body.get("max_depth"), finalizer_requeues=body.get("finalizer_requeues", 0))  # fmt: skip
        return runner.execute(ctx, record, body)

    def commit(self, record: JobRecord, outcome: Outcome) -> None:
        """Stores the delivery's outcome as the worker's group commit does."""
        finish = Finish(record.id, WORKER, outcome.status, self.now, outcome.error, outcome.retry_at,
                        outcome.children, outcome.progress)  # fmt: skip
        assert self.store.job_finish([finish]) == [record.id]

    def deliver(self, job_id: int, runner: BatchRunner) -> Outcome:
        """Claims the job, runs one delivery and stores its outcome."""
        record = self.claim(job_id)
        outcome = self.run(runner, record)
        self.commit(record, outcome)
        return outcome

    def record(self, job_id: int) -> JobRecord:
        record = self.store.job_get(job_id)
        assert record is not None
        return record


@pytest.fixture
def queue() -> Iterator[Queue]:
    q = Queue()
    yield q
    for runner in q.runners:
        runner.close()


@pytest.fixture
def tag(request: pytest.FixtureRequest) -> str:
    """This test's own key in the jobs' event log."""
    name: str = request.node.nodeid
    units.events.pop(name, None)
    return name


def body(outcome: Outcome) -> dict[str, Any]:
    assert outcome.progress is not None
    decoded: dict[str, Any] = json.loads(outcome.progress.payload)
    return decoded


def counts(outcome: Outcome) -> tuple[int, int | None, int]:
    assert outcome.progress is not None
    p = outcome.progress
    return p.items_processed, p.items_total, p.error_count


def executed(tag: str) -> list[list[str]]:
    return [e[1] for e in units.events[tag] if e[0] == "execute"]


# ----- chunk by chunk -------------------------------------------------------------------


def test_each_delivery_runs_one_chunk_until_the_records_run_out(queue: Queue, tag: str) -> None:
    job_id = queue.submit(units.Numbers(tag, 7), scope=3)
    runner = queue.runner()
    state = {"tag": tag, "n": 7, "fail_on": [], "chain": False, "seen": 0}

    first = queue.deliver(job_id, runner)

    assert first.status is JobStatus.QUEUED and first.error is None
    assert body(first) == {"state": state, "carried": state, "scope": 3, "chunk": 1, "single_chunk": False}
    assert counts(first) == (3, 7, 0), "a list's length is the batch's total"
    record = queue.record(job_id)
    assert (record.status, record.items_processed, record.items_total, record.attempts) == (JobStatus.QUEUED, 3, 7, 0)
    assert [p.id for p in queue.store.job_pending()] == [job_id], "back in the queue for its next chunk"

    second, third = (queue.deliver(job_id, runner) for _ in range(2))

    assert [o.status for o in (second, third)] == [JobStatus.QUEUED, JobStatus.QUEUED]
    assert (body(second)["chunk"], counts(second)) == (2, (6, 7, 0))
    assert (body(third)["chunk"], counts(third)) == (3, (7, 7, 0))
    assert executed(tag) == [["r0", "r1", "r2"], ["r3", "r4", "r5"], ["r6"]]
    assert units.events[tag].count(("start",)) == 1, "between chunks the process keeps its pager"
    assert not any(e[0] == "finish" for e in units.events[tag])

    last = queue.deliver(job_id, runner)  # the records ran out: finish

    assert last.status is JobStatus.COMPLETED and last.error is None
    assert counts(last) == (7, 7, 0)
    assert units.events[tag][-1] == ("finish", 0)
    assert len(executed(tag)) == 3
    record = queue.record(job_id)
    assert (record.status, record.items_processed, record.items_total) == (JobStatus.COMPLETED, 7, 7)


@pytest.mark.parametrize(("cls", "seen_by_chunks", "seen_by_finish"), [
    (units.Numbers, [0, 0, 0], 0),  # every chunk starts from the state the batch was enqueued with
    (units.Tally, [0, 3, 6], 7),  # stateful: what execute leaves is carried to the next chunk and to finish
])  # fmt: skip
def test_state_is_carried_only_by_a_stateful_batch(
    queue: Queue, tag: str, cls: type[units.Numbers], seen_by_chunks: list[int], seen_by_finish: int
) -> None:
    job_id = queue.submit(cls(tag, 7), scope=3)
    runner = queue.runner()

    outcomes = [queue.deliver(job_id, runner) for _ in range(4)]

    assert [o.status for o in outcomes] == [JobStatus.QUEUED] * 3 + [JobStatus.COMPLETED]
    assert [e[2] for e in units.events[tag] if e[0] == "execute"] == seen_by_chunks
    assert units.events[tag][-1] == ("finish", seen_by_finish)
    assert [body(o)["carried"]["seen"] for o in outcomes[:3]] == ([3, 6, 7] if cls.stateful else [0, 0, 0]), (
        "the carried state travels in the stored payload"
    )
    assert all(body(o)["state"]["seen"] == 0 for o in outcomes[:3]), "the enqueued state is kept as it was"


def test_a_generator_is_paged_and_closed_when_the_batch_is_done(queue: Queue, tag: str) -> None:
    job_id = queue.submit(units.Streamed(tag, 4), scope=2)
    runner = queue.runner()

    outcomes = [queue.deliver(job_id, runner) for _ in range(2)]
    assert [counts(o) for o in outcomes] == [(2, None, 0), (4, None, 0)], "a generator's total is not known yet"
    assert not units.closed[tag].is_set(), "kept open between chunks"

    last = queue.deliver(job_id, runner)

    assert last.status is JobStatus.COMPLETED and counts(last) == (4, 4, 0)
    assert executed(tag) == [["s0", "s1"], ["s2", "s3"]]
    assert units.closed[tag].wait(timeout=5), "the generator's with/finally blocks end once the batch is done"


# ----- failures -------------------------------------------------------------------------


def test_a_failing_chunk_records_an_error_event_and_the_batch_goes_on(queue: Queue, tag: str) -> None:
    job_id = queue.submit(units.Numbers(tag, 7, fail_on=["r4"], chain=True), scope=3)
    runner = queue.runner()

    outcomes = [queue.deliver(job_id, runner) for _ in range(4)]

    assert [o.status for o in outcomes] == [JobStatus.QUEUED] * 3 + [JobStatus.COMPLETED]
    assert executed(tag) == [["r0", "r1", "r2"], ["r3", "r4", "r5"], ["r6"]], "the chunk after the failed one runs"
    assert outcomes[0].progress is not None and outcomes[0].progress.errors == ()
    failed = outcomes[1].progress
    assert failed is not None
    [event] = failed.errors
    assert isinstance(event, BatchErrorEvent)
    assert (event.job_id, event.org, event.phase, event.chunk) == (job_id, "acme", "EXECUTE", 1)
    assert (event.record_ids, event.exception_type, event.message) == (["r3", "r4", "r5"], "ValueError", "bad record r4")
    assert "ValueError: bad record r4" in event.traceback
    assert [counts(o) for o in outcomes] == [(3, 7, 0), (6, 7, 1), (7, 7, 1), (7, 7, 1)]
    assert outcomes[3].error is not None and outcomes[3].error.startswith("1 of its chunks or phases failed")
    assert queue.store.batch_errors(job_id) == [event], "stored with the chunk's outcome"
    # A failed chunk's enqueues are rolled back with it; the others' are stored with theirs.
    assert [len(o.children) for o in outcomes] == [1, 0, 1, 0]
    chained = [r for r in queue.store.job_list(kind="queueable") if r.parent_id == job_id]
    assert sorted(json.loads(r.payload)["state"]["after"] for r in chained) == ["r0", "r6"]
    record = queue.record(job_id)
    assert (record.status, record.error_count, record.extended_status) == (JobStatus.COMPLETED, 1, outcomes[3].error)


def test_a_failed_chunk_is_retried_by_the_batchs_policy_before_it_becomes_an_error_event(queue: Queue, tag: str) -> None:
    job_id = queue.submit(units.Numbers(tag, 6, fail_on=["r4"]), scope=3)
    runner = queue.runner(RetryPolicy(max_attempts=3, base=0.5, jitter=0.0))

    outcomes = [queue.deliver(job_id, runner) for _ in range(4)]

    # Chunk 1 runs three times (twice retried, then its error event), chunk 0 once.
    assert executed(tag) == [["r0", "r1", "r2"]] + [["r3", "r4", "r5"]] * 3
    assert [o.status for o in outcomes] == [JobStatus.QUEUED] * 4
    retried = outcomes[1:3]
    assert [o.progress.errors for o in retried if o.progress] == [(), ()], "no error event while it is retried"
    assert [o.error for o in retried] == [
        "chunk 1 failed attempt 1 of 3: ValueError: bad record r4; retrying",
        "chunk 1 failed attempt 2 of 3: ValueError: bad record r4; retrying",
    ]
    assert [o.retry_at is not None for o in retried] == [True, True]
    assert [counts(o) for o in outcomes] == [(3, 6, 0), (3, 6, 0), (3, 6, 0), (6, 6, 1)]
    [event] = queue.store.batch_errors(job_id)
    assert (event.chunk, event.record_ids) == (1, ["r3", "r4", "r5"])
    assert queue.deliver(job_id, runner).status is JobStatus.COMPLETED


def test_records_without_an_id_are_named_by_their_position(queue: Queue, tag: str) -> None:
    job_id = queue.submit(units.Plain(tag, 5), scope=2)
    runner = queue.runner()

    outcomes = [queue.deliver(job_id, runner) for _ in range(4)]

    assert [e.record_ids for o in outcomes if o.progress for e in o.progress.errors] == [[0, 1], [2, 3], [4]]
    assert [e.exception_type for e in queue.store.batch_errors(job_id)] == ["KeyError"] * 3
    assert outcomes[-1].status is JobStatus.COMPLETED and counts(outcomes[-1]) == (5, 5, 3)


def test_a_failing_start_still_runs_finish(queue: Queue, tag: str) -> None:
    job_id = queue.submit(units.BrokenSource(tag), scope=10)

    outcome = queue.deliver(job_id, queue.runner())

    assert outcome.status is JobStatus.COMPLETED
    assert units.events[tag] == [("finish",)], "no chunk ran; finish did"
    assert outcome.progress is not None
    [event] = outcome.progress.errors
    assert (event.phase, event.chunk, event.record_ids) == ("START", None, [])
    assert (event.exception_type, event.message) == ("RuntimeError", "source down")
    assert counts(outcome) == (0, 0, 1)
    assert outcome.error is not None and f"app.batch_errors({job_id})" in outcome.error
    assert queue.store.batch_errors(job_id) == [event]


def test_a_handler_that_is_not_a_batch_is_refused(queue: Queue) -> None:
    path, payload = batch_payload(units.Numbers("unused", 1), 1, MAX_BYTES)
    [job_id] = queue.store.job_enqueue([NewJob("acme", "batch", import_path(units.Noop), payload)], T0)

    with pytest.raises(HandlerNotFound, match="is not a fairqueue.Batchable subclass"):
        queue.run(queue.runner(), queue.claim(job_id))


# ----- single chunk, restarts -----------------------------------------------------------


def test_single_chunk_mode_runs_every_record_and_finish_in_one_delivery(queue: Queue, tag: str) -> None:
    job_id = queue.submit(units.Tally(tag, 250), scope=1, single_chunk=True)

    outcome = queue.deliver(job_id, queue.runner())

    assert outcome.status is JobStatus.COMPLETED and outcome.error is None
    assert executed(tag) == [[f"r{i}" for i in range(250)]], "one chunk, whatever the scope says"
    assert units.events[tag][-1] == ("finish", 250)
    assert counts(outcome) == (250, 250, 0)
    record = queue.record(job_id)
    assert (record.kind, record.status, record.items_processed) == ("queueable", JobStatus.COMPLETED, 250)


def test_a_new_process_resumes_at_the_next_chunk(queue: Queue, tag: str) -> None:
    job_id = queue.submit(units.Numbers(tag, 7), scope=3)
    first = queue.runner()
    assert queue.deliver(job_id, first).status is JobStatus.QUEUED
    first.close()  # that process stopped; another one takes the next chunk

    second = queue.runner()
    outcomes = [queue.deliver(job_id, second) for _ in range(2)]

    assert [o.status for o in outcomes] == [JobStatus.QUEUED, JobStatus.QUEUED]
    assert units.events[tag].count(("start",)) == 2, "the new process calls start again"
    assert executed(tag) == [["r0", "r1", "r2"], ["r3", "r4", "r5"], ["r6"]], "and skips the finished records"
    assert [counts(o) for o in outcomes] == [(6, 7, 0), (7, 7, 0)]
    last = queue.deliver(job_id, second)
    assert last.status is JobStatus.COMPLETED and counts(last) == (7, 7, 0)


def test_a_chunk_whose_outcome_was_lost_runs_again_and_only_it(queue: Queue, tag: str) -> None:
    job_id = queue.submit(units.Numbers(tag, 9), scope=3)
    runner = queue.runner()
    queue.deliver(job_id, runner)
    lost = queue.claim(job_id)
    assert queue.run(runner, lost).status is JobStatus.QUEUED  # ran r3..r5, but the worker died before committing
    assert queue.store.job_requeue_expired(queue.now + LEASE + 1) == [job_id]  # the sweep re-queues chunk 1

    outcomes = [queue.deliver(job_id, runner) for _ in range(3)]

    assert [o.status for o in outcomes] == [JobStatus.QUEUED, JobStatus.QUEUED, JobStatus.COMPLETED]
    assert executed(tag) == [["r0", "r1", "r2"], ["r3", "r4", "r5"], ["r3", "r4", "r5"], ["r6", "r7", "r8"]]
    assert units.events[tag].count(("start",)) == 2, "the pager was past the lost chunk: start again, skip to it"
    assert counts(outcomes[-1]) == (9, 9, 0)


def test_a_short_last_chunk_does_not_make_the_finish_delivery_call_start_again(queue: Queue, tag: str) -> None:
    # 7 records, scope 3: chunks r0-r2, r3-r5, r6. The finish delivery's body says chunk 3
    # (position 9); the pager that ran out at 7 has nothing more to read and is kept.
    job_id = queue.submit(units.Numbers(tag, 7), scope=3)
    runner = queue.runner()
    outcomes = [queue.deliver(job_id, runner) for _ in range(4)]
    assert outcomes[-1].status is JobStatus.COMPLETED
    assert executed(tag) == [["r0", "r1", "r2"], ["r3", "r4", "r5"], ["r6"]]
    assert units.events[tag].count(("start",)) == 1, "one worker kept its pager: start runs once"


def test_a_whole_stateless_batch_finishes_from_its_enqueued_state(queue: Queue, tag: str) -> None:
    # Without stateful, finish starts from the enqueued state, in one delivery as after chunks.
    job_id = queue.submit(units.Numbers(tag, 5), scope=1, single_chunk=True)
    assert queue.deliver(job_id, queue.runner()).status is JobStatus.COMPLETED
    assert units.events[tag][-1] == ("finish", 0)
