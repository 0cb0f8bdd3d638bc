"""Message lag and time lag of one partition, from what its owner knows: pure, no I/O.

* message lag = log end offset − the group's committed offset;
* time lag = now − the timestamp of the oldest message not yet committed (the message at the
  committed offset), or 0 when none waits. While messages wait and none is processed it keeps
  rising; as the backlog is applied it falls; with nothing waiting it is 0.

The log end offset comes from fetch responses (the high watermark), never from ListOffsets
"latest", which some Kafka-API brokers (tansu 0.6) answer wrongly.
"""

from __future__ import annotations

from typing import NamedTuple, Optional


class PartitionLag(NamedTuple):
    topic: str
    partition: int
    end: Optional[int]  # log end offset (high watermark); None until first fetched
    committed: Optional[int]  # the group's committed offset; None if it never committed
    oldest: Optional[float]  # timestamp (s) of the message at the committed offset, if known
    owner: str = ""  # the worker that owns the partition
    reported_at: float = 0.0

    @property
    def message_lag(self) -> int:
        if self.end is None:
            return 0
        return max(0, self.end - (self.committed or 0))

    def time_lag(self, now: float) -> float:
        if self.message_lag == 0 or self.oldest is None:
            return 0.0
        return max(0.0, now - self.oldest)

    def as_json(self, now: float) -> dict:
        return {
            "topic": self.topic,
            "partition": self.partition,
            "message_lag": self.message_lag,
            "time_lag_seconds": round(self.time_lag(now), 3),
            "end_offset": self.end,
            "committed_offset": self.committed,
            "owner": self.owner,
            "age_seconds": round(max(0.0, now - self.reported_at), 1),
        }


def per_shard_totals(lags: list[PartitionLag], shard_of, now: float) -> list[dict]:
    """Per topic and shard: total message lag and the worst time lag of its partitions."""
    totals: dict[tuple[str, int], dict] = {}
    for lag in lags:
        key = (lag.topic, shard_of(lag.partition))
        entry = totals.setdefault(
            key, {"topic": key[0], "shard": key[1], "message_lag": 0, "time_lag_seconds": 0.0}
        )
        entry["message_lag"] += lag.message_lag
        entry["time_lag_seconds"] = max(entry["time_lag_seconds"], round(lag.time_lag(now), 3))
    return [totals[key] for key in sorted(totals)]
