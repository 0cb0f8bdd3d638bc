"""The repartition's output side: updates gathered per target partition into batch records.

``Forwarder.add(partition, entry, waiter)`` puts one update (an entry made by
``events.batch_entry``) into the open batch of its target partition. A batch is sent as one
record when it holds ``max_updates`` updates or ``max_bytes`` bytes, or once it is ``linger``
seconds old (``flush_due``, called by the agent after each unit, and after ``wait_due``, which
sleeps until the oldest open batch is due and not at all while none waits).

Guarantees:

* per target partition, batches are sent in the order they were opened, and the entries of a
  batch in the order they were added: one send at a time goes to the producer, which keeps
  per-partition order;
* each ``Countdown`` (one per source unit) hears of every one of its entries: ``done`` once all
  were acknowledged by the broker and no more will be added, or ``failed`` once (the first
  failed batch holding one of them). Nothing is acknowledged before the broker has it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

SendBatch = Callable[[int, bytes, float, int], Awaitable["asyncio.Future[Any]"]]


class Countdown:
    """Settles a unit of work made of parts: ``done()`` once every part succeeded and ``close()``
    said no more parts come; ``failed(why)`` at the first part that failed (then never done)."""

    __slots__ = ("_closed", "_done", "_failed", "_left", "_settled")

    def __init__(self, done: Callable[[], Any], failed: Callable[[str], Any]) -> None:
        self._left = 0
        self._closed = False
        self._settled = False
        self._done = done
        self._failed = failed

    def expect(self, parts: int = 1) -> None:
        self._left += parts

    def succeeded(self, parts: int = 1) -> None:
        self._left -= parts
        self._maybe_done()

    def fail(self, why: str) -> None:
        if not self._settled:
            self._settled = True
            self._failed(why)

    def close(self) -> None:
        self._closed = True
        self._maybe_done()

    def _maybe_done(self) -> None:
        if self._closed and self._left == 0 and not self._settled:
            self._settled = True
            self._done()


class _Batch:
    __slots__ = ("entries", "opened", "size", "timestamp", "waiters")

    def __init__(self, now: float) -> None:
        self.entries: list[bytes] = []
        self.size = 0
        self.waiters: dict[Countdown, int] = {}
        self.opened = now
        self.timestamp = float("inf")  # the oldest source timestamp of its updates


class Forwarder:
    """Batches per target partition, oldest first (the last one is open); see the module
    docstring."""

    def __init__(
        self,
        send: SendBatch,
        encode: Callable[[list[bytes]], bytes],
        *,
        max_updates: int,
        max_bytes: int,
        linger: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._send = send
        self._encode = encode
        self.max_updates = max_updates
        self.max_bytes = max_bytes
        self.linger = linger
        self._clock = clock
        self._batches: dict[int, list[_Batch]] = {}
        self._sending = asyncio.Lock()
        self._waiting = asyncio.Event()  # set once a batch waits

    def add(self, partition: int, entry: bytes, timestamp: float, waiter: Countdown) -> None:
        """Queue one update for ``partition``; never blocks (it is sent by a later
        ``flush_due``)."""
        queue = self._batches.get(partition)
        if queue is None:
            queue = self._batches[partition] = [_Batch(self._clock())]
            self._waiting.set()
        batch = queue[-1]
        if batch.entries and (
            len(batch.entries) >= self.max_updates or batch.size + len(entry) > self.max_bytes
        ):
            batch = _Batch(self._clock())
            queue.append(batch)
        batch.entries.append(entry)
        batch.size += len(entry)
        if timestamp < batch.timestamp:
            batch.timestamp = timestamp
        batch.waiters[waiter] = batch.waiters.get(waiter, 0) + 1
        waiter.expect()

    def due_in(self) -> float | None:
        """Seconds until a batch is due (0: one is due now); None while no batch waits."""
        if not self._batches:
            return None
        now, soonest = self._clock(), float("inf")
        for queue in self._batches.values():
            last = queue[-1]
            if len(queue) > 1 or self._full(last):
                return 0.0
            soonest = min(soonest, last.opened + self.linger - now)
        return max(0.0, soonest)

    async def wait_due(self) -> None:
        """Return once a batch is due: sleeps until the oldest is ``linger`` old, and while no
        batch waits, until one is opened."""
        while True:
            wait = self.due_in()
            if wait is None:
                self._waiting.clear()
                await self._waiting.wait()
            elif wait > 0:
                await asyncio.sleep(wait)
            else:
                return

    async def flush_due(self) -> None:
        """Send the full batches and those older than ``linger``."""
        if not self._batches:
            return
        async with self._sending:
            now = self._clock()
            for partition in list(self._batches):
                queue = self._batches[partition]
                last = queue[-1]
                due = self._full(last) or now - last.opened >= self.linger
                sending = queue if due else queue[:-1]
                if due:
                    del self._batches[partition]
                else:
                    self._batches[partition] = [last]
                for batch in sending:
                    await self._send_batch(partition, batch)

    def _full(self, batch: _Batch) -> bool:
        return len(batch.entries) >= self.max_updates or batch.size >= self.max_bytes

    async def _send_batch(self, partition: int, batch: _Batch) -> None:
        waiters = batch.waiters
        try:
            sent = await self._send(
                partition, self._encode(batch.entries), batch.timestamp, len(batch.entries)
            )
        except Exception as exc:  # refused before it was queued (e.g. too large)
            for waiter in waiters:
                waiter.fail(repr(exc))
            return

        def answered(future: asyncio.Future[Any]) -> None:
            if not future.cancelled() and future.exception() is None:
                for waiter, parts in waiters.items():
                    waiter.succeeded(parts)
                return
            why = "cancelled" if future.cancelled() else repr(future.exception())
            for waiter in waiters:
                waiter.fail(why)

        sent.add_done_callback(answered)


__all__ = ["Countdown", "Forwarder"]
