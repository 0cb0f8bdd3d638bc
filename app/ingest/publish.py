"""Writing the update topic's records with acks=all: ``Publisher.publish(records)`` returns a
future that succeeds once the broker acknowledged every record, or fails with ``Unavailable``
(503) or ``TooLarge`` (413).

Contract:

* **Success** means every record is durable (acks=all): the request may be answered 202.
* **Failure** means the producer has given those records up: it will not write them later. Some
  may have been written already (the broker may have stored a request whose answer was lost), so
  a retry may write a record twice, which patches make harmless.
* **Order**: the records of one partition are written in the order ``publish`` was called for
  them, across retries and reconnects. They join one open batch per partition, and a partition
  has at most one batch in aiokafka's hands at a time: the next is handed over only once the one
  before is settled (acknowledged, or given up). aiokafka retries a batch itself until it is
  acknowledged or given up, so no later record of the partition can reach the broker meanwhile.
  (A client that waits for its 202 before the next update of a row is ordered even without
  this; with it, an update answered 503 can never land after the one sent after it.)
* **Memory** is bounded: at most ``max_buffer`` bytes of records wait for their acknowledgement;
  beyond that ``publish`` refuses at once with ``Unavailable``, nothing queued.

Batching: a batch is handed to aiokafka ``linger`` seconds after the first record of a round,
so one produce request carries the records of all the requests that came in meanwhile. The
timeout: aiokafka gives a batch up when it is ``timeout`` old (its ``request_timeout_ms``, set to
half the produce timeout, so that a batch whose request hangs fails within the whole).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Sequence
from functools import partial
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import MessageSizeTooLargeError, RecordTooLargeError

from app.ingest.contract import Record
from app.ingest.errors import TooLarge, Unavailable

log = logging.getLogger("rowstream.ingest")

#: Most bytes of one batch (one partition's records in one produce request); a larger record
#: goes alone in its own batch.
BATCH_BYTES = 256 * 1024

Acknowledged = asyncio.Future  # of None


class _Batch:
    __slots__ = ("acknowledged", "builder", "size")

    def __init__(self, builder: Any, acknowledged: Acknowledged) -> None:
        self.builder, self.acknowledged, self.size = builder, acknowledged, 0


def producer_for(client_options: dict[str, Any], max_record_bytes: int, timeout: float) -> Any:
    """The aiokafka producer ``Publisher`` needs: acks=all, no idempotence (the embedded broker
    has none; order comes from the rules above), no linger of its own (``Publisher`` lingers)."""
    return AIOKafkaProducer(
        **client_options,
        client_id="rowstream-ingest",
        acks="all",
        enable_idempotence=False,
        linger_ms=0,
        max_batch_size=BATCH_BYTES,
        max_request_size=max_record_bytes,
        request_timeout_ms=int(timeout * 1000 / 2),
    )


class Publisher:
    def __init__(self, producer: Any, topic: str, linger: float, max_buffer: int) -> None:
        self._producer, self._topic = producer, topic
        self._linger, self._max_buffer = linger, max_buffer
        self._open: dict[int, _Batch] = {}  # partition → the batch records join now
        self._closed: dict[int, deque[_Batch]] = {}  # partition → batches to hand over, in order
        self._with_producer: set[int] = set()  # partitions with a batch in aiokafka's hands
        self._ready: deque[int] = deque()  # partitions whose next closed batch may go now
        self._handing_over: asyncio.Future | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._unsettled: set[Acknowledged] = set()  # of every batch not yet settled
        self._buffered = 0  # bytes published and not yet acknowledged or failed
        self._failing = False  # for the log: one line when it fails, one when it is back
        self._loop: asyncio.AbstractEventLoop | None = None

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        await self._producer.start()

    async def stop(self, timeout: float = 30.0) -> None:
        """Hand over what is open, wait (at most ``timeout``) until every batch is settled, stop
        the producer."""
        self.flush()
        if self._unsettled:
            await asyncio.wait(set(self._unsettled), timeout=timeout)
        await self._producer.stop()

    @property
    def buffered(self) -> int:
        return self._buffered

    def publish(self, records: Sequence[Record]) -> Acknowledged:
        """A future that succeeds once every record is acknowledged (see the module's contract).
        It may be shared by other callers: never cancel it."""
        size = sum(len(record.value) for record in records)
        if self._buffered and self._buffered + size > self._max_buffer:
            raise Unavailable(
                f"the ingest buffer is full ({self._max_buffer} bytes wait for the broker); "
                f"retry later"
            )
        self._buffered += size
        futures = [self._append(record) for record in records]
        if self._timer is None:
            assert self._loop is not None, "publish before start"
            self._timer = self._loop.call_later(self._linger, self.flush)
        if len(futures) == 1:
            return futures[0]
        return asyncio.gather(*futures)

    def _append(self, record: Record) -> Acknowledged:
        partition = record.partition
        batch = self._open.get(partition) or self._open_batch(partition)
        if (
            batch.builder.append(
                timestamp=None, key=record.key, value=record.value, headers=record.headers
            )
            is None
        ):  # full: it goes now, the record starts the next (a first record always fits)
            self._close(partition)
            batch = self._open_batch(partition)
            batch.builder.append(
                timestamp=None, key=record.key, value=record.value, headers=record.headers
            )
        batch.size += len(record.value)
        return batch.acknowledged

    def _open_batch(self, partition: int) -> _Batch:
        assert self._loop is not None
        acknowledged = self._loop.create_future()
        acknowledged.add_done_callback(self._settled)
        self._unsettled.add(acknowledged)
        batch = self._open[partition] = _Batch(self._producer.create_batch(), acknowledged)
        return batch

    def flush(self) -> None:
        """Hand over every open batch now (the linger timer calls this)."""
        self._timer = None
        for partition in list(self._open):
            self._close(partition)

    def _close(self, partition: int) -> None:
        batch = self._open.pop(partition)
        waiting = self._closed.setdefault(partition, deque())
        waiting.append(batch)
        if len(waiting) == 1 and partition not in self._with_producer:
            self._become_ready(partition)

    def _become_ready(self, partition: int) -> None:
        self._ready.append(partition)
        if self._handing_over is None:
            self._handing_over = asyncio.ensure_future(self._hand_over())

    async def _hand_over(self) -> None:
        """Give aiokafka the next batch of each ready partition. A partition's next batch goes
        only once its previous one is settled, so ``send_batch`` never waits for room."""
        try:
            while self._ready:
                partition = self._ready.popleft()
                batch = self._closed[partition].popleft()
                self._with_producer.add(partition)
                try:
                    delivery = await self._producer.send_batch(
                        batch.builder, self._topic, partition=partition
                    )
                except Exception as exc:  # metadata or queueing failed: never queued
                    self._delivered(partition, batch, None, exc)
                else:
                    delivery.add_done_callback(partial(self._delivered, partition, batch))
        finally:
            self._handing_over = None

    def _delivered(
        self,
        partition: int,
        batch: _Batch,
        delivery: asyncio.Future | None,
        error: BaseException | None = None,
    ) -> None:
        if delivery is not None and error is None:
            error = Unavailable("cancelled") if delivery.cancelled() else delivery.exception()
        self._with_producer.discard(partition)
        if self._closed.get(partition):
            self._become_ready(partition)
        self._settle(batch, error)

    def _settle(self, batch: _Batch, error: BaseException | None) -> None:
        self._buffered -= batch.size
        if error is None:
            if self._failing:
                self._failing = False
                log.info("the broker acknowledges updates again")
            batch.acknowledged.set_result(None)
            return
        if isinstance(error, MessageSizeTooLargeError | RecordTooLargeError):
            log.warning("the broker refused a batch as too large: %r", error)
            batch.acknowledged.set_exception(
                TooLarge("an update is larger than the broker accepts (its max.message.bytes)")
            )
            return
        if not self._failing:
            self._failing = True
            log.warning("the broker did not acknowledge updates, answering 503: %r", error)
        batch.acknowledged.set_exception(
            Unavailable("the broker did not acknowledge the update; retry later")
        )

    def _settled(self, acknowledged: Acknowledged) -> None:
        self._unsettled.discard(acknowledged)
        if not acknowledged.cancelled():
            acknowledged.exception()  # seen: every request of the batch saw it, or none is left

    async def ping(self) -> bool:
        """True when the broker answers a metadata request (readiness)."""
        try:
            return bool(await self._producer.client.force_metadata_update())
        except Exception:
            return False
