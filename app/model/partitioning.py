"""Shard and partition of a key: pure functions, pinned by golden-value tests.

Layout (a contract: changing it moves apps between partitions): each topic's partitions are laid
out in contiguous blocks, one block per shard. With P partitions in the update topic, H shards
when the cluster was seeded and B internal partitions per shard (both fixed at the seed)::

    update topic:   partition = home shard * (P // H) + murmur2(app ID) % (P // H)
    internal topic: partition = shard * B + murmur2(subscription ID) % B

P is the source's scale (720 in production); B is the concurrency a shard's writes need, by
default 12. An app's home shard is its slot's shard in the map the cluster was seeded with, and
never changes, so its updates stay one sequence of offsets (``app.model.slots``); its shard is
the live map's. A shard added later gets the next block of the internal topic, and no app or row
changes partition.

An app's slot is the first byte of its app ID. The key is the canonical UUID text
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
    """The partitions of both topics, fixed when the cluster was seeded (``app.sink.control``):
    the update topic's ``partitions`` in ``home_blocks`` blocks, each app in the block of its
    slot's home shard (``home``, 256 entries); the internal topic in blocks of
    ``internal_block`` partitions, one per shard, shard 0's first. Where a row's updates go in
    the internal topic depends on the live map (``app.model.slots``): ``internal.partition(shard,
    subscription ID)``."""

    partitions: int
    home: Sequence[int]  # 256 entries: each slot's home shard
    home_blocks: int
    internal_block: int
    source: Blocks = field(init=False)  # the update topic's blocks
    internal: Blocks = field(init=False)  # the internal topic's blocks

    def __post_init__(self) -> None:
        object.__setattr__(self, "source", Blocks(self.partitions // self.home_blocks))
        object.__setattr__(self, "internal", Blocks(self.internal_block))

    def source_partition(self, app_id: str) -> int:
        """Partition of an app's updates in the update topic: in its home shard's block."""
        return self.source.partition(self.home[int(app_id[:2], 16)], app_id)
