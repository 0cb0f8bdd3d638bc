"""OpenTelemetry tracing across the queue: off, and free, unless configured.

* Ingest opens a span per request and puts its context in each Kafka message's headers
  (``traceparent``, W3C trace context); the repartition carries it into the update's entry of
  its batch record (``tp``, see ``app.model.events``).
* The sink opens one span per batch write, with a **link** to each event's ingest span (no parent
  across the queue: one write serves many requests) and the attributes ``rowstream.shard``,
  ``rowstream.batch_size``, ``rowstream.coalesced``, ``rowstream.queue_seconds.max`` and
  ``.mean`` (now minus the time the API received the updates).

Tracing is on when ROWSTREAM_OTLP_ENDPOINT is set (spans exported over OTLP/HTTP; needs the
``rowstream[tracing]`` extra) or when a test calls ``configure(exporter=...)``. When off, no
OpenTelemetry module is imported and each hook costs one ``if``.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Sequence
from typing import Any

HEADER = "traceparent"
MAX_LINKS = 128  # OpenTelemetry's default span link limit: the first 128 events of a batch

_tracer: Any = None  # an opentelemetry Tracer while tracing is on
_propagator: Any = None


def enabled() -> bool:
    return _tracer is not None


def configure(endpoint: str = "", exporter: Any = None) -> None:
    """Turn tracing on, exporting to ``exporter`` (tests) or to the OTLP/HTTP ``endpoint``."""
    global _tracer, _propagator
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    provider = TracerProvider(resource=Resource.create({"service.name": "rowstream"}))
    if exporter is not None:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    _tracer = provider.get_tracer("rowstream")
    _propagator = TraceContextTextMapPropagator()


def disable() -> None:
    global _tracer, _propagator
    _tracer = _propagator = None


@contextlib.contextmanager
def ingest(updates: int) -> Iterator[list[tuple[str, bytes]] | None]:
    """A span around one accepted request; yields the Kafka headers that carry its context
    (``None`` when tracing is off)."""
    if _tracer is None:
        yield None
        return
    with _tracer.start_as_current_span("rowstream.ingest") as span:
        span.set_attribute("rowstream.updates", updates)
        carrier: dict[str, str] = {}
        _propagator.inject(carrier)
        yield [(HEADER, carrier[HEADER].encode())] if HEADER in carrier else None


def header_of(headers: Any) -> bytes | None:
    """The trace context among a record's headers, if it carries one."""
    for name, value in headers or ():
        if name == HEADER:
            return value
    return None


def batch_written(
    shard: int, seconds: float, coalesced: int, events: Sequence[tuple[Any, float]]
) -> None:
    """Record one span for a batch write that took ``seconds`` and just ended. ``events`` are
    ``(message headers, produce timestamp in s)`` of the batch's events."""
    if _tracer is None:
        return
    from opentelemetry.trace import Link, get_current_span

    now = time.time()
    links = []
    for headers, _ in events[:MAX_LINKS]:
        value = dict(headers or ()).get(HEADER)
        if value:
            context = get_current_span(
                _propagator.extract({HEADER: value.decode()})
            ).get_span_context()
            if context.is_valid:
                links.append(Link(context))
    queued = [now - produced for _, produced in events]
    end_ns = time.time_ns()
    span = _tracer.start_span(
        "rowstream.write",
        links=links,
        start_time=end_ns - int(seconds * 1e9),
        attributes={
            "rowstream.shard": shard,
            "rowstream.batch_size": len(events),
            "rowstream.coalesced": coalesced,
            "rowstream.queue_seconds.max": max(queued, default=0.0),
            "rowstream.queue_seconds.mean": sum(queued) / len(queued) if queued else 0.0,
        },
    )
    span.end(end_time=end_ns)
