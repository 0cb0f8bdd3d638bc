"""The benchmark's baseline: the pipeline a new user would write first, kept here as the reference
(not part of rowstream). One Faust agent reads the update topic and upserts each event with aiopg
in its own transaction, with the same merge and version guard as rowstream.

Run by the benchmark as ``faust -A tests.bench.naive worker`` with NAIVE_BROKER, NAIVE_TOPIC,
NAIVE_GROUP, NAIVE_SHARDS (comma-separated DSNs) and NAIVE_PARTITIONS in the environment.
"""

from __future__ import annotations

import os

import aiopg
import faust
import orjson

from app.model.slots import even_shard_map, slot_of
from app.sink.sql import SCHEMA

UPSERT = """
INSERT INTO subscriptions (app_id, subscription_id, properties, version)
VALUES (%(a)s, %(s)s, jsonb_strip_nulls(%(p)s::jsonb), %(v)s)
ON CONFLICT (app_id, subscription_id) DO UPDATE
SET properties = jsonb_strip_nulls(subscriptions.properties || EXCLUDED.properties),
    version = EXCLUDED.version, updated_at = now()
WHERE subscriptions.version < EXCLUDED.version
"""

dsns = os.environ["NAIVE_SHARDS"].split(",")
partitions = int(os.environ["NAIVE_PARTITIONS"])
shard_map = even_shard_map(len(dsns))  # no internal topic: the app's shard takes its update
app = faust.App(
    os.environ["NAIVE_GROUP"],
    broker=os.environ["NAIVE_BROKER"],
    web_enabled=False,
    datadir=os.environ["NAIVE_DATADIR"],
    store="memory://",
    topic_allow_declare=False,
    broker_session_timeout=6,
    broker_heartbeat_interval=1.5,
    consumer_auto_offset_reset="earliest",
)
updates = app.topic(os.environ["NAIVE_TOPIC"], value_serializer="raw", key_serializer="raw")
pools: list = []


@app.agent(updates)
async def upsert_each(stream):
    if not pools:
        for dsn in dsns:
            pool = await aiopg.create_pool(dsn, minsize=1, maxsize=2)
            async with pool.acquire() as conn, conn.cursor() as cur:
                await cur.execute(SCHEMA)
            pools.append(pool)
    async for event in stream.events():
        update = orjson.loads(event.value)
        pool = pools[shard_map[slot_of(update["app_id"])]]
        async with pool.acquire() as conn, conn.cursor() as cur:  # autocommit: one transaction
            await cur.execute(
                UPSERT,
                {
                    "a": update["app_id"],
                    "s": update["subscription_id"],
                    "p": orjson.dumps(update["properties"]).decode(),
                    "v": event.message.offset,
                },
            )
