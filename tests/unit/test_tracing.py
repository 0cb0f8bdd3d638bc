"""Tracing: links across the queue and batch attributes with an in-memory exporter; nothing
imported and nothing done when tracing is off."""

import subprocess
import sys
import time

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from app.observe import tracing


@pytest.fixture
def exporter():
    exporter = InMemorySpanExporter()
    tracing.configure(exporter=exporter)
    yield exporter
    tracing.disable()


def test_batch_span_links_to_each_ingest_span_and_carries_its_attributes(exporter):
    produced = []
    for _ in range(3):
        with tracing.ingest(updates=2) as headers:
            assert headers and headers[0][0] == "traceparent"
            produced.append((headers, time.time() - 1.5))
    produced.append((None, time.time() - 0.5))  # an event produced without trace context
    tracing.batch_written(shard=1, seconds=0.02, coalesced=2, events=produced)

    spans = {span.name: span for span in exporter.get_finished_spans()}
    ingests = [s for s in exporter.get_finished_spans() if s.name == "rowstream.ingest"]
    write = spans["rowstream.write"]
    assert len(ingests) == 3 and ingests[0].attributes["rowstream.updates"] == 2
    assert {link.context.span_id for link in write.links} == {s.context.span_id for s in ingests}
    assert write.parent is None  # linked, not parented, across the queue
    assert {s.context.trace_id for s in ingests}.isdisjoint({write.context.trace_id})
    attributes = write.attributes
    assert (
        attributes["rowstream.shard"],
        attributes["rowstream.batch_size"],
        attributes["rowstream.coalesced"],
    ) == (1, 4, 2)
    assert 1.4 < attributes["rowstream.queue_seconds.max"] < 5
    assert (
        0.4 < attributes["rowstream.queue_seconds.mean"] < attributes["rowstream.queue_seconds.max"]
    )
    assert 0.015 < (write.end_time - write.start_time) / 1e9 < 0.05


def test_links_are_capped_at_the_span_limit(exporter):
    events = []
    for _ in range(tracing.MAX_LINKS + 5):
        with tracing.ingest(updates=1) as headers:
            events.append((headers, time.time()))
    tracing.batch_written(shard=0, seconds=0.01, coalesced=0, events=events)
    write = next(s for s in exporter.get_finished_spans() if s.name == "rowstream.write")
    assert len(write.links) == tracing.MAX_LINKS
    assert write.attributes["rowstream.batch_size"] == tracing.MAX_LINKS + 5


def test_off_means_no_import_and_no_headers():
    # The whole worker (app, agents, views) is built; tracing is off without an endpoint.
    code = "\n".join(
        [
            "import sys",
            "import app",
            "app.app",
            "from app.observe import tracing",
            "with tracing.ingest(3) as headers: assert headers is None",
            "tracing.batch_written(0, 0.1, 0, [(None, 0.0)])",
            "assert not tracing.enabled()",
            "loaded = [m for m in sys.modules if m.startswith('opentelemetry')]",
            "assert not loaded, loaded",
        ]
    )
    env = {"PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env
    )
    assert done.returncode == 0, done.stderr
