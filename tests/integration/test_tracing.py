"""Traces and logs: an enqueue's span and its run's span are one trace, across
processes, through the W3C context the job's payload carries; a worker's
``--log-format json`` lines carry the job's fields."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from opentelemetry.util._once import Once

import fairqueue as fq
import fq_traced_jobs as jobs
from conftest import wait_until
from fairqueue import tracing
from fairqueue.logs import JsonFormatter
from fairqueue.logs import configure as configure_logs
from fairqueue.storage.sqlite import SQLiteStorage

SUPPORT = Path(__file__).resolve().parents[1] / "support"


def reset_trace_globals() -> None:
    # What opentelemetry-test-utils' reset_trace_globals does (the API sets a provider once per
    # process): later tests in this process run with tracing off again, as they expect.
    trace._TRACER_PROVIDER_SET_ONCE = Once()
    trace._TRACER_PROVIDER = None
    trace._PROXY_TRACER_PROVIDER = trace.ProxyTracerProvider()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Path]:
    original = jobs.app.storage
    jobs.app.storage = SQLiteStorage(tmp_path / "fq.db")
    try:
        yield tmp_path / "fq.db"
    finally:
        jobs.app.storage.close()
        jobs.app.storage = original


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """This process traces into memory for the test."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    try:
        yield exporter
    finally:
        provider.shutdown()
        reset_trace_globals()


def named(spans: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [s for s in spans.get_finished_spans() if s.name == name]


def hex_ids(span: ReadableSpan) -> tuple[str, str]:
    context = span.get_span_context()
    assert context is not None
    return f"{context.trace_id:032x}", f"{context.span_id:016x}"


@dataclass
class WorkerRun:
    enqueued: dict[str, tuple[int, ReadableSpan]]  # job name: (job id, its enqueue span in this process)
    spans: list[dict[str, Any]]  # the worker's spans, as its exporter wrote them
    log_lines: list[str]  # its stderr


@pytest.fixture
def worker_run(store: Path, spans: InMemorySpanExporter, tmp_path: Path) -> WorkerRun:
    """One job that succeeds and one that fails twice, enqueued here and run by a
    worker subprocess with --log-format json that writes its spans to a file."""
    ok = jobs.traced_ok.delay("acme", 21)
    bad = jobs.traced_fail.delay("globex", "no such customer")
    [ok_span, bad_span] = named(spans, "fairqueue.enqueue")
    span_file = tmp_path / "spans.jsonl"
    environment = {**os.environ, "FQ_STORE": str(store), "FQ_SPANS": str(span_file),
                   "PYTHONPATH": os.pathsep.join([str(SUPPORT), os.environ.get("PYTHONPATH", "")])}  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, "-m", "fairqueue", "worker", "fq_traced_jobs:app", "--no-conservation", "--log-format", "json"],
        env=environment, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        wait_until(lambda: ok.status is fq.JobStatus.COMPLETED and bad.status is fq.JobStatus.DISCARDED, timeout=60,
                   what="the worker to finish both jobs")  # fmt: skip
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    written = [json.loads(line) for line in span_file.read_text().splitlines()]
    return WorkerRun({"ok": (ok.id, ok_span), "bad": (bad.id, bad_span)}, written, err.splitlines())


def test_a_run_span_in_the_worker_process_is_the_child_of_its_enqueue_span(worker_run: WorkerRun) -> None:
    job_id, enqueue = worker_run.enqueued["ok"]
    assert enqueue.kind is SpanKind.PRODUCER
    assert dict(enqueue.attributes or {}) == {
        "messaging.system": "fairqueue", "messaging.operation.type": "send", "fairqueue.org": "acme",
        "fairqueue.kind": "future", "fairqueue.handler": "fq_traced_jobs:traced_ok", "fairqueue.job.id": job_id,
        "messaging.message.id": str(job_id),
    }  # fmt: skip
    trace_id, enqueue_id = hex_ids(enqueue)
    [run] = [s for s in worker_run.spans if s["name"] == "fairqueue.run" and s["attributes"]["fairqueue.job.id"] == job_id]
    assert (run["trace_id"], run["parent_id"], run["kind"]) == (trace_id, enqueue_id, "CONSUMER")
    assert run["attributes"] == {
        "messaging.system": "fairqueue", "messaging.operation.type": "process", "fairqueue.org": "acme",
        "fairqueue.kind": "future", "fairqueue.handler": "fq_traced_jobs:traced_ok", "fairqueue.job.id": job_id,
        "messaging.message.id": str(job_id), "fairqueue.attempt": 1, "fairqueue.outcome": "completed",
    }  # fmt: skip
    assert run["status"] == "UNSET" and run["events"] == []
    # The handler's own spans are the run's children: the run span is current while it runs.
    [work] = [s for s in worker_run.spans if s["name"] == "handler.work"]
    assert (work["trace_id"], work["parent_id"]) == (trace_id, run["span_id"])


def test_each_failed_attempt_is_an_error_span_with_its_exception(worker_run: WorkerRun) -> None:
    job_id, enqueue = worker_run.enqueued["bad"]
    trace_id, enqueue_id = hex_ids(enqueue)
    runs = [s for s in worker_run.spans if s["name"] == "fairqueue.run" and s["attributes"]["fairqueue.job.id"] == job_id]
    assert [(r["attributes"]["fairqueue.attempt"], r["attributes"]["fairqueue.outcome"]) for r in runs] == [
        (1, "queued"), (2, "discarded")]  # fmt: skip
    for run in runs:
        assert (run["trace_id"], run["parent_id"]) == (trace_id, enqueue_id), "each attempt is a child of the enqueue"
        assert (run["status"], run["events"]) == ("ERROR", ["exception"])


def test_json_logs_carry_the_jobs_fields_a_final_failure_at_error(worker_run: WorkerRun) -> None:
    entries = [json.loads(line) for line in worker_run.log_lines]  # every line is one JSON object
    assert all({"time", "level", "logger", "message"} <= set(e) for e in entries)
    job_id, enqueue = worker_run.enqueued["bad"]
    trace_id, _ = hex_ids(enqueue)
    mine = [e for e in entries if e.get("job_id") == job_id]
    assert [(e["level"], e["attempt"]) for e in mine] == [("WARNING", 1), ("ERROR", 2)], mine
    final = mine[-1]
    assert (final["org"], final["kind"], final["exc_type"], final["exc_message"]) == (
        "globex", "future", "ValueError", "no such customer")  # fmt: skip
    assert "raise ValueError(reason)" in final["traceback"]
    assert final["trace_id"] == trace_id, "a line logged during a run names the run's trace"
    assert not [e for e in entries if e.get("job_id") == worker_run.enqueued["ok"][0]], "a success logs nothing"


def test_an_unknown_log_format_is_refused(store: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "fairqueue", "worker", "fq_traced_jobs:app", "--log-format", "xml"],
        env={**os.environ, "FQ_STORE": str(store)}, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2 and "'xml' is not one of 'text', 'json'" in done.stderr, done.stderr


def test_in_one_process_runs_and_their_failures_are_traced_too(store: Path, spans: InMemorySpanExporter) -> None:
    with jobs.app.testing():
        jobs.traced_fail.delay("acme", "bad input")
        # Held by the transaction until it ends: its enqueue span has no job id to name.
        with jobs.app.transaction():
            jobs.traced_ok.delay("acme", 1)
    enqueues = {s.attributes["fairqueue.handler"]: s for s in named(spans, "fairqueue.enqueue")}  # type: ignore[index]
    assert "fairqueue.job.id" not in (enqueues["fq_traced_jobs:traced_ok"].attributes or {})
    runs = named(spans, "fairqueue.run")
    assert len(runs) == 3  # two attempts of the failing job, one of the other
    for run in runs:
        parent = enqueues[run.attributes["fairqueue.handler"]]  # type: ignore[index]
        assert run.parent is not None and run.parent.span_id == parent.context.span_id  # type: ignore[union-attr]
    failed = [r for r in runs if r.status.status_code is StatusCode.ERROR]
    assert [r.status.description for r in failed] == ["ValueError: bad input",
                                                       "ValueError: bad input (attempt 2 of 2, retries exhausted)"]
    [event] = failed[-1].events
    assert (event.name, event.attributes["exception.type"], event.attributes["exception.message"]) == (  # type: ignore[index]
        "exception", "ValueError", "bad input")  # fmt: skip


def test_an_async_handlers_spans_are_children_of_its_run(store: Path, spans: InMemorySpanExporter) -> None:
    # The handler runs on the event loop's thread: the run's context must go along (call_soon_threadsafe copies it).
    with jobs.app.testing():
        jobs.traced_async.delay("acme", 2)
    [run] = named(spans, "fairqueue.run")
    assert (run.attributes or {})["fairqueue.outcome"] == "completed"
    [work] = named(spans, "handler.async_work")
    assert work.parent is not None and work.parent.span_id == run.context.span_id  # type: ignore[union-attr]


def test_a_bulk_enqueue_is_one_span_every_job_carries(store: Path, spans: InMemorySpanExporter) -> None:
    handles = jobs.traced_ok.delay_many("acme", [(i,) for i in range(3)])
    [enqueue] = named(spans, "fairqueue.enqueue")
    assert (enqueue.attributes or {})["messaging.batch.message_count"] == 3
    trace_id, span_id = hex_ids(enqueue)
    for handle in handles:
        carried = json.loads(handle.record().payload)[tracing.TRACE_KEY]
        version, carried_trace, carried_parent, _flags = carried["traceparent"].split("-")
        assert (version, carried_trace, carried_parent) == ("00", trace_id, span_id)


def test_without_a_tracer_provider_nothing_is_traced_or_carried(store: Path) -> None:
    assert tracing.tracer() is None
    handle = jobs.traced_ok.delay("acme", 2)
    assert tracing.TRACE_KEY not in json.loads(handle.record().payload)


def test_without_opentelemetry_installed_jobs_enqueue_and_run() -> None:
    script = (
        "import sys; sys.modules['opentelemetry'] = None\n"  # as if the otel extra were not installed
        "import fq_sample_jobs as sample\n"
        "from fairqueue import tracing\n"
        "assert tracing.tracer() is None and tracing.current_ids() is None\n"
        "with sample.app.testing() as run:\n"
        "    sample.noop.delay('org-1')\n"
        "[job] = run.jobs()\n"
        "assert job.status.value == 'completed' and 'trace' not in job.payload, job\n"
    )
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SUPPORT), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, env=environment)
    assert done.returncode == 0, done.stderr


def test_the_json_formatter_keeps_every_extra_and_shows_what_is_not_json(spans: InMemorySpanExporter) -> None:
    record = logging.LogRecord("fairqueue.worker", logging.WARNING, __file__, 1, "job %d: %s", (7, "late"), None)
    for name, value in {"job_id": 7, "org": "acme", "where": Path("/tmp/x"), "job_ids": [1, 2]}.items():
        setattr(record, name, value)  # as logging does for extra=
    with trace.get_tracer("test").start_as_current_span("outer") as outer:
        entry = json.loads(JsonFormatter().format(record))
    context = outer.get_span_context()
    assert entry == {"time": entry["time"], "level": "WARNING", "logger": "fairqueue.worker", "message": "job 7: late",
                     "job_id": 7, "org": "acme", "where": "/tmp/x", "job_ids": [1, 2],
                     "trace_id": f"{context.trace_id:032x}", "span_id": f"{context.span_id:016x}"}  # fmt: skip
    assert entry["time"].endswith("+00:00")


def test_an_unknown_log_format_is_refused_by_name() -> None:
    with pytest.raises(fq.InvalidArgument, match="invalid log format 'xml': expected one of text, json"):
        configure_logs("xml")
