"""A cheaper hand-over of each fetched record in Faust's drain loop (Faust 0.15.3).

Faust's fetch loop (``Consumer._drain_messages``) hands every record to the streams with
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
"""

from __future__ import annotations

import inspect
from typing import Any

import faust.transport.consumer
from mode.services import WaitResults

_faust_wait_first = faust.transport.consumer.Consumer.wait_first


async def wait_first(self: Any, *coros: Any, timeout: Any = None) -> WaitResults:
    """``Consumer.wait_first``: the drain loop's call (delivery, suspend wait) awaited directly."""
    if len(coros) == 2 and timeout is None and not self.suspend_flow.is_set():
        delivery, suspended = coros
        if inspect.iscoroutine(delivery) and inspect.iscoroutine(suspended):
            suspended.close()  # never started: nothing waits on it
            return WaitResults([delivery], [await delivery], False)
    return await _faust_wait_first(self, *coros, timeout=timeout)


faust.transport.consumer.Consumer.wait_first = wait_first  # type: ignore[method-assign]
