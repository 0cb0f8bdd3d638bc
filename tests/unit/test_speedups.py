"""app/speedups.py: the drain loop's hand-over is awaited directly while the flow runs (Faust's
race otherwise); the producer's partition check answers as aiokafka's does."""

import asyncio
from types import SimpleNamespace

import faust
import faust.transport.consumer

import aiokafka
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.cluster import ClusterMetadata

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


def test_the_partition_check_answers_as_aiokafkas():
    assert aiokafka.__version__ == "0.14.0"
    assert AIOKafkaProducer._partition is speedups._partition
    metadata = ClusterMetadata()
    metadata._partitions = {"t": {p: object() for p in range(720)}}
    producer = SimpleNamespace(_metadata=metadata)
    for partition in (0, 5, 719):
        assert speedups._partition(producer, "t", partition, b"k", b"v", b"k", b"v") == partition
        assert speedups._aiokafka_partition(producer, "t", partition, b"k", b"v", b"k", b"v") == partition
    for topic, partition in (("t", 720), ("t", -1), ("unknown", 0)):
        for check in (speedups._partition, speedups._aiokafka_partition):
            with pytest.raises((AssertionError, TypeError)):
                check(producer, topic, partition, b"k", b"v", b"k", b"v")
