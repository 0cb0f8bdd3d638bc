"""The repartition's batching (app/kafka/forwarding.py) with a fake producer and clock:
per-partition order, flushes by size, bytes and linger, and a unit settled only once every part
is answered."""

import asyncio

from app.kafka.forwarding import Countdown, Forwarder


class Producer:
    """Records what is sent; each send's future is answered by the test."""

    def __init__(self, refuse=None):
        self.sent = []  # (partition, value, timestamp, updates, future)
        self.refuse = refuse

    async def send(self, partition, value, timestamp, updates):
        if self.refuse:
            raise self.refuse
        future = asyncio.get_running_loop().create_future()
        self.sent.append((partition, value, timestamp, updates, future))
        return future


class Clock:
    now = 0.0

    def __call__(self):
        return self.now


def make(producer, clock, max_updates=3, max_bytes=1000, linger=0.01):
    return Forwarder(
        producer.send,
        lambda entries: b"|".join(entries),
        max_updates=max_updates,
        max_bytes=max_bytes,
        linger=linger,
        clock=clock,
    )


def unit(settled):
    return Countdown(lambda: settled.append("done"), lambda why: settled.append(f"failed: {why}"))


async def test_full_batches_go_at_once_lingering_ones_after_linger_in_partition_order():
    producer, clock, settled = Producer(), Clock(), []
    forwarder, waiter = make(producer, clock), unit(settled)
    for n in range(7):
        forwarder.add(n % 2, b"u%d" % n, 100.0 - n, waiter)  # partition 0: u0 u2 u4 u6
    waiter.close()
    await forwarder.flush_due()  # partition 0's first batch is full; the rest linger
    assert [(p, v) for p, v, *_ in producer.sent] == [(0, b"u0|u2|u4"), (1, b"u1|u3|u5")]
    clock.now = 0.02
    await forwarder.flush_due()
    assert [(p, v, t, n) for p, v, t, n, _ in producer.sent[2:]] == [(0, b"u6", 94.0, 1)]
    assert producer.sent[0][2] == 96.0  # the oldest source timestamp of the batch
    for *_, future in producer.sent[:2]:
        future.set_result(None)
    await asyncio.sleep(0)
    assert settled == []  # u6 is not acknowledged yet
    producer.sent[2][4].set_result(None)
    await asyncio.sleep(0)
    assert settled == ["done"]


async def test_a_batch_is_closed_before_it_passes_max_bytes():
    producer, clock, settled = Producer(), Clock(), []
    forwarder, waiter = make(producer, clock, max_updates=100, max_bytes=10), unit(settled)
    for entry in (b"aaaa", b"bbbb", b"cccc", b"x" * 30):
        forwarder.add(5, entry, 1.0, waiter)
    clock.now = 1.0
    await forwarder.flush_due()
    assert [v for _, v, *_ in producer.sent] == [b"aaaa|bbbb", b"cccc", b"x" * 30]


async def test_a_failed_batch_fails_each_of_its_units_once_and_never_acknowledges_them():
    producer, clock, settled, other = Producer(), Clock(), [], []
    forwarder = make(producer, clock, max_updates=2)
    first, second = unit(settled), unit(other)
    forwarder.add(0, b"a", 1.0, first)
    forwarder.add(0, b"b", 1.0, second)
    forwarder.add(1, b"c", 1.0, first)
    first.close()
    second.close()
    clock.now = 1.0
    await forwarder.flush_due()
    producer.sent[0][4].set_exception(RuntimeError("timed out"))
    producer.sent[1][4].set_exception(RuntimeError("timed out"))
    await asyncio.sleep(0)
    assert settled == ["failed: RuntimeError('timed out')"]
    assert other == ["failed: RuntimeError('timed out')"]


async def test_a_send_refused_before_queueing_fails_its_units():
    producer, clock, settled = Producer(refuse=ValueError("too large")), Clock(), []
    forwarder, waiter = make(producer, clock), unit(settled)
    forwarder.add(0, b"a", 1.0, waiter)
    waiter.close()
    clock.now = 1.0
    await forwarder.flush_due()
    assert settled == ["failed: ValueError('too large')"]


def test_a_countdown_is_done_once_closed_with_every_part_succeeded():
    settled = []
    waiter = unit(settled)
    waiter.close()
    assert settled == ["done"]  # nothing to wait for (e.g. all dead-lettered)
    settled.clear()
    waiter = unit(settled)
    waiter.expect(3)
    waiter.succeeded(2)
    waiter.close()
    assert settled == []
    waiter.succeeded()
    waiter.fail("late")  # after done: nothing
    assert settled == ["done"]


async def test_due_in_says_when_the_oldest_batch_is_due_and_wait_due_sleeps_until_then():
    producer, clock, settled = Producer(), Clock(), []
    forwarder, waiter = make(producer, clock, linger=0.5), unit(settled)
    assert forwarder.due_in() is None  # nothing waits: nothing to wake up for
    clock.now = 10.0
    forwarder.add(1, b"a", 1.0, waiter)
    clock.now = 10.2
    forwarder.add(2, b"b", 1.0, waiter)
    assert abs(forwarder.due_in() - 0.3) < 1e-9  # partition 1's batch, opened at 10.0
    for n in range(2):
        forwarder.add(2, b"c%d" % n, 1.0, waiter)
    assert forwarder.due_in() == 0.0  # partition 2's batch is full
    await forwarder.flush_due()
    assert [p for p, *_ in producer.sent] == [2]
    clock.now = 10.5
    assert forwarder.due_in() == 0.0
    await forwarder.flush_due()
    assert forwarder.due_in() is None


async def test_wait_due_sleeps_while_nothing_waits_and_wakes_for_a_new_batch():
    producer, settled = Producer(), []
    forwarder = make(producer, asyncio.get_running_loop().time, linger=0.05)  # real time
    waiting = asyncio.ensure_future(forwarder.wait_due())
    await asyncio.sleep(0.1)
    assert not waiting.done()  # idle: asleep, not polling
    forwarder.add(3, b"x", 1.0, unit(settled))
    opened = asyncio.get_running_loop().time()
    await asyncio.wait_for(waiting, 2)
    assert asyncio.get_running_loop().time() - opened >= 0.045  # not before the linger
