"""Three costs of Faust 0.15.3 and aiokafka 0.14.0 that rowstream does not pay.

All three are replaced at import (``app.main`` imports this module); the versions are pinned and
the unit tests (tests/unit/test_speedups.py) check the replacements against the originals.

**1. The drain loop's race.** Faust's fetch loop (``Consumer._drain_messages``) hands every
record to the streams with ``await self.wait_first(callback(message), self.suspend_flow.wait())``:
mode's ``wait_first`` makes four tasks (the delivery, the suspend event, the service's stopped and
crashed events), waits for the first, and cancels the other three. That is per record, and every
update crosses the loop twice (repartition, sink): in ``make bench`` (uniform, 1 worker) taking it
out moved 3,951 to 4,936 events/s.

The delivery (the Conductor's callback) completes in its first step unless the flow is stopped,
the producer's buffer is full or a stream's buffer is full. So while the flow is not suspended,
this awaits the delivery directly. What changes is only the case the race was for: a delivery
that blocks and is then overtaken by a rebalance. With the race, the loop abandons it; here, it
finishes once the flow resumes, and the stream drops the event as one of an earlier consumer
generation (``Stream._c_aiter`` checks ``generation_id``), as it drops every other stale record.
Stopping the worker cancels the loop's task, and with it a blocked delivery.
While ``suspend_flow`` is set, Faust's own ``wait_first`` runs unchanged.

**2. The topic's partition set.** aiokafka's ``ClusterMetadata.partitions_for_topic`` builds a
new set of all of a topic's partitions at every call, and the producer calls it twice per message
(``_wait_on_metadata`` and the check of an explicit partition): 24 µs each at 720 partitions (the
production default), paid at ingest and again by the repartition. The set is built here once per
metadata update (the metadata replaces its per-topic dicts when it changes) and handed out as a
frozenset: every caller in aiokafka and Faust only reads it.

**3. The commit's assignment check.** Faust's ``AIOKafkaConsumerThread._commit`` keeps the offsets
of assigned partitions with ``tp in self.assignment()`` per offset, and ``assignment()`` converts
the whole assignment to a new set each time: quadratic in the partitions owned, 7.5 % of a worker
at 720 partitions with a commit a second. The replacement below is Faust's method with the
assignment taken once; everything else (what is committed, the error handling) is unchanged.
"""

from __future__ import annotations

import inspect
from time import monotonic
from typing import Any, Optional

import faust.transport.consumer
from aiokafka.cluster import ClusterMetadata
from aiokafka.errors import CommitFailedError
from aiokafka.structs import OffsetAndMetadata
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread, ensure_aiokafka_TP
from mode.services import WaitResults

_faust_wait_first = faust.transport.consumer.Consumer.wait_first
_faust_commit = AIOKafkaConsumerThread._commit


async def wait_first(self: Any, *coros: Any, timeout: Any = None) -> WaitResults:
    """``Consumer.wait_first``: the drain loop's call (delivery, suspend wait) awaited directly."""
    if len(coros) == 2 and timeout is None and not self.suspend_flow.is_set():
        delivery, suspended = coros
        if inspect.iscoroutine(delivery) and inspect.iscoroutine(suspended):
            suspended.close()  # never started: nothing waits on it
            return WaitResults([delivery], [await delivery], False)
    return await _faust_wait_first(self, *coros, timeout=timeout)


faust.transport.consumer.Consumer.wait_first = wait_first  # type: ignore[method-assign]


def partitions_for_topic(self: Any, topic: str) -> Optional[frozenset[int]]:
    """``ClusterMetadata.partitions_for_topic``, built once per metadata update."""
    partitions = self._partitions.get(topic)
    if partitions is None:
        return None
    built = self.__dict__.setdefault("_rowstream_partition_sets", {})
    cached = built.get(topic)
    if cached is None or cached[0] is not partitions:
        cached = built[topic] = (partitions, frozenset(partitions))
    return cached[1]


ClusterMetadata.partitions_for_topic = partitions_for_topic  # type: ignore[method-assign]


async def _commit(self: Any, offsets: Any) -> bool:
    """``AIOKafkaConsumerThread._commit`` (Faust 0.15.3) with the assignment taken once."""
    consumer = self._ensure_consumer()
    now = monotonic()
    assigned = self.assignment()
    commitable_offsets = {tp: offset for tp, offset in offsets.items() if tp in assigned}
    try:
        aiokafka_offsets = {
            ensure_aiokafka_TP(tp): OffsetAndMetadata(offset, "")
            for tp, offset in commitable_offsets.items()
        }
        self.tp_last_committed_at.update({tp: now for tp in commitable_offsets})
        await consumer.commit(aiokafka_offsets)
    except CommitFailedError as exc:
        if "already rebalanced" in str(exc):
            return False
        self.log.exception("Committing raised exception: %r", exc)
        await self.crash(exc)
        return False
    except Exception as exc:  # Faust handles IllegalStateError and the rest alike
        self.log.exception("Got exception: %r\nCurrent assignment: %r", exc, self.assignment())
        await self.crash(exc)
        return False
    return True


AIOKafkaConsumerThread._commit = _commit  # type: ignore[method-assign]
