"""The per-shard writer with an in-memory store: when it acknowledges, retries, isolates poison
and pauses. Postgres itself is covered by the integration tests."""

import asyncio

from app.sink.coalesce import Patch, apply
from app.sink.shards import Rejected
from app.sink.writer import BatchDone, Item, ShardWriter, write_isolating


class MemoryStore:
    """Applies rounds under the version guard, like the MERGE; can fail on demand."""

    def __init__(self):
        self.rows: dict = {}
        self.calls: list = []
        self.fail_transient = 0
        self.gate = asyncio.Event()
        self.gate.set()

    async def write(self, shard, rounds):
        self.calls.append(rounds)
        await self.gate.wait()
        if self.fail_transient:
            self.fail_transient -= 1
            raise ConnectionError("shard down")
        bad = [p for patches in rounds for p in patches if "poison" in p.properties]
        if bad:
            raise Rejected("22001: value too long")
        changed = 0
        for patches in rounds:
            for patch in patches:
                key = (patch.app_id, patch.subscription_id)
                properties, version = self.rows.get(key, ({}, -1))
                if version < patch.version:
                    self.rows[key] = (apply(properties, patch.properties), patch.version)
                    changed += 1
        return changed


def item(version, sub="s", acks=None, **properties):
    acks = acks if acks is not None else []
    return Item(Patch("a", sub, version, properties), 0, lambda: acks.append(version), version)


async def test_isolating_finds_exactly_the_poison_events():
    store = MemoryStore()
    items = [
        item(1, k=1),
        item(2, sub="t", poison=1),
        item(3, k=3),
        item(4, sub="u", k=4),
        item(5, poison=2),
        item(6, k=6),
    ]
    changed, rejected = await write_isolating(lambda rounds: store.write(0, rounds), items)
    assert sorted(i.origin for i, _ in rejected) == [2, 5]
    assert all("value too long" in error for _, error in rejected)
    assert store.rows[("a", "s")] == ({"k": 6}, 6)
    assert store.rows[("a", "u")] == ({"k": 4}, 4)
    assert ("a", "t") not in store.rows
    assert changed >= 2


def make_writer(store, batches, backlog, batch_size=3, batch_wait=0.01):
    async def on_batch(done: BatchDone, items):
        assert len(items) == done.events
        batches.append(done)

    rejected = []

    async def on_rejected(item, error):
        rejected.append((item.origin, error))

    writer = ShardWriter(
        0,
        store,
        batch_size=batch_size,
        batch_wait=batch_wait,
        retry_max=0.02,
        on_batch=on_batch,
        on_rejected=on_rejected,
        on_backlog=lambda shard, paused: backlog.append(paused),
    )
    return writer, rejected


async def wait_for(condition, timeout=5.0):
    async def poll():
        while not condition():
            await asyncio.sleep(0.005)

    await asyncio.wait_for(poll(), timeout)


async def test_acks_only_after_the_write_returned_and_batches_are_bounded():
    store, batches, backlog, acks = MemoryStore(), [], [], []
    store.gate.clear()
    writer, _ = make_writer(store, batches, backlog)
    await writer.start()
    try:
        for version in range(1, 8):
            writer.add(item(version, acks=acks, k=version))
        await wait_for(lambda: store.calls)
        assert acks == []  # the write has not returned yet
        store.gate.set()
        await wait_for(lambda: len(acks) == 7)
        assert acks == list(range(1, 8))
        assert [b.events for b in batches] == [3, 3, 1]
        assert [b.coalesced for b in batches] == [2, 2, 0]
        assert store.rows[("a", "s")] == ({"k": 7}, 7)
    finally:
        await writer.stop()


async def test_transient_errors_are_retried_without_losing_or_acking_early():
    store, batches, backlog, acks = MemoryStore(), [], [], []
    store.fail_transient = 3
    writer, rejected = make_writer(store, batches, backlog)
    await writer.start()
    try:
        writer.add(item(1, acks=acks, k=1))
        await wait_for(lambda: acks == [1])
        assert len(store.calls) == 4 and rejected == []
        assert store.rows[("a", "s")] == ({"k": 1}, 1)
    finally:
        await writer.stop()


async def test_poison_goes_to_the_dead_letter_callback_and_the_rest_is_applied():
    store, batches, backlog, acks = MemoryStore(), [], [], []
    writer, rejected = make_writer(store, batches, backlog)
    await writer.start()
    try:
        writer.add(item(1, acks=acks, k=1))
        writer.add(item(2, acks=acks, poison="x"))
        writer.add(item(3, acks=acks, j=3))
        await wait_for(lambda: len(acks) == 3)
        assert [origin for origin, _ in rejected] == [2]
        assert store.rows[("a", "s")] == ({"k": 1, "j": 3}, 3)
    finally:
        await writer.stop()


async def test_backlog_pauses_then_resumes_and_revoked_partitions_are_forgotten():
    store, batches, backlog = MemoryStore(), [], []
    store.gate.clear()
    writer, _ = make_writer(store, batches, backlog, batch_size=2)
    await writer.start()
    try:
        for version in range(1, 12):  # high water is 4 * 2
            writer.add(item(version, k=version))
        assert backlog == [True]
        late = Item(Patch("a", "s", 99, {"k": 99}), 5, lambda: None, 99)
        writer.add(late)
        assert writer.forget({5}) == 1
        store.gate.set()
        await wait_for(lambda: backlog == [True, False])
        await wait_for(lambda: sum(b.events for b in batches) == 11)
        assert store.rows[("a", "s")][1] == 11
    finally:
        await writer.stop()
