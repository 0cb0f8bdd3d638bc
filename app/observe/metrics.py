"""Every Prometheus metric of rowstream, defined once (names are a contract: docs/operating.md).

Served at ``GET /metrics`` on every worker (``REGISTRY``) and on the ingest tier
(``ingest_exposition``: the ``rowstream_ingest_*`` metrics). Lag gauges cover the partitions this
worker owns; sum or max them across workers (each partition has exactly one owner at a time).

The ingest tier runs several processes on one port, so its counters live in prometheus_client's
multiprocess mode (memory-mapped files in ``PROMETHEUS_MULTIPROC_DIR``, which the tier sets
before this module is imported): any of its processes answers ``/metrics`` with the sums of all.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector

disable_created_metrics()  # no `*_created` series: they double the output and nobody graphs them
REGISTRY = CollectorRegistry(auto_describe=True)

MESSAGE_LAG = Gauge(
    "rowstream_message_lag",
    "Log end offset minus the group's committed offset, per partition this worker owns.",
    ["topic", "partition"],
    registry=REGISTRY,
)
WAITING_UPDATES = Gauge(
    "rowstream_waiting_updates",
    "Updates held by the records counted in rowstream_message_lag (batch records and update "
    "batches hold many), per partition this worker owns.",
    ["topic", "partition"],
    registry=REGISTRY,
)
TIME_LAG = Gauge(
    "rowstream_time_lag_seconds",
    "Now minus the timestamp of the oldest message not yet committed (0 when none waits).",
    ["topic", "partition"],
    registry=REGISTRY,
)
ROWS_WRITTEN = Counter(
    "rowstream_shard_rows_written",
    "Rows changed in the shard (rows whose stored version was newer are not counted).",
    ["shard"],
    registry=REGISTRY,
)
EVENTS_COALESCED = Counter(
    "rowstream_shard_events_coalesced",
    "Events folded into another event of the same row in a batch.",
    ["shard"],
    registry=REGISTRY,
)
WRITE_SECONDS = Histogram(
    "rowstream_shard_write_seconds",
    "Time to write one batch to the shard, retries included.",
    ["shard"],
    registry=REGISTRY,
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
BATCH_SIZE = Histogram(
    "rowstream_shard_batch_size",
    "Events in one batch written to the shard.",
    ["shard"],
    registry=REGISTRY,
    buckets=(1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000),
)
SHARD_ERRORS = Counter(
    "rowstream_shard_errors",
    "Failed writes to the shard, by kind: transient (retried) or rejected (dead-lettered).",
    ["shard", "kind"],
    registry=REGISTRY,
)
SHARD_UP = Gauge(
    "rowstream_shard_up",
    "1 when the last write to or ping of the shard succeeded, 0 when it failed.",
    ["shard"],
    registry=REGISTRY,
)
RATE_LIMITED = Counter(
    "rowstream_ingest_rate_limited",
    "Write requests refused with 429 by the per-key rate limit, by key name (never the key).",
    ["key"],
    registry=REGISTRY,
)
INGEST_REQUESTS = Counter(
    "rowstream_ingest_requests",
    "HTTP write and read requests of the API, by response status.",
    ["status"],
    registry=REGISTRY,
)
INGEST_EVENTS = Counter(
    "rowstream_ingest_events",
    "Updates accepted by the API (acknowledged by the broker).",
    registry=REGISTRY,
)
DEAD_LETTERS = Counter(
    "rowstream_dead_letters",
    "Events sent to the dead-letter topic, by reason.",
    ["reason"],
    registry=REGISTRY,
)
READ_AGAIN = Counter(
    "rowstream_consumer_skips",
    "Times the consumer delivered a record past one it had skipped, and the agent read the "
    "partition again from the skipped one (see app/kafka/ordering.py), by topic.",
    ["topic"],
    registry=REGISTRY,
)
FORWARD_FAILURES = Counter(
    "rowstream_forward_failures",
    "Events the repartition could not forward to the internal topic (the broker refused them or "
    "timed out); their partition is read again from the first of them.",
    registry=REGISTRY,
)
MOVED_AWAY = Counter(
    "rowstream_sink_moved_away",
    "Updates the sink read again from the block of a shard their slot has moved away from "
    "(replays of updates the move's drain had applied there): not written.",
    registry=REGISTRY,
)


INGEST_PREFIX = "rowstream_ingest_"


class _IngestOnly:
    """The multiprocess collector's families of the ingest tier (the files also hold the
    worker's unlabeled metrics, created at import and never used by the tier)."""

    def __init__(self, path: str) -> None:
        self._all = MultiProcessCollector(None, path)

    def collect(self) -> Any:
        return (f for f in self._all.collect() if f.name.startswith(INGEST_PREFIX))


def ingest_exposition(path: str) -> bytes:
    """The ingest tier's metrics in the text format, summed over its processes' files in
    ``path`` (its PROMETHEUS_MULTIPROC_DIR)."""
    registry = CollectorRegistry()
    registry.register(_IngestOnly(path))
    return generate_latest(registry)
