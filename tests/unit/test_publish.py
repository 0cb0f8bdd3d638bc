"""``app.ingest.publish``: batching per partition within the linger, one batch of a partition in
the producer's hands at a time (the order rule), failures mapped to 503 / 413, the buffer bound.
A fake producer stands for aiokafka's batch API; the test settles its deliveries by hand."""

import asyncio

import pytest
from aiokafka.errors import KafkaConnectionError, MessageSizeTooLargeError

from app.ingest.contract import Record
from app.ingest.errors import TooLarge, Unavailable
from app.ingest.publish import Publisher


class Builder:
    def __init__(self, limit: int) -> None:
        self.values: list[bytes] = []
        self.limit = limit

    def append(self, *, timestamp, key, value, headers):
        if self.values and sum(map(len, self.values)) + len(value) > self.limit:
            return None  # full (a first record always fits, as aiokafka's)
        self.values.append(value)
        return object()


class Producer:
    def __init__(self, batch_limit: int = 1000) -> None:
        self.batch_limit = batch_limit
        self.sent: list[tuple[int, list[bytes], asyncio.Future]] = []
        self.stopped = False

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        self.stopped = True

    def create_batch(self) -> Builder:
        return Builder(self.batch_limit)

    async def send_batch(self, builder, topic, *, partition):
        delivery = asyncio.get_running_loop().create_future()
        self.sent.append((partition, builder.values, delivery))
        return delivery

    def values(self, partition: int) -> list[list[bytes]]:
        return [values for p, values, _ in self.sent if p == partition]


def record(partition: int, value: bytes) -> Record:
    return Record(partition, b"key", value, [])


async def publisher(producer, linger=0.01, max_buffer=10_000) -> Publisher:
    made = Publisher(producer, "updates", linger=linger, max_buffer=max_buffer)
    await made.start()
    return made


async def settle_all(producer, error=None):
    for _, _, delivery in producer.sent:
        if not delivery.done():
            delivery.set_exception(error) if error else delivery.set_result(None)
    await asyncio.sleep(0)


async def test_records_of_a_linger_share_one_batch_per_partition():
    producer = Producer()
    pub = await publisher(producer)
    acks = [pub.publish([record(p, b"r%d" % n)]) for n, p in enumerate([1, 2, 1, 1, 2])]
    assert producer.sent == []  # nothing goes before the linger
    await asyncio.sleep(0.03)
    assert producer.values(1) == [[b"r0", b"r2", b"r3"]] and producer.values(2) == [[b"r1", b"r4"]]
    assert acks[0] is acks[2] is acks[3]  # one future per batch, shared
    await settle_all(producer)
    await asyncio.gather(*acks)
    assert pub.buffered == 0


async def test_a_partitions_next_batch_goes_only_once_the_one_before_is_settled():
    producer = Producer()
    pub = await publisher(producer)
    first = pub.publish([record(1, b"a")])
    await asyncio.sleep(0.03)
    second = pub.publish([record(1, b"b")])
    other = pub.publish([record(2, b"x")])
    await asyncio.sleep(0.03)
    assert producer.values(1) == [[b"a"]]  # "b" waits for "a", whatever the producer would do
    assert producer.values(2) == [[b"x"]]  # other partitions do not wait
    producer.sent[0][2].set_exception(KafkaConnectionError())  # "a" given up: 503
    with pytest.raises(Unavailable):
        await first
    await asyncio.sleep(0.01)
    assert producer.values(1) == [[b"a"], [b"b"]]
    await settle_all(producer)
    await asyncio.gather(second, other)


async def test_a_full_batch_goes_at_once_and_the_record_starts_the_next():
    producer = Producer(batch_limit=4)
    pub = await publisher(producer)
    acks = [pub.publish([record(0, b"xx")]) for _ in range(3)]
    await asyncio.sleep(0.03)
    assert producer.values(0) == [[b"xx", b"xx"]]  # the third waits for the first batch
    await settle_all(producer)
    await asyncio.sleep(0.01)
    assert producer.values(0) == [[b"xx", b"xx"], [b"xx"]]
    await settle_all(producer)
    await asyncio.gather(*acks)


async def test_failures_become_503_or_413_for_every_request_of_the_batch():
    producer = Producer()
    pub = await publisher(producer)
    acks = [pub.publish([record(0, b"a")]), pub.publish([record(0, b"b"), record(3, b"c")])]
    await asyncio.sleep(0.03)
    await settle_all(producer, MessageSizeTooLargeError())
    for ack in acks:
        with pytest.raises(TooLarge) as error:
            await ack
        assert error.value.status == 413
    retry = pub.publish([record(0, b"a")])
    await asyncio.sleep(0.03)
    await settle_all(producer, KafkaConnectionError())
    with pytest.raises(Unavailable) as error:
        await retry
    assert error.value.status == 503 and dict(error.value.headers) == {"Retry-After": "1"}


async def test_the_buffer_is_bounded_and_a_refusal_queues_nothing():
    producer = Producer()
    pub = await publisher(producer, max_buffer=10)
    held = pub.publish([record(0, b"12345678")])
    with pytest.raises(Unavailable) as error:
        pub.publish([record(1, b"123")])
    assert "buffer is full" in error.value.error
    assert pub.buffered == 8
    await asyncio.sleep(0.03)
    assert [p for p, _, _ in producer.sent] == [0]
    await settle_all(producer)
    await held
    pub.publish([record(1, b"123")])  # room again
    assert pub.buffered == 3


async def test_stop_hands_over_what_is_open_and_waits_for_it():
    producer = Producer()
    pub = await publisher(producer, linger=10)
    ack = pub.publish([record(5, b"last")])
    stopping = asyncio.ensure_future(pub.stop())
    await asyncio.sleep(0.02)
    assert producer.values(5) == [[b"last"]] and not stopping.done()
    await settle_all(producer)
    await asyncio.wait_for(stopping, 1)
    assert producer.stopped and ack.done()
