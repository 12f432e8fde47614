"""Jobs of the tracing and log tests (tests/integration/test_tracing.py).

The app's store comes from ``FQ_STORE``. A worker subprocess started with
``FQ_SPANS`` set installs an OpenTelemetry SDK tracer provider at import that
appends every finished span to that file as one JSON line (O_APPEND, one write
per span), so the test process can read the worker's spans; the test process
itself leaves ``FQ_SPANS`` unset and sets up its own provider.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

from opentelemetry import trace

import fairqueue as fq

app = fq.FairQueue(
    os.environ.get("FQ_STORE", ":memory:"),
    # One retry at once: a failing job logs a retried attempt (WARNING), then its final failure (ERROR).
    limits=fq.Limits(slots=2, retry=fq.RetryPolicy(max_attempts=2, backoff="constant", base=0.0, jitter=0.0)),
)


@app.future
def traced_ok(n: int) -> int:
    """Succeeds, inside a span of its own (a child of the run span, if tracing is on)."""
    with trace.get_tracer("fq_traced_jobs").start_as_current_span("handler.work"):
        return n * 2


@app.future
async def traced_async(n: int) -> int:
    """As ``traced_ok``, on the runner's event loop thread."""
    with trace.get_tracer("fq_traced_jobs").start_as_current_span("handler.async_work"):
        return n * 3


@app.future
def traced_fail(reason: str) -> None:
    """Fails on every attempt."""
    raise ValueError(reason)


def _span_line(span: Any) -> str:
    context = span.get_span_context()
    return json.dumps({
        "name": span.name,
        "kind": span.kind.name,
        "trace_id": f"{context.trace_id:032x}",
        "span_id": f"{context.span_id:016x}",
        "parent_id": f"{span.parent.span_id:016x}" if span.parent is not None else None,
        "attributes": dict(span.attributes or {}),
        "status": span.status.status_code.name,
        "events": [event.name for event in span.events],
    })  # fmt: skip


if os.environ.get("FQ_SPANS"):
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

    class JsonLinesExporter(SpanExporter):
        """Appends each span to a file, one JSON object per line."""

        def __init__(self, path: str) -> None:
            self.path = path

        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, "".join(_span_line(span) + "\n" for span in spans).encode())
            finally:
                os.close(fd)
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(JsonLinesExporter(os.environ["FQ_SPANS"])))
    trace.set_tracer_provider(provider)
