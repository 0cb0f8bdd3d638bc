"""Routing must never drift: golden values pin the hash, the shard map and the block layout."""

import pytest
from aiokafka.partitioner import murmur2 as aiokafka_murmur2
from hypothesis import given
from hypothesis import strategies as st

from app.model.partitioning import Layout, murmur2
from app.model.slots import Move, Phase, SlotMap, even_shard_map, parse_shard_map


# The Java client's own test vectors (org.apache.kafka.common.utils.UtilsTest), as signed ints.
def seeded(partitions: int, internal: int, shards: int) -> tuple[Layout, SlotMap]:
    """The layout and map a cluster is seeded with: the even map, blocks per shard."""
    shard_map = even_shard_map(shards)
    return Layout(partitions, shard_map, shards, internal // shards), SlotMap.seed(shard_map)


@pytest.mark.parametrize(
    "key, java_value",
    [
        ("21", -973932308),
        ("foobar", -790332482),
        ("a-little-bit-long-string", -985981536),
        ("a-little-bit-longer-string", -1486304829),
        ("lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971),
    ],
)
def test_murmur2_matches_the_java_client(key, java_value):
    assert murmur2(key.encode()) == java_value & 0xFFFFFFFF


@given(st.binary(max_size=80))
def test_murmur2_matches_aiokafkas_partitioner(data):
    assert murmur2(data) == aiokafka_murmur2(data)


SUB = "7c9e6679-7425-40de-944b-e07fc1f90ae7"


@pytest.mark.parametrize(
    "partitions, internal, shards, app_id, shard, source, target",
    [
        (24, 24, 2, "0f8fad5b-d9cb-469f-a165-70867728950e", 0, 9, 5),
        (24, 24, 2, "80000000-0000-4000-8000-000000000002", 1, 19, 17),
        (24, 24, 2, "ff8fad5b-d9cb-469f-a165-70867728950e", 1, 17, 17),
        (720, 720, 4, "0f8fad5b-d9cb-469f-a165-70867728950e", 0, 129, 29),
        (720, 720, 4, "ff8fad5b-d9cb-469f-a165-70867728950e", 3, 629, 569),
        (720, 48, 4, "0f8fad5b-d9cb-469f-a165-70867728950e", 0, 129, 5),
        (720, 48, 4, "ff8fad5b-d9cb-469f-a165-70867728950e", 3, 629, 41),
        (720, 24, 2, "80000000-0000-4000-8000-000000000002", 1, 451, 17),
    ],
)
def test_golden_partitions(partitions, internal, shards, app_id, shard, source, target):
    layout, slots = seeded(partitions, internal, shards)
    assert slots.shard_of_app(app_id) == shard
    assert layout.source_partition(app_id) == source
    assert layout.internal.partition(slots.route(app_id, source, 0), SUB) == target


def test_even_map_gives_contiguous_equal_runs():
    assert even_shard_map(2) == (0,) * 128 + (1,) * 128
    four = even_shard_map(4)
    assert [four.count(shard) for shard in range(4)] == [64] * 4
    assert list(four) == sorted(four)
    assert even_shard_map(1) == (0,) * 256


def test_first_byte_decides_the_shard_whatever_the_case():
    _, slots = seeded(24, 24, 2)
    assert slots.shard_of_app("7FFFFFFF-0000-0000-0000-000000000000") == 0
    assert slots.shard_of_app("80000000-0000-0000-0000-000000000000") == 1


@pytest.mark.parametrize(
    "partitions, internal, shards",
    [(24, 24, 2), (24, 6, 3), (720, 48, 4), (720, 720, 6), (8, 16, 8)],
)
def test_every_key_lands_inside_its_shards_block(partitions, internal, shards):
    layout, slots = seeded(partitions, internal, shards)
    assert layout.source.block * shards == partitions
    assert layout.internal.block * shards == internal
    for n in range(2000):
        app_id = f"{n % 256:02x}{n:06x}-0000-4000-8000-{n:012x}"
        shard = slots.shard_of_app(app_id)
        for blocks, partition in (
            (layout.source, layout.source_partition(app_id)),
            (layout.internal, layout.internal.partition(shard, SUB)),
        ):
            assert partition in blocks.partitions_of(shard)
            assert blocks.shard_of(partition) == shard


def test_a_slot_moved_to_an_added_shard_keeps_its_update_partition():
    """The update topic follows the home map, which never changes: an app whose slot moved to a
    third shard keeps its partition (its versions stay one sequence of offsets), and its rows
    go to the third shard's block of the internal topic; the other slots keep theirs."""
    layout, slots = seeded(24, 36, 2)  # room in the internal topic for a third shard
    moved = slots.with_move(Move(1, (0x80,), 1, 2, Phase.SWITCHED))
    for n in range(2000):
        app_id, sub = f"{n % 256:02x}{n:06x}-0000-4000-8000-{n:012x}", f"{n:08x}-1-4-8-0"
        source = layout.source_partition(app_id)
        assert layout.source.shard_of(source) == slots.home[int(app_id[:2], 16)]
        shard = moved.route(app_id, source, n)
        assert shard == (2 if app_id.startswith("80") else slots.shard_of_app(app_id))
        assert layout.internal.shard_of(layout.internal.partition(shard, sub)) == shard


def test_explicit_map_moves_one_slot():
    slots = SlotMap.seed(parse_shard_map("00-7f=0,80-fe=1,ff=0", 2))
    assert slots.shard_of_app("ff8fad5b-d9cb-469f-a165-70867728950e") == 0
    assert slots.shard_of_app("fe8fad5b-d9cb-469f-a165-70867728950e") == 1


@pytest.mark.parametrize(
    "text, problem",
    [
        ("00-7f=0", "does not cover 128 of 256 slots"),
        ("00-ff=0,10=1", "names slot 10 twice"),
        ("00-ff=2", "shard 2 is not one of 0..1"),
        ("00-ff", "is not SLOTS=SHARD"),
        ("zz-ff=0", "slots are hex"),
        ("80-00=0", "low to high"),
    ],
)
def test_bad_shard_maps_are_refused(text, problem):
    with pytest.raises(ValueError, match=problem):
        parse_shard_map(text, 2)
