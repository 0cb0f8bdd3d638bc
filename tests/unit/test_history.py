"""The operator page's history rings: one sample per interval, bounded to the window, and the
lag sample's per-topic and per-shard figures."""

from app.observe.history import Ring, lag_sample
from app.observe.lag import PartitionLag


def test_a_ring_keeps_one_sample_per_interval_and_only_the_window():
    ring = Ring(interval=1.0, window=5.0)
    taken = [ring.offer(100.0 + t, lambda t=t: {"n": t}) for t in (0, 0.5, 0.95, 2, 3, 4, 5, 6)]
    assert taken == [True, False, True, True, True, True, True, True]
    assert len(ring) == 5  # the window holds 5 intervals; the oldest fell out
    assert [s["n"] for s in ring.samples()] == [2, 3, 4, 5, 6]
    assert ring.samples()[0]["at"] == 102.0


def test_a_lag_sample_totals_topics_and_shards():
    now = 1000.0
    lags = [  # topic, partition, end, committed, oldest timestamp
        PartitionLag("p-subscription-updates", 0, 10, 10, None),
        PartitionLag("p-rowstream-by-subscription", 0, 5, 5, None),
        PartitionLag("p-rowstream-by-subscription", 2, 9, 4, 990.0, updates=400),
        PartitionLag("p-rowstream-by-subscription", 3, 3, 1, 995.0),
    ]
    sample = lag_sample(lags, lambda topic, p: p // 2, lambda t: t.removeprefix("p-"), now)
    assert sample["topics"] == {
        "subscription-updates": {"message_lag": 0, "waiting_updates": 0, "time_lag_seconds": 0.0},
        "rowstream-by-subscription": {
            "message_lag": 7, "waiting_updates": 402, "time_lag_seconds": 10.0,
        },
    }  # fmt: skip
    held = [s for s in sample["shards"] if s["topic"] == "rowstream-by-subscription"]
    assert [(s["shard"], s["message_lag"], s["time_lag_seconds"]) for s in held] == [
        (0, 0, 0.0),
        (1, 7, 10.0),
    ]
