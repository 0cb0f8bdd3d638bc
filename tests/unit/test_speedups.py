"""app/speedups.py: the drain loop's hand-over is awaited directly while the flow runs (Faust's
race otherwise); a topic's partition set is built once per metadata update; the commit commits
what Faust's own does, taking the assignment once."""

import asyncio
from types import SimpleNamespace

import aiokafka
import faust
import faust.transport.consumer
from aiokafka.cluster import ClusterMetadata
from aiokafka.errors import CommitFailedError
from aiokafka.structs import OffsetAndMetadata, TopicPartition
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
from faust.types import TP

from app import speedups


def consumer(suspended: bool):
    flag = asyncio.Event()
    if suspended:
        flag.set()
    return SimpleNamespace(suspend_flow=flag)


async def test_a_delivery_is_awaited_directly_while_the_flow_runs():
    assert faust.__version__ == "0.15.3"  # reasoned about this version's drain loop
    assert faust.transport.consumer.Consumer.wait_first is speedups.wait_first
    self = consumer(suspended=False)
    delivered = []

    async def deliver():
        delivered.append(asyncio.current_task())
        return "done"

    tasks_before = len(asyncio.all_tasks())
    suspend = self.suspend_flow.wait()
    result = await speedups.wait_first(self, deliver(), suspend)
    assert result.results == ["done"] and not result.stopped
    assert delivered == [asyncio.current_task()]  # in the loop's own task, no new one
    assert len(asyncio.all_tasks()) == tasks_before
    assert suspend.cr_frame is None  # closed, not left pending


async def test_while_the_flow_is_suspended_faust_races_the_delivery(monkeypatch):
    calls = []

    async def faust_wait_first(self, *coros, timeout=None):
        calls.append(len(coros))
        for coro in coros:
            coro.close()
        return "faust"

    monkeypatch.setattr(speedups, "_faust_wait_first", faust_wait_first)
    self = consumer(suspended=True)

    async def deliver():
        return "done"

    assert await speedups.wait_first(self, deliver(), self.suspend_flow.wait()) == "faust"
    assert calls == [2]


def test_a_topics_partition_set_is_built_once_per_metadata_update():
    assert aiokafka.__version__ == "0.14.0"
    assert ClusterMetadata.partitions_for_topic is speedups.partitions_for_topic
    metadata = ClusterMetadata()
    assert metadata.partitions_for_topic("t") is None
    metadata._partitions = {"t": {p: object() for p in range(720)}}
    first = metadata.partitions_for_topic("t")
    assert first == set(range(720)) and metadata.partitions_for_topic("t") is first
    metadata._partitions = {"t": {p: object() for p in range(24)}}  # what update_metadata does
    assert metadata.partitions_for_topic("t") == set(range(24))
    assert metadata.partitions_for_topic("other") is None


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
    assert AIOKafkaConsumerThread._commit is speedups._commit
    owned = [TP("t", p) for p in range(720)]
    thread = CommittingThread(owned)
    offsets = {tp: 10 + tp.partition for tp in owned} | {TP("t", 900): 5}  # 900: revoked meanwhile
    assert await speedups._commit(thread, offsets)
    assert thread.committed == [{TopicPartition("t", p): OffsetAndMetadata(10 + p, "")
                                 for p in range(720)}]
    assert thread.assignment_calls == 1 and set(thread.tp_last_committed_at) == set(owned)
    faust_thread = CommittingThread(owned)
    assert await speedups._faust_commit(faust_thread, offsets)  # Faust's own: the same commit
    assert faust_thread.committed == thread.committed and faust_thread.assignment_calls == 721

    rebalanced = CommittingThread(owned, CommitFailedError("already rebalanced"))
    assert not await speedups._commit(rebalanced, offsets) and not rebalanced.crashed
    broken = CommittingThread(owned, RuntimeError("broker gone"))
    assert not await speedups._commit(broken, offsets) and len(broken.crashed) == 1
