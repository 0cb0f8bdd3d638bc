"""The last 15 minutes of the cluster's lag and per-shard counts, for the operator page: pure.

A ``Ring`` keeps samples at most one per ``interval`` seconds (a sample offered sooner is
dropped), at most ``window / interval`` of them: bounded memory, the oldest falls out. The rings
live in the worker that holds the cluster-wide tables (``tables/lag.py``, ``tables/throughput.py``),
in memory: after the table moves to another worker its history starts again there.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable

from app.observe.lag import PartitionLag, per_shard_totals

WINDOW_SECONDS = 15 * 60.0


class Ring:
    def __init__(self, interval: float, window: float = WINDOW_SECONDS) -> None:
        self.interval = interval
        self._samples: deque[dict] = deque(maxlen=max(1, round(window / interval)))

    def offer(self, now: float, sample: Callable[[], dict]) -> bool:
        """Keep ``sample()`` (with ``at`` = now) unless the last was taken under an interval ago
        (a little early is fine: rounds drift)."""
        if self._samples and now - self._samples[-1]["at"] < 0.9 * self.interval:
            return False
        self._samples.append({"at": round(now, 3), **sample()})
        return True

    def samples(self) -> list[dict]:
        return list(self._samples)

    def __len__(self) -> int:
        return len(self._samples)


def lag_sample(
    lags: Iterable[PartitionLag], shard_of: Callable[[str, int], int], label: Callable[[str], str],
    now: float,
) -> dict:  # fmt: skip
    """Per topic and per (topic, shard): message lag, waiting updates and the worst time lag."""
    lags = list(lags)
    shards = per_shard_totals(lags, shard_of, now)
    topics: dict[str, dict] = {}
    for entry in shards:
        total = topics.setdefault(
            label(entry["topic"]),
            {"message_lag": 0, "waiting_updates": 0, "time_lag_seconds": 0.0},
        )
        total["message_lag"] += entry["message_lag"]
        total["waiting_updates"] += entry["waiting_updates"]
        total["time_lag_seconds"] = max(total["time_lag_seconds"], entry["time_lag_seconds"])
    return {
        "topics": topics,
        "shards": [{**entry, "topic": label(entry["topic"])} for entry in shards],
    }


__all__ = ["WINDOW_SECONDS", "Ring", "lag_sample"]
