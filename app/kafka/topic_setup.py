"""Topic creation: every topic rowstream reads or writes, with its final partition count.

Run before the first worker starts (``faust -A app create-topics``; ``make run`` and the tests do
it for you). Creating topics up front matters: a broker that auto-creates topics would pick its
own partition count, and the shard layout depends on the count being exactly ROWSTREAM_PARTITIONS.
Existing topics with a different count are an error, never silently reused: ``create-topics``
refuses them, and so does a worker at start (``check_topics``).
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


async def _admin(broker: Broker, timeout: float) -> AIOKafkaAdminClient:
    admin = AIOKafkaAdminClient(**broker.client_options(), request_timeout_ms=int(timeout * 1000))
    try:
        await asyncio.wait_for(admin.start(), timeout)
    except CONNECTION_ERRORS as exc:
        if not broker_failed(exc):
            raise
        raise TopicError(describe_failure(exc, broker)) from None
    return admin


async def _check_counts(admin: AIOKafkaAdminClient, wanted: dict[str, int]) -> None:
    """Raise ``TopicError`` for a topic of ``wanted`` (all existing) with another count."""
    for description in await admin.describe_topics(list(wanted)):
        count = len(description["partitions"])
        name = description["topic"]
        if count != wanted[name]:
            raise TopicError(
                f"topic {name} has {count} partitions but the settings need {wanted[name]}: set "
                f"ROWSTREAM_PARTITIONS or ROWSTREAM_INTERNAL_PARTITIONS to what the topics have, "
                f"or use a new ROWSTREAM_TOPIC_PREFIX (changing the count of a live topic moves "
                f"rows between partitions and breaks per-row order)"
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
    admin = await _admin(broker, timeout)
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
        present = {name: count for name, count in wanted.items() if name in existing}
        if present:
            await _check_counts(admin, present)
        for name in missing:
            log.info("created topic %s with %d partitions", name, wanted[name])
        return missing
    finally:
        await admin.close()


async def check_topics(broker: Broker, wanted: dict[str, int], timeout: float = 30.0) -> None:
    """The worker's start check: raise ``TopicError`` when a topic of ``wanted`` is missing or
    has another partition count than the settings give it. Started on a topic with another
    count, a worker would route a row's new updates to another partition than its waiting ones."""
    admin = await _admin(broker, timeout)
    try:
        existing = set(await admin.list_topics())
        missing = sorted(name for name in wanted if name not in existing)
        if missing:
            raise TopicError(
                f"topic {missing[0]} does not exist"
                + (f" (nor {len(missing) - 1} more)" if len(missing) > 1 else "")
                + ": run `faust -A app create-topics` before the first worker"
            )
        await _check_counts(admin, wanted)
    finally:
        await admin.close()
