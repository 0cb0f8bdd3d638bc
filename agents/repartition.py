"""Repartition: update topic (key app ID) → internal topic (key subscription ID).

Input: ``subscription-updates``, one partition per app (its shard block, hash of the app ID).
Output: ``rowstream-by-subscription``, partition = shard block of the app, hash of the
subscription ID; the event carries ``version`` = its offset in the update topic.
Guarantee: at-least-once, order per row kept: every update of a row comes from one source
partition, read in order, and goes to one target partition through one producer, in order.
The source event is acknowledged when the broker has the forwarded copy, so offsets are
committed only past forwarded events; a forward that fails (the broker refused it or timed out)
is not acknowledged, and the partition is read again from it. Events pass the delivery guard
first (``app.delivery``): one the consumer delivered past a skipped record is dropped
unacknowledged, and the partition is read again from the skipped one.

The forward goes to Faust's producer directly, not through ``Topic.send``: the topic layer
(a FutureMessage, a PendingMessage and sensor calls per event) cost a fifth of the agent's time.
Poison (undecodable, invalid, or on a partition that is not its app's): to the dead-letter topic.
"""

from __future__ import annotations

import asyncio
from functools import partial
from typing import Any

from app import delivery, events, metrics
from app.deadletter import Coordinates, dead_letter
from app.main import app, layout
from app.topics import by_subscription_topic, send_dead_letter, updates_topic


guard = delivery.for_topic(app, updates_topic, "subscription-updates")
internal_topic = by_subscription_topic.get_topic_name()


def forwarded(event: Any, sent: asyncio.Future) -> None:
    """The broker answered for the forwarded copy of ``event``: acknowledge it, or read again."""
    if not sent.cancelled() and sent.exception() is None:
        event.ack()
        return
    metrics.FORWARD_FAILURES.inc()
    problem = "cancelled" if sent.cancelled() else repr(sent.exception())
    guard.read_again(event.message, f"could not be forwarded ({problem})")


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
        sent = await app.producer.send(
            internal_topic,
            subscription_id.encode(),
            events.encode_versioned(app_id, subscription_id, update.properties, received_at,
                                    message.offset, message.partition),
            layout.target_partition(app_id, subscription_id),
            message.timestamp,
            message.headers or None,  # the ingest span's trace context, if any
        )
        sent.add_done_callback(partial(forwarded, event))
