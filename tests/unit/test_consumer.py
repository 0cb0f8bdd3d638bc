"""app/kafka/consumer.py, rule by rule, on a real Faust consumer object (built, not started: no
broker): units, acknowledgement and commit bookkeeping, refused acknowledgements, the drain
loop's guard and hand-over; the commit and the producer's partition sets against Faust's and
aiokafka's own."""

import asyncio
import contextlib
import inspect
import random
from types import SimpleNamespace

import aiokafka
import faust
import pytest
from aiokafka.cluster import ClusterMetadata
from aiokafka.errors import CommitFailedError
from aiokafka.structs import ConsumerRecord, OffsetAndMetadata, TopicPartition
from faust.tables.recovery import Recovery
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
from faust.types import TP
from hypothesis import given, settings
from hypothesis import strategies as st

from app.kafka import consumer as rowstream
from app.kafka.offsets import GroupOffsets
from app.kafka.security import Broker

UNITS, OTHER = "units", "other"


def test_this_is_the_faust_and_aiokafka_it_was_reasoned_about():
    # app/kafka/consumer.py replaces Faust 0.15.3's drain loop, getmany, ack bookkeeping and commit:
    # read its reasoning again (and run `make faults` 3 times) before upgrading either.
    assert faust.__version__ == "0.15.3" and aiokafka.__version__ == "0.14.0"


def make_consumer(starts=None):
    app = rowstream.RowstreamApp(
        "unit-test",
        group_offsets=GroupOffsets(Broker("kafka://127.0.0.1:1"), "g"),
        broker="kafka://127.0.0.1:1",
        web_enabled=False,
    )
    app.deliver_in_units(app.topic(UNITS), "units")
    consumer = app.consumer
    assert type(consumer) is rowstream.Consumer
    consumer.flow_active = True
    app.consumer_generation_id = 1
    began = starts or {}
    guard = consumer._guards[UNITS]
    guard._began.update(began)
    return consumer


def records(partition, first, last, topic=UNITS):
    return [
        ConsumerRecord(
            topic, partition, offset, 1_000 * offset, 0, None, b"v%d" % offset, None, 0, 2, ()
        )
        for offset in range(first, last + 1)
    ]


def unit(partition, first, last, generation=1):
    return rowstream.Unit(TP(UNITS, partition), records(partition, first, last), generation)


def test_a_unit_carries_its_records_and_ends_at_the_last_offset():
    u = unit(3, 10, 14)
    assert (u.topic, u.partition, u.first_offset, u.offset) == (UNITS, 3, 10, 14)
    assert [r.offset for r in u.value] == [10, 11, 12, 13, 14] and u.timestamp == 14.0


async def test_getmany_yields_one_unit_per_partition_of_a_unit_topic_and_records_elsewhere():
    consumer = make_consumer()
    fetched = {
        TP(UNITS, 0): records(0, 5, 9),
        TP(OTHER, 0): records(0, 1, 3, OTHER),
        TP(UNITS, 1): records(1, 0, 0),
    }

    async def wait_next_records(timeout):
        return fetched, None

    consumer._wait_next_records = wait_next_records
    consumer.highwater = lambda tp: 100
    got = [(tp, message) async for tp, message in consumer.getmany(1.0)]
    kinds = [(tp.topic, tp.partition, type(m).__name__, m.offset) for tp, m in got]
    assert kinds == [
        (UNITS, 0, "Unit", 9),
        (OTHER, 0, "ConsumerMessage", 1),
        (OTHER, 0, "ConsumerMessage", 2),
        (OTHER, 0, "ConsumerMessage", 3),
        (UNITS, 1, "Unit", 0),
    ]
    assert got[0][1].first_offset == 5


def test_acking_a_unit_acks_its_records_and_the_commit_follows_runs_from_the_committed_offset():
    consumer = make_consumer(starts={0: 100})
    tp = TP(UNITS, 0)
    a, b, c = unit(0, 100, 149), unit(0, 150, 150), unit(0, 151, 400)
    assert consumer.ack(c)  # acknowledged out of order: nothing to commit yet
    assert consumer._new_offset(tp) is None
    assert consumer.ack(a)
    assert consumer._new_offset(tp) == 150  # b (one record) is still missing
    consumer._committed_offset[tp] = 150
    assert consumer._new_offset(tp) is None
    assert consumer.ack(b)
    assert consumer._new_offset(tp) == 401
    assert not consumer.ack(b)  # twice: nothing new


def test_faust_own_bookkeeping_would_commit_past_a_missing_head():
    """Why ``_new_offset`` is replaced: with one record missing at the head (and with nothing
    committed before), Faust 0.15.3 commits past it."""
    faust_new_offset = faust.transport.consumer.Consumer._new_offset
    consumer = make_consumer(starts={0: 100})
    tp = TP(UNITS, 0)
    consumer.ack(unit(0, 101, 200))
    consumer._committed_offset[tp] = 100
    assert faust_new_offset(consumer, tp) == 201  # past the unacknowledged offset 100
    consumer.ack(unit(0, 201, 210))
    assert consumer._new_offset(tp) is None
    fresh = make_consumer(starts={0: 0})
    fresh.ack(unit(0, 5, 9))  # nothing committed yet; 0..4 not acknowledged
    assert faust_new_offset(fresh, TP(UNITS, 0)) == 10
    fresh.ack(unit(0, 10, 12))
    assert fresh._new_offset(TP(UNITS, 0)) is None


def test_without_a_known_start_nothing_is_committed():
    consumer = make_consumer()
    consumer.ack(unit(0, 0, 9))
    assert consumer._new_offset(TP(UNITS, 0)) is None
    consumer._guards[UNITS]._began[0] = 0
    assert consumer._new_offset(TP(UNITS, 0)) == 10


def test_acks_of_an_earlier_generation_or_during_a_rebalance_are_refused():
    consumer = make_consumer(starts={0: 0})
    tp = TP(UNITS, 0)
    assert not consumer.ack(unit(0, 0, 99, generation=0))
    consumer.flow_active = False  # a rebalance stopped the flow; the stream acks what it drops
    assert not consumer.ack(unit(0, 0, 99))
    assert consumer._new_offset(tp) is None and not consumer._acked[tp]
    consumer.flow_active = True
    assert consumer.ack(unit(0, 0, 99)) and consumer._new_offset(tp) == 100


def test_faust_gaps_are_off():
    consumer = make_consumer()
    asyncio.run(consumer._add_gap(TP(UNITS, 0), 0, 100))
    assert not consumer._gap[TP(UNITS, 0)]


@settings(max_examples=200, deadline=None)
@given(
    start=st.integers(0, 50),
    sizes=st.lists(st.integers(1, 30), min_size=1, max_size=25),
    seed=st.integers(0, 2**32),
    refused=st.sets(st.integers(0, 24)),
)
def test_units_acked_in_any_order_never_commit_past_an_unacknowledged_record(
    start, sizes, seed, refused
):
    consumer = make_consumer(starts={0: start})
    tp = TP(UNITS, 0)
    units, first = [], start
    for size in sizes:
        units.append(unit(0, first, first + size - 1))
        first += size
    order = list(range(len(units)))
    random.Random(seed).shuffle(order)
    acked: set[int] = set()
    committed = start
    for n in order:
        if n in refused:  # e.g. dropped by a stream during a rebalance
            consumer.flow_active = False
            consumer.ack(units[n])
            consumer.flow_active = True
        else:
            consumer.ack(units[n])
            acked.update(range(units[n].first_offset, units[n].offset + 1))
        offset = consumer._new_offset(tp)
        if offset is not None:
            assert set(range(committed, offset)) <= acked, "committed past a record not acked"
            committed = offset
            consumer._committed_offset[tp] = offset
    first_missing = min(set(range(start, first + 1)) - acked)
    assert committed == first_missing  # and everything acknowledged before it is committed


# --- the drain loop ------------------------------------------------------------------------


async def drain(consumer, batches):
    """Run the drain loop over ``batches`` (lists of (tp, message)) as successive fetches."""
    fetches = iter(batches)
    fetcher = SimpleNamespace(_stopped=asyncio.Event())

    async def getmany(timeout):
        batch = next(fetches, None)
        if batch is None:
            fetcher._stopped.set()
            return
        for item in batch:
            yield item

    consumer.getmany = getmany
    await asyncio.wait_for(consumer._drain_messages(fetcher), 5)


async def test_the_drain_loop_hands_units_over_in_order_and_drops_a_skip_for_a_seek():
    consumer = make_consumer()
    delivered, seeks, starts_asked = [], [], []
    tasks = set()

    async def callback(message):
        tasks.add(asyncio.current_task())
        delivered.append((message.first_offset, message.offset))

    async def starts(partitions):
        starts_asked.append(partitions)
        return {p: 10 for p in partitions}

    async def seek(tp, offset):
        seeks.append(offset)

    guard = consumer._guards[UNITS]
    guard._starts, guard._seek, guard._assigned = starts, seek, lambda: [0]
    consumer.callback = callback
    tp = TP(UNITS, 0)
    await drain(
        consumer,
        [
            [(tp, unit(0, 10, 19)), (tp, unit(0, 25, 30))],  # 20..24 skipped: dropped, seek to 20
            [
                (tp, unit(0, 20, 30)),
                (tp, unit(0, 15, 35)),
            ],  # read again; then a partial re-delivery
        ],
    )
    assert delivered == [(10, 19), (20, 30), (15, 35)]
    assert seeks == [20] and starts_asked == [[0]]
    assert guard.expected(0) == 36
    assert len(tasks) == 1  # each hand-over awaited in the loop's own task: no task per message


async def test_while_the_flow_is_suspended_the_drain_loop_races_the_hand_over_as_faust_does():
    consumer = make_consumer(starts={0: 0})
    raced = []

    async def wait_first(*coros, timeout=None):
        raced.append(len(coros))
        for coro in coros:
            coro.close()

    async def callback(message):
        raise AssertionError("not awaited directly while suspended")

    guard = consumer._guards[UNITS]

    async def starts(partitions):
        return {p: 0 for p in partitions}

    guard._starts, guard._assigned = starts, lambda: [0]
    consumer.callback, consumer.wait_first = callback, wait_first
    consumer.suspend_flow.set()
    await drain(consumer, [[(TP(UNITS, 0), unit(0, 0, 4))]])
    assert raced == [2]


async def test_other_topics_keep_faust_already_read_rule():
    consumer = make_consumer()
    delivered = []

    async def callback(message):
        delivered.append(message.offset)

    consumer.callback = callback
    tp = TP(OTHER, 0)
    consumer._read_offset[tp] = 5
    messages = [consumer._to_message(tp, r) for r in records(0, 3, 7, OTHER)]
    await drain(consumer, [[(tp, m) for m in messages]])
    assert delivered == [5, 6, 7]


# --- the commit and the producer's metadata -------------------------------------------------


class CommittingThread:
    """What Faust's consumer thread gives ``_commit``: its consumer, assignment and bookkeeping."""

    def __init__(self, assigned, fails=None):
        self.assigned = assigned
        self.fails = fails
        self.committed = []
        self.crashed = []
        self.tp_last_committed_at = {}
        self.log = SimpleNamespace(exception=lambda *args: None)
        self.assignment_calls = 0

    def _ensure_consumer(self):
        async def commit(offsets):
            if self.fails:
                raise self.fails
            self.committed.append(offsets)

        return SimpleNamespace(commit=commit)

    def assignment(self):
        self.assignment_calls += 1
        return set(self.assigned)

    async def crash(self, exc):
        self.crashed.append(exc)


async def test_the_commit_keeps_assigned_partitions_and_takes_the_assignment_once():
    commit = rowstream.ConsumerThread._commit
    owned = [TP("t", p) for p in range(720)]
    thread = CommittingThread(owned)
    offsets = {tp: 10 + tp.partition for tp in owned} | {TP("t", 900): 5}  # 900: revoked meanwhile
    assert await commit(thread, offsets)
    assert thread.committed == [
        {TopicPartition("t", p): OffsetAndMetadata(10 + p, "") for p in range(720)}
    ]
    assert thread.assignment_calls == 1 and set(thread.tp_last_committed_at) == set(owned)
    faust_thread = CommittingThread(owned)
    assert await AIOKafkaConsumerThread._commit(faust_thread, offsets)  # Faust's: the same commit
    assert faust_thread.committed == thread.committed and faust_thread.assignment_calls == 721

    rebalanced = CommittingThread(owned, CommitFailedError("already rebalanced"))
    assert not await commit(rebalanced, offsets) and not rebalanced.crashed
    broken = CommittingThread(owned, RuntimeError("broker gone"))
    assert not await commit(broken, offsets) and len(broken.crashed) == 1


def test_a_topics_partition_set_is_built_once_per_metadata_update():
    metadata = rowstream.PartitionSets()
    assert metadata.partitions_for_topic("t") is None
    metadata._partitions = {"t": {p: object() for p in range(720)}}
    first = metadata.partitions_for_topic("t")
    assert first == ClusterMetadata.partitions_for_topic(metadata, "t")  # aiokafka's answer
    assert metadata.partitions_for_topic("t") is first
    metadata._partitions = {"t": {p: object() for p in range(24)}}  # what update_metadata does
    assert metadata.partitions_for_topic("t") == set(range(24))
    assert metadata.partitions_for_topic("other") is None


@pytest.mark.parametrize("producer_type", [rowstream.AIOKafkaProducer])
async def test_the_producer_uses_the_cached_partition_sets(producer_type):
    producer = producer_type(bootstrap_servers="127.0.0.1:1")
    try:
        assert type(producer.client.cluster) is rowstream.PartitionSets
        assert producer._metadata is producer.client.cluster
    finally:
        await producer.stop()


async def test_the_worker_consumer_asks_for_a_short_fetch_wait():
    from app.main import app

    thread = app.consumer._thread
    assert type(thread) is rowstream.ConsumerThread
    ours = thread._create_worker_consumer(app.transport)
    faust_own = AIOKafkaConsumerThread._create_worker_consumer(thread, app.transport)
    try:
        assert (ours._fetch_max_wait_ms, ours._fetch_min_bytes) == (250, 64 * 1024)
        # Faust's own, which tansu holds for the whole 1.5 s when no record is new
        assert (faust_own._fetch_max_wait_ms, faust_own._fetch_min_bytes) == (1500, 1)
    finally:
        await ours.stop()
        await faust_own.stop()


async def test_recovery_rereads_a_changelog_it_had_read_as_a_standby():
    """Rule 9: the seek of table recovery moves the read offset of a changelog partition, so the
    records before it are delivered again instead of being dropped as already read; other
    topics keep Faust's read offsets."""
    consumer = make_consumer()
    table = consumer.app.Table("t", default=int, partitions=1)
    changelog = TP(table.changelog_topic.get_topic_name(), 0)
    other = TP(OTHER, 0)
    sought = []

    async def thread_seek_wait(partitions):
        sought.append(dict(partitions))

    consumer._thread.seek_wait = thread_seek_wait
    consumer._read_offset[changelog] = 54  # read to the end as a standby
    consumer._read_offset[other] = 7
    await consumer.seek_wait({changelog: 0, other: 3})  # took the table over: rebuild from 0
    assert sought == [{changelog: 0, other: 3}]
    assert consumer._read_offset[changelog] is None and consumer._read_offset[other] == 7

    async def wait_next_records(timeout):
        return {changelog: records(0, 0, 2, changelog.topic)}, None

    consumer._wait_next_records = wait_next_records
    consumer.highwater = lambda tp: 100
    got = [message.offset async for _, message in consumer.getmany(1.0)]
    assert got == [0, 1, 2]  # delivered, not dropped as already read


class FetchingConsumer:
    """An aiokafka consumer as Faust's fetch call sees it; ``during`` runs while the fetch waits
    (what a rebalance, on the other side of the thread, does meanwhile)."""

    def __init__(self, fetched, assigned, during=lambda consumer: None):
        self._closed, self.sought = False, []
        self._subscription = SimpleNamespace(subscription=SimpleNamespace(assignment=object()))
        self.assigned = assigned
        consumer = self

        class Subscriptions:
            @staticmethod
            def fetch_context():
                return contextlib.nullcontext()

        async def fetched_records(partitions, timeout, max_records):
            during(consumer)
            return fetched

        self._fetcher = SimpleNamespace(
            _closed=False, _subscriptions=Subscriptions, fetched_records=fetched_records
        )

    def assignment(self):
        return set(self.assigned)

    def seek(self, tp, offset):
        self.sought.append((tp, offset))


def reassigned(consumer):
    consumer._subscription.subscription.assignment = object()  # aiokafka: a new Assignment


async def test_a_fetch_that_outlived_a_rebalance_puts_its_records_back():
    """Rule 10: records a fetch took after its assignment changed (its caller was cancelled at
    the rebalance) or while the flow is stopped go back, position by position; none is lost to
    a caller that is gone."""
    thread = make_consumer()._thread
    assert type(thread) is rowstream.ConsumerThread
    changelog, gone = TopicPartition("t-changelog", 0), TopicPartition(UNITS, 1)
    fetched = {changelog: records(0, 0, 67, changelog.topic), gone: records(1, 5, 9)}

    steady = FetchingConsumer(fetched, {changelog, gone})
    assert await thread._fetch_records(steady, {changelog}, 1.0, 2000) == fetched
    assert steady.sought == []

    faust_own = AIOKafkaConsumerThread._fetch_records
    lost = FetchingConsumer(fetched, {changelog}, during=reassigned)
    assert await faust_own(thread, lost, {changelog}, 1.0, 2000) == fetched  # taken for nobody
    rebalanced = FetchingConsumer(fetched, {changelog}, during=reassigned)
    assert await thread._fetch_records(rebalanced, {changelog}, 1.0, 2000) == {}
    assert rebalanced.sought == [(changelog, 0)]  # `gone` is its next owner's to read

    def stop_flow(consumer):
        thread.consumer.flow_active = False

    stopped = FetchingConsumer(fetched, {changelog, gone}, during=stop_flow)
    assert await thread._fetch_records(stopped, {changelog}, 1.0, 2000) == {}
    assert sorted(stopped.sought) == [(changelog, 0), (gone, 5)]


async def test_units_wait_for_the_end_of_a_rebalance_and_go_back_to_the_consumer():
    """Rule 12: while Faust's recovery is still running (``app.rebalancing``), a fetched unit is
    not handed on (its agent's queue is about to be emptied) but put back; other topics' records
    (the changelogs a recovery reads) are handed on as before."""
    consumer = make_consumer()
    fetched = {
        TP(UNITS, 0): records(0, 5, 9),
        TP(OTHER, 0): records(0, 1, 2, OTHER),
        TP(UNITS, 1): records(1, 30, 31),
    }
    sought = []

    async def wait_next_records(timeout):
        return fetched, None

    async def seek_wait(offsets):
        sought.append(dict(offsets))

    consumer._wait_next_records, consumer.seek_wait = wait_next_records, seek_wait
    consumer.highwater = lambda tp: 100
    consumer.app.rebalancing = True
    got = [(tp.topic, m.offset) async for tp, m in consumer.getmany(1.0)]
    assert got == [(OTHER, 1), (OTHER, 2)]
    assert sought == [{TP(UNITS, 0): 5, TP(UNITS, 1): 30}]
    consumer.app.rebalancing = False  # Faust's on_rebalance_end
    got = [(tp.topic, m.offset) async for tp, m in consumer.getmany(1.0)]
    assert got == [(UNITS, 9), (OTHER, 1), (OTHER, 2), (UNITS, 31)] and len(sought) == 1


def test_faust_empties_the_agents_queues_when_its_recovery_resumes_the_flow_then_ends():
    """Why rule 12 holds units back until ``on_rebalance_end``: mode's ``FlowControlEvent``
    empties every queue it manages when it resumes, and Faust's recovery resumes it after it has
    resumed the stream partitions and the consumer's flow, and before it ends the rebalance."""
    app = make_consumer().app
    queue = app.topic(UNITS).queue  # what an agent reads its stream from
    queue.put_nowait("a unit handed on while the recovery ran")
    app.flow_control.resume()
    assert queue.empty()
    steps = inspect.getsource(Recovery.on_recovery_completed)
    order = [
        "consumer.resume_partitions(",
        "consumer.perform_seek()",
        "self.app.flow_control.resume()",
        "self.app.on_rebalance_end()",
    ]
    assert [steps.index(step) for step in order] == sorted(steps.index(step) for step in order)


async def test_the_fetch_wait_is_the_setting():
    app = rowstream.RowstreamApp(
        "unit-test-wait",
        group_offsets=GroupOffsets(Broker("kafka://127.0.0.1:1"), "g"),
        fetch_wait=0.05,  # ROWSTREAM_FETCH_WAIT
        broker="kafka://127.0.0.1:1",
        web_enabled=False,
    )
    consumer = app.consumer._thread._create_worker_consumer(app.transport)
    try:
        assert (consumer._fetch_max_wait_ms, consumer._fetch_min_bytes) == (50, 64 * 1024)
    finally:
        await consumer.stop()


async def test_the_commit_waits_after_each_commit_and_the_livelock_check_yields_per_100():
    """Rule 11: Faust's commit timer and livelock check, paced so that neither overlaps itself
    under load."""
    consumer = make_consumer()
    assert "_commit_handler" in type(consumer)._tasks[type(consumer)._get_class_id()]
    events: list[str] = []

    async def sleep(seconds):
        events.append(f"sleep {seconds}")

    async def commit():
        events.append("commit")
        if events.count("commit") == 3:
            consumer._stopped.set()

    consumer.sleep, consumer.commit, consumer.commit_interval = sleep, commit, 0.5
    await asyncio.wait_for(rowstream.Consumer._commit_handler.fun(consumer), 5)
    assert events == ["sleep 0.5", "commit"] * 3  # never a commit straight after a commit

    consumer._stopped.clear()
    events.clear()
    checked = []
    consumer.assignment = lambda: {TP("t", p) for p in range(250)}
    consumer.verify_event_path = lambda now, tp: checked.append(tp)
    await consumer.verify_all_partitions_active()
    assert len(checked) == 250 and events == ["sleep 0", "sleep 0"]
