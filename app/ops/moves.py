"""Moving slots to another shard while updates flow: ``faust -A app move-slots SLOTS --to N``.

The protocol (the reasons and the failure cases: docs/resharding.md):

1. **plan**: the slots are on one shard, not in another move; their apps, rows, partitions and
   lag; refused above ``--max-lag`` waiting messages.
2. **copy**: the slots' rows, page by page in key order, to the target shard, where a row is
   taken only if the target holds an older version (or none). Updates keep flowing to the old
   shard meanwhile.
3. **catch up**: the rows changed since the last pass began (``updated_at`` at or after the
   start of the oldest transaction open then), again, until a pass finds few.
4. **freeze**: the ingest tier answers 503 + Retry-After for the slots (every ingest process
   acknowledges the map's new version within seconds; one that does not is no danger: the
   agents hold what it lets through, step 6's rule).
5. **markers**: a marker record into each partition of the update topic the slots' apps use;
   its offset is recorded in the control store (the first one recorded for a partition stays).
6. **drain**: the consumer group commits past every marker, then past a marker put into each
   internal partition of the old shard: every update of the slots from before the freeze is in
   the old shard. An update of a frozen slot read after its partition's marker is held by the
   repartition agent until the switch (``app.model.slots``).
7. **final copy** of the rows changed since the last pass, then **switch**: in one
   transaction the slots get the target shard and the next epoch. The freeze ends with it.

Every phase is recorded in the control store: run the same command again after a kill and it
goes on from there. A freeze longer than ``--timeout`` before the switch cancels the move (the
slots stay on the old shard, unfrozen). ``--cleanup`` deletes the moved slots' rows from the old
shard once no move of them is unfinished.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import aiopg
import orjson

from app.model import events
from app.model.slots import Move, Phase, format_slots
from app.sink import sql
from app.sink.control import Control, ControlError
from app.sink.shards import apply_schema

PAGE = 5_000  # rows per copy or delete statement
FEW = 1_000  # a catch-up pass that copies fewer rows than this ends the catch-up
PASSES = 5  # at most this many catch-up passes before the freeze
ACK_WAIT = 2.0  # seconds the freeze waits for the ingest processes' acknowledgements
HEARD_WITHIN = 10.0  # an ingest process not heard from for longer is not waited for

#: Produce a marker into (topic, partition); its offset.
SendMarker = Callable[[str, int, bytes, list[tuple[str, bytes]]], Awaitable[int]]
#: The consumer group's committed offset of each (topic, partition) (None: nothing committed).
Committed = Callable[[Sequence[tuple[str, int]]], Awaitable[dict[tuple[str, int], int | None]]]


class MoveFailed(Exception):
    """The move stopped (cancelled, or refused); the message says why, in one line."""


def key_ranges(slots: Sequence[int]) -> list[tuple[str, str]]:
    """The app-ID ranges (inclusive) that hold exactly ``slots``: one per run of neighbours."""
    ranges: list[tuple[str, str]] = []
    for run in format_slots(slots).split(","):
        first, _, last = run.partition("-")
        ranges.append(
            (
                f"{first}000000-0000-0000-0000-000000000000",
                f"{last or first}ffffff-ffff-ffff-ffff-ffffffffffff",
            )
        )
    return ranges


@dataclass
class Plan:
    move: Move | None  # an unfinished move of these slots, to resume
    source: int
    apps: int
    rows: int
    partitions: list[int]  # of the update topic: where the slots' apps' updates are
    lag: int  # messages waiting in those partitions and in the old shard's internal block

    def describe(self, slots: Sequence[int], target: int) -> str:
        what = f"move {self.move.id}, {self.move.phase}" if self.move else "a new move"
        return (
            f"slots {format_slots(slots)}: shard {self.source} → {target} ({what}); "
            f"{self.apps:,} apps, {self.rows:,} rows; update-topic partitions "
            f"{self.partitions[0]}-{self.partitions[-1]}; {self.lag:,} messages waiting"
        )


@dataclass
class Mover:
    """One run of ``move-slots`` (see the module docstring)."""

    control: Control
    dsns: Sequence[str]
    topics: tuple[str, str]  # the update topic, the internal topic
    send_marker: SendMarker
    committed: Committed
    end_offsets: Committed
    say: Callable[[str], None]
    clock: Callable[[], float] = time.monotonic
    _pools: dict[int, aiopg.Pool] = field(default_factory=dict)

    async def close(self) -> None:
        for pool in self._pools.values():
            pool.close()
            await pool.wait_closed()

    async def _pool(self, shard: int) -> aiopg.Pool:
        """The shard's pool; its schema applied first (a target no worker wrote to yet)."""
        if shard not in self._pools:
            pool = await aiopg.create_pool(self.dsns[shard], minsize=0, maxsize=2, timeout=10.0)
            await apply_schema(pool)
            self._pools[shard] = pool
        return self._pools[shard]

    async def _query(self, shard: int, statement: str, params: dict[str, Any]) -> list[Any]:
        async with (await self._pool(shard)).acquire() as conn, conn.cursor() as cur:
            await cur.execute(statement, params)
            return list(await cur.fetchall()) if cur.description else []

    # --- 1. plan ------------------------------------------------------------------------------

    def partitions_of(self, slots: Sequence[int]) -> list[int]:
        """The update topic's partitions the slots' apps use: their home shards' blocks."""
        layout = self.control.layout
        homes = sorted({layout.home[slot] for slot in slots})
        return [p for home in homes for p in layout.source.partitions_of(home)]

    async def plan(self, slots: Sequence[int], target: int) -> Plan:
        live = self.control.slots
        if not 0 <= target < len(self.dsns):
            raise MoveFailed(
                f"--to {target}: ROWSTREAM_SHARDS names shards 0..{len(self.dsns) - 1}"
            )
        moves = {m.id: m for slot in slots if (m := live.slots[slot].move) is not None}
        move = next(iter(moves.values())) if len(moves) == 1 else None
        sources = sorted({live.slots[slot].shard for slot in slots})
        if len(sources) > 1:
            raise MoveFailed(
                f"slots {format_slots(slots)} are on shards {', '.join(map(str, sources))}: "
                "move each shard's slots on their own"
            )
        apps = rows = 0
        for low, high in key_ranges(slots):
            ((a, r),) = await self._query(sources[0], sql.SLOT_ROWS, {"low": low, "high": high})
            apps, rows = apps + a, rows + r
        partitions = self.partitions_of(slots)
        return Plan(
            move, sources[0], apps, rows, partitions, await self.lag(partitions, sources[0])
        )

    async def lag(self, partitions: Sequence[int], shard: int) -> int:
        """Messages the group has not committed in ``partitions`` of the update topic and in
        ``shard``'s block of the internal topic."""
        updates, internal = self.topics
        wanted = [(updates, p) for p in partitions] + [
            (internal, p) for p in self.control.layout.internal.partitions_of(shard)
        ]
        ends, committed = await asyncio.gather(self.end_offsets(wanted), self.committed(wanted))
        return sum(max(0, (ends[tp] or 0) - (committed[tp] or 0)) for tp in wanted)

    # --- 2, 3. copy and catch up ----------------------------------------------------------------

    async def horizon(self, shard: int) -> datetime:
        ((since,),) = await self._query(shard, sql.HORIZON, {})
        return since

    async def copy(self, move: Move, since: datetime | None = None) -> int:
        """Copy the move's rows (changed at or after ``since``, if given) to its target; the
        rows copied. A full copy records where it got to and goes on from there when run again."""
        progress = await self.control.progress(move.id) if since is None else {}
        copied = progress.get("copied", 0) if since is None else 0
        ranges = key_ranges(move.slots)
        start = progress.get("range", 0) if since is None else 0
        last_said = self.clock()
        for index in range(start, len(ranges)):
            low, high = ranges[index]
            after = progress.get("after") if index == start and since is None else None
            app, sub = after or ("00000000-0000-0000-0000-000000000000",) * 2
            while True:
                params = {"low": low, "high": high, "app": app, "sub": sub, "limit": PAGE}
                if since is None:
                    page = await self._query(move.source, sql.COPY_PAGE, params)
                else:
                    page = await self._query(
                        move.source, sql.CHANGED_PAGE, {**params, "since": since}
                    )
                if not page:
                    break
                rows = [
                    {"a": a, "s": s, "p": p, "v": v, "t": t.isoformat()} for a, s, p, v, t in page
                ]
                await self._query(move.target, sql.COPY_ROWS, {"rows": orjson.dumps(rows).decode()})
                copied += len(page)
                app, sub = page[-1][0], page[-1][1]
                if since is None:
                    await self.control.note_progress(
                        move.id, copied=copied, range=index, after=[app, sub]
                    )
                if self.clock() - last_said >= 1.0:
                    self.say(f"copy: {copied:,} rows")
                    last_said = self.clock()
        return copied

    # --- 4-7. freeze, markers, drain, switch -------------------------------------------------

    async def freeze(self, move: Move) -> Move:
        if move.phase is Phase.COPY:
            move = await self.control.set_phase(move, Phase.FREEZE)
        version = await self._version()
        deadline = self.clock() + ACK_WAIT
        while behind := await self.control.behind(version, HEARD_WITHIN):
            if self.clock() > deadline:
                self.say(
                    f"freeze: {len(behind)} ingest process(es) did not acknowledge it "
                    f"({', '.join(behind[:3])}); the agents hold what they let through"
                )
                break
            await asyncio.sleep(0.05)
        return move

    async def _version(self) -> int:
        await self.control.refresh()
        return self.control.slots.version

    async def put_markers(self, move: Move) -> dict[int, int]:
        """A marker in every partition of the update topic the slots use that has none
        recorded; the recorded marker of each."""
        updates, _ = self.topics
        value, headers = _marker(move)
        missing = [p for p in self.partitions_of(move.slots) if p not in move.markers]
        offsets = await asyncio.gather(
            *(self.send_marker(updates, p, value, headers) for p in missing)
        )
        for partition, offset in zip(missing, offsets):
            await self.control.record_marker(move.id, partition, offset)
        recorded = await self.control.move(move.id)
        return dict(recorded.markers)

    async def drain(self, move: Move, markers: dict[int, int], deadline: float) -> None:
        """Wait until the group committed past every marker, then past a marker in each
        internal partition of the old shard (raises TimeoutError at ``deadline``)."""
        updates, internal = self.topics
        await self._past(updates, markers, deadline, "update topic")
        value, headers = _marker(move)
        block = list(self.control.layout.internal.partitions_of(move.source))
        offsets = await asyncio.gather(
            *(self.send_marker(internal, p, value, headers) for p in block)
        )
        await self._past(internal, dict(zip(block, offsets)), deadline, "internal topic")

    async def _past(self, topic: str, markers: dict[int, int], deadline: float, what: str) -> None:
        wanted = [(topic, p) for p in markers]
        last_said = self.clock()
        while True:
            committed = await self.committed(wanted)
            waiting = [p for p in markers if (committed[(topic, p)] or 0) <= markers[p]]
            if not waiting:
                return
            if self.clock() > deadline:
                raise TimeoutError(f"{len(waiting)} partition(s) of the {what} not drained")
            if self.clock() - last_said >= 1.0:
                done = len(markers) - len(waiting)
                self.say(f"drain: {done} of {len(markers)} partitions of the {what}")
                last_said = self.clock()
            await asyncio.sleep(0.05)

    async def run(self, slots: Sequence[int], target: int, timeout: float) -> Move:
        """Steps 2-7 for ``slots`` (a move begun or resumed); the switched move. Raises
        MoveFailed when the switch did not come within ``timeout`` of the freeze (the move is
        cancelled) or the control store refuses."""
        try:
            move = await self.control.begin_move(tuple(slots), target)
        except ControlError as exc:
            raise MoveFailed(str(exc)) from None
        if move.phase is Phase.COPY:
            progress = await self.control.progress(move.id)
            since = progress.get("since")
            if since is None:  # the horizon before the first page: the catch-up starts there
                since = (await self.horizon(move.source)).isoformat()
                await self.control.note_progress(move.id, since=since)
            copied = await self.copy(move)
            self.say(f"copy: done, {copied:,} rows")
            for n in range(PASSES):
                horizon = await self.horizon(move.source)
                changed = await self.copy(move, datetime.fromisoformat(since))
                since = horizon.isoformat()
                await self.control.note_progress(move.id, since=since)
                self.say(f"catch up {n + 1}: {changed:,} rows changed")
                if changed < FEW:
                    break
        frozen_at = self.clock()
        deadline = frozen_at + timeout
        move = await self.freeze(move)
        self.say(f"freeze: slots {format_slots(move.slots)} refused at the ingest tier")
        try:
            markers = await self.put_markers(move)
            await self.drain(move, markers, deadline)
            since = (await self.control.progress(move.id))["since"]
            changed = await self.copy(move, datetime.fromisoformat(since))
            if self.clock() > deadline:
                raise TimeoutError("the final copy ran past the timeout")
            move = await self.control.set_phase(move, Phase.SWITCHED)
        except TimeoutError as exc:
            await self.control.set_phase(move, Phase.CANCELLED)
            raise MoveFailed(
                f"no switch within --timeout {timeout:g} s ({exc}): cancelled, the slots stay on "
                f"shard {move.source}, unfrozen; run again (a copy is kept) with a longer "
                "--timeout or when the lag is lower"
            ) from None
        self.say(
            f"switched: slots {format_slots(move.slots)} on shard {move.target} (final copy "
            f"{changed:,} rows); frozen {self.clock() - frozen_at:.2f} s"
        )
        return move

    # --- cleanup ------------------------------------------------------------------------------

    async def cleanup(self, slots: Sequence[int]) -> int:
        """Delete the rows of ``slots`` from the shards their switched moves left; the rows
        deleted. Refused while a move of any of them is unfinished."""
        live = self.control.slots
        busy = [slot for slot in slots if live.slots[slot].move is not None]
        if busy:
            raise MoveFailed(
                f"slots {format_slots(busy)} are in a move that is not finished: finish it first"
            )
        deleted = 0
        for move in await self.control.last_switched(tuple(slots)):
            left = [s for s in move.slots if s in slots and live.slots[s].shard != move.source]
            for low, high in key_ranges(left) if left else []:
                while True:
                    async with (await self._pool(move.source)).acquire() as conn:
                        async with conn.cursor() as cur:
                            params = {"low": low, "high": high, "limit": PAGE}
                            await cur.execute(sql.DELETE_PAGE, params)
                            if not cur.rowcount:
                                break
                            deleted += cur.rowcount
                    self.say(f"cleanup: {deleted:,} rows deleted from shard {move.source}")
        return deleted


def _marker(move: Move) -> tuple[bytes, list[tuple[str, bytes]]]:
    return events.marker(move.id, format_slots(move.slots))
