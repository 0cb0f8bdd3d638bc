"""``app.ingest.publish``: a request's records acknowledged together, failures mapped to 503 /
413 (a record too large is refused before anything is sent), the buffer bound; and the rules of
aiokafka's producer the order contract rests on, checked in the pinned version's source, so that
an upgrade that changes them fails here instead of reordering rows."""

import asyncio
import inspect

import aiokafka
import pytest
from aiokafka.errors import KafkaConnectionError, MessageSizeTooLargeError
from aiokafka.producer import message_accumulator, sender

from app.ingest.contract import Record
from app.ingest.errors import TooLarge, Unavailable
from app.ingest.publish import Publisher


class Producer:
    """aiokafka's producer as ``Publisher`` uses it: ``send`` queues, its future settles later."""

    def __init__(self, refuse_over: int = 1000) -> None:
        self.sent: list[tuple[int, bytes, asyncio.Future]] = []
        self.refuse_over = refuse_over
        self.stopped = False

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        self.stopped = True

    async def send(self, topic, value, key=None, partition=None, headers=None):
        if len(value) > self.refuse_over:  # as aiokafka does past max_request_size
            raise MessageSizeTooLargeError()
        acknowledged = asyncio.get_running_loop().create_future()
        self.sent.append((partition, value, acknowledged))
        return acknowledged

    def settle(self, error: Exception | None = None) -> None:
        for _, _, acknowledged in self.sent:
            if not acknowledged.done():
                acknowledged.set_exception(error) if error else acknowledged.set_result(None)


def record(partition: int, value: bytes) -> Record:
    return Record(partition, b"key", value, [])


async def test_a_request_is_acknowledged_once_all_its_records_are():
    producer = Producer()
    publisher = Publisher(producer, "updates", max_buffer=10_000)
    await publisher.start()
    acknowledged = publisher.publish([record(1, b"a"), record(2, b"b")])
    await asyncio.sleep(0)
    assert [(p, v) for p, v, _ in producer.sent] == [(1, b"a"), (2, b"b")]
    producer.sent[0][2].set_result(None)
    await asyncio.sleep(0)
    assert not acknowledged.done() and publisher.buffered == 2
    producer.settle()
    await acknowledged
    assert publisher.buffered == 0


async def test_failures_become_503_and_a_record_too_large_413():
    producer = Producer(refuse_over=3)
    publisher = Publisher(producer, "updates", max_buffer=10_000)
    await publisher.start()
    failing = publisher.publish([record(0, b"a")])
    await asyncio.sleep(0)
    producer.settle(KafkaConnectionError())
    with pytest.raises(Unavailable) as error:
        await failing
    assert error.value.status == 503 and dict(error.value.headers) == {"Retry-After": "1"}
    with pytest.raises(TooLarge) as error:
        await publisher.publish([record(0, b"far too large")])
    assert error.value.status == 413
    assert publisher.buffered == 0


async def test_the_buffer_is_bounded_and_a_refusal_queues_nothing():
    producer = Producer()
    publisher = Publisher(producer, "updates", max_buffer=10)
    await publisher.start()
    held = publisher.publish([record(0, b"12345678")])
    with pytest.raises(Unavailable) as error:
        publisher.publish([record(1, b"123")])
    assert "buffer is full" in error.value.error and publisher.buffered == 8
    await asyncio.sleep(0)
    assert [p for p, _, _ in producer.sent] == [0]
    producer.settle()
    await held
    room = publisher.publish([record(1, b"123")])  # room again
    await asyncio.sleep(0)
    producer.settle()
    await room


def test_the_aiokafka_rules_the_order_rests_on():
    """aiokafka 0.14.0 (pinned): one produce request in flight per broker, a partition held back
    while a batch of it is in flight, a failed batch back at the head of its partition's queue,
    a partition's records appended to its last batch."""
    assert aiokafka.__version__ == "0.14.0"  # re-read the rules below before changing the pin
    routine = inspect.getsource(sender.Sender._sender_routine)
    assert "ignore_nodes=self._in_flight" in routine
    assert "self._in_flight.add(node_id)" in routine
    assert "self._muted_partitions.add(tp)" in routine
    assert "muted_partitions=muted_partitions" in routine
    reenqueue = inspect.getsource(message_accumulator.MessageAccumulator.reenqueue)
    assert "self._batches[tp].appendleft(batch)" in reenqueue
    add = inspect.getsource(message_accumulator.MessageAccumulator.add_message)
    assert "batch = pending_batches[-1]" in add
