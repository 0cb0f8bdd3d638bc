"""Sink: internal topic → Postgres shards, batched, coalesced, idempotent.

Input: ``rowstream-by-subscription``, batch records (``app.model.events``; partition in the app's
shard block), as units (``app.kafka.units``).
Output: rows in the app's Postgres shard; per-shard counts to the stats topic once a second
(``app.sink.writers``).
Guarantee: a unit is acknowledged only after every transaction that applied one of its updates
committed, so offsets are committed only past applied updates; re-delivered updates change
nothing (version guard). An update is written to the shard of its partition's block; one whose
slot has moved away from that shard (a replay: a move's drain applied every update there before
the switch) is not written, so a cleaned-up shard gets no rows back. A shard that fails holds
only its own partitions (``app.sink.writer``).
Poison: an update of a batch record that does not validate, or one Postgres refuses, is
dead-lettered alone (with its record's coordinates and its index in the record); a record that is
not a batch record is dead-lettered whole.

The agent does not use ``take()``: the writers batch per shard (at most ROWSTREAM_BATCH_SIZE
updates, waiting at most ROWSTREAM_BATCH_WAIT), and a write that finishes later, in the writer's
own task, decides when a unit is acknowledged.
"""

from __future__ import annotations

from typing import Any

from app.kafka.forwarding import Countdown
from app.kafka.units import decoded_units
from app.main import app, control, topics, writers
from app.model import events
from app.observe import metrics
from app.sink.coalesce import Patch
from app.sink.writer import Item


def decode(record: Any) -> tuple[list[events.Versioned], list[events.BadEntry]]:
    if events.marker_of(record.headers) is not None:
        return [], []  # a move's marker: the drain waits for the group to commit past it
    return events.decode_batch(record.value or b"")


@app.agent(topics.internal)
async def sink(stream):
    async for event, records in decoded_units(stream, decode, topics):
        waiter = Countdown(event.ack, lambda why: None)  # a writer never fails: it retries
        by_shard: dict[int, list[Item]] = {}
        blocks = control.layout.internal
        current = False  # the map read since this unit was fetched: as new as what routed it
        for record, updates in records:
            shard = blocks.shard_of(record.partition)
            for versioned in updates:
                if control.slots.shard_of_app(versioned.app_id) != shard:
                    current = current or await control.read_again()
                    if current and control.slots.shard_of_app(versioned.app_id) != shard:
                        metrics.MOVED_AWAY.inc()  # a replay from before a move: see above
                        continue
                patch = Patch(
                    versioned.app_id,
                    versioned.subscription_id,
                    versioned.version,
                    versioned.properties,
                )
                by_shard.setdefault(shard, []).append(
                    Item(patch, record.partition, waiter.succeeded, (record, versioned))
                )
        for shard, items in by_shard.items():
            waiter.expect(len(items))
            writers.by_shard[shard].extend(items)
        waiter.close()
