"""Writing the update topic's records with acks=all: ``Publisher.publish(records)`` returns a
future that succeeds once the broker acknowledged every record, or fails with ``Unavailable``
(503) or ``TooLarge`` (413).

Contract:

* **Success** means every record is durable (acks=all): the request may be answered 202.
* **Failure** means the producer has given those records up: it will not write them later. Some
  may have been written already (the broker may have stored a request whose answer was lost), so
  a retry may write a record twice, which patches make harmless.
* **Order**: the records of one partition are written in the order ``publish`` was called for
  them, across retries and reconnects, by what aiokafka's producer (0.14, pinned; the rules are
  checked in ``tests/unit/test_publish.py``) does: it appends a partition's records to the last
  of its batches, keeps one produce request in flight per broker, holds a partition back while
  a batch of it is in flight, and puts a batch whose request failed back at the head of its
  partition's queue. So a record never reaches the broker before an earlier one of its partition
  that is still being tried. (A client that waits for its 202 before the next update of a row is
  ordered even without this; with it, an update answered 503 can never land after the one sent
  after it.)
* **Memory** is bounded: at most ``max_buffer`` bytes of records wait for their acknowledgement;
  beyond that ``publish`` refuses at once with ``Unavailable``, nothing queued.

Batching is the producer's: a batch per partition, sent ``linger`` after its first record or
when the broker is ready for the next request, so one produce request carries the records of
many requests. The timeout: aiokafka gives a batch up when it is ``timeout / 2`` old and its
last attempt failed, or when a request hangs ``timeout / 2``: a failure is answered within
about ``timeout``.

aiokafka's batch API (``create_batch``/``send_batch``, one batch per partition per linger) was
tried instead and dropped: it cost the same CPU per request in the ingest process and 1.5-1.8x
as much in the broker, because a partition's next batch could not join the produce request that
followed the one in flight (docs/benchmark.md, "The front door").
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, MessageSizeTooLargeError, RecordTooLargeError

from app.ingest.contract import Record
from app.ingest.errors import TooLarge, Unavailable

log = logging.getLogger("rowstream.ingest")

#: Most bytes of one batch (one partition's records in one produce request); a larger record
#: goes alone.
BATCH_BYTES = 256 * 1024


def producer_for(
    client_options: dict[str, Any], max_record_bytes: int, timeout: float, linger: float
) -> Any:
    """The aiokafka producer ``Publisher`` needs: acks=all, no idempotence (the embedded broker
    has none; order comes from the rules above)."""
    return AIOKafkaProducer(
        **client_options,
        client_id="rowstream-ingest",
        acks="all",
        enable_idempotence=False,
        linger_ms=int(linger * 1000),
        max_batch_size=BATCH_BYTES,
        max_request_size=max_record_bytes,
        request_timeout_ms=int(timeout * 1000 / 2),
    )


class Publisher:
    def __init__(self, producer: Any, topic: str, max_buffer: int) -> None:
        self._producer, self._topic, self._max_buffer = producer, topic, max_buffer
        self._buffered = 0  # bytes published and not yet acknowledged or given up
        self._loop: asyncio.AbstractEventLoop | None = None
        self._failing = False  # for the log: one line when it fails, one when it is back

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        await self._producer.start()

    async def stop(self) -> None:
        """Send what is buffered and wait for it (aiokafka's stop flushes), then close."""
        await self._producer.stop()

    @property
    def buffered(self) -> int:
        return self._buffered

    def publish(self, records: Sequence[Record]) -> asyncio.Future:
        """A future that succeeds once every record is acknowledged (see the module's
        contract)."""
        size = sum(len(record.value) for record in records)
        if self._buffered and self._buffered + size > self._max_buffer:
            raise Unavailable(
                f"the ingest buffer is full ({self._max_buffer} bytes wait for the broker); "
                f"retry later"
            )
        self._buffered += size
        assert self._loop is not None, "publish before start"
        return self._loop.create_task(self._send(records, size))

    async def _send(self, records: Sequence[Record], size: int) -> None:
        try:
            acknowledged = [
                await self._producer.send(
                    self._topic, r.value, key=r.key, partition=r.partition, headers=r.headers
                )
                for r in records
            ]
            await asyncio.gather(*acknowledged)
        except (MessageSizeTooLargeError, RecordTooLargeError) as exc:
            log.warning("the broker refused an update as too large: %r", exc)
            raise TooLarge(
                "an update is larger than the broker accepts (its max.message.bytes)"
            ) from None
        except (KafkaError, OSError, TimeoutError) as exc:
            if not self._failing:
                self._failing = True
                log.warning("the broker did not acknowledge updates, answering 503: %r", exc)
            raise Unavailable("the broker did not acknowledge the update; retry later") from None
        finally:
            self._buffered -= size
        if self._failing:
            self._failing = False
            log.info("the broker acknowledges updates again")

    async def ping(self) -> bool:
        """True when the broker answers a metadata request (readiness)."""
        try:
            return bool(await self._producer.client.force_metadata_update())
        except Exception:
            return False
