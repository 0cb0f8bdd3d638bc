"""Message lag, waiting updates and time lag of one partition, from what its owner knows: pure.

* message lag = log end offset − the group's committed offset (records, as Kafka defines it);
* waiting updates = the updates those records hold: a record's ``rowstream-updates`` header says
  how many (batch records, update batches), a record without it holds one (``UpdateCounts``);
* time lag = now − the timestamp of the oldest message not yet committed (the message at the
  committed offset), or 0 when none waits. While messages wait and none is processed it keeps
  rising; as the backlog is applied it falls; with nothing waiting it is 0.

The log end offset comes from fetch responses (the high watermark), never from ListOffsets
"latest", which some Kafka-API brokers (tansu 0.6) answer wrongly.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import NamedTuple


class PartitionLag(NamedTuple):
    topic: str
    partition: int
    end: int | None  # log end offset (high watermark); None until first fetched
    committed: int | None  # the group's committed offset; None if it never committed
    oldest: float | None  # timestamp (s) of the message at the committed offset, if known
    owner: str = ""  # the worker that owns the partition
    reported_at: float = 0.0
    updates: int | None = None  # updates the waiting records hold (None: one per record)

    @property
    def message_lag(self) -> int:
        if self.end is None:
            return 0
        return max(0, self.end - (self.committed or 0))

    @property
    def waiting_updates(self) -> int:
        if self.updates is None or self.message_lag == 0:
            return self.message_lag
        return self.updates

    def time_lag(self, now: float) -> float:
        if self.message_lag == 0 or self.oldest is None:
            return 0.0
        return max(0.0, now - self.oldest)

    def as_json(self, now: float) -> dict:
        return {
            "topic": self.topic,
            "partition": self.partition,
            "message_lag": self.message_lag,
            "waiting_updates": self.waiting_updates,
            "time_lag_seconds": round(self.time_lag(now), 3),
            "end_offset": self.end,
            "committed_offset": self.committed,
            "owner": self.owner,
            "age_seconds": round(max(0.0, now - self.reported_at), 1),
        }


def per_shard_totals(
    lags: list[PartitionLag], shard_of: Callable[[str, int], int], now: float
) -> list[dict]:
    """Per topic and shard (``shard_of(topic, partition)``): total message lag and waiting
    updates, and the worst time lag of its partitions."""
    totals: dict[tuple[str, int], dict] = {}
    for lag in lags:
        key = (lag.topic, shard_of(lag.topic, lag.partition))
        entry = totals.setdefault(
            key,
            {
                "topic": key[0],
                "shard": key[1],
                "message_lag": 0,
                "waiting_updates": 0,
                "time_lag_seconds": 0.0,
            },
        )
        entry["message_lag"] += lag.message_lag
        entry["waiting_updates"] += lag.waiting_updates
        entry["time_lag_seconds"] = max(entry["time_lag_seconds"], round(lag.time_lag(now), 3))
    return [totals[key] for key in sorted(totals)]


class UpdateCounts:
    """The updates held by each record of one internal-topic partition at or after the committed
    offset, counted once as the lag monitor reads them: each round reads on from ``resume_at``.

    ``waiting(committed, end)`` is exact once every record before ``end`` was counted; records not
    read yet (a backlog larger than a round reads) count at the average of those counted.
    """

    def __init__(self) -> None:
        self._records: deque[tuple[int, int, float]] = deque()  # (offset, updates, timestamp s)
        self._total = 0  # updates in _records
        self._next: int | None = None  # the offset after the last one counted

    def resume_at(self, committed: int) -> int:
        """Where to read on from: after the last record counted, or the committed offset."""
        self._prune(committed)
        return committed if self._next is None else max(self._next, committed)

    def add(self, offset: int, updates: int, timestamp: float) -> None:
        if self._next is not None and offset < self._next:
            return  # counted already
        self._records.append((offset, updates, timestamp))
        self._total += updates
        self._next = offset + 1

    def oldest(self, committed: int) -> float | None:
        """The timestamp of the record at the committed offset, if it was counted."""
        self._prune(committed)
        return self._records[0][2] if self._records else None

    def waiting(self, committed: int, end: int) -> int:
        self._prune(committed)
        unread = max(0, end - self.resume_at(committed))
        average = self._total / len(self._records) if self._records else 1.0
        return self._total + round(unread * average)

    def _prune(self, committed: int) -> None:
        if self._next is not None and self._next <= committed:  # everything counted is applied
            self._records.clear()
            self._total, self._next = 0, None
            return
        while self._records and self._records[0][0] < committed:
            self._total -= self._records.popleft()[1]
