"""Cluster-wide lag: the newest snapshot of every worker, and ``GET /lag/``.

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

from app.main import app, layout, settings, topics
from app.observe.lag import PartitionLag, per_shard_totals
from app.ops.render import answer, table

log = logging.getLogger("rowstream.lag")

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


def cluster_lag() -> list[PartitionLag]:
    """The newest report of every partition, from every worker's last snapshot."""
    newest: dict[tuple[str, int], PartitionLag] = {}
    for raw in snapshots.values():
        try:
            entries = orjson.loads(raw)["partitions"]
        except (orjson.JSONDecodeError, KeyError, TypeError):
            continue  # not a snapshot (e.g. an empty value left by a table restore): skip it
        for entry in entries:
            lag = PartitionLag(**entry)
            key = (lag.topic, lag.partition)
            if key not in newest or newest[key].reported_at < lag.reported_at:
                newest[key] = lag
    return [newest[key] for key in sorted(newest)]


@app.page("/lag/")
@app.table_route(table=snapshots, exact_key="0")  # one partition: every key lives on its owner
async def lag_view(web, request):
    now = time.time()
    lags = cluster_lag()
    partitions = [{**lag.as_json(now), "topic": settings.unprefixed(lag.topic)} for lag in lags]
    shards = [
        {**total, "topic": settings.unprefixed(total["topic"])}
        for total in per_shard_totals(lags, layout.shard_of_partition, now)
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
    return answer(web, request, {"partitions": partitions, "shards": shards}, text)
