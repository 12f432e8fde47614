"""OpenTelemetry spans for enqueues and runs, when the ``otel`` extra is installed.

Every enqueue gets a ``fairqueue.enqueue`` span (kind PRODUCER) around its store
call, and every delivery a ``fairqueue.run`` span (kind CONSUMER) around its
handler. The enqueue span's context travels with the job in its JSON payload,
under the reserved key ``"trace"`` as W3C Trace Context (``{"traceparent": …,
"tracestate": …}``), so the run is the enqueue's child in the same trace even in
another process or on another host; no column of the schema holds it.

Off costs a couple of attribute reads per enqueue and run: without opentelemetry
installed, or until the application sets a tracer provider
(``opentelemetry.trace.set_tracer_provider``, at any time: the next run or enqueue
sees it), :func:`tracer` returns ``None`` and no span, context or carrier is made.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Optional

from fairqueue.records import JobRecord, NewJob

try:
    from opentelemetry import trace as otel
    from opentelemetry.trace import NoOpTracerProvider, ProxyTracerProvider, SpanKind, Status, StatusCode
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
except ImportError:  # the otel extra is not installed: tracing stays off
    otel = None  # type: ignore[assignment]

if TYPE_CHECKING:
    from opentelemetry.trace import Span, Tracer

__all__ = ["TRACE_KEY", "current_ids", "enqueue_span", "failed", "finished", "run_span", "stored", "tracer"]

TRACE_KEY = "trace"
"""The payload key that carries the enqueue's W3C trace context (reserved: fairqueue builds every payload's top level)."""

# W3C Trace Context explicitly, not the global propagator: what is stored in a
# record must be readable by every worker, whatever each process configured.
_PROPAGATOR = TraceContextTextMapPropagator() if otel is not None else None
# (the provider last seen, its fairqueue tracer or None when it traces nothing): one tuple, swapped whole, so threads need no lock.
_seen: tuple[Any, Optional[Tracer]] = (None, None)

# Until a provider is set, opentelemetry.trace.get_tracer_provider() looks OTEL_PYTHON_TRACER_PROVIDER up in
# os.environ on every call: a microsecond per job and per enqueue with tracing off. The API module keeps the
# provider it was given in its global _TRACER_PROVIDER, which set_tracer_provider() assigns, so once the first
# call went through get_tracer_provider() (which loads the provider the environment names, if it names one),
# reading that global sees a provider set at any later time on the very next call. The name is opentelemetry's
# private one, read as a key of the module's namespace: should a release drop it, every call goes through
# get_tracer_provider() again, as before. (OTEL_PYTHON_TRACER_PROVIDER set in os.environ after the first call
# is not seen: the environment names a provider at start, code sets one with set_tracer_provider().)
_PROVIDER_GLOBAL = "_TRACER_PROVIDER"
_api_globals: Optional[dict[str, Any]] = None
"""The opentelemetry API module's namespace, once the environment was consulted (and if it holds the provider)."""


def tracer() -> Optional[Tracer]:
    """fairqueue's tracer from the global tracer provider, or ``None`` while tracing is off."""
    global _seen, _api_globals
    if otel is None:
        return None
    if _api_globals is not None:
        provider = _api_globals[_PROVIDER_GLOBAL]
        if provider is None:
            return None
    else:
        provider = otel.get_tracer_provider()
        namespace = vars(otel)
        if _PROVIDER_GLOBAL in namespace:
            _api_globals = namespace
    if provider is not _seen[0]:
        # Until a provider is set, the API's proxy hands out non-recording spans: skip them altogether.
        off = isinstance(provider, (ProxyTracerProvider, NoOpTracerProvider))
        _seen = (provider, None if off else provider.get_tracer("fairqueue"))
    return _seen[1]


def _attributes(org: str, kind: str, handler: str, operation: str) -> dict[str, Any]:
    return {"messaging.system": "fairqueue", "messaging.operation.type": operation,
            "fairqueue.org": org, "fairqueue.kind": kind, "fairqueue.handler": handler}  # fmt: skip


def _carrying(new: NewJob, carrier: str) -> NewJob:
    # Spliced into the encoded text (a JSON object with keys of fairqueue's own) rather than decoded and encoded again.
    rest = new.payload[1:].lstrip()
    return new._replace(payload=f'{{"{TRACE_KEY}":{carrier}' + ("," if rest != "}" else "") + rest)


@contextmanager
def enqueue_span(tracer: Tracer, news: Sequence[NewJob]) -> Iterator[tuple[Span, list[NewJob]]]:
    """A ``fairqueue.enqueue`` span for storing ``news`` (one job, or a bulk enqueue of
    one org, kind and handler), and the jobs with its context in their payloads.
    Set the job id (:func:`stored`) once the store has given one."""
    first = news[0]
    attributes = _attributes(first.org, first.kind, first.handler, "send")
    if len(news) > 1:
        attributes["messaging.batch.message_count"] = len(news)
    with tracer.start_as_current_span("fairqueue.enqueue", kind=SpanKind.PRODUCER, attributes=attributes) as span:
        carrier: dict[str, str] = {}
        _PROPAGATOR.inject(carrier)
        text = json.dumps(carrier, separators=(",", ":"))
        yield span, [_carrying(new, text) for new in news]


def stored(span: Span, job_id: int) -> None:
    """Names the stored job on its enqueue span."""
    span.set_attribute("fairqueue.job.id", job_id)
    span.set_attribute("messaging.message.id", str(job_id))


@contextmanager
def run_span(tracer: Tracer, record: JobRecord, body: dict[str, Any]) -> Iterator[Span]:
    """A ``fairqueue.run`` span for one delivery of ``record``, a child of its enqueue's
    span when the payload ``body`` carries that context."""
    carrier = body.get(TRACE_KEY)
    parent = _PROPAGATOR.extract(carrier) if isinstance(carrier, dict) else None
    attributes = _attributes(record.org, record.kind, record.handler, "process")
    attributes.update({"fairqueue.job.id": record.id, "messaging.message.id": str(record.id),
                       "fairqueue.attempt": record.handler_attempts + 1})  # fmt: skip
    with tracer.start_as_current_span("fairqueue.run", context=parent, kind=SpanKind.CONSUMER, attributes=attributes,
                                      record_exception=False, set_status_on_exception=False) as span:  # fmt: skip
        yield span


def finished(span: Span, status: str, error: Optional[str]) -> None:
    """Marks a run span with the delivery's outcome (a job that ends failed or discarded: an error)."""
    span.set_attribute("fairqueue.outcome", status)
    if status in ("failed", "discarded"):
        span.set_status(Status(StatusCode.ERROR, error))


def failed(span: Optional[Span], error: BaseException) -> None:
    """Records a handler's exception on its run span (if there is one) and marks the span failed."""
    if span is not None:
        span.record_exception(error)
        span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))


def current_ids() -> Optional[tuple[str, str]]:
    """The current span's trace and span id (hex, as W3C writes them), for log lines; ``None`` outside a recording span."""
    if otel is None:
        return None
    context = otel.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return f"{context.trace_id:032x}", f"{context.span_id:016x}"
