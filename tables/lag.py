"""Cluster-wide lag: the newest snapshot of every worker, ``GET /lag/`` and ``GET /lag/history``
(the last 15 minutes, ``app.observe.history``, sampled here as snapshots arrive).

Each worker's lag monitor sends one snapshot per round to ``rowstream-lag`` (one partition, key =
the worker's URL); the agent below keeps the newest per worker in a table held by the owner of
that partition, and any other worker forwards ``GET /lag/`` there. A partition that moved is
reported by its new owner; the newest report of each partition wins. The table's name becomes a
changelog topic name: renaming it is a migration.
"""

from __future__ import annotations

import logging
import time

import faust
import orjson

from app.main import app, control, lag_history, settings, topics
from app.observe.history import WINDOW_SECONDS, lag_sample
from app.observe.lag import PartitionLag, per_shard_totals
from app.ops.render import answer, table

log = logging.getLogger("rowstream.lag")


def shard_of(topic: str, partition: int) -> int:
    """The shard a partition of the update or internal topic belongs to."""
    layout = control.layout
    blocks = layout.internal if topic == topics.internal_name else layout.source
    return blocks.shard_of(partition)


_schema: faust.Schema = faust.Schema(
    key_type=str, value_type=bytes, key_serializer="json", value_serializer="raw"
)
snapshots = app.Table("worker-lag", default=bytes, partitions=1, schema=_schema)


@app.agent(topics.lag)
async def keep_lag_snapshots(stream):
    """Input: one lag snapshot per worker per round (key worker URL). Output: the table."""
    async for event in stream.events():
        try:
            owner = orjson.loads(event.value)["owner"]
        except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
            log.warning("ignoring a malformed lag snapshot: %s", exc)
            continue
        snapshots[str(owner)] = event.value
        lag_history.offer(time.time(), _sample)


def _snapshots() -> list[dict]:
    """Every worker's last snapshot; a value that is none (e.g. an empty value left by a table
    restore) is skipped."""
    found = []
    for raw in snapshots.values():
        try:
            snapshot = orjson.loads(raw)
        except orjson.JSONDecodeError:
            continue
        if isinstance(snapshot, dict):
            found.append(snapshot)
    return found


def cluster_lag(workers: list[dict]) -> list[PartitionLag]:
    """The newest report of every partition, from every worker's last snapshot (``_snapshots``)."""
    newest: dict[tuple[str, int], PartitionLag] = {}
    for snapshot in workers:
        entries = snapshot.get("partitions")
        if not isinstance(entries, list):
            continue
        for entry in entries:
            lag = PartitionLag(**entry)
            key = (lag.topic, lag.partition)
            if key not in newest or newest[key].reported_at < lag.reported_at:
                newest[key] = lag
    return [newest[key] for key in sorted(newest)]


def cluster_dead_letters(workers: list[dict]) -> dict[str, int]:
    """Dead letters by reason, summed over every worker's last snapshot (each worker counts
    since it started)."""
    totals: dict[str, int] = {}
    for snapshot in workers:
        for reason, count in (snapshot.get("dead_letters") or {}).items():
            totals[reason] = totals.get(reason, 0) + int(count)
    return dict(sorted(totals.items()))


def _sample() -> dict:
    now, workers = time.time(), _snapshots()
    return {
        **lag_sample(cluster_lag(workers), shard_of, settings.unprefixed, now),
        "dead_letters": cluster_dead_letters(workers),
    }


@app.page("/lag/history")
@app.table_route(table=snapshots, exact_key="0")
async def lag_history_view(web, request):
    """The last 15 minutes of cluster-wide lag, one sample per lag round (the operator page)."""
    return web.json({
        "interval_seconds": lag_history.interval, "window_seconds": WINDOW_SECONDS,
        "samples": lag_history.samples(),
    })  # fmt: skip


@app.page("/lag/")
@app.table_route(table=snapshots, exact_key="0")  # one partition: every key lives on its owner
async def lag_view(web, request):
    now, workers = time.time(), _snapshots()
    lags = cluster_lag(workers)
    partitions = [{**lag.as_json(now), "topic": settings.unprefixed(lag.topic)} for lag in lags]
    shards = [
        {**total, "topic": settings.unprefixed(total["topic"])}
        for total in per_shard_totals(lags, shard_of, now)
    ]
    text = table(
        partitions,
        [
            "topic",
            "partition",
            "message_lag",
            "waiting_updates",
            "time_lag_seconds",
            "owner",
            "age_seconds",
        ],
    )
    text += "\n" + table(
        shards, ["topic", "shard", "message_lag", "waiting_updates", "time_lag_seconds"]
    )
    body = {
        "partitions": partitions,
        "shards": shards,
        "dead_letters": cluster_dead_letters(workers),
    }
    return answer(web, request, body, text)
