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

from app.kafka.security import CONNECTION_ERRORS, Broker, broker_failed, describe_failure

log = logging.getLogger("rowstream.admin")


class TopicError(Exception):
    """Topics cannot be created or do not match the settings; the message says what to do."""


def side_consumer(
    broker: Broker, client_id: str, group_id: str | None = None, **options: Any
) -> AIOKafkaConsumer:
    """A consumer beside the worker's own: it reads offsets or records and never joins a group
    (it is assigned partitions or only asks for offsets), and never commits. Every such
    connection of rowstream is made here (the lag monitor, the group's offsets, the CLI's
    reader)."""
    return AIOKafkaConsumer(
        **broker.client_options(),
        group_id=group_id,
        enable_auto_commit=False,
        client_id=client_id,
        **options,
    )


async def ensure_topics(
    broker: Broker,
    wanted: dict[str, int],
    replication: int = 1,
    timeout: float = 30.0,
    configs: dict[str, str] | None = None,
) -> list[str]:
    """Create the missing topics of ``wanted`` (name → partitions) with topic ``configs``;
    return the names created."""
    admin = AIOKafkaAdminClient(**broker.client_options(), request_timeout_ms=int(timeout * 1000))
    try:
        await asyncio.wait_for(admin.start(), timeout)
    except CONNECTION_ERRORS as exc:
        if not broker_failed(exc):
            raise
        raise TopicError(describe_failure(exc, broker)) from None
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
