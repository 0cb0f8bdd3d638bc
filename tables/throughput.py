"""Per-shard throughput: events, rows written, events coalesced and batches, per shard.

The sink's writers send their counts once a second to ``rowstream-shard-stats`` (one partition);
the agent below adds them up in two tables, both held by the worker that owns that partition.
``GET /shards/`` on any other worker is forwarded to that owner by Faust's table router, so every
worker gives the same cluster-wide answer. (Global tables would avoid the hop, but on this Faust
a worker that does not own the partition read their changelog once at start and never again.)

* ``shard-throughput-total``: counts since the topics were created;
* ``shard-throughput-minute``: the same counts in tumbling one-minute windows, kept for an hour.

``GET /shards/history``: the totals once a second over the last 15 minutes (the operator page),
sampled on the same owner.

Keys are ``"<shard>/<count>"`` strings. Table names become changelog topic names: renaming one
is a migration.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime, timedelta

import faust
import orjson

from app.main import app, control, settings, shard_history, shards, topics
from app.model.slots import format_slots
from app.observe import history
from app.ops.render import answer, table

log = logging.getLogger("rowstream.throughput")

WINDOW_SECONDS = 60.0
COUNTS = ("events", "rows", "coalesced", "batches", "errors_transient", "errors_rejected")

# Explicit serializers: a changelog record that fails to decode stalls table recovery.
_schema: faust.Schema = faust.Schema(
    key_type=str,
    value_type=int,  # type: ignore[arg-type]  # Faust's type leaves int out; json encodes it
    key_serializer="json",
    value_serializer="json",
)
totals = app.Table("shard-throughput-total", default=int, partitions=1, schema=_schema)
per_minute = app.Table(
    "shard-throughput-minute", default=int, partitions=1, schema=_schema
).tumbling(WINDOW_SECONDS, expires=timedelta(hours=1))

TABLES = (totals, per_minute)


@app.agent(topics.stats)
async def count_batches(stream):
    """Input: per-shard counts, once a second (key shard). Output: the two tables."""
    async for event in stream.events():
        try:
            shard = int(event.key)
            stats = orjson.loads(event.value)
            counts = {name: int(stats[name]) for name in COUNTS if name in stats}
        except (TypeError, ValueError, KeyError, orjson.JSONDecodeError) as exc:
            log.warning("ignoring a malformed stats record %r: %s", event.value, exc)
            continue
        for name, count in counts.items():
            key = f"{shard}/{name}"
            totals[key] += count
            per_minute[key] += count


@app.timer(1.0)
async def sample_totals() -> None:
    """A sample of the totals once a second, on the worker that holds them (it reads the stats
    topic's one partition), so the operator page's throughput covers idle seconds too."""
    stats = topics.stats.get_topic_name()
    if any(tp.topic == stats for tp in app.consumer.assignment()):
        shard_history.offer(time.time(), _totals_sample)


def _totals_sample() -> dict:
    return {
        "shards": [
            {"shard": shard, **{name: totals[f"{shard}/{name}"] for name in COUNTS}}
            for shard in range(len(settings.shards))
        ]
    }


def _window(shard: int, timestamp: float) -> dict:
    (window,) = per_minute.table.window.ranges(timestamp)  # type: ignore[union-attr]  # tumbling
    counts = {name: per_minute[f"{shard}/{name}"][window] for name in COUNTS}
    return {"start": datetime.fromtimestamp(window[0], UTC).isoformat(), **counts}


def snapshot(up: list[bool], now: float | None = None) -> dict:
    """The per-shard figures served by ``GET /shards/``: totals, this minute and the last, and
    whether the shard answers now."""
    now = time.time() if now is None else now
    report = []
    for shard in range(len(settings.shards)):
        report.append(
            {
                "shard": shard,
                "up": up[shard],
                "total": {name: totals[f"{shard}/{name}"] for name in COUNTS},
                "current_window": _window(shard, now),
                "previous_window": _window(shard, now - WINDOW_SECONDS),
            }
        )
    return {"window_seconds": WINDOW_SECONDS, "shards": report, "moves": moves()}


def moves() -> list[dict]:
    """The moves of slots in progress, as the worker's map (read once a second) has them."""
    found = {}
    for slot in control.slots.slots:
        if slot.move is not None:
            move = slot.move
            found[move.id] = {
                "id": move.id,
                "slots": format_slots(move.slots),
                "from": move.source,
                "to": move.target,
                "phase": str(move.phase),
            }
    return [found[key] for key in sorted(found)]


@app.page("/shards/history")
@app.table_route(table=totals, exact_key="0")
async def shard_history_view(web, request):
    """Each shard's totals once a second over the last 15 minutes (rates are their differences)."""
    return web.json({
        "interval_seconds": shard_history.interval, "window_seconds": history.WINDOW_SECONDS,
        "samples": shard_history.samples(),
    })  # fmt: skip


@app.page("/shards/")
@app.table_route(table=totals, exact_key="0")  # one partition: every key lives on its owner
async def shards_view(web, request):
    report = snapshot(await shards.up())
    rows = [
        {
            "shard": s["shard"],
            "up": s["up"],
            **{f"total_{k}": v for k, v in s["total"].items()},
            "minute_rows": s["current_window"]["rows"],
        }
        for s in report["shards"]
    ]
    text = table(
        rows,
        [
            "shard",
            "up",
            "total_events",
            "total_rows",
            "total_coalesced",
            "total_batches",
            "total_errors_transient",
            "total_errors_rejected",
            "minute_rows",
        ],
    )
    for m in report["moves"]:
        text += f"move {m['id']}: slots {m['slots']}, shard {m['from']} → {m['to']}, {m['phase']}\n"
    return answer(web, request, report, text)
