"""Test-side tools: the pipeline under test, a load client that records what the API accepted,
the model of the rows that follows from it, and direct Kafka and Postgres access."""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import psycopg2
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from app.kafka.names import INTERNAL
from app.kafka.security import bootstrap_servers
from app.model.partitioning import Blocks, Layout
from app.model.slots import SlotMap, even_shard_map, parse_shard_map
from app.sink.coalesce import apply
from deploy.local import free_port
from deploy.stack import ROOT, Ingest, Worker, faust

KEY = "test-key"
AUTH = {"Authorization": f"Bearer {KEY}"}


async def eventually(
    check: Callable[[], Awaitable[bool]], timeout: float, what: str, interval: float = 0.2
) -> None:
    """Wait until ``check()`` is true; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        await asyncio.sleep(interval)


@dataclass(frozen=True)
class Placement:
    """A layout and a live map together: where an app's rows are and where its updates go."""

    seeded: Layout
    slots: SlotMap

    @property
    def source(self) -> Blocks:
        return self.seeded.source

    @property
    def internal(self) -> Blocks:
        return self.seeded.internal

    def shard_of_app(self, app_id: str) -> int:
        return self.slots.shard_of_app(app_id)

    def source_partition(self, app_id: str) -> int:
        return self.seeded.source_partition(app_id)

    def target_partition(self, app_id: str, subscription_id: str) -> int:
        return self.seeded.internal.partition(self.shard_of_app(app_id), subscription_id)


@dataclass
class Pipeline:
    name: str
    env: dict[str, str]
    broker_url: str
    dsns: list[str]
    partitions: int  # of the update topic
    internal_partitions: int
    tmp: Path
    seed_shards: int = 0  # the shards the cluster was seeded with (0: all of dsns)
    workers: list[Worker] = field(default_factory=list)
    ingests: list[Ingest] = field(default_factory=list)

    @classmethod
    def create(
        cls,
        stack_broker: Any,
        postgres: Any,
        tmp: Path,
        partitions: int = 8,
        shards: int = 2,
        ports: dict[int, int] | None = None,
        prefix: str = "t",
        internal_partitions: int = 4,
        **settings: str,
    ) -> Pipeline:
        """A pipeline of its own on a running broker and Postgres: unique topics (made here),
        consumer group and shard databases; ``settings`` become ROWSTREAM_* variables (``broker=``
        points the pipeline at another broker than the stack's). The internal topic has fewer
        partitions than the update topic, so that a test mixing the two counts fails.
        ``ports`` sends a shard's connections to another port (a proxy the test owns)."""
        name = f"{prefix}{uuid.uuid4().hex[:10]}"
        databases = [f"{name}_shard{n}" for n in range(shards)]
        postgres.create_databases(databases)
        worker_dsns = [
            postgres.dsn(db).replace(
                f":{postgres.port}/", f":{(ports or {}).get(n, postgres.port)}/"
            )
            for n, db in enumerate(databases)
        ]
        env = {key: value for key, value in os.environ.items() if not key.startswith("ROWSTREAM_")}
        env.update(
            {
                "ROWSTREAM_BROKER": stack_broker.url,
                "ROWSTREAM_SHARDS": ",".join(worker_dsns),
                "ROWSTREAM_PARTITIONS": str(partitions),
                "ROWSTREAM_INTERNAL_PARTITIONS": str(internal_partitions),
                "ROWSTREAM_TOPIC_PREFIX": f"{name}-",
                "ROWSTREAM_GROUP_ID": name,
                "ROWSTREAM_API_KEYS": KEY,
                "ROWSTREAM_SESSION_TIMEOUT": "6",
            }
        )
        env.update({f"ROWSTREAM_{key.upper()}": value for key, value in settings.items()})
        pipeline = cls(
            name,
            env,
            env["ROWSTREAM_BROKER"],
            [postgres.dsn(db) for db in databases],
            partitions,
            internal_partitions,
            tmp,
            seed_shards=shards,
        )
        pipeline.create_topics()
        return pipeline

    @property
    def layout(self) -> Placement:
        """Where the seed puts each app and row (the tests' clusters are seeded by their first
        worker with the even map, a block of each topic per shard unless ROWSTREAM_INTERNAL_BLOCK
        says otherwise)."""
        shards = self.seed_shards or len(self.dsns)
        given = self.env.get("ROWSTREAM_SHARD_MAP")
        shard_map = parse_shard_map(given, shards) if given else even_shard_map(shards)
        block = int(self.env.get("ROWSTREAM_INTERNAL_BLOCK", 0))
        block = block or self.internal_partitions // shards
        return Placement(Layout(self.partitions, shard_map, shards, block), SlotMap.seed(shard_map))

    def add_shard(self, postgres: Any) -> str:
        """A new database appended to ROWSTREAM_SHARDS (for the processes started next); its
        DSN."""
        database = f"{self.name}_shard{len(self.dsns)}"
        postgres.create_databases([database])
        dsn = postgres.dsn(database)
        self.dsns.append(dsn)
        self.env["ROWSTREAM_SHARDS"] += f",{dsn}"
        return dsn

    def partitions_of(self, name: str) -> range:
        """The partitions of topic ``name`` (unprefixed)."""
        return range(self.internal_partitions if name == INTERNAL else self.partitions)

    def topic(self, name: str) -> str:
        return f"{self.name}-{name}"

    def start_worker(self, port: int | None = None, **settings: str) -> Worker:
        port = port or free_port()
        env = {
            **self.env,
            "ROWSTREAM_WEB_PORT": str(port),
            "ROWSTREAM_DATA_DIR": str(self.tmp / f"worker-{port}"),
        }
        env.update({f"ROWSTREAM_{key.upper()}": value for key, value in settings.items()})
        worker = Worker(env, port, self.tmp / f"worker-{port}-{len(self.workers)}.log")
        worker.start()
        self.workers.append(worker)
        return worker

    def start_ingest(self, port: int | None = None, processes: int = 1, **settings: str) -> Ingest:
        """The ingest tier on ``port`` (a free one if not given), with the pipeline's settings
        and ``settings``: ``python -m app.ingest``, what the Procfile's ``faust -A app ingest``
        becomes (that command itself is run by ``make run``, the benchmark, and the TLS and SASL
        tests)."""
        port = port or free_port()
        env = {**self.env, **{f"ROWSTREAM_{key.upper()}": v for key, v in settings.items()}}
        log = self.tmp / f"ingest-{port}-{len(self.ingests)}.log"
        ingest = Ingest(env, port, log, processes, command=[sys.executable, "-m", "app.ingest"])
        ingest.start()
        self.ingests.append(ingest)
        return ingest

    def stop_all(self) -> None:
        for ingest in self.ingests:
            ingest.stop()
        for worker in self.workers:
            worker.stop()

    @staticmethod
    def log_tail(process: Worker | Ingest, chars: int = 6000) -> str:
        try:
            return process.log_path.read_text(errors="replace")[-chars:]
        except FileNotFoundError:
            return "(no log)"

    # --- Postgres ---------------------------------------------------------------------------

    def rows(
        self, only: str | None = None, shard_of_app: Callable[[str], int] | None = None
    ) -> dict[tuple[str, str], dict]:
        """Every row of every shard (or of app ``only``, asking only its shard):
        (app, subscription) → {properties, version, updated_at, shard}. With ``shard_of_app``
        (after a move), a row counts only on the shard it names."""
        found = {}
        shard_of_app = shard_of_app or self.layout.shard_of_app
        shards = [shard_of_app(only)] if only else range(len(self.dsns))
        for shard in shards:
            dsn = self.dsns[shard]
            conn = psycopg2.connect(dsn)
            try:
                with conn.cursor() as cur:
                    cur.execute("SELECT to_regclass('subscriptions') IS NOT NULL")
                    if not cur.fetchone()[0]:
                        continue
                    cur.execute(
                        "SELECT app_id::text, subscription_id::text, properties, version, "
                        "updated_at FROM subscriptions"
                    )
                    for app_id, sub, properties, version, updated_at in cur.fetchall():
                        if (only and app_id != only) or shard_of_app(app_id) != shard:
                            continue
                        found[(app_id, sub)] = {
                            "properties": properties,
                            "version": version,
                            "updated_at": updated_at,
                            "dsn": dsn,
                            "shard": shard,
                        }
            finally:
                conn.close()
        return found

    def properties(
        self, only: str | None = None, shard_of_app: Callable[[str], int] | None = None
    ) -> dict[tuple[str, str], dict]:
        return {key: row["properties"] for key, row in self.rows(only, shard_of_app).items()}

    async def wait_for_rows(
        self,
        expected: dict,
        timeout: float,
        what: str,
        only: str | None = None,
        shard_of_app: Callable[[str], int] | None = None,
    ) -> None:
        """Wait until the rows' properties (of app ``only``, if given; each read on the shard
        ``shard_of_app`` names) equal ``expected``; on timeout, show the difference."""

        def actual():
            return self.properties(only, shard_of_app)

        async def equal():
            return actual() == expected

        try:
            await eventually(equal, timeout, what)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{differences(expected, actual())}") from None

    def hold_shard(self, shard: int, held: bool = True) -> None:
        """Make a shard refuse connections (and cut the open ones), or accept them again."""
        database = self.dsns[shard].rsplit("/", 1)[1]
        conn = psycopg2.connect(self.dsns[shard].rsplit("/", 1)[0] + "/postgres")
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(
                    f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS {str(not held).lower()}'
                )
                if held:
                    cur.execute(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                        (database,),
                    )
        finally:
            conn.close()

    # --- Kafka ------------------------------------------------------------------------------

    def producer(self) -> AIOKafkaProducer:
        return AIOKafkaProducer(
            bootstrap_servers=bootstrap_servers(self.broker_url),
            acks="all",
            enable_idempotence=False,
        )

    async def read_topic(self, name: str, timeout: float = 20.0) -> list:
        """Every record of a topic, read to the high watermark of each partition (from fetch
        responses: ListOffsets 'latest' is unreliable on the embedded broker)."""
        consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap_servers(self.broker_url),
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )
        await consumer.start()
        try:
            partitions = consumer.partitions_for_topic(self.topic(name)) or set()
            tps = [TopicPartition(self.topic(name), p) for p in sorted(partitions)]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            records: list = []
            done: set = set()
            deadline = time.monotonic() + timeout
            while len(done) < len(tps) and time.monotonic() < deadline:
                batch = await consumer.getmany(*tps, timeout_ms=300)
                for messages in batch.values():
                    records.extend(messages)
                for tp in tps:
                    high = consumer.highwater(tp)
                    if high is not None and await consumer.position(tp) >= high:
                        done.add(tp)
            return records
        finally:
            await consumer.stop()

    async def committed(self, name: str, group: str | None = None) -> dict[int, int]:
        """A group's committed offsets of a topic (0 where none), asked partition by partition
        (the embedded broker truncates the answer for 'all partitions')."""
        consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap_servers(self.broker_url),
            group_id=group or self.name,
            enable_auto_commit=False,
        )
        await consumer.start()
        try:
            return {
                p: await consumer.committed(TopicPartition(self.topic(name), p)) or 0
                for p in self.partitions_of(name)
            }
        finally:
            await consumer.stop()

    async def updates_in(
        self, name: str, from_offsets: dict[int, int] | None = None
    ) -> dict[int, int]:
        """Per partition, the updates held by a topic's records (from ``from_offsets``, if given):
        a record with a ``format`` (batch record, update batch) holds its ``updates``."""
        counts = {p: 0 for p in self.partitions_of(name)}
        for record in await self.read_topic(name):
            if from_offsets is None or record.offset >= from_offsets[record.partition]:
                counts[record.partition] += updates_held(record.value)
        return counts

    async def end_offsets(self, name: str) -> dict[int, int]:
        """High watermark of each partition, from fetch responses."""
        counts = {p: 0 for p in self.partitions_of(name)}
        for record in await self.read_topic(name):
            counts[record.partition] = max(counts[record.partition], record.offset + 1)
        return counts

    def create_topics(self, **settings: str) -> None:
        env = {**self.env, **{f"ROWSTREAM_{k.upper()}": v for k, v in settings.items()}}
        done = subprocess.run(
            faust("create-topics"), env=env, cwd=ROOT, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr[-3000:]


def updates_held(value: bytes) -> int:
    body = orjson.loads(value)
    return len(body["updates"]) if "format" in body else 1


def rss_bytes(pid: int) -> int:
    """A process's resident memory, from /proc."""
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmRSS:"))


class Model:
    """What the rows must be: every accepted update applied in the order the API accepted it."""

    def __init__(self) -> None:
        self.rows: dict[tuple[str, str], dict] = {}
        self.accepted = 0

    def accept(self, app_id: str, subscription_id: str, properties: dict) -> None:
        key = (app_id, subscription_id)
        self.rows[key] = apply(self.rows.get(key, {}), properties)
        self.accepted += 1


def make_updates(
    apps: list[str], rows_per_app: int, total: int, hot_share: int, seed: int = 7
) -> list[tuple[str, str, dict]]:
    """``total`` updates over ``apps`` × ``rows_per_app`` rows, ``hot_share`` of them on one row.

    Update n sets a key unique to it (``u<n>``) and ``last``, and deletes the unique key its row
    got three updates earlier: a lost update leaves a key missing, a reordered one leaves a key
    that should have been deleted or the wrong ``last``.
    """
    rng = random.Random(seed)
    rows = [
        (app, f"{app[:8]}-0000-4000-8000-{n:012x}") for app in apps for n in range(rows_per_app)
    ]
    hot = rows[0]
    hot_turns = set(rng.sample(range(total), hot_share))
    history: dict[tuple[str, str], list[int]] = {}
    updates = []
    for n in range(total):
        row = hot if n in hot_turns else rng.choice(rows[1:])
        past = history.setdefault(row, [])
        properties: dict[str, Any] = {f"u{n}": n, "last": n}
        if len(past) >= 3:
            properties[f"u{past[-3]}"] = None
        past.append(n)
        updates.append((row[0], row[1], properties))
    return updates


class LoadClient:
    """Sends updates through the HTTP API and records exactly what was accepted, in order.

    Requests of one app go one after the other, so the order the API accepted them is the
    order they were sent; apps are sent concurrently.
    """

    def __init__(self, port: int, model: Model) -> None:
        self.base = f"http://127.0.0.1:{port}"
        self.model = model

    async def send(
        self, updates: list[tuple[str, str, dict]], batch: int = 1000, singles: int = 0
    ) -> None:
        by_app: dict[str, list] = {}
        for update in updates:
            by_app.setdefault(update[0], []).append(update)
        async with aiohttp.ClientSession(headers=AUTH) as session:
            await asyncio.gather(
                *(self._send_app(session, items, batch, singles) for items in by_app.values())
            )

    async def _send_app(self, session, items, batch, singles) -> None:
        position = 0
        for app_id, subscription_id, properties in items[:singles]:  # some as single PATCHes
            url = f"{self.base}/v1/apps/{app_id}/subscriptions/{subscription_id}"
            async with session.patch(url, json={"properties": properties}) as response:
                assert response.status == 202, await response.text()
            self.model.accept(app_id, subscription_id, properties)
            position += 1
        while position < len(items):
            chunk = items[position : position + batch]
            body = [{"app_id": a, "subscription_id": s, "properties": p} for a, s, p in chunk]
            async with session.post(f"{self.base}/v1/updates", json=body) as response:
                assert response.status == 202, await response.text()
                assert (await response.json()) == {"accepted": len(chunk)}
            for update in chunk:
                self.model.accept(*update)
            position += len(chunk)


def differences(expected: dict, actual: dict, limit: int = 5) -> str:
    keys = sorted(set(expected) | set(actual))
    wrong = [key for key in keys if expected.get(key) != actual.get(key)]
    lines = [f"{len(wrong)} of {len(keys)} rows differ"]
    for key in wrong[:limit]:
        lines.append(f"  {key}: expected {expected.get(key)} got {actual.get(key)}")
    return "\n".join(lines)
