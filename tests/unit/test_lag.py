"""Message lag, waiting updates and time lag of a partition, and the per-shard totals (pure)."""

from hypothesis import given, settings
from hypothesis import strategies as st

from app.observe.lag import PartitionLag, UpdateCounts, per_shard_totals


def test_lag_of_a_partition_from_its_end_committed_offset_and_oldest_waiting_message():
    lag = PartitionLag("t", 0, end=120, committed=100, oldest=50.0)
    assert (lag.message_lag, lag.waiting_updates, lag.time_lag(60.0)) == (20, 20, 10.0)
    batched = lag._replace(updates=1_400)  # 20 batch records holding 1,400 updates
    assert batched.waiting_updates == 1_400 and batched.as_json(60.0)["waiting_updates"] == 1_400
    assert PartitionLag("t", 0, 100, 100, None, updates=7).waiting_updates == 0  # none waits
    assert PartitionLag("t", 0, None, None, None).as_json(0.0)["message_lag"] == 0


def test_per_shard_totals_add_waiting_updates_and_take_the_worst_time_lag():
    lags = [
        PartitionLag("t", 0, 10, 5, 1.0, updates=50),
        PartitionLag("t", 1, 4, 0, 3.0),
        PartitionLag("t", 2, 9, 9, None, updates=0),
    ]
    totals = per_shard_totals(lags, lambda topic, partition: partition // 2, now=5.0)
    assert totals == [
        {
            "topic": "t",
            "shard": 0,
            "message_lag": 9,
            "waiting_updates": 54,
            "time_lag_seconds": 4.0,
        },
        {"topic": "t", "shard": 1, "message_lag": 0, "waiting_updates": 0, "time_lag_seconds": 0.0},
    ]


def test_update_counts_read_each_record_once_and_forget_what_is_committed():
    counts = UpdateCounts()
    assert counts.resume_at(10) == 10 and counts.waiting(10, 10) == 0
    for offset, updates in ((10, 5), (11, 7), (12, 1)):
        counts.add(offset, updates, float(offset))
    counts.add(11, 99, 0.0)  # read again: counted once
    assert counts.resume_at(10) == 13
    assert counts.waiting(10, 13) == 13 and counts.oldest(10) == 10.0
    assert counts.waiting(11, 13) == 8 and counts.oldest(11) == 11.0
    assert counts.waiting(11, 15) == 8 + 2 * 4  # two records not read yet: at the average
    assert counts.waiting(13, 15) == 2 and counts.resume_at(13) == 13  # all counted ones applied


@settings(max_examples=300, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 50), min_size=1, max_size=40),
    rounds=st.lists(
        st.tuples(st.integers(0, 6), st.integers(0, 6), st.integers(0, 6)), max_size=30
    ),
)
def test_waiting_updates_equal_the_updates_from_the_committed_offset_to_the_end(sizes, rounds):
    """Rounds in which the log grows, the monitor reads some records on, and the group commits
    some: whenever every waiting record was read, the count is exact."""
    counts = UpdateCounts()
    end = committed = read = 0
    for grow, reads, commits in rounds:
        end = min(len(sizes), end + grow)
        read = min(end, counts.resume_at(committed) + reads)
        for offset in range(counts.resume_at(committed), read):
            counts.add(offset, sizes[offset], float(offset))
        if counts.resume_at(committed) >= end:
            assert counts.waiting(committed, end) == sum(sizes[committed:end])
            assert counts.oldest(committed) == (float(committed) if committed < end else None)
        committed = min(end, committed + commits)
