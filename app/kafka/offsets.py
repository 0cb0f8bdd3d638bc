"""The consumer group's committed offsets, asked of the broker by a client outside the group.

Faust's own view of them is not usable for this: it is filled in only once Faust has sought to
the committed offsets after a rebalance, and events can arrive before that (``app.kafka.ordering``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, TypeVar

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from mode import Service
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, wait_random_exponential

from app.kafka.security import Broker
from app.kafka.topic_setup import side_consumer

log = logging.getLogger("rowstream.offsets")
T = TypeVar("T")


class GroupOffsets(Service):
    """One OffsetFetch per partition, concurrently (tansu truncates the answer for "all
    partitions"); retried with capped backoff while the broker does not answer."""

    def __init__(self, broker: Broker, group_id: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.broker = broker
        self.group_id = group_id
        self._client: AIOKafkaConsumer | None = None
        self._connecting = asyncio.Lock()

    async def _connect(self) -> AIOKafkaConsumer:
        async with self._connecting:
            if self._client is None:
                client = side_consumer(  # the group's id, to read its offsets
                    self.broker, f"{self.group_id}-offsets", self.group_id
                )
                await client.start()
                self._client = client
            return self._client

    async def committed(
        self, partitions: Iterable[TopicPartition]
    ) -> dict[TopicPartition, int | None]:
        """The group's committed offset of each partition (None: nothing committed yet)."""
        wanted = list(partitions)

        async def ask(client: AIOKafkaConsumer) -> dict[TopicPartition, int | None]:
            answers = await asyncio.gather(*(client.committed(tp) for tp in wanted))
            return dict(zip(wanted, answers))

        return await self._retrying(ask)

    async def starts(self, partitions: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
        """Where a consumer of the group starts each partition: its committed offset, or the
        first offset still in the log when nothing was committed or retention deleted past it."""
        wanted = list(partitions)
        committed = await self.committed(wanted)
        first = await self._retrying(lambda client: client.beginning_offsets(wanted))
        return {
            tp: first[tp] if committed[tp] is None else max(committed[tp], first[tp])
            for tp in wanted
        }

    async def _retrying(self, ask: Callable[[AIOKafkaConsumer], Awaitable[T]]) -> T:
        async for attempt in AsyncRetrying(
            retry=retry_if_exception_type((KafkaError, OSError, asyncio.TimeoutError)),
            wait=wait_random_exponential(multiplier=0.1, max=5.0),
            before_sleep=_log_retry,
        ):
            with attempt:
                return await asyncio.wait_for(ask(await self._connect()), timeout=10.0)
        raise AssertionError("unreachable: AsyncRetrying retries until it returns")

    async def on_stop(self) -> None:
        if self._client is not None:
            await self._client.stop()


def _log_retry(state: RetryCallState) -> None:
    assert state.outcome is not None and state.next_action is not None
    log.warning(
        "reading the group's committed offsets failed (attempt %d): %r; retrying in %.1fs",
        state.attempt_number,
        state.outcome.exception(),
        state.next_action.sleep,
    )


__all__ = ["GroupOffsets"]


async def fetched_ends(
    broker: Broker, partitions: Iterable[TopicPartition], timeout: float = 10.0
) -> dict[TopicPartition, int]:
    """The log end offset of each partition, from the high watermark of a fetch (tansu's
    ListOffsets answers it too low: broker-notes). Raises TimeoutError after ``timeout``."""
    wanted = list(partitions)
    consumer = side_consumer(broker, "rowstream-ends", max_partition_fetch_bytes=1024)
    await consumer.start()
    try:
        consumer.assign(wanted)
        await consumer.seek_to_beginning(*wanted)
        started_ms = int(time.time() * 1000)
        deadline = time.monotonic() + timeout
        while True:
            fresh = {
                tp: consumer.highwater(tp)
                for tp in wanted
                if (consumer.last_poll_timestamp(tp) or 0) >= started_ms
            }
            if len(fresh) == len(wanted):
                return {tp: end or 0 for tp, end in fresh.items()}
            if time.monotonic() > deadline:
                raise TimeoutError(f"no fetch answered for {len(wanted) - len(fresh)} partitions")
            await consumer.getmany(timeout_ms=200, max_records=1)
    finally:
        await consumer.stop()
