"""Shard and partition of a key: pure functions, pinned by golden-value tests.

Layout (a contract: changing it moves apps between partitions): both topics have P partitions,
P divisible by the number of shards S, laid out in contiguous blocks of P // S partitions per
shard::

    partition = shard * (P // S) + murmur2(key) % (P // S)

The shard of an app is ``slot_map[first byte of its app ID]``. The key is the canonical UUID text
(lowercase, hyphenated) as ASCII: the app ID on the update topic, the subscription ID on the
internal topic. murmur2 is the hash of Kafka's default partitioner (the Java client's seed and
values, pinned by tests), so it is the same in every process and every run. It is computed by the
``murmurhash2`` C extension: aiokafka's pure-Python murmur2 gives the same values but cost ~6 µs a
key, paid twice per update on the hot path.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from murmurhash2 import murmurhash2

KAFKA_SEED = 0x9747B28C  # the seed of Kafka's default partitioner


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 of ``data``, unsigned 32 bits."""
    return murmurhash2(data, KAFKA_SEED)


class Layout(NamedTuple):
    """Partitions per topic, and the shard of each of the 256 app-ID slots."""

    partitions: int
    slot_map: Sequence[int]  # 256 entries
    shards: int

    @property
    def block(self) -> int:
        """Partitions per shard."""
        return self.partitions // self.shards

    def shard_of_app(self, app_id: str) -> int:
        """Shard of an app: its first byte (two hex digits of the UUID) through the slot map."""
        return self.slot_map[int(app_id[:2], 16)]

    def partition(self, shard: int, key: str) -> int:
        """Partition of ``key`` inside ``shard``'s block."""
        return shard * self.block + (murmur2(key.encode("ascii")) & 0x7FFFFFFF) % self.block

    def source_partition(self, app_id: str) -> int:
        """Partition of an app's updates in the update topic."""
        return self.partition(self.shard_of_app(app_id), app_id)

    def target_partition(self, app_id: str, subscription_id: str) -> int:
        """Partition of a row's updates in the internal topic: same shard block as the app."""
        return self.partition(self.shard_of_app(app_id), subscription_id)

    def shard_of_partition(self, partition: int) -> int:
        return partition // self.block

    def partitions_of_shard(self, shard: int) -> range:
        return range(shard * self.block, (shard + 1) * self.block)
