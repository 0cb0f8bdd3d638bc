"""The delivery guard: units pass in offset order from the committed offset, or not at all.

``DeliveryGuard.admit(message)`` is awaited by rowstream's consumer (``app.kafka.consumer``) for
each unit (the records of one partition from one fetch) before the unit reaches an agent. False
means records before it were skipped: the consumer drops the unit without acknowledging it, and the
guard has asked for the partition to be read again from the first skipped offset
(``app.kafka.ordering`` explains why Faust skips and why that would lose updates). Each new consumer
generation starts every partition again at the group's committed offset, asked of the broker
(``app.kafka.offsets``; the log's first offset if retention deleted past it or nothing was
committed).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from app.kafka.ordering import InOrder
from app.observe import metrics

log = logging.getLogger("rowstream.delivery")

Starts = Callable[[list[int]], Awaitable[dict[int, int | None]]]
Seek = Callable[[Any, int], Awaitable[None]]


def first_offset(message: Any) -> int:
    """The first record's offset of a unit (a plain message is a unit of one)."""
    return getattr(message, "first_offset", message.offset)


class DeliveryGuard:
    """One per unit topic. ``assigned()`` lists this worker's partitions of the topic,
    ``starts(partitions)`` asks the broker where the group starts them (the committed offset, or
    the log's first offset), ``seek(tp, offset)`` moves the consumer."""

    def __init__(
        self, label: str, assigned: Callable[[], list[int]], starts: Starts, seek: Seek
    ) -> None:
        self.label = label
        self._assigned = assigned
        self._starts = starts
        self._seek = seek
        self._order = InOrder()
        self._generation: int | None = None
        self._began: dict[int, int | None] = {}  # partition → where this generation began it
        # partition → (offset asked for, its TopicPartition, when the last seek was asked)
        self._reading_again: dict[int, tuple[int, Any, float]] = {}

    async def admit(self, message: Any) -> bool:
        if message.generation_id != self._generation:
            self._generation = message.generation_id
            self._order.forget()
            self._began.clear()
            self._reading_again.clear()
        partition = message.partition
        if not self._order.started(partition):
            await self._begin(partition)
        first = first_offset(message)
        again = self._order.admit(partition, first, message.offset)
        if again is None:
            if partition in self._reading_again and self._reading_again[partition][0] <= first:
                self._reading_again.pop(partition)
            return True
        if partition not in self._reading_again or self._reading_again[partition][0] != again:
            metrics.READ_AGAIN.labels(self.label).inc()
            log.warning(
                "%s partition %d: offset %d arrived while %d was next (the consumer "
                "skipped records); reading the partition again from %d",
                self.label,
                partition,
                first,
                again,
                again,
            )
        await self._seek_logged(partition, message.tp, again)
        return False

    async def seek_stalled(self, after: float = 2.0) -> None:
        """Seek again where a partition is being read again and nothing arrived for ``after``
        seconds (a seek can be undone by a fetch in flight; an idle partition would then never
        deliver the unit that shows it)."""
        now = time.monotonic()
        for partition, (again, tp, asked) in list(self._reading_again.items()):
            if now - asked >= after:
                log.info(
                    "%s partition %d: still waiting for offset %d; seeking again",
                    self.label,
                    partition,
                    again,
                )
                await self._seek_logged(partition, tp, again)

    async def _seek_logged(self, partition: int, tp: Any, offset: int) -> None:
        self._reading_again[partition] = (offset, tp, time.monotonic())
        try:
            await self._seek(tp, offset)
        except Exception as exc:  # revoked meanwhile: its next owner starts at the committed offset
            log.info(
                "%s partition %d: could not seek to %d: %r", self.label, partition, offset, exc
            )

    async def _begin(self, partition: int) -> None:
        pending = sorted({p for p in self._assigned() if not self._order.started(p)} | {partition})
        starts = await self._starts(pending)
        for p in pending:
            self._order.begin(p, starts.get(p))
            self._began[p] = starts.get(p)

    def read_again(self, message: Any, why: str) -> None:
        """Read ``message``'s partition again from its first record: a unit this guard admitted
        could not be processed (its forward failed). Units after it are refused until it comes
        back; the timer seeks at its next tick, or the next refused unit does. A unit of an
        earlier generation needs nothing: it was never acknowledged, so the current generation
        started at or before it."""
        if message.generation_id != self._generation:
            return
        first = first_offset(message)
        if self._order.rewind(message.partition, first):
            log.warning(
                "%s partition %d: offset %d %s; reading the partition again from it",
                self.label,
                message.partition,
                first,
                why,
            )
            self._reading_again[message.partition] = (first, message.tp, float("-inf"))

    def expected(self, partition: int) -> int | None:
        """The next offset this guard will let through (None if not known yet)."""
        return self._order.expected(partition)

    def began(self, partition: int) -> int | None:
        """Where this generation started ``partition`` (None: not started, or nothing to start
        from was known)."""
        return self._began.get(partition)

    def forget(self, partitions: list[int]) -> None:
        self._order.forget(partitions)
        for partition in partitions:
            self._began.pop(partition, None)
            self._reading_again.pop(partition, None)


__all__ = ["DeliveryGuard", "first_offset"]
