"""Topic creation: every topic rowstream reads or writes, with its final partition count.

Run before the first worker starts (``faust -A app create-topics``; ``make run`` and the tests do
it for you). Creating topics up front matters: a broker that auto-creates topics would pick its
own partition count, and the shard layout depends on the count being exactly ROWSTREAM_PARTITIONS.
Existing topics with a different count are an error, never silently reused.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError

log = logging.getLogger("rowstream.admin")


class TopicError(Exception):
    """Topics cannot be created or do not match the settings; the message says what to do."""


def bootstrap_servers(broker_url: str) -> str:
    """``kafka://h1:9092;h2:9092`` (Faust's form) → ``h1:9092,h2:9092`` (aiokafka's)."""
    hosts = []
    for part in broker_url.replace(",", ";").split(";"):
        part = part.strip()
        if part:
            hosts.append(part.split("://", 1)[-1].rstrip("/"))
    return ",".join(hosts)


def side_consumer(
    broker_url: str, client_id: str, group_id: str | None = None, **options: Any
) -> AIOKafkaConsumer:
    """A consumer beside the worker's own: it reads offsets or records and never joins a group
    (it is assigned partitions or only asks for offsets), and never commits. Every such
    connection of rowstream is made here (the lag monitor, the group's offsets, the CLI's
    reader)."""
    return AIOKafkaConsumer(
        bootstrap_servers=bootstrap_servers(broker_url),
        group_id=group_id,
        enable_auto_commit=False,
        client_id=client_id,
        **options,
    )


async def ensure_topics(
    broker_url: str,
    wanted: dict[str, int],
    replication: int = 1,
    timeout: float = 30.0,
    configs: dict[str, str] | None = None,
) -> list[str]:
    """Create the missing topics of ``wanted`` (name → partitions) with topic ``configs``;
    return the names created."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap_servers(broker_url), request_timeout_ms=int(timeout * 1000)
    )
    try:
        await asyncio.wait_for(admin.start(), timeout)
    except (TimeoutError, KafkaError, OSError) as exc:
        raise TopicError(f"cannot reach the broker at {broker_url}: {exc!r}") from None
    try:
        existing = set(await admin.list_topics())
        missing = [name for name in wanted if name not in existing]
        if missing:
            await admin.create_topics(
                [
                    NewTopic(
                        name,
                        wanted[name],
                        replication_factor=replication,
                        topic_configs=configs or {},
                    )
                    for name in missing
                ]
            )
        present = [name for name in wanted if name in existing]
        if present:
            for description in await admin.describe_topics(present):
                count = len(description["partitions"])
                name = description["topic"]
                if count != wanted[name]:
                    raise TopicError(
                        f"topic {name} has {count} partitions but the settings need "
                        f"{wanted[name]}: set ROWSTREAM_PARTITIONS={count} or use a new "
                        f"ROWSTREAM_TOPIC_PREFIX (changing the count of a live topic moves rows "
                        f"between partitions and breaks per-row order)"
                    )
        for name in missing:
            log.info("created topic %s with %d partitions", name, wanted[name])
        return missing
    finally:
        await admin.close()
