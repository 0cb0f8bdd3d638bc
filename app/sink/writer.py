"""Per-shard batching writer: collect, coalesce, write one transaction, then acknowledge.

One ``ShardWriter`` per shard, each with its own task, so a slow or failed shard holds only its
own events: the sink agent keeps routing events of the other shards, and asks the consumer to
pause this shard's partitions once its backlog passes a high-water mark.

Guarantees (the sink's contract):

* an event is acknowledged only after the transaction holding it committed (or, for a poison
  event, after it was handed to the dead-letter callback), so Kafka offsets are committed only
  past applied events;
* batches of one shard are written one after the other, in arrival order;
* transient errors are retried forever with capped exponential backoff and jitter; nothing is
  skipped. An error Postgres raises for the data itself (``Rejected``) is narrowed down by
  splitting the batch until the offending events are found; only they are dead-lettered.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Collection, Iterable, Sequence
from typing import Any, NamedTuple

from mode import Service
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, wait_random_exponential

from app.observe import metrics
from app.sink.coalesce import Patch, coalesce
from app.sink.shards import Rejected, ShardStore

log = logging.getLogger("rowstream.writer")


class Item(NamedTuple):
    """One event waiting to be written."""

    patch: Patch
    partition: int  # partition of the internal topic it came from
    ack: Callable[[], object]
    origin: Any  # what the dead-letter callback needs to locate the event


class BatchDone(NamedTuple):
    shard: int
    events: int
    rows: int  # rows changed in Postgres (rows whose stored version was already newer: not counted)
    coalesced: int  # events folded into another event of the same row
    seconds: float


OnBatch = Callable[[BatchDone, Sequence[Item]], Awaitable[None]]
OnRejected = Callable[[Item, str], Awaitable[None]]
OnBacklog = Callable[[int, bool], None]


def _retryable(exc: BaseException) -> bool:
    return isinstance(exc, Exception) and not isinstance(exc, Rejected)


Write = Callable[[Sequence[Sequence[Patch]]], Awaitable[int]]


def _row(item: Item) -> tuple[str, str]:
    return item.patch.app_id, item.patch.subscription_id


async def write_isolating(
    write: Write, items: Sequence[Item]
) -> tuple[int, list[tuple[Item, str]]]:
    """Write ``items`` coalesced; on Rejected, split until the rejected events are isolated.

    Returns the rows changed and the rejected ``(item, error)`` pairs. Rows are independent, so
    halves of a batch may be written in separate transactions; the events of one row are, when it
    comes to that, written one by one in arrival order, so that one bad event costs only itself.
    """
    rounds = [[folded.patch for folded in round_] for round_ in coalesce(i.patch for i in items)]
    try:
        return await write(rounds), []
    except Rejected as exc:
        if len(items) == 1:
            return 0, [(items[0], str(exc))]
    rows = list(dict.fromkeys(_row(item) for item in items))
    if len(rows) > 1:
        first = set(rows[: len(rows) // 2])
        parts = [[i for i in items if _row(i) in first], [i for i in items if _row(i) not in first]]
    else:
        parts = [[item] for item in items]
    changed, rejected = 0, []
    for part in parts:
        part_changed, part_rejected = await write_isolating(write, part)
        changed += part_changed
        rejected += part_rejected
    return changed, rejected


class ShardWriter(Service):
    """Batches of at most ``batch_size`` events, each waiting at most ``batch_wait`` to fill.
    Past ``high_water`` queued events (default: four batches) the shard's partitions pause."""

    def __init__(
        self,
        shard: int,
        store: ShardStore,
        *,
        batch_size: int,
        batch_wait: float,
        retry_max: float,
        on_batch: OnBatch,
        on_rejected: OnRejected,
        on_backlog: OnBacklog,
        high_water: int = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.shard = shard
        self.store = store
        self.batch_size = batch_size
        self.batch_wait = batch_wait
        self.retry_max = retry_max
        self.on_batch = on_batch
        self.on_rejected = on_rejected
        self.on_backlog = on_backlog
        self.high_water = high_water or 4 * batch_size
        self.paused = False
        self.errors: Counter[str] = Counter()  # failed writes by kind, since start
        self._pending: deque[Item] = deque()
        self._arrived = asyncio.Event()
        self._full = asyncio.Event()

    @property
    def label(self) -> str:
        return f"{type(self).__name__}: shard {self.shard}"

    def add(self, item: Item) -> None:
        """Queue one event; never blocks. Pauses this shard's partitions past the high water."""
        self.extend((item,))

    def extend(self, items: Iterable[Item]) -> None:
        """Queue events in order; never blocks. Pauses this shard's partitions past the high
        water."""
        self._pending.extend(items)
        self._arrived.set()
        if len(self._pending) >= self.batch_size:
            self._full.set()
        if not self.paused and len(self._pending) > self.high_water:
            self.paused = True
            self.on_backlog(self.shard, True)

    def forget(self, partitions: Collection[int]) -> int:
        """Drop queued events of revoked partitions: their new owner reads them again."""
        kept = [item for item in self._pending if item.partition not in partitions]
        dropped = len(self._pending) - len(kept)
        self._pending = deque(kept)
        self._check_backlog()
        return dropped

    def __len__(self) -> int:
        return len(self._pending)

    def _check_backlog(self) -> None:
        if self.paused and len(self._pending) <= self.batch_size:
            self.paused = False
            self.on_backlog(self.shard, False)

    def _take(self) -> list[Item]:
        batch = [self._pending.popleft() for _ in range(min(self.batch_size, len(self._pending)))]
        if not self._pending:
            self._arrived.clear()
        if len(self._pending) < self.batch_size:
            self._full.clear()
        self._check_backlog()
        return batch

    @Service.task
    async def _run(self) -> None:
        while not self.should_stop:
            await self._arrived.wait()
            if len(self._pending) < self.batch_size:
                try:
                    await asyncio.wait_for(self._full.wait(), self.batch_wait)
                except TimeoutError:
                    pass
            batch = self._take()
            if batch:
                await self._write(batch)

    async def _write(self, batch: list[Item]) -> None:
        started = asyncio.get_running_loop().time()
        rows, rejected = await write_isolating(self._write_retrying, batch)
        for item, error in rejected:
            await self.on_rejected(item, error)
        for item in batch:
            item.ack()
        done = BatchDone(
            shard=self.shard,
            events=len(batch),
            rows=rows,
            coalesced=len(batch) - len({_row(item) for item in batch}),
            seconds=asyncio.get_running_loop().time() - started,
        )
        shard = str(self.shard)
        metrics.ROWS_WRITTEN.labels(shard).inc(done.rows)
        metrics.EVENTS_COALESCED.labels(shard).inc(done.coalesced)
        metrics.WRITE_SECONDS.labels(shard).observe(done.seconds)
        metrics.BATCH_SIZE.labels(shard).observe(done.events)
        if rejected:
            metrics.SHARD_ERRORS.labels(shard, "rejected").inc(len(rejected))
            self.errors["rejected"] += len(rejected)
        await self.on_batch(done, batch)

    async def _write_retrying(self, rounds: Sequence[Sequence[Patch]]) -> int:
        async for attempt in AsyncRetrying(
            retry=retry_if_exception(_retryable),
            wait=wait_random_exponential(multiplier=0.05, max=self.retry_max),
            before_sleep=self._log_retry,
            reraise=True,
        ):
            with attempt:
                changed = await self.store.write(self.shard, rounds)
                metrics.SHARD_UP.labels(str(self.shard)).set(1)
                return changed
        raise AssertionError("unreachable: AsyncRetrying either returns or raises")

    def _log_retry(self, state: RetryCallState) -> None:
        assert state.outcome is not None and state.next_action is not None
        metrics.SHARD_ERRORS.labels(str(self.shard), "transient").inc()
        metrics.SHARD_UP.labels(str(self.shard)).set(0)
        self.errors["transient"] += 1
        log.warning(
            "shard %d: write failed (attempt %d): %s; retrying in %.2fs, holding its partitions",
            self.shard,
            state.attempt_number,
            state.outcome.exception(),
            state.next_action.sleep,
        )


__all__ = ["BatchDone", "Item", "ShardWriter", "write_isolating"]
