"""The agents' delivery guard: events pass in offset order from the committed offset, or not at all.

``DeliveryGuard.admit(message)`` is awaited by an agent for each event before it does anything
with it. False means records before this one were skipped by the consumer: the agent drops the
event without acknowledging it, and the guard has asked the consumer to read the partition again
from the first skipped offset (``app.ordering`` explains why Faust skips and why that would lose
updates). Each new consumer generation starts every partition again at the group's committed
offset, asked of the broker (``app.offsets``; the log's first offset if retention deleted
past it or nothing was committed).

This module also turns off Faust's offset "gaps" (``Consumer._add_gap``): Faust counts a jump in
offsets as records that need no acknowledgement, which is right for compacted or transactional
topics and wrong for ours, where a jump is a skip: it would let Faust commit past the records the
guard is reading again.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Awaitable, Callable, Optional

import faust.transport.consumer
from aiokafka import TopicPartition

from app import metrics
from app.ordering import InOrder

log = logging.getLogger("rowstream.delivery")

Starts = Callable[[list[int]], Awaitable[dict[int, Optional[int]]]]
Seek = Callable[[Any, int], Awaitable[None]]


async def _no_gap(self: Any, tp: Any, offset_from: int, offset_to: int) -> None:
    """Faust's ``Consumer._add_gap``, turned off (see the module docstring)."""


faust.transport.consumer.Consumer._add_gap = _no_gap  # type: ignore[method-assign]


class DeliveryGuard:
    """One per agent input topic. ``assigned()`` lists this worker's partitions of the topic,
    ``starts(partitions)`` asks the broker where the group starts them (the committed offset, or
    the log's first offset), ``seek(tp, offset)`` moves the consumer."""

    def __init__(self, label: str, assigned: Callable[[], list[int]], starts: Starts,
                 seek: Seek) -> None:
        self.label = label
        self._assigned = assigned
        self._starts = starts
        self._seek = seek
        self._order = InOrder()
        self._generation: Optional[int] = None
        # partition → (offset asked for, its TopicPartition, when the last seek was asked)
        self._reading_again: dict[int, tuple[int, Any, float]] = {}

    async def admit(self, message: Any) -> bool:
        if message.generation_id != self._generation:
            self._generation = message.generation_id
            self._order.forget()
            self._reading_again.clear()
        partition = message.partition
        if not self._order.started(partition):
            await self._begin(partition)
        again = self._order.admit(partition, message.offset)
        if again is None:
            if partition in self._reading_again and self._reading_again[partition][0] <= message.offset:
                self._reading_again.pop(partition)
            return True
        if partition not in self._reading_again or self._reading_again[partition][0] != again:
            metrics.READ_AGAIN.labels(self.label).inc()
            log.warning("%s partition %d: offset %d arrived while %d was next (the consumer "
                        "skipped records); reading the partition again from %d",
                        self.label, partition, message.offset, again, again)
        await self._seek_logged(partition, message.tp, again)
        return False

    async def seek_stalled(self, after: float = 2.0) -> None:
        """Seek again where a partition is being read again and nothing arrived for ``after``
        seconds (a seek can be undone by a fetch in flight; an idle partition would then never
        deliver the event that shows it)."""
        now = time.monotonic()
        for partition, (again, tp, asked) in list(self._reading_again.items()):
            if now - asked >= after:
                log.info("%s partition %d: still waiting for offset %d; seeking again",
                         self.label, partition, again)
                await self._seek_logged(partition, tp, again)

    async def _seek_logged(self, partition: int, tp: Any, offset: int) -> None:
        self._reading_again[partition] = (offset, tp, time.monotonic())
        try:
            await self._seek(tp, offset)
        except Exception as exc:  # revoked meanwhile: its next owner starts at the committed offset
            log.info("%s partition %d: could not seek to %d: %r", self.label, partition, offset, exc)

    async def _begin(self, partition: int) -> None:
        pending = sorted({p for p in self._assigned() if not self._order.started(p)} | {partition})
        starts = await self._starts(pending)
        for p in pending:
            self._order.begin(p, starts.get(p))

    def read_again(self, message: Any, why: str) -> None:
        """Read ``message``'s partition again from it: an event this guard admitted could not be
        processed (its forward failed). Events after it are refused until it comes back; the
        timer seeks at its next tick, or the next refused event does. An event of an earlier
        generation needs nothing: it was never acknowledged, so the current generation started
        at or before it."""
        if message.generation_id != self._generation:
            return
        if self._order.rewind(message.partition, message.offset):
            log.warning("%s partition %d: offset %d %s; reading the partition again from it",
                        self.label, message.partition, message.offset, why)
            self._reading_again[message.partition] = (message.offset, message.tp, float("-inf"))

    def expected(self, partition: int) -> Optional[int]:
        """The next offset this guard will let through (None if not known yet)."""
        return self._order.expected(partition)

    def forget(self, partitions: list[int]) -> None:
        self._order.forget(partitions)
        for partition in partitions:
            self._reading_again.pop(partition, None)


def for_topic(app: Any, topic: Any, label: str) -> DeliveryGuard:
    """A guard wired to the worker's consumer and the group's committed offsets."""
    from app.offsets import group_offsets

    name = topic.get_topic_name()

    def assigned() -> list[int]:
        return [tp.partition for tp in app.consumer.assignment() if tp.topic == name]

    async def starts(partitions: list[int]) -> dict[int, Optional[int]]:
        answers = await group_offsets.starts(TopicPartition(name, p) for p in partitions)
        return {tp.partition: offset for tp, offset in answers.items()}

    guard = DeliveryGuard(label, assigned, starts, seek)

    @app.timer(1.0, name=f"seek_stalled[{label}]")
    async def seek_stalled() -> None:
        await guard.seek_stalled()

    @app.on_partitions_revoked.connect
    async def forget_revoked(sender: Any, revoked: Any, **kwargs: Any) -> None:
        guard.forget(sorted(tp.partition for tp in revoked if tp.topic == name))

    return guard


async def seek(tp: Any, offset: int) -> None:
    """Move the worker's consumer, in the consumer's own thread: Faust's ``Consumer.seek`` calls
    aiokafka from the event loop's thread, where a fetch in flight can undo it."""
    from app.main import app

    await app.consumer.seek_wait({tp: offset})


__all__ = ["DeliveryGuard", "for_topic"]
