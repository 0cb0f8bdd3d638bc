"""Sink: internal topic → Postgres shards, batched, coalesced, idempotent.

Input: ``rowstream-by-subscription`` (batch records, ``app.model.events``; partition in the app's shard
block); the agent receives *units*: the records of one partition from one fetch
(``app.kafka.consumer``), in offset order from the committed offset.
Output: rows in the app's Postgres shard; per-shard counts to the stats topic once a second.
Guarantee: a unit is acknowledged only after every transaction that applied one of its updates
committed, so offsets are committed only past applied updates; re-delivered updates change
nothing (version guard). A shard that fails holds only its own partitions (see ``app.sink.writer``).
Poison: an update of a batch record that does not validate, or one Postgres refuses, is
dead-lettered alone (with its record's coordinates and its index in the record); a record that is
not a batch record is dead-lettered whole.

The agent does not use ``take()``: the writers batch per shard (at most ROWSTREAM_BATCH_SIZE
updates, waiting at most ROWSTREAM_BATCH_WAIT), and a write that finishes later, in the writer's
own task, decides when a unit is acknowledged.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any, Sequence

import orjson
from mode import Service

from app.model import events
from app.observe import tracing
from app.sink.coalesce import Patch
from app.model.deadletter import Coordinates, app_key, dead_letter
from app.kafka.forwarding import Countdown
from app.main import app, layout, settings, shards
from app.kafka.topics import by_subscription_topic, send_dead_letter, stats_topic, updates_topic
from app.observe.tracing import HEADER
from app.sink.writer import BatchDone, Item, ShardWriter

log = logging.getLogger("rowstream.sink")

# Units arrive whole: one can hold a fetch of each of a shard's partitions (hundreds of updates
# each), so a shard's partitions pause only well above a batch or two of queued updates.
HIGH_WATER_MIN = 20_000


class Writers(Service):
    """One ShardWriter per shard, and their throughput sent to the stats topic once a second.

    Once a second, not once a batch: every stats record becomes several table changelog writes,
    and Faust stops all streams while more than 100 of those wait to be produced.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.counts = [Counter() for _ in settings.shards]
        self.errors_sent = [Counter() for _ in settings.shards]  # writer errors already sent
        self.by_shard = [
            ShardWriter(
                shard,
                shards,
                batch_size=settings.batch_size,
                batch_wait=settings.batch_wait,
                retry_max=settings.retry_max,
                on_batch=self.on_batch,
                on_rejected=on_rejected,
                on_backlog=on_backlog,
                high_water=max(4 * settings.batch_size, HIGH_WATER_MIN),
            )
            for shard in range(len(settings.shards))
        ]

    def on_init_dependencies(self):
        return self.by_shard

    async def on_batch(self, done: BatchDone, batch: Sequence[Item]) -> None:
        self.counts[done.shard].update(
            events=done.events, rows=done.rows, coalesced=done.coalesced, batches=1
        )
        if tracing.enabled():
            # Each update's ingest span context travels inside its batch record entry.
            tracing.batch_written(done.shard, done.seconds, done.coalesced, [
                ([(HEADER, versioned.trace.encode())] if versioned.trace else None,
                 versioned.received_at)
                for _, versioned in (item.origin for item in batch)])

    @Service.timer(1.0)
    async def _send_stats(self) -> None:
        await self.send_stats()

    async def on_stop(self) -> None:
        await self.send_stats()

    async def send_stats(self) -> None:
        for shard, counts in enumerate(self.counts):
            writer = self.by_shard[shard]
            for kind, total in writer.errors.items():
                counts[f"errors_{kind}"] += total - self.errors_sent[shard][kind]
                self.errors_sent[shard][kind] = total
            counts = +counts  # drop zero counts
            if counts:
                self.counts[shard] = Counter()
                await stats_topic.send(key=str(shard).encode(), value=orjson.dumps(dict(counts)))


async def on_rejected(item: Item, error: str) -> None:
    record, versioned = item.origin
    letter = dead_letter(
        key=versioned.app_id.encode(),
        value=events.encode_update(versioned.app_id, versioned.subscription_id,
                                   versioned.properties, versioned.received_at),
        reason="rejected",
        error=error,
        origin=Coordinates(updates_topic.get_topic_name(), versioned.source_partition,
                           versioned.version),
        seen=Coordinates(record.topic, record.partition, record.offset),
        index=versioned.index,
    )
    await send_dead_letter(letter)


async def dead_letter_bad(record: Any, bad: events.BadEntry) -> None:
    """Dead-letter an update of a batch record that does not validate (or the whole record)."""
    seen = Coordinates(record.topic, record.partition, record.offset)
    origin = seen
    if bad.version is not None and bad.source_partition is not None:
        origin = Coordinates(updates_topic.get_topic_name(), bad.source_partition, bad.version)
    key = app_key(bad.raw) if bad.index is not None else None
    await send_dead_letter(dead_letter(key, bad.raw, bad.error.reason, str(bad.error), origin,
                                       seen, bad.index))


def on_backlog(shard: int, paused: bool) -> None:
    """Pause a held shard's partitions past the writer's high water; resume them once drained.

    Faust's fetcher silently skips records already fetched for a partition that is paused
    while it walks a batch, and its position has moved past them (a lost update, found by the
    shard-outage fault test). So resuming first seeks each partition back to the next offset the
    delivery guard expects; the guard would also notice the skip at the partition's next event,
    but an idle partition has none.
    """
    topic = by_subscription_topic.get_topic_name()
    wanted = set(layout.partitions_of_shard(shard))
    tps = [tp for tp in app.consumer.assignment() if tp.topic == topic and tp.partition in wanted]
    if paused:
        log.warning("shard %d: backlog over %d events, pausing its partitions", shard,
                    writers.by_shard[shard].high_water)
        app.consumer.pause_partitions(tps)
    else:
        log.info("shard %d: backlog drained, resuming its partitions", shard)
        writers.add_future(_resume(tps))


async def _resume(tps: list) -> None:
    for tp in tps:
        expected = app.consumer.expected(tp)
        if expected is not None:
            await app.consumer.seek_wait({tp: expected})
    app.consumer.resume_partitions(tps)


writers = Writers()
app.service(writers)


@app.on_partitions_revoked.connect
async def forget_revoked(sender: Any, revoked: Any, **kwargs: Any) -> None:
    topic = by_subscription_topic.get_topic_name()
    partitions = {tp.partition for tp in revoked if tp.topic == topic}
    if partitions:
        for writer in writers.by_shard:
            writer.forget(partitions)


@app.agent(by_subscription_topic)
async def sink(stream):
    async for event in stream.noack().events():
        waiter = Countdown(event.ack, lambda why: None)  # a writer never fails: it retries
        by_shard: dict[int, list[Item]] = {}
        for record in event.value:
            updates, bad = events.decode_batch(record.value or b"")
            for part in bad:
                await dead_letter_bad(record, part)
            for versioned in updates:
                patch = Patch(versioned.app_id, versioned.subscription_id, versioned.version,
                              versioned.properties)
                by_shard.setdefault(layout.shard_of_app(versioned.app_id), []).append(
                    Item(patch, record.partition, waiter.succeeded, (record, versioned)))
        for shard, items in by_shard.items():
            waiter.expect(len(items))
            writers.by_shard[shard].extend(items)
        waiter.close()
