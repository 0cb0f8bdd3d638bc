"""Read a topic from a time or an offset up to its end, bounded by count and time.

The inspection commands' only way into Kafka: a consumer outside any group (it commits nothing
and moves no one's offsets). The end of each partition is its high watermark from fetch
responses, the same source of truth as the lag monitor.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterator

from aiokafka import TopicPartition

from app.kafka.security import Broker, describe_failure
from app.kafka.topic_setup import side_consumer
from app.ops.inspection import Seen


class ReadError(Exception):
    """The topic cannot be read; the message says why."""


async def read(
    broker: Broker,
    topic: str,
    *,
    since: float | None = None,
    offset: int | None = None,
    partitions: list[int] | None = None,
    timeout: float = 30.0,
    progress: bool = True,
) -> AsyncIterator[Seen]:
    """Every record of ``topic`` from ``since`` (epoch s) or ``offset`` (in each partition) to the
    end as it was when reading started. Stops early after ``timeout`` seconds."""
    consumer = side_consumer(broker, "rowstream-inspect", auto_offset_reset="earliest")
    try:
        await asyncio.wait_for(consumer.start(), 15)
    except (TimeoutError, OSError, Exception) as exc:
        await consumer.stop()
        raise ReadError(describe_failure(exc, broker)) from None
    try:
        known = consumer.partitions_for_topic(topic)
        if not known:
            await consumer._client.force_metadata_update()
            known = consumer.partitions_for_topic(topic)
        if not known:
            raise ReadError(f"no topic {topic!r} on {broker}")
        chosen = sorted(known) if partitions is None else partitions
        missing = sorted(set(chosen) - set(known))
        if missing:
            raise ReadError(
                f"topic {topic!r} has no partition {missing[0]} (it has 0..{max(known)})"
            )
        tps = [TopicPartition(topic, p) for p in chosen]
        consumer.assign(tps)
        if since is not None:
            found = await consumer.offsets_for_times({tp: int(since * 1000) for tp in tps})
            for tp in tps:
                if found.get(tp) is None:
                    await consumer.seek_to_end(tp)
                else:
                    consumer.seek(tp, found[tp].offset)
        elif offset is not None:
            for tp in tps:
                consumer.seek(tp, offset)
        else:
            await consumer.seek_to_beginning(*tps)

        started_ms = int(time.time() * 1000)
        ends: dict[TopicPartition, int] = {}
        done: set[TopicPartition] = set()
        deadline = time.monotonic() + timeout
        count, last_report = 0, time.monotonic()
        while len(done) < len(tps):
            if time.monotonic() > deadline:
                if progress:
                    print(
                        f"stopped after {timeout:g}s with {len(tps) - len(done)} partition(s) "
                        f"not read to the end",
                        file=sys.stderr,
                    )
                return
            batch = await consumer.getmany(*[tp for tp in tps if tp not in done], timeout_ms=200)
            for tp in tps:
                if tp not in ends and (consumer.last_poll_timestamp(tp) or 0) >= started_ms:
                    ends[tp] = consumer.highwater(tp) or 0  # the end as it was when we started
            for tp, records in batch.items():
                for record in records:
                    if record.offset >= ends.get(tp, record.offset + 1):
                        done.add(tp)
                        break
                    count += 1
                    yield Seen(
                        record.topic,
                        record.partition,
                        record.offset,
                        record.timestamp / 1000.0,
                        record.key,
                        record.value,
                        tuple(record.headers or ()),
                    )
            for tp in tps:
                if tp in ends and await consumer.position(tp) >= ends[tp]:
                    done.add(tp)
            if progress and time.monotonic() - last_report > 2:
                last_report = time.monotonic()
                print(
                    f"… read {count} record(s); {len(tps) - len(done)} partition(s) to go",
                    file=sys.stderr,
                )
    finally:
        await consumer.stop()
