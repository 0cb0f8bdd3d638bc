"""The shard map (``app.model.slots``): slot syntax, and where a moving slot's updates go."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.model.slots import (
    HOLD,
    Move,
    Phase,
    SlotMap,
    even_shard_map,
    format_slots,
    parse_slots,
    slot_of,
)

APP_80 = "80e1a4b6-6f0e-4c36-9a53-0f3b2c1d4e5f"  # slot 80
APP_C0 = "c0e1a4b6-6f0e-4c36-9a53-0f3b2c1d4e5f"  # slot c0


def test_slots_are_written_as_in_the_shard_map():
    assert parse_slots("a3") == (0xA3,)
    assert parse_slots("80-83, 00") == (0x00, 0x80, 0x81, 0x82, 0x83)
    assert parse_slots("00-ff") == tuple(range(256))
    assert slot_of(APP_80) == 0x80


@pytest.mark.parametrize(
    "text, problem",
    [
        ("", "name at least one slot"),
        ("zz", "write them in hex"),
        ("80-7f", "low to high"),
        ("100", "slots are 00..ff"),
        ("80-8f,85", "name a slot twice"),
    ],
)
def test_bad_slots_are_refused_with_what_is_wrong(text, problem):
    with pytest.raises(ValueError, match=problem):
        parse_slots(text)


@given(st.sets(st.integers(0, 255), min_size=1))
def test_formatted_slots_read_back_the_same(slots):
    assert parse_slots(format_slots(slots)) == tuple(sorted(slots))


def test_format_joins_runs():
    assert format_slots([0x80, 0x81, 0x82, 0xC3, 0x00]) == "00,80-82,c3"


def moving(phase: Phase, markers: dict[int, int] | None = None) -> SlotMap:
    """Slots 80-bf of shard 1 moving to shard 2 (two shards seeded, a third added)."""
    seeded = SlotMap.seed(even_shard_map(2))
    return seeded.with_move(Move(7, tuple(range(0x80, 0xC0)), 1, 2, phase, markers or {}))


def test_a_slot_routes_to_its_shard_until_its_move_puts_a_marker_in_the_partition():
    for phase in (Phase.COPY, Phase.FREEZE):
        assert moving(phase).route(APP_80, 13, 1_000) == 1
    frozen = moving(Phase.FREEZE, {13: 500})
    assert frozen.route(APP_80, 13, 499) == 1
    assert frozen.route(APP_80, 13, 500) == 1  # the marker itself is no update
    assert frozen.route(APP_80, 13, 501) == HOLD
    assert frozen.route(APP_80, 14, 501) == 1  # no marker in partition 14 yet: the drain waits
    assert frozen.route(APP_C0, 13, 501) == 1  # another slot of the same shard


def test_a_switch_sends_every_update_of_the_slots_to_the_new_shard_with_the_next_epoch():
    frozen = moving(Phase.FREEZE, {13: 500})
    done = frozen.with_move(Move(7, tuple(range(0x80, 0xC0)), 1, 2, Phase.SWITCHED, {13: 500}))
    assert done.version == frozen.version + 1
    assert done.route(APP_80, 13, 499) == 2  # a replay: older than the copy, refused by version
    assert done.route(APP_80, 13, 501) == 2
    assert done.shard_of_app(APP_80) == 2 and done.slots[0x80].epoch == 1
    assert done.slots[0x80].move is None and not done.frozen(APP_80)
    assert done.shard_of_app(APP_C0) == 1 and done.slots[0xC0].epoch == 0
    assert done.home == frozen.home == even_shard_map(2)  # the update topic's layout stays


def test_a_cancel_leaves_the_slots_where_they_were():
    frozen = moving(Phase.FREEZE, {13: 500})
    assert frozen.frozen(APP_80) and not frozen.frozen(APP_C0)
    cancelled = frozen.with_move(Move(7, tuple(range(0x80, 0xC0)), 1, 2, Phase.CANCELLED))
    assert cancelled.route(APP_80, 13, 501) == 1
    assert cancelled.slots[0x80].epoch == 0 and not cancelled.frozen(APP_80)


def test_the_map_prints_as_runs_of_alike_slots():
    frozen = moving(Phase.FREEZE, {13: 500})
    assert [(span, slot.shard, slot.move is not None) for span, slot in frozen.runs()] == [
        ("00-7f", 0, False),
        ("80-bf", 1, True),
        ("c0-ff", 1, False),
    ]
