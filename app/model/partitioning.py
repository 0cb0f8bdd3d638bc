"""Shard and partition of a key: pure functions, pinned by golden-value tests.

Layout (a contract: changing it moves apps between partitions): each topic's partitions are laid
out in contiguous blocks, one block per shard. The update topic has P partitions and the internal
topic its own count I (both divisible by the number of shards S)::

    update topic:   partition = shard * (P // S) + murmur2(app ID) % (P // S)
    internal topic: partition = shard * (I // S) + murmur2(subscription ID) % (I // S)

P is the source's scale (720 in production); I is the concurrency a shard's writes need, by
default 12 per shard. Growing I by whole blocks (I // S each) for added shards leaves every
existing shard's block, and so every row's partition, where it was.

The shard of an app is ``slot_map[first byte of its app ID]``. The key is the canonical UUID text
(lowercase, hyphenated) as ASCII: the app ID on the update topic, the subscription ID on the
internal topic. murmur2 is the hash of Kafka's default partitioner (the Java client's seed and
values, pinned by tests), so it is the same in every process and every run. It is computed by the
``murmurhash2`` C extension: aiokafka's pure-Python murmur2 gives the same values but cost ~6 µs a
key, paid twice per update on the hot path.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from murmurhash2 import murmurhash2

KAFKA_SEED = 0x9747B28C  # the seed of Kafka's default partitioner


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 of ``data``, unsigned 32 bits."""
    return murmurhash2(data, KAFKA_SEED)


class Blocks(NamedTuple):
    """One topic's partitions, a contiguous block of ``block`` partitions per shard."""

    block: int

    def partition(self, shard: int, key: str) -> int:
        """Partition of ``key`` inside ``shard``'s block."""
        return shard * self.block + (murmur2(key.encode("ascii")) & 0x7FFFFFFF) % self.block

    def shard_of(self, partition: int) -> int:
        return partition // self.block

    def partitions_of(self, shard: int) -> range:
        return range(shard * self.block, (shard + 1) * self.block)


@dataclass(frozen=True)
class Layout:
    """Partitions of the update topic (``partitions``) and of the internal topic
    (``internal_partitions``), and the shard of each of the 256 app-ID slots."""

    partitions: int
    internal_partitions: int
    slot_map: Sequence[int]  # 256 entries
    shards: int
    source: Blocks = field(init=False)  # the update topic's blocks
    internal: Blocks = field(init=False)  # the internal topic's blocks

    def __post_init__(self) -> None:
        object.__setattr__(self, "source", Blocks(self.partitions // self.shards))
        object.__setattr__(self, "internal", Blocks(self.internal_partitions // self.shards))

    def shard_of_app(self, app_id: str) -> int:
        """Shard of an app: its first byte (two hex digits of the UUID) through the slot map."""
        return self.slot_map[int(app_id[:2], 16)]

    def source_partition(self, app_id: str) -> int:
        """Partition of an app's updates in the update topic."""
        return self.source.partition(self.shard_of_app(app_id), app_id)

    def target_partition(self, app_id: str, subscription_id: str) -> int:
        """Partition of a row's updates in the internal topic: in the app's shard's block."""
        return self.internal.partition(self.shard_of_app(app_id), subscription_id)
