"""Two per-message costs of Faust 0.15.3 and aiokafka 0.14.0 that rowstream does not pay.

Both are replaced at import (``app.main`` imports this module); the versions are pinned and the
unit tests (tests/unit/test_speedups.py) check the replacements against the originals.

**1. The drain loop's race.** Faust's fetch loop (``Consumer._drain_messages``) hands every record to the streams with
``await self.wait_first(callback(message), self.suspend_flow.wait())``: mode's ``wait_first``
makes four tasks (the delivery, the suspend event, the service's stopped and crashed events),
waits for the first, and cancels the other three. That is per record, and every update crosses
the loop twice (repartition, sink): in ``make bench`` it cost more than a quarter of a worker's
time (uniform, 1 worker: 3,951 → 5,500 events/s without it).

The delivery (the Conductor's callback) completes in its first step unless the flow is stopped,
the producer's buffer is full or a stream's buffer is full. So while the flow is not suspended,
this awaits the delivery directly. What changes is only the case the race was for: a delivery
that blocks and is then overtaken by a rebalance. With the race, the loop abandons it; here, it
finishes once the flow resumes, and the stream drops the event as one of an earlier consumer
generation (``Stream._c_aiter`` checks ``generation_id``), as it drops every other stale record.
Stopping the worker cancels the loop's task, and with it a blocked delivery.
While ``suspend_flow`` is set, Faust's own ``wait_first`` runs unchanged.

**2. The producer's partition check.** For a message sent to an explicit partition, aiokafka
checks ``partition in metadata.partitions_for_topic(topic)``, which builds a new set of all the
topic's partitions per message: 24 µs at 720 partitions (the production default), paid at ingest
and again by the repartition. The check here is the same, against the metadata's dict.
"""

from __future__ import annotations

import inspect
from typing import Any

import faust.transport.consumer
from aiokafka import AIOKafkaProducer
from mode.services import WaitResults

_faust_wait_first = faust.transport.consumer.Consumer.wait_first
_aiokafka_partition = AIOKafkaProducer._partition


async def wait_first(self: Any, *coros: Any, timeout: Any = None) -> WaitResults:
    """``Consumer.wait_first``: the drain loop's call (delivery, suspend wait) awaited directly."""
    if len(coros) == 2 and timeout is None and not self.suspend_flow.is_set():
        delivery, suspended = coros
        if inspect.iscoroutine(delivery) and inspect.iscoroutine(suspended):
            suspended.close()  # never started: nothing waits on it
            return WaitResults([delivery], [await delivery], False)
    return await _faust_wait_first(self, *coros, timeout=timeout)


faust.transport.consumer.Consumer.wait_first = wait_first  # type: ignore[method-assign]


def _partition(self: Any, topic: str, partition: Any, key: Any, value: Any,
               serialized_key: Any, serialized_value: Any) -> Any:
    """``AIOKafkaProducer._partition`` with an O(1) check of an explicit partition."""
    if partition is None:
        return _aiokafka_partition(self, topic, partition, key, value, serialized_key,
                                   serialized_value)
    known = self._metadata._partitions.get(topic)
    if partition < 0 or known is None or partition not in known:
        raise AssertionError("Unrecognized partition")  # what aiokafka's assert raises
    return partition


AIOKafkaProducer._partition = _partition  # type: ignore[method-assign]
