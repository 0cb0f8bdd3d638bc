"""Repartition: update topic (key app ID) → internal topic, in batch records.

Input: ``subscription-updates``, one partition per app (its home shard's block, hash of the app
ID), one update or an update batch of one app per record (``app.model.events``), as units
(``app.kafka.units``); and the markers of slot moves (``app.ops.moves``).
Output: ``rowstream-by-subscription``, batch records (``app.model.events``): each update goes to the
block of the shard the live map routes it to (``SlotMap.route``: a moving slot's update after its
partition's marker waits here until the switch; a marker is recorded and the map read again
before the records after it), to the partition its subscription ID hashes to, with ``version`` = its
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

from typing import Any

from app.kafka.forwarding import Countdown
from app.kafka.units import decoded_units
from app.main import app, control, forwarder, topics
from app.model import events
from app.model.slots import HOLD
from app.observe import metrics, tracing


def decode(record: Any) -> tuple[list[events.SourceUpdate], list[events.BadEntry]]:
    if events.marker_of(record.headers) is not None:
        return [], []  # a move's marker: handled in order by the agent
    return events.decode_source_at(
        record.value or b"", record.partition, control.layout.source_partition
    )


@app.agent(topics.updates)
async def repartition(stream):
    async for event, records in decoded_units(stream, decode, topics):
        unit = event.message

        def failed(why: str, unit: Any = unit) -> None:
            metrics.FORWARD_FAILURES.inc()
            app.unit_consumer.read_again(unit, f"could not be forwarded ({why})")

        waiter = Countdown(event.ack, failed)
        layout, slots = control.layout, control.slots
        for record, updates in records:
            moving = events.marker_of(record.headers)
            if moving is not None:  # the slots of a move freeze here: see the map first
                await control.saw_marker(moving, record.partition, record.offset)
                slots = control.slots
                continue
            if len(updates) > 1:
                updates = events.fold_rows(updates)  # one update per row: one version each
            timestamp, trace = record.timestamp / 1000.0, tracing.header_of(record.headers)
            for update in updates:
                entry = events.batch_entry(
                    record.offset, record.partition, timestamp, update.raw, trace
                )
                shard = slots.route(update.app_id, record.partition, record.offset)
                if shard == HOLD:  # a frozen slot's update after its marker: wait for the switch
                    shard = await control.route_held(update.app_id, record.partition, record.offset)
                    slots = control.slots
                forwarder.add(
                    layout.internal.partition(shard, update.subscription_id),
                    entry,
                    timestamp,
                    waiter,
                )
        waiter.close()
        await forwarder.flush_due()


@app.task
async def forward_lingering() -> None:
    """Send each batch once it is ``linger`` old when no unit comes to send it: sleeps until the
    oldest open batch is due, and not at all while none waits. (A timer every ``linger`` ran
    100 times a second whether or not anything waited, and mode warned that it overlapped
    whenever the loop was busier than that.)"""
    while True:
        await forwarder.wait_due()
        await forwarder.flush_due()
