"""The sink's writers with an in-memory store and fake partition control: a held shard pauses
only its own partitions and resumes them once drained, revoked partitions are forgotten on every
shard, and the counts (errors included) reach the stats sender once."""

import asyncio
from collections import Counter

from app.sink.coalesce import Patch
from app.sink.writer import Item
from app.sink.writers import HIGH_WATER_MIN, Writers
from tests.unit.test_writer import wait_for


class Store:
    """Applies every patch; each shard has a gate the test can hold, and can fail once."""

    def __init__(self, shards: int) -> None:
        self.gates = [asyncio.Event() for _ in range(shards)]
        for gate in self.gates:
            gate.set()
        self.applied: list[list[int]] = [[] for _ in range(shards)]
        self.fail_once = [False] * shards

    async def write(self, shard, rounds):
        await self.gates[shard].wait()
        if self.fail_once[shard]:
            self.fail_once[shard] = False
            raise ConnectionError("shard down")
        versions = [patch.version for patches in rounds for patch in patches]
        self.applied[shard].extend(versions)
        return len(versions)


class Control:
    """What the consumer would do: records pauses, resumes and stats."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, list[int]]] = []
        self.stats: list[tuple[int, dict]] = []

    def pause(self, partitions):
        self.calls.append(("pause", sorted(partitions)))

    async def resume(self, partitions):
        await asyncio.sleep(0)  # a seek happens first, in the consumer's thread
        self.calls.append(("resume", sorted(partitions)))

    async def send_stats(self, shard, counts):
        self.stats.append((shard, counts))

    async def rejected(self, item, error):
        raise AssertionError(f"nothing is rejected here: {error}")


def make(store: Store, control: Control) -> Writers:
    return Writers(
        store,
        2,
        batch_size=100,
        batch_wait=0.01,
        retry_max=0.02,
        partitions_of={0: [0, 1], 1: [2, 3]}.__getitem__,
        pause=control.pause,
        resume=control.resume,
        on_rejected=control.rejected,
        send_stats=control.send_stats,
    )


def item(version: int, partition: int, acks: list) -> Item:
    return Item(
        Patch("a", f"s{version}", version, {"k": version}),
        partition,
        lambda: acks.append(version),
        version,
    )


async def test_a_held_shard_pauses_only_its_partitions_and_resumes_them_once_drained():
    store, control, acks = Store(2), Control(), []
    store.gates[1].clear()
    writers = make(store, control)
    await writers.start()
    try:
        held = [item(v, 2 + v % 2, acks) for v in range(HIGH_WATER_MIN + 1)]
        writers.by_shard[1].extend(held)
        assert control.calls == [("pause", [2, 3])]
        writers.by_shard[0].extend([item(-1, 0, acks)])  # the other shard flows meanwhile
        await wait_for(lambda: acks == [-1])
        store.gates[1].set()
        await wait_for(lambda: len(acks) == len(held) + 1)
        await wait_for(lambda: len(control.calls) == 2)
        assert control.calls == [("pause", [2, 3]), ("resume", [2, 3])]
        assert store.applied[1] == list(range(HIGH_WATER_MIN + 1))  # in order, all of them
    finally:
        await writers.stop()


async def test_revoked_partitions_are_forgotten_on_every_shard():
    store, control, acks = Store(2), Control(), []
    for gate in store.gates:
        gate.clear()
    writers = make(store, control)
    await writers.start()
    try:
        writers.by_shard[0].extend([item(1, 0, acks), item(2, 1, acks)])
        writers.by_shard[1].extend([item(3, 2, acks), item(4, 3, acks)])
        await asyncio.sleep(0.05)  # both writers took their first batch (held at the gate)
        writers.by_shard[0].extend([item(5, 1, acks)])
        writers.by_shard[1].extend([item(6, 3, acks), item(7, 2, acks)])
        writers.forget({1, 3})
        assert [len(w) for w in writers.by_shard] == [0, 1]  # 5 and 6 dropped, 7 kept
    finally:
        for gate in store.gates:
            gate.set()
        await writers.stop()


async def test_counts_and_errors_reach_the_stats_sender_once():
    store, control, acks = Store(2), Control(), []
    store.fail_once[0] = True
    writers = make(store, control)
    await writers.start()
    try:
        writers.by_shard[0].extend([item(1, 0, acks), item(2, 1, acks)])
        await wait_for(
            lambda: (
                len(acks) == 2
                and writers.counts[0]["batches"]
                + sum(counts.get("batches", 0) for _, counts in control.stats)
                == 1
            )
        )  # counted or sent
        await writers.send_stats()
        sent: Counter = Counter()  # the 1 s timer may have sent a part already
        for shard, counts in control.stats:
            assert shard == 0
            sent.update(counts)
        assert sent == {"events": 2, "rows": 2, "batches": 1, "errors_transient": 1}
        before = len(control.stats)
        await writers.send_stats()
        assert len(control.stats) == before  # nothing new: nothing sent
    finally:
        await writers.stop()
