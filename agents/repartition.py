"""Repartition: update topic (key app ID) → internal topic, in batch records.

Input: ``subscription-updates``, one partition per app (its shard block, hash of the app ID),
one update or an update batch of one app per record (``app.model.events``); the agent receives
*units*: the records of one partition from one fetch (``app.kafka.consumer``), in offset order from
the committed offset.
Output: ``rowstream-by-subscription``, batch records (``app.model.events``): each update goes to the
partition of its app's shard block that its subscription ID hashes to, with ``version`` = its
offset in the update topic (an update batch's updates of one row are folded into one first, so
that a version names one update of a row). Updates for one target partition are gathered across
units and sent as one record when the batch is full or ``ROWSTREAM_FORWARD_LINGER`` old
(``app.kafka.forwarding``).
Guarantee: at-least-once, order per row kept: every update of a row comes from one source
partition, read in order, and goes to one target partition through one producer, in order.
A unit is acknowledged when the broker has every batch record holding its updates, so offsets are
committed only past forwarded updates; if one of them fails (the broker refused it or timed out),
the unit is not acknowledged and its partition is read again from it.
Poison (undecodable, invalid, or on a partition that is not its app's): to the dead-letter topic,
alone (a bad update inside an update batch with its index); the rest goes on.
"""

from __future__ import annotations

from typing import Any, Optional

from app.model import events
from app.observe import metrics
from app.model.deadletter import Coordinates, app_key, dead_letter
from app.kafka.forwarding import Countdown, Forwarder
from app.main import app, layout, settings
from app.kafka.topics import by_subscription_topic, send_dead_letter, updates_topic
from app.observe.tracing import HEADER

internal_topic = by_subscription_topic.get_topic_name()
MAX_RECORD_BYTES = 256 * 1024  # one producer batch (app/main.py) holds one batch record


async def send_batch(partition: int, value: bytes, timestamp: float, updates: int) -> Any:
    """Queue one batch record; the future answers when the broker has it. The header tells the
    lag monitor how many updates it holds without decoding it."""
    return await app.producer.send(internal_topic, None, value, partition, timestamp,
                                   [(events.UPDATES_HEADER, b"%d" % updates)])


forwarder = Forwarder(send_batch, events.batch_record, max_updates=settings.forward_batch,
                      max_bytes=MAX_RECORD_BYTES, linger=settings.forward_linger)


def misrouted(app_id: str, partition: int) -> Optional[events.InvalidEvent]:
    """The problem of an update found on another partition than its app's, if it is one."""
    expected = layout.source_partition(app_id)
    if partition == expected:
        return None
    return events.InvalidEvent("misrouted", [{
        "where": "partition",
        "problem": f"app {app_id} belongs on partition {expected}, not {partition} "
                   f"(produce through the API or its partitioner)",
    }])


def trace_of(record: Any) -> Optional[bytes]:
    for name, value in record.headers or ():
        if name == HEADER:
            return value
    return None


@app.agent(updates_topic)
async def repartition(stream):
    async for event in stream.noack().events():
        unit = event.message

        def failed(why: str, unit: Any = unit) -> None:
            metrics.FORWARD_FAILURES.inc()
            app.consumer.read_again(unit, f"could not be forwarded ({why})")

        waiter = Countdown(event.ack, failed)
        for record in event.value:
            decoded, bad = events.decode_source(record.value or b"")
            updates = []
            for update in decoded:
                problem = misrouted(update.app_id, record.partition)
                if problem is None:
                    updates.append(update)
                else:
                    bad.append(events.BadEntry(update.index, update.raw, problem, None, None))
            if bad:
                await dead_letter_bad(record, bad)
            if len(updates) > 1:
                updates = events.fold_rows(updates)  # one update per row: one version each
            timestamp, trace = record.timestamp / 1000.0, trace_of(record)
            for update in updates:
                entry = events.batch_entry(record.offset, record.partition, timestamp, update.raw,
                                           trace)
                forwarder.add(layout.target_partition(update.app_id, update.subscription_id),
                              entry, timestamp, waiter)
        waiter.close()
        await forwarder.flush_due()


async def dead_letter_bad(record: Any, bad: list[events.BadEntry]) -> None:
    """Dead-letter each bad part of a record: the whole record, or an update of an update batch
    alone (with its index)."""
    origin = Coordinates(record.topic, record.partition, record.offset)
    for part in bad:
        key = record.key if part.index is None else app_key(part.raw)
        await send_dead_letter(dead_letter(key, part.raw, part.error.reason, str(part.error),
                                           origin, index=part.index))


@app.timer(settings.forward_linger)
async def forward_lingering() -> None:
    """Send batches that waited ``linger`` while no unit arrived."""
    await forwarder.flush_due()
