"""Repartition: update topic (key app ID) → internal topic (key subscription ID).

Input: ``subscription-updates``, one partition per app (its shard block, hash of the app ID).
Output: ``rowstream-by-subscription``, partition = shard block of the app, hash of the
subscription ID; the event carries ``version`` = its offset in the update topic.
Guarantee: at-least-once, order per row kept: every update of a row comes from one source
partition, read in order, and goes to one target partition through one producer, in order.
The source offset is acknowledged after the send is queued; Faust flushes the producer before
it commits offsets, so nothing is committed that was not forwarded. Events pass the delivery
guard first (``app.delivery``): one the consumer delivered past a skipped record is dropped
unacknowledged, and the partition is read again from the skipped one.
Poison (undecodable, invalid, or on a partition that is not its app's): to the dead-letter topic.
"""

from __future__ import annotations

from app import delivery, events
from app.deadletter import Coordinates, dead_letter
from app.main import app, layout
from app.topics import by_subscription_topic, send_dead_letter, updates_topic


guard = delivery.for_topic(app, updates_topic, "subscription-updates")


@app.agent(updates_topic)
async def repartition(stream):
    async for event in stream.noack().events():
        message = event.message
        if not await guard.admit(message):
            continue
        try:
            update = events.decode_update(event.value or b"")
            app_id, subscription_id = str(update.app_id), str(update.subscription_id)
            expected = layout.source_partition(app_id)
            if message.partition != expected:
                raise events.InvalidEvent("misrouted", [{
                    "where": "partition",
                    "problem": f"app {app_id} belongs on partition {expected}, "
                               f"not {message.partition} (produce through the API or its partitioner)",
                }])
        except events.InvalidEvent as exc:
            origin = Coordinates(message.topic, message.partition, message.offset)
            await send_dead_letter(dead_letter(event.key, event.value or b"", exc.reason, str(exc), origin))
            event.ack()
            continue
        received_at = update.received_at if update.received_at is not None else message.timestamp
        await by_subscription_topic.send(
            key=subscription_id.encode(),
            value=events.encode_versioned(update, message.offset, message.partition, received_at),
            partition=layout.target_partition(app_id, subscription_id),
            timestamp=message.timestamp,
            headers=message.headers or None,  # the ingest span's trace context, if any
            force=True,  # now, not at the next commit (Faust's default inside an agent)
        )
        event.ack()
