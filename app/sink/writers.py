"""The sink's writers: one ``ShardWriter`` per shard, the shard's backlog pause, and the per-shard
counts sent to the stats topic.

* A shard whose writer holds more than ``high_water`` queued updates has its partitions of the
  internal topic paused (``pause``), and resumed (``resume``) once the writer drained to a batch;
  the other shards keep flowing.
* Counts go out once a second, not once a batch: every stats record becomes several table
  changelog writes, and Faust stops all streams while more than 100 of those wait to be produced.
  On stop, what was counted is sent.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Collection, Sequence
from typing import Any

from mode import Service

from app.observe import tracing
from app.sink.shards import ShardStore
from app.sink.writer import BatchDone, Item, OnRejected, ShardWriter

log = logging.getLogger("rowstream.sink")

# Units arrive whole: one can hold a fetch of each of a shard's partitions (hundreds of updates
# each), so a shard's partitions pause only well above a batch or two of queued updates.
HIGH_WATER_MIN = 20_000

Pause = Callable[[Collection[int]], None]
Resume = Callable[[Collection[int]], Awaitable[None]]
SendStats = Callable[[int, dict[str, int]], Awaitable[None]]


class Writers(Service):
    """One ``ShardWriter`` per shard of ``store``; ``partitions_of`` names a shard's partitions."""

    def __init__(
        self,
        store: ShardStore,
        shard_count: int,
        *,
        batch_size: int,
        batch_wait: float,
        retry_max: float,
        partitions_of: Callable[[int], Collection[int]],
        pause: Pause,
        resume: Resume,
        on_rejected: OnRejected,
        send_stats: SendStats,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.partitions_of = partitions_of
        self.pause, self.resume, self.send = pause, resume, send_stats
        self.counts: list[Counter[str]] = [Counter() for _ in range(shard_count)]
        self.errors_sent: list[Counter[str]] = [Counter() for _ in range(shard_count)]
        self.by_shard = [
            ShardWriter(
                shard,
                store,
                batch_size=batch_size,
                batch_wait=batch_wait,
                retry_max=retry_max,
                on_batch=self.on_batch,
                on_rejected=on_rejected,
                on_backlog=self.on_backlog,
                high_water=max(4 * batch_size, HIGH_WATER_MIN),
            )
            for shard in range(shard_count)
        ]

    def on_init_dependencies(self) -> list[ShardWriter]:
        return self.by_shard

    def forget(self, partitions: Collection[int]) -> None:
        """Drop the queued updates of revoked partitions: their new owner reads them again."""
        for writer in self.by_shard:
            writer.forget(partitions)

    def on_backlog(self, shard: int, paused: bool) -> None:
        partitions = self.partitions_of(shard)
        if paused:
            log.warning(
                "shard %d: backlog over %d events, pausing its partitions",
                shard,
                self.by_shard[shard].high_water,
            )
            self.pause(partitions)
        else:
            log.info("shard %d: backlog drained, resuming its partitions", shard)
            self.add_future(self.resume(partitions))

    async def on_batch(self, done: BatchDone, batch: Sequence[Item]) -> None:
        self.counts[done.shard].update(
            events=done.events, rows=done.rows, coalesced=done.coalesced, batches=1
        )
        if tracing.enabled():
            # Each update's ingest span context travels inside its batch record entry.
            tracing.batch_written(
                done.shard,
                done.seconds,
                done.coalesced,
                [
                    (
                        [(tracing.HEADER, versioned.trace.encode())] if versioned.trace else None,
                        versioned.received_at,
                    )
                    for _, versioned in (item.origin for item in batch)
                ],
            )

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
                await self.send(shard, dict(counts))


__all__ = ["HIGH_WATER_MIN", "Writers"]
