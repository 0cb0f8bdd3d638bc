"""The control store: the layout the cluster was seeded with and the live shard map, in the
``rowstream_control`` schema of the control database (ROWSTREAM_CONTROL_DSN; shard 0's database
by default). Every worker, ingest process and command reads it through a ``Control``.

Guarantees:

* **Seeded once.** The first process to start writes the layout and the map its settings give
  (``ROWSTREAM_SHARD_MAP``, or the even map over ``ROWSTREAM_SHARDS``); every later process reads
  them, whatever its own settings say. So a shard appended to ROWSTREAM_SHARDS owns no slot and
  moves nothing, and the settings' map is only the seed. The seed is the layout rowstream had
  before the store existed (a block of the update topic per configured shard, the internal
  topic's partitions shared evenly), so a cluster that ran before keeps every app's partitions
  and every row's version.
* **Checked.** ``Control.load`` refuses (``ControlError``, one line) settings that disagree
  with the seed: another partition count of the update topic, fewer shards than the map names,
  an internal topic without a block for every shard.
* **Versioned.** Every change of the map raises its version; ``Control.refresh`` reads the map
  again only when the version moved, so polling it costs one small query.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import aiopg
import orjson
import psycopg2

from app.model.partitioning import Layout
from app.model.slots import HOLD, Move, Phase, Slot, SlotMap, format_slots
from app.settings import Settings, redact_dsn
from app.sink import sql

log = logging.getLogger("rowstream.control")

LOCK = 72418  # advisory lock of the control schema's migration and seed


class ControlError(Exception):
    """The settings disagree with the control store; the message is one line for the operator."""


class ControlUnreachable(ControlError):
    """The control store did not answer (worth waiting for)."""


@dataclass(frozen=True)
class Seed:
    """What a first start writes: the settings' layout and map."""

    partitions: int
    home_blocks: int
    internal_block: int
    shard_map: tuple[int, ...]

    @classmethod
    def of(cls, settings: Settings) -> Seed:
        """The seed ``settings`` give; ControlError when they cannot seed a cluster (the
        partitions of each topic must split evenly over the shards)."""
        shards = len(settings.shards)
        counts = [("ROWSTREAM_PARTITIONS", settings.partitions)]
        if not settings.internal_block:
            counts.append(("ROWSTREAM_INTERNAL_PARTITIONS", settings.internal_partitions))
        for name, count in counts:
            if count % shards:
                raise ControlError(
                    f"{name} ({count}) must be divisible by the number of shards in "
                    f"ROWSTREAM_SHARDS ({shards}) to seed the cluster"
                )
        block = settings.internal_block or settings.internal_partitions // shards
        return cls(settings.partitions, shards, block, settings.slot_map)

    def layout(self) -> Layout:
        return Layout(self.partitions, self.shard_map, self.home_blocks, self.internal_block)


def check(layout: Layout, slot_map: SlotMap, settings: Settings) -> None:
    """Raise ControlError when ``settings`` cannot run the seeded ``layout`` and live map."""
    shards = len(settings.shards)
    if settings.partitions != layout.partitions:
        raise ControlError(
            f"ROWSTREAM_PARTITIONS is {settings.partitions} but the cluster was seeded with "
            f"{layout.partitions} (the update topic's partition count cannot change)"
        )
    named = max(max(slot_map.home), max(slot.shard for slot in slot_map.slots)) + 1
    if shards < named:
        raise ControlError(
            f"ROWSTREAM_SHARDS names {shards} shard(s) but the cluster uses {named}: "
            "shards can be added, not removed"
        )
    room = layout.internal.block * shards
    if settings.internal_partitions < room:
        raise ControlError(
            f"ROWSTREAM_INTERNAL_PARTITIONS is {settings.internal_partitions} but {shards} "
            f"shards need {room} ({layout.internal.block} per shard): grow the internal "
            "topic by a block per added shard"
        )


class Control:
    """One process's view of the control store: the seeded ``layout`` and the live ``slots``
    (``load`` first), kept fresh by ``refresh``."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self._pool: aiopg.Pool | None = None
        self._layout: Layout | None = None
        self._slots: SlotMap | None = None
        self._failing = False

    @property
    def layout(self) -> Layout:
        if self._layout is None:
            raise RuntimeError("Control.load() first")
        return self._layout

    @property
    def slots(self) -> SlotMap:
        if self._slots is None:
            raise RuntimeError("Control.load() first")
        return self._slots

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[Any]:
        """A connection of the pool, given back at the end (kept open)."""
        if self._pool is None:
            self._pool = await aiopg.create_pool(self.dsn, minsize=0, maxsize=2, timeout=10.0)
        async with self._pool.acquire() as conn:
            yield conn

    async def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            await self._pool.wait_closed()
            self._pool = None

    async def load(self, settings: Settings) -> None:
        """Create the schema and seed it if this is the cluster's first start (``Seed.of``),
        read the layout and the map, and check ``settings`` against them."""
        try:
            async with self._connection() as conn, conn.cursor() as cur:
                await cur.execute("SELECT pg_advisory_lock(%s)", (LOCK,))
                try:
                    await cur.execute(sql.CONTROL_SCHEMA)
                    await cur.execute(sql.SELECT_LAYOUT)
                    if await cur.fetchone() is None:
                        await self._seed(cur, Seed.of(settings))
                finally:
                    await cur.execute("SELECT pg_advisory_unlock(%s)", (LOCK,))
                await cur.execute(sql.SELECT_LAYOUT)
                partitions, home_blocks, internal_block, _ = await cur.fetchone()
                slots = await self._read_slots(cur)
        except (psycopg2.Error, OSError, TimeoutError) as exc:
            said = " ".join(str(exc).split())
            raise ControlUnreachable(
                f"control store {redact_dsn(self.dsn)}: {said or type(exc).__name__}"
            ) from None
        layout = Layout(partitions, slots.home, home_blocks, internal_block)
        check(layout, slots, settings)
        self._layout, self._slots = layout, slots

    @staticmethod
    async def _seed(cur: Any, seed: Seed) -> None:
        await cur.execute("BEGIN")
        await cur.execute(
            sql.SEED_LAYOUT,
            {
                "partitions": seed.partitions,
                "home_blocks": seed.home_blocks,
                "internal_block": seed.internal_block,
            },
        )
        await cur.execute(sql.SEED_SLOTS, {"shards": list(seed.shard_map)})
        await cur.execute("COMMIT")
        log.info(
            "control store seeded: %d partitions in %d blocks, %d internal partitions per shard",
            seed.partitions,
            seed.home_blocks,
            seed.internal_block,
        )

    async def try_refresh(self, timeout: float = 2.0) -> bool:
        """``refresh``; a store that does not answer within ``timeout`` is logged (once an
        outage) and the map kept. False before ``load``."""
        if self._slots is None:
            return False
        try:
            changed = await asyncio.wait_for(self.refresh(), timeout)
        except (psycopg2.Error, OSError, TimeoutError) as exc:
            if not self._failing:
                said = " ".join(str(exc).split()) or type(exc).__name__
                log.warning(
                    "the control store does not answer (%s); the map stays at version %d",
                    said,
                    self.slots.version,
                )
            self._failing = True
            return False
        if self._failing:
            log.info("the control store answers again")
            self._failing = False
        return changed

    async def route_held(self, app_id: str, partition: int, offset: int, poll: float = 0.1) -> int:
        """The shard of an update the map says to hold (``SlotMap.route``): the map is read
        again until its move switched or was cancelled."""
        while (shard := self.slots.route(app_id, partition, offset)) == HOLD:
            await asyncio.sleep(poll)
            await self.try_refresh()
        return shard

    async def read_again(self) -> bool:
        """Read the map again now; True when the store answered (the map is current)."""
        await self.try_refresh()
        return not self._failing

    async def saw_marker(self, move_id: int, partition: int, offset: int) -> None:
        """A marker of ``move_id`` was read at (``partition``, ``offset``) of the update topic:
        record it (unless one is recorded there already) and read the map again, before the
        records after it are routed."""
        while True:
            try:
                await self.record_marker(move_id, partition, offset)
                await self.refresh()
                return
            except (psycopg2.Error, OSError, TimeoutError) as exc:
                log.warning("cannot record move %d's marker yet: %s", move_id, exc)
            await asyncio.sleep(1.0)

    async def load_waiting(self, settings: Settings, retry: float = 2.0) -> None:
        """``load``, waiting for a control store that does not answer (logged at each try);
        a disagreement is raised at once."""
        while True:
            try:
                return await self.load(settings)
            except ControlUnreachable as exc:
                log.warning("waiting for the control store: %s", exc)
            await asyncio.sleep(retry)

    async def refresh(self) -> bool:
        """Read the map again if its version moved; True when it changed."""
        async with self._connection() as conn, conn.cursor() as cur:
            await cur.execute(sql.SELECT_VERSION)
            (version,) = await cur.fetchone()
            if version == self.slots.version:
                return False
            self._slots = await self._read_slots(cur)
        return True

    # --- moves (``app.ops.moves`` runs them; the agents record markers they see) ---------------

    @contextlib.asynccontextmanager
    async def _transaction(self) -> AsyncIterator[Any]:
        """A cursor inside one transaction, committed at the end, rolled back on error."""
        async with self._connection() as conn, conn.cursor() as cur:
            await cur.execute("BEGIN")
            try:
                yield cur
            except BaseException:
                await cur.execute("ROLLBACK")
                raise
            await cur.execute("COMMIT")

    async def begin_move(self, slots: tuple[int, ...], target: int) -> Move:
        """The move of ``slots`` to shard ``target``: the unfinished one if it is this move (to
        resume it), else a new one in ``COPY``. ControlError when the slots are in another move,
        on more than one shard, or on the target already."""
        async with self._transaction() as cur:
            await cur.execute(sql.LOCK_SLOTS, {"slots": list(slots)})
            rows = await cur.fetchall()
            moves = {move_id for _, _, move_id in rows if move_id is not None}
            for move_id in moves:
                move = await self._move(cur, move_id)
                if move.slots == slots and move.target == target:
                    return move
                raise ControlError(
                    f"slots {format_slots(set(slots) & set(move.slots))} are in move {move.id} "
                    f"of {format_slots(move.slots)} to shard {move.target} ({move.phase}): run "
                    f"`faust -A app move-slots {format_slots(move.slots)} --to {move.target}` "
                    "to finish or cancel it first"
                )
            sources = sorted({shard for _, shard, _ in rows})
            if len(sources) > 1:
                raise ControlError(
                    f"slots {format_slots(slots)} are on shards "
                    f"{', '.join(map(str, sources))}: move each shard's slots on their own"
                )
            if sources == [target]:
                raise ControlError(f"slots {format_slots(slots)} are on shard {target} already")
            await cur.execute(
                sql.INSERT_MOVE,
                {"slots": list(slots), "source": sources[0], "target": target, "phase": "copy"},
            )
            (move_id,) = await cur.fetchone()
            await cur.execute(sql.ATTACH_MOVE, {"id": move_id, "slots": list(slots)})
            await cur.execute(sql.BUMP_VERSION)
            return Move(move_id, slots, sources[0], target, Phase.COPY)

    async def move(self, move_id: int) -> Move:
        async with self._connection() as conn, conn.cursor() as cur:
            return await self._move(cur, move_id)

    async def progress(self, move_id: int) -> dict[str, Any]:
        """What the move's command recorded of its work (``note_progress``)."""
        async with self._connection() as conn, conn.cursor() as cur:
            await cur.execute(sql.SELECT_MOVE, {"id": move_id})
            row = await cur.fetchone()
        return dict(row[6])

    async def note_progress(self, move_id: int, **progress: Any) -> None:
        async with self._connection() as conn, conn.cursor() as cur:
            await cur.execute(
                sql.SET_PROGRESS, {"id": move_id, "progress": orjson.dumps(progress).decode()}
            )

    async def set_phase(self, move: Move, phase: Phase) -> Move:
        """``move`` in ``phase`` (from the phase it had; ControlError if another process changed
        it meanwhile). A switch gives its slots the target shard and the next epoch, a cancel
        leaves them on theirs; both end the move."""
        async with self._transaction() as cur:
            await cur.execute(sql.SET_PHASE, {"id": move.id, "phase": phase, "was": move.phase})
            if not cur.rowcount:
                raise ControlError(f"move {move.id} is no longer in phase {move.phase}")
            if phase is Phase.SWITCHED:
                await cur.execute(sql.SWITCH_SLOTS, {"id": move.id, "target": move.target})
            elif phase is Phase.CANCELLED:
                await cur.execute(sql.DETACH_MOVE, {"id": move.id})
            await cur.execute(sql.BUMP_VERSION)
            return await self._move(cur, move.id)

    async def record_marker(self, move_id: int, partition: int, offset: int) -> None:
        """The marker of ``move_id`` in ``partition`` of the update topic is at ``offset``,
        unless one was recorded there before (the first stays)."""
        async with self._transaction() as cur:
            await cur.execute(
                sql.RECORD_MARKER, {"id": move_id, "partition": partition, "offset": offset}
            )
            if cur.rowcount:
                await cur.execute(sql.BUMP_VERSION)

    async def last_switched(self, slots: tuple[int, ...]) -> list[Move]:
        """The switched moves of any of ``slots``, newest first."""
        async with self._connection() as conn, conn.cursor() as cur:
            await cur.execute(sql.LAST_SWITCHED, {"slots": list(slots)})
            return [_move_of(row) for row in await cur.fetchall()]

    # --- the ingest tier's acknowledgement of the map -----------------------------------------

    async def seen(self, name: str) -> None:
        """Process ``name`` works with the map at its current version."""
        async with self._connection() as conn, conn.cursor() as cur:
            await cur.execute(sql.SEEN, {"name": name, "version": self.slots.version})

    async def forget(self, name: str) -> None:
        async with self._connection() as conn, conn.cursor() as cur:
            await cur.execute(sql.FORGET_PROCESS, {"name": name})

    async def behind(self, version: int, within: float) -> list[str]:
        """The processes heard from in the last ``within`` seconds that have not seen
        ``version`` of the map."""
        async with self._connection() as conn, conn.cursor() as cur:
            await cur.execute(sql.BEHIND, {"version": version, "within": within})
            return [name for (name,) in await cur.fetchall()]

    @staticmethod
    async def _move(cur: Any, move_id: int) -> Move:
        await cur.execute(sql.SELECT_MOVE, {"id": move_id})
        return _move_of(await cur.fetchone())

    @staticmethod
    async def _read_slots(cur: Any) -> SlotMap:
        """The live map as one snapshot (one transaction, repeatable read)."""
        await cur.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        try:
            await cur.execute(sql.SELECT_VERSION)
            (version,) = await cur.fetchone()
            await cur.execute(sql.SELECT_SLOTS)
            rows = await cur.fetchall()
        finally:
            await cur.execute("COMMIT")
        home, slots = [], []
        for home_shard, shard, epoch, move_id, *move in rows:  # in slot order
            home.append(home_shard)
            moving = None if move_id is None else _move_of((move_id, *move))
            slots.append(Slot(shard, epoch, moving))
        return SlotMap(version, tuple(slots), tuple(home))


def _move_of(row: Sequence[Any]) -> Move:
    """A move from its row: id, slots, source, target, phase, markers (more columns ignored)."""
    move_id, slots, source, target, phase, markers = row[:6]
    return Move(
        move_id,
        tuple(slots),
        source,
        target,
        Phase(phase),
        {int(partition): int(offset) for partition, offset in markers.items()},
    )


async def check_control(settings: Settings) -> None:
    """``Control.load`` once, for a start check (seeds a first start); ControlError if the
    settings disagree."""
    control = Control(settings.control)
    try:
        await control.load_waiting(settings)
    finally:
        await control.close()
