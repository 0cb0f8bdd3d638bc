"""The delivery guard: events pass in offset order from the start offset, or are read again.

The property test plays a consumer that skips and rewinds at random (what Faust does around a
rebalance) and checks that the events handed on never leave a hole, and that every record is
handed on in the end."""

from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.kafka import delivery
from app.kafka.ordering import InOrder
from app.observe import metrics


def test_in_order_events_pass_and_a_skip_asks_for_the_missing_offset():
    order = InOrder()
    order.begin(6, 2389)
    assert order.admit(6, 2392) == 2389  # the lost-update case of the scale fault test
    assert order.expected(6) == 2389  # a refused event does not move it
    assert [order.admit(6, o) for o in (2389, 2390, 2391, 2392)] == [None] * 4
    assert order.expected(6) == 2393


def test_a_rewind_passes_and_does_not_lower_the_expected_offset():
    order = InOrder()
    order.begin(0, 10)
    for offset in range(10, 15):
        assert order.admit(0, offset) is None
    assert order.admit(0, 11) is None  # read again from 11: the sink writes it after 14
    assert order.admit(0, 13) is None  # a skip inside what was already handed on is harmless
    assert order.expected(0) == 15
    assert order.admit(0, 16) == 15


def test_rewinding_refuses_later_events_until_the_rewound_one_comes_back():
    order = InOrder()
    order.begin(0, 10)
    assert [order.admit(0, o) for o in range(10, 14)] == [None] * 4
    assert order.rewind(0, 11)  # 11 could not be processed
    assert not order.rewind(0, 12)  # a later failure of the same partition changes nothing
    assert order.admit(0, 14) == 11
    assert [order.admit(0, o) for o in range(11, 15)] == [None] * 4
    assert order.expected(0) == 15


def test_without_a_start_offset_the_first_event_starts_the_partition():
    order = InOrder()
    order.begin(1, None)
    assert order.started(1)
    assert order.admit(1, 7) is None
    assert order.admit(1, 9) == 8


def test_partitions_are_independent_and_forget_restarts_them():
    order = InOrder()
    order.begin(0, 5)
    order.begin(1, 50)
    assert order.admit(1, 50) is None
    assert order.admit(0, 6) == 5
    order.forget([0])
    assert not order.started(0) and order.started(1)
    order.forget()
    assert not order.started(1) and order.expected(1) is None


@settings(max_examples=300, deadline=None)
@given(
    committed=st.integers(0, 20),
    ahead=st.integers(0, 10),  # the consumer may start past the committed offset
    moves=st.lists(
        st.tuples(st.sampled_from(["next", "skip", "rewind"]), st.integers(1, 15)), max_size=60
    ),
)
def test_a_skipping_and_rewinding_consumer_never_leaves_a_hole(committed, ahead, moves):
    end = committed + 40  # the log holds offsets up to end - 1
    order = InOrder()
    order.begin(0, committed)
    position = committed + ahead
    handed_on: list[int] = []
    chaos = iter(moves)
    for _ in range(10_000):
        if position >= end:
            break
        again = order.admit(0, position)
        if again is None:
            assert position <= max(handed_on, default=committed - 1) + 1, "a hole was handed on"
            handed_on.append(position)
            position += 1
        else:
            assert again == max(handed_on, default=committed - 1) + 1
            position = again  # the consumer obeys the seek
        kind, step = next(chaos, ("next", 1))
        if kind == "skip":
            position += step
        elif kind == "rewind":
            position = max(committed, position - step)
    assert set(range(committed, end)) <= set(handed_on)


def message(offset, partition=0, generation=1):
    return SimpleNamespace(
        offset=offset, partition=partition, generation_id=generation, tp=("topic", partition)
    )


def unit(first, last, partition=0, generation=1):
    return SimpleNamespace(
        first_offset=first,
        offset=last,
        partition=partition,
        generation_id=generation,
        tp=("topic", partition),
    )


class Consumer:
    """What the guard needs of the worker: its partitions, their start offsets, seek."""

    def __init__(self, starts):
        self.starts = starts
        self.asked: list[list[int]] = []
        self.seeks: list[tuple] = []
        self.seek_fails = False

    def guard(self):
        async def starts(partitions):
            self.asked.append(partitions)
            return {p: self.starts.get(p) for p in partitions}

        async def seek(tp, offset):
            if self.seek_fails:
                raise RuntimeError("partition not assigned")
            self.seeks.append((tp, offset))

        return delivery.DeliveryGuard("topic", lambda: sorted(self.starts), starts, seek)


async def test_the_guard_starts_all_partitions_with_one_question_per_generation():
    consumer = Consumer({0: 100, 1: 7})
    guard = consumer.guard()
    assert await guard.admit(message(100))
    assert await guard.admit(message(7, partition=1))
    assert consumer.asked == [[0, 1]]
    consumer.starts[0] = 103
    assert await guard.admit(message(103, generation=2))  # a new generation starts again
    assert consumer.asked == [[0, 1], [0, 1]]


async def test_the_guard_drops_a_skipping_event_and_seeks_back(caplog):
    consumer = Consumer({6: 2389})
    guard = consumer.guard()
    skips = metrics.READ_AGAIN.labels("topic")._value.get()
    for offset in (2392, 2393, 2394):  # prefetched records past the hole
        assert not await guard.admit(message(offset, partition=6))
    assert consumer.seeks == [(("topic", 6), 2389)] * 3
    assert metrics.READ_AGAIN.labels("topic")._value.get() == skips + 1  # one skip, one count
    assert (
        sum("reading the partition again from 2389" in r.getMessage() for r in caplog.records) == 1
    )
    assert all([await guard.admit(message(o, partition=6)) for o in range(2389, 2395)])
    assert guard.expected(6) == 2395


async def test_the_guard_seeks_again_while_nothing_arrives_and_stops_once_it_does():
    consumer = Consumer({2: 40})
    guard = consumer.guard()
    assert not await guard.admit(message(44, partition=2))
    await guard.seek_stalled(after=60)  # too early: nothing
    await guard.seek_stalled(after=0)  # the seek was lost (or the partition is idle)
    assert consumer.seeks == [(("topic", 2), 40)] * 2
    assert await guard.admit(message(40, partition=2))
    await guard.seek_stalled(after=0)
    assert len(consumer.seeks) == 2


async def test_the_guard_reads_again_from_an_event_that_could_not_be_processed(caplog):
    consumer = Consumer({3: 50})
    guard = consumer.guard()
    assert all([await guard.admit(message(o, partition=3)) for o in range(50, 56)])
    guard.read_again(message(52, partition=3), "could not be forwarded (timeout)")
    guard.read_again(message(54, partition=3), "could not be forwarded (timeout)")
    assert sum("offset 52 could not be forwarded" in r.getMessage() for r in caplog.records) == 1
    await guard.seek_stalled()  # the timer's next tick seeks, however recent the failure
    assert consumer.seeks == [(("topic", 3), 52)]
    assert not await guard.admit(message(56, partition=3))  # in flight before the seek: refused
    assert all([await guard.admit(message(o, partition=3)) for o in range(52, 57)])
    assert guard.expected(3) == 57
    guard.read_again(message(53, partition=3, generation=0), "could not be forwarded (timeout)")
    assert guard.expected(3) == 57  # a failure from before the last rebalance: nothing to do


async def test_the_guard_survives_a_seek_on_a_partition_revoked_meanwhile():
    consumer = Consumer({0: 10})
    consumer.seek_fails = True
    guard = consumer.guard()
    assert not await guard.admit(message(12))
    guard.forget([0])
    assert guard.expected(0) is None


def test_units_pass_whole_and_a_partial_redelivery_moves_past_its_last_record():
    order = InOrder()
    order.begin(0, 100)
    assert order.admit(0, 100, 149) is None and order.expected(0) == 150
    assert order.admit(0, 120, 139) is None and order.expected(0) == 150  # all seen: a re-delivery
    assert order.admit(0, 140, 199) is None and order.expected(0) == 200  # partly new
    assert order.admit(0, 201, 210) == 200  # a record before it was skipped


async def test_the_guard_admits_a_unit_by_its_first_record_and_reads_again_from_it():
    consumer = Consumer({4: 10})
    guard = consumer.guard()
    assert await guard.admit(unit(10, 19, partition=4))
    assert not await guard.admit(unit(25, 30, partition=4))
    assert consumer.seeks == [(("topic", 4), 20)]
    assert await guard.admit(unit(20, 30, partition=4))
    assert guard.began(4) == 10 and guard.expected(4) == 31
    guard.read_again(unit(20, 30, partition=4), "could not be forwarded (timeout)")
    assert guard.expected(4) == 20


@pytest.mark.parametrize("offset", [0, 5])
def test_the_first_offset_of_a_fresh_log_passes(offset):
    order = InOrder()
    order.begin(3, offset)
    assert order.admit(3, offset) is None
