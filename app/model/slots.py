"""The shard map: which shard each of the 256 app-ID slots lives on, and where a moving slot's
updates go. Pure: the control store (``app.sink.control``) keeps it; this module decides.

An app's slot is the first byte of its app ID (two hex digits). Two maps are kept:

* the **home map**, the one the cluster was seeded with: an app's partition in the update topic is
  in its home shard's block for ever, so every update of an app is one sequence of offsets and a
  row's version (its update's offset) stays comparable however often its slot moves;
* the **live map** (``SlotMap``): each slot's shard, its epoch (0 at the seed, one more at each
  switch) and, while a move runs, the move. The internal topic, the writes and the reads follow
  it.

Routing a moving slot's update read at (partition, offset) of the update topic (``SlotMap.route``):

* before the move's freeze, or at or before the marker the move put in that partition, or in a
  partition it put no marker in yet: the old shard (the drain that precedes the switch waits
  for every update up to the markers, so these all reach the old shard before the final copy);
* after the marker, until the switch: nowhere yet (``HOLD``: ask again once the map changed);
* once switched: the new shard, whatever the offset (an update replayed from before the move is
  older than the row the final copy gave the new shard, and its version guard refuses it);
* once cancelled the move is gone and the slot routes to its shard as before.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from functools import cached_property

SLOTS = 256  # the shard map has one slot per possible first byte of an app ID
HOLD = -1  # ``SlotMap.route``: not yet, ask again once the map changed


def slot_of(app_id: str) -> int:
    """An app's slot: the first byte of its app ID (canonical UUID text)."""
    return int(app_id[:2], 16)


def parse_slots(text: str) -> tuple[int, ...]:
    """Slots written as in the shard map, e.g. ``a3``, ``80-8f``, ``00-0f,a3``: in order, each
    once. Raises ValueError with a message for the operator."""
    found: list[int] = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        first_text, _, last_text = item.partition("-")
        try:
            first, last = int(first_text, 16), int(last_text or first_text, 16)
        except ValueError:
            raise ValueError(f"slots {item!r}: write them in hex, 00 to ff (e.g. 80-8f)") from None
        if not (0 <= first <= last < SLOTS):
            raise ValueError(f"slots {item!r}: slots are 00..ff, low to high")
        found.extend(range(first, last + 1))
    if not found:
        raise ValueError("name at least one slot (e.g. a3 or 80-8f)")
    if len(set(found)) != len(found):
        raise ValueError(f"slots {text!r} name a slot twice")
    return tuple(sorted(found))


def format_slots(slots: Iterable[int]) -> str:
    """The shortest text ``parse_slots`` reads back as ``slots``: ``80-bf,c3``."""
    runs: list[list[int]] = []
    for slot in sorted(slots):
        if runs and runs[-1][1] == slot - 1:
            runs[-1][1] = slot
        else:
            runs.append([slot, slot])
    return ",".join(f"{a:02x}" if a == b else f"{a:02x}-{b:02x}" for a, b in runs)


def parse_shard_map(text: str, shards: int) -> tuple[int, ...]:
    """Parse an explicit shard map: comma-separated ``SLOTS=SHARD`` items, slots in hex.

    ``00-7f=0,80-ff=1`` gives slots 0x00..0x7f to shard 0 and the rest to shard 1; a single slot
    is written ``a3=1``. Every one of the 256 slots must be named exactly once.
    """
    slots: list[int | None] = [None] * SLOTS
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        span, sep, shard_text = item.partition("=")
        if not sep:
            raise ValueError(f"shard map item {item!r} is not SLOTS=SHARD (e.g. 00-7f=0)")
        try:
            named, shard = parse_slots(span), int(shard_text)
        except ValueError:
            raise ValueError(
                f"shard map item {item!r}: slots are hex 00-ff, low to high, shard a number"
            ) from None
        if not 0 <= shard < shards:
            raise ValueError(
                f"shard map item {item!r}: shard {shard} is not one of 0..{shards - 1}"
            )
        for slot in named:
            if slots[slot] is not None:
                raise ValueError(f"shard map names slot {slot:02x} twice")
            slots[slot] = shard
    missing = [f"{slot:02x}" for slot, shard in enumerate(slots) if shard is None]
    if missing:
        raise ValueError(
            f"ROWSTREAM_SHARD_MAP does not cover {len(missing)} of 256 slots (first: {missing[0]})"
        )
    return tuple(shard for shard in slots if shard is not None)


def even_shard_map(shards: int) -> tuple[int, ...]:
    """The default map: contiguous runs of slots, as even as 256 / shards allows."""
    return tuple(slot * shards // SLOTS for slot in range(SLOTS))


class Phase(StrEnum):
    """Where a move stands. The slots are frozen at the ingest tier from ``FREEZE`` to
    ``SWITCHED`` (excluded); ``SWITCHED`` and ``CANCELLED`` are final."""

    COPY = "copy"  # copying the slots' rows to the new shard, updates flowing to the old one
    FREEZE = "freeze"  # the ingest tier refuses the slots' updates; markers go in, then the drain
    SWITCHED = "switched"
    CANCELLED = "cancelled"

    @property
    def frozen(self) -> bool:
        return self is Phase.FREEZE


@dataclass(frozen=True)
class Move:
    """A move of ``slots`` from shard ``source`` to ``target``; ``markers`` maps each partition
    of the update topic the move put a marker in to the marker's offset."""

    id: int
    slots: tuple[int, ...]
    source: int
    target: int
    phase: Phase
    markers: Mapping[int, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Slot:
    shard: int
    epoch: int = 0
    move: Move | None = None  # the move of this slot that is not final, if any


@dataclass(frozen=True)
class SlotMap:
    """The live map (``version`` grows with every change) and the home map."""

    version: int
    slots: tuple[Slot, ...]
    home: tuple[int, ...]

    @classmethod
    def seed(cls, shard_map: tuple[int, ...]) -> SlotMap:
        return cls(0, tuple(Slot(shard) for shard in shard_map), shard_map)

    @cached_property
    def frozen_slots(self) -> frozenset[int]:
        """The slots the ingest tier refuses now."""
        return frozenset(
            n
            for n, slot in enumerate(self.slots)
            if slot.move is not None and slot.move.phase.frozen
        )

    def shard_of_app(self, app_id: str) -> int:
        """The shard an app's rows are on now (reads, and writes outside a move)."""
        return self.slots[slot_of(app_id)].shard

    def frozen(self, app_id: str) -> bool:
        """True while the ingest tier must refuse the app's updates."""
        return slot_of(app_id) in self.frozen_slots

    def route(self, app_id: str, partition: int, offset: int) -> int:
        """The shard an update of ``app_id`` read at (``partition``, ``offset``) of the update
        topic goes to, or ``HOLD`` (the module docstring gives the rule)."""
        slot = self.slots[slot_of(app_id)]
        move = slot.move
        if move is None or not move.phase.frozen:
            return slot.shard
        marker = move.markers.get(partition)
        if marker is None or offset <= marker:
            return slot.shard
        return HOLD

    def runs(self) -> list[tuple[str, Slot]]:
        """The map as runs of neighbouring slots that are alike, in slot order: ``("00-7f",
        slot)`` (what ``faust -A app slots`` prints)."""
        runs: list[tuple[list[int], Slot]] = []
        for n, slot in enumerate(self.slots):
            if runs and runs[-1][1] == slot:
                runs[-1][0].append(n)
            else:
                runs.append(([n], slot))
        return [(format_slots(numbers), slot) for numbers, slot in runs]

    def with_move(self, move: Move) -> SlotMap:
        """The map once ``move`` is at its phase: a switch gives its slots the target shard and
        the next epoch; a cancel leaves them where they were."""
        slots = list(self.slots)
        for n in move.slots:
            slot = slots[n]
            if move.phase is Phase.SWITCHED:
                slots[n] = Slot(move.target, slot.epoch + 1)
            elif move.phase is Phase.CANCELLED:
                slots[n] = replace(slot, move=None)
            else:
                slots[n] = replace(slot, move=move)
        return replace(self, version=self.version + 1, slots=tuple(slots))
