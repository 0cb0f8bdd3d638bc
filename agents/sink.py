"""Sink: internal topic → Postgres shards, batched, coalesced, idempotent.

Input: ``rowstream-by-subscription`` (key subscription ID, partition in the app's shard block).
Output: rows in the app's Postgres shard; per-shard counts to the stats topic once a second.
Guarantee: an event is acknowledged only after the transaction that applied it committed, so
offsets are committed only past applied events; re-delivered events change nothing (version
guard). A shard that fails holds only its own events (see ``app.writer``). Events pass the
delivery guard first (``app.delivery``): the writers' coalescing and version guard are safe for
re-deliveries but not for skipped records, so an event delivered past a skipped record is dropped
unacknowledged and the partition is read again from the skipped one.

The agent does not use ``take()``: ``take_events`` acknowledges each batch as soon as the loop
body returns and ``noack_take`` hands out values without their events, so neither lets a write
that finishes later (per shard, in its own task) decide when the events are acknowledged. The
batching (at most ROWSTREAM_BATCH_SIZE events, waiting at most ROWSTREAM_BATCH_WAIT) lives in
the per-shard writers instead.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any, Sequence

import orjson
from mode import Service

from app import delivery, events, tracing
from app.coalesce import Patch
from app.deadletter import Coordinates, dead_letter
from app.main import app, layout, settings, shards
from app.topics import by_subscription_topic, send_dead_letter, stats_topic, updates_topic
from app.writer import BatchDone, Item, ShardWriter

log = logging.getLogger("rowstream.sink")


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
            messages = [item.origin[0].message for item in batch]
            tracing.batch_written(done.shard, done.seconds, done.coalesced,
                                  [(m.headers, m.timestamp) for m in messages])

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
    event, update = item.origin
    letter = dead_letter(
        key=str(update.app_id).encode(),
        value=events.encode_update(
            str(update.app_id), str(update.subscription_id), update.properties, update.received_at
        ),
        reason="rejected",
        error=error,
        origin=Coordinates(updates_topic.get_topic_name(), update.source_partition, update.version),
        seen=Coordinates(event.message.topic, event.message.partition, event.message.offset),
    )
    await send_dead_letter(letter)


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
        expected = guard.expected(tp.partition)
        if expected is not None:
            await delivery.seek(tp, expected)
    app.consumer.resume_partitions(tps)


writers = Writers()
app.service(writers)
guard = delivery.for_topic(app, by_subscription_topic, "rowstream-by-subscription")


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
        message = event.message
        if not await guard.admit(message):
            continue  # records before it were skipped; the guard is reading them again
        try:
            update = events.decode_versioned(event.value or b"")
        except events.InvalidEvent as exc:
            seen = Coordinates(message.topic, message.partition, message.offset)
            await send_dead_letter(dead_letter(event.key, event.value or b"", exc.reason, str(exc), seen))
            event.ack()
            continue
        app_id = str(update.app_id)
        patch = Patch(app_id, str(update.subscription_id), update.version, update.properties)
        writer = writers.by_shard[layout.shard_of_app(app_id)]
        writer.add(Item(patch, message.partition, event.ack, (event, update)))
