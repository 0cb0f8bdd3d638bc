"""Checked in-order delivery: an agent hands an event on only if no record before it was skipped.

Both agents rely on reading each partition "from the committed offset on, in order, possibly
going back": the repartition forwards every update in order, and the sink's coalescing and version
guard turn re-deliveries into no-ops. A record *skipped* breaks that: the sink would apply a later
update of a row first, and the version guard would then refuse the skipped one forever.

Faust 0.15.3 does skip records around rebalances (found by the fault tests; Faust issues #216,
#221 and #236 describe the same family): when a worker keeps or regains a partition, records
prefetched from a position past the committed offset can reach the agent before Faust seeks back,
and its fetch loop then drops the records in between as already read; and it silently skips the
records already fetched for a partition that is paused while it walks a batch, its position
moved past them (found by the shard-outage fault test). Our topics are never
compacted and carry no transaction markers, so their offsets are contiguous and any jump is such a
skip. ``InOrder`` notices it; the caller drops the event unacknowledged and reads the partition
again from the offset that is missing (``app.kafka.delivery``).
"""

from __future__ import annotations

from collections.abc import Iterable


class InOrder:
    """Per partition, the next offset that may be handed on.

    ``begin`` sets it to the group's committed offset when the partition (re)starts; every handed
    on unit (the records of one partition from one fetch) moves it past its last record. A unit
    that starts at or before it is (partly) a re-delivery (a rewind to an earlier offset, Faust's
    or ours): handed on, since the sink must write it after what it already holds, and harmless,
    since the writes are idempotent. A unit that starts after it means records were skipped: not
    handed on, and ``admit`` answers the offset to read again from.
    """

    def __init__(self) -> None:
        self._next: dict[int, int] = {}
        self._started: set[int] = set()

    def started(self, partition: int) -> bool:
        return partition in self._started

    def begin(self, partition: int, committed: int | None) -> None:
        """Start a partition at the group's committed offset (None: nothing committed yet, so
        the first offset delivered is taken as the start; the log may begin after 0)."""
        self._started.add(partition)
        if committed is None:
            self._next.pop(partition, None)
        else:
            self._next[partition] = committed

    def admit(self, partition: int, first: int, last: int | None = None) -> int | None:
        """None: hand on the unit of records ``first..last`` (one record when ``last`` is None).
        Otherwise the offset to read the partition again from."""
        expected = self._next.get(partition)
        if expected is not None and first > expected:
            return expected
        end = (first if last is None else last) + 1
        if expected is None or end > expected:
            self._next[partition] = end
        return None

    def rewind(self, partition: int, offset: int) -> bool:
        """Hand events on again from ``offset`` (an event handed on could not be processed):
        later ones are refused until it comes back. False if ``offset`` was already expected."""
        expected = self._next.get(partition)
        if expected is not None and expected <= offset:
            return False
        self._started.add(partition)
        self._next[partition] = offset
        return True

    def expected(self, partition: int) -> int | None:
        """The next offset to hand on (None before the first one when nothing was committed)."""
        return self._next.get(partition)

    def forget(self, partitions: Iterable[int] | None = None) -> None:
        """Forget partitions (all when None): they start again at their committed offset."""
        for partition in list(self._started) if partitions is None else partitions:
            self._started.discard(partition)
            self._next.pop(partition, None)


__all__ = ["InOrder"]
