"""One job through the runner, as a thread slot runs it: what a handler sees of
its context and transaction (made only once it enqueues), tracing switched on
between two jobs, payloads decoded strictly, and handler paths checked per kind.

The jobs are in ``tests/support/fq_handler_path_jobs.py``.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.util._once import Once

import fq_handler_path_jobs as jobs
from fairqueue.handlers import import_path
from fairqueue.records import JobRecord, JobStatus, NewJob
from fairqueue.runtime.runner import Runner
from fairqueue.storage.memory import MemoryStorage

T0 = 1_700_000_000.0


@pytest.fixture
def runner() -> Iterator[Runner]:
    original = jobs.app.storage
    jobs.app.storage = MemoryStorage()
    run = Runner(jobs.app)
    try:
        yield run
    finally:
        run.close()
        jobs.app.storage = original


def stored(kind: str, handler: str, payload: str) -> JobRecord:
    """A job of ``kind`` naming ``handler`` with ``payload`` as stored, read back."""
    [job_id] = jobs.app.storage.job_enqueue([NewJob("acme", kind, handler, payload)], T0)
    record = jobs.app.storage.job_get(job_id)
    assert record is not None
    return record


def future(fn: object, payload: str = '{"args":[],"kwargs":{}}') -> JobRecord:
    return stored("future", import_path(fn.fn), payload)  # type: ignore[attr-defined]


@pytest.mark.parametrize("fn", [jobs.whoami, jobs.whoami_async])
def test_a_handler_runs_as_its_job_in_its_own_transaction(runner: Runner, fn: object) -> None:
    record = future(fn)
    for _ in range(2):  # the second delivery through the handler path the first one found
        outcome = runner.execute(record)
        assert outcome.status is JobStatus.COMPLETED and outcome.result is not None
        assert json.loads(outcome.result) == [record.id, True]


def test_threads_a_handler_starts_with_its_context_enqueue_into_its_one_transaction(runner: Runner) -> None:
    record = stored("queueable", import_path(jobs.FanOut), '{"state":{}}')
    for _ in range(20):  # the threads race for the transaction made on the first enqueue
        outcome = runner.execute(record)
        assert outcome.status is JobStatus.COMPLETED, outcome.error
        assert len(outcome.children) == jobs.THREADS
        assert {child.handler for child in outcome.children} == {import_path(jobs.noop.fn)}


def test_a_job_that_enqueues_nothing_stores_nothing_but_its_status(runner: Runner) -> None:
    outcome = runner.execute(future(jobs.noop))
    assert outcome.status is JobStatus.COMPLETED and outcome.ran
    assert (outcome.error, outcome.result, outcome.children, outcome.attempt_error) == (None, None, (), None)


@pytest.mark.parametrize("payload", [' {"args":[],"kwargs":{}}', '{"args":[],"kwargs":{}}\n', '\t{"args":[]}  '])
def test_a_payload_with_whitespace_around_it_runs(runner: Runner, payload: str) -> None:
    assert runner.execute(future(jobs.noop, payload)).status is JobStatus.COMPLETED


def test_a_payload_read_back_as_bytes_runs(runner: Runner) -> None:
    # SQLite hands back a BLOB written into the payload column (a damaged or hand-edited row) as bytes.
    record = dataclasses.replace(future(jobs.noop), payload=b'{"args":[],"kwargs":{}}')
    assert runner.execute(record).status is JobStatus.COMPLETED


@pytest.mark.parametrize(
    ("payload", "said"),
    [('{"args":[],"kwargs":{}}x', "is not JSON (Extra data"), ('{"args":[]} {}', "is not JSON (Extra data"),
     ("", "is not JSON (Expecting value"), (' {"args":', "is not JSON"), ("[]", "is list, not a JSON object")],
)  # fmt: skip
def test_a_payload_that_is_not_one_json_object_fails_the_job(runner: Runner, payload: str, said: str) -> None:
    record = future(jobs.noop, payload)
    outcome = runner.execute(record)
    assert outcome.status is JobStatus.FAILED and not outcome.ran
    assert outcome.error is not None and outcome.error.startswith(f"MalformedRecord: job {record.id}'s stored payload {said}")


def test_a_path_is_checked_for_the_kind_each_record_names(runner: Runner) -> None:
    path = import_path(jobs.Plain)
    assert runner.execute(stored("queueable", path, '{"state":{}}')).status is JobStatus.COMPLETED
    outcome = runner.execute(stored("future", path, '{"args":[],"kwargs":{}}'))
    assert outcome.status is JobStatus.FAILED
    assert outcome.error == f"HandlerNotFound: {path!r} is not a function declared with @app.future"
    future_path = import_path(jobs.noop.fn)
    assert runner.execute(stored("future", future_path, '{"args":[],"kwargs":{}}')).status is JobStatus.COMPLETED
    outcome = runner.execute(stored("queueable", future_path, '{"state":{}}'))
    assert outcome.error == f"HandlerNotFound: {future_path!r} is not a fairqueue.Queueable subclass"


def reset_trace_globals() -> None:
    # As tests/integration/test_tracing.py does: the API sets a provider once per process.
    trace._TRACER_PROVIDER_SET_ONCE = Once()
    trace._TRACER_PROVIDER = None
    trace._PROXY_TRACER_PROVIDER = trace.ProxyTracerProvider()


def test_a_tracer_provider_set_after_a_job_ran_traces_the_next_one(runner: Runner) -> None:
    first, second = future(jobs.noop), future(jobs.noop)
    assert runner.execute(first).status is JobStatus.COMPLETED  # tracing off
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    try:
        assert runner.execute(second).status is JobStatus.COMPLETED
        [span] = exporter.get_finished_spans()
        assert span.name == "fairqueue.run" and span.attributes is not None
        assert span.attributes["fairqueue.job.id"] == second.id
        assert span.attributes["fairqueue.outcome"] == "completed"
    finally:
        provider.shutdown()
        reset_trace_globals()
    assert runner.execute(first).status is JobStatus.COMPLETED
    assert len(exporter.get_finished_spans()) == 1  # off again: the provider is gone
