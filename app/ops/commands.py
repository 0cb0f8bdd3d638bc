"""rowstream's own ``faust -A app <command>`` commands.

* ``create-topics``: create every topic with its partition count (before the first worker);
* ``inspect``: read the update, internal or dead-letter topic and print matching records as JSON
  lines (batch records and update batches: one line per update);
* ``traffic``: who floods whom: top apps and rows by events over a time range;
* ``lag``: the cluster's ``/lag/`` table in the terminal;
* ``dlq redrive``: put dead-lettered events back on the update topic once the cause is fixed;
* ``hash-key``: the ``ROWSTREAM_API_KEYS`` entry that accepts a key without holding it;
* ``ingest``: the ingest tier (the HTTP API), which replaces this process with
  ``python -m app.ingest`` so that none of Faust stays loaded in it.

None of them joins the consumer group or commits offsets: inspecting never moves the pipeline.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import click
import orjson
import psycopg2
from aiokafka import AIOKafkaProducer, TopicPartition
from faust.cli import AppCommand, argument, option

from app.ingest import auth, keys
from app.kafka.names import DEAD_LETTERS, INTERNAL, UPDATES
from app.kafka.offsets import GroupOffsets, fetched_ends
from app.kafka.topic_setup import TopicError, ensure_topics
from app.main import app, broker, control, settings, wanted_topics
from app.model import events
from app.model.slots import format_slots, parse_slots
from app.ops.inspection import Filter, Seen, parse_time, top_talkers, unbatch
from app.ops.moves import MoveFailed, Mover
from app.ops.reader import ReadError, read
from app.ops.render import table
from app.sink.control import ControlError

TOPICS = {"updates": UPDATES, "internal": INTERNAL, "dead-letters": DEAD_LETTERS}


def _interrupted(fun):
    """A usage error ends the command with one line and exit code 2, Ctrl-C quietly with what
    it printed so far (the async body runs inside a mode worker, which would log a traceback)."""

    async def wrapper(self: Any, *args: Any, **kwargs: Any) -> None:
        try:
            await fun(self, *args, **kwargs)
        except click.UsageError as exc:
            print(f"Error: {exc.message}", file=sys.stderr, flush=True)
            os._exit(2)  # nothing is left open: every reader and producer closed in `finally`
        except (KeyboardInterrupt, asyncio.CancelledError):
            print("interrupted", file=sys.stderr, flush=True)
            os._exit(130)

    wrapper.__name__, wrapper.__doc__ = fun.__name__, fun.__doc__
    return wrapper


def timeout_option(default: float) -> Any:
    return option(
        "--timeout",
        type=float,
        default=default,
        show_default=True,
        help="stop reading after this many seconds",
    )


@app.command()
@_interrupted
async def create_topics(self: Any) -> None:
    """Create rowstream's topics, each with its partition count (run before any worker)."""
    try:
        created = await asyncio.wait_for(
            ensure_topics(
                broker,
                wanted_topics(),
                settings.replication,
                configs={"max.message.bytes": str(events.MAX_RECORD_BYTES)},
            ),
            60,
        )
    except (TimeoutError, TopicError) as exc:
        raise self.UsageError(str(exc) or "timed out talking to the broker") from None
    self.say(f"created {len(created)} topic(s)" + (": " + ", ".join(created) if created else ""))


@app.command()
@_interrupted
async def slots(self: Any) -> None:
    """Print the live shard map: each run of slots with its shard, epoch and state."""
    try:
        await control.load(settings)
    except ControlError as exc:
        raise self.UsageError(str(exc)) from None
    finally:
        await control.close()
    layout, live = control.layout, control.slots
    rows = []
    for span, slot in live.runs():
        move = slot.move
        state = "active" if move is None else f"move {move.id} to shard {move.target}: {move.phase}"
        rows.append({"slots": span, "shard": slot.shard, "epoch": slot.epoch, "state": state})
    print(table(rows, ["slots", "shard", "epoch", "state"]), end="")
    owning = {slot.shard for slot in live.slots}
    idle = [str(n) for n in range(len(settings.shards)) if n not in owning]
    print(
        f"map version {live.version}; update topic: {layout.partitions} partitions in "
        f"{layout.home_blocks} blocks; internal topic: {layout.internal.block} partitions per shard"
        + (f"; shards without slots: {', '.join(idle)}" if idle else "")
    )


@app.command(
    argument("slots"),
    option("--to", "target", type=int, help="the shard to move them to (its number)"),
    option("--dry-run", is_flag=True, help="print the plan (apps, rows, partitions, lag) only"),
    option(
        "--max-lag",
        type=int,
        default=100_000,
        show_default=True,
        help="refuse to start while more messages than this wait in the slots' partitions",
    ),
    option(
        "--timeout",
        type=float,
        default=10.0,
        show_default=True,
        help="longest freeze, seconds: no switch by then cancels the move",
    ),
    option("--cleanup", is_flag=True, help="delete moved slots' rows from the shard they left"),
)
@_interrupted
async def move_slots(
    self: Any,
    slots: str,
    target: int | None,
    dry_run: bool,
    max_lag: int,
    timeout: float,
    cleanup: bool,
) -> None:
    """Move SLOTS (e.g. 80-bf, a3, 00-0f,a3) to shard --to while updates flow; run it again
    after an interruption and it goes on where it stopped. docs/resharding.md tells how."""
    try:
        chosen = parse_slots(slots)
    except ValueError as exc:
        raise self.UsageError(str(exc)) from None
    if cleanup == (target is not None):
        raise self.UsageError("give either --to SHARD (move) or --cleanup")
    if timeout <= 0:
        raise self.UsageError("--timeout must be positive")
    try:
        await control.load(settings)
    except ControlError as exc:
        raise self.UsageError(str(exc)) from None
    producer = AIOKafkaProducer(**broker.client_options(), acks="all", enable_idempotence=False)
    offsets = GroupOffsets(broker, settings.group_id)
    updates, internal = settings.topic(UPDATES), settings.topic(INTERNAL)

    async def send_marker(topic: str, partition: int, value: bytes, headers: Any) -> int:
        sent = await producer.send_and_wait(topic, value, partition=partition, headers=headers)
        return int(sent.offset)

    async def committed(wanted: Any) -> dict:
        found = await offsets.committed([TopicPartition(t, p) for t, p in wanted])
        return {(tp.topic, tp.partition): offset for tp, offset in found.items()}

    async def ends(wanted: Any) -> dict:
        found = await fetched_ends(broker, [TopicPartition(t, p) for t, p in wanted])
        return {(tp.topic, tp.partition): offset for tp, offset in found.items()}

    mover = Mover(control, settings.shards, (updates, internal), send_marker, committed, ends, say)
    failed = None
    await producer.start()
    try:
        if cleanup:
            deleted = await mover.cleanup(chosen)
            say(f"cleanup: done, {deleted:,} rows deleted")
        else:
            assert target is not None
            plan = await mover.plan(chosen, target)
            if plan.source == target and plan.move is None:  # done before (a run again)
                say(f"slots {format_slots(chosen)} are on shard {target}: nothing to do")
                return
            say(plan.describe(chosen, target))
            if plan.lag > max_lag and plan.move is None and not dry_run:
                raise MoveFailed(
                    f"{plan.lag:,} messages wait, more than --max-lag {max_lag:,}: try again "
                    "when the workers have caught up"
                )
            if not dry_run:
                await mover.run(chosen, target, timeout)
    except MoveFailed as exc:
        failed = str(exc)
    except (psycopg2.Error, OSError) as exc:  # a shard or the control store: say which
        failed = "a database did not answer: " + (" ".join(str(exc).split()) or repr(exc))
    finally:
        await producer.stop()
        await offsets.on_stop()
        await mover.close()
        await control.close()
    if failed:
        print(f"move-slots: {failed}", file=sys.stderr, flush=True)
        os._exit(1)


def say(line: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {line}", file=sys.stderr, flush=True)


def _window(self: Any, since: str | None, until: str | None) -> tuple[float | None, float | None]:
    now = time.time()
    try:
        return (
            parse_time(since, now) if since else None,
            parse_time(until, now) if until else None,
        )
    except ValueError as exc:
        raise self.UsageError(str(exc)) from None


async def _records(
    self: Any,
    topic: str,
    since: float | None,
    offset: int | None,
    partition: int | None,
    timeout: float,
) -> AsyncIterator[Seen]:
    try:
        async for seen in read(
            broker,
            settings.topic(TOPICS[topic]),
            since=since,
            offset=offset,
            timeout=timeout,
            partitions=None if partition is None else [partition],
        ):
            yield seen
    except ReadError as exc:
        raise self.UsageError(str(exc)) from None


@app.command(
    option(
        "--topic",
        default="updates",
        show_default=True,
        help="which topic: updates, internal or dead-letters",
    ),
    option("--since", help="start at this time: 15m, 2h (ago) or ISO-8601; default: the beginning"),
    option("--until", help="stop at this time (same forms as --since)"),
    option(
        "--offset", type=int, help="start at this offset in each partition (instead of --since)"
    ),
    option("--partition", type=int, help="read only this partition"),
    option("--app", "app_id", help="only this app ID"),
    option("--subscription", "subscription_id", help="only this subscription ID"),
    option("--key", "property_key", help="only updates that set or delete this property"),
    option("--reason", help="dead letters only: undecodable, invalid, misrouted or rejected"),
    option("--limit", type=int, default=100, show_default=True, help="print at most this many"),
    timeout_option(30.0),
)
@_interrupted
async def inspect(
    self: Any,
    topic: str,
    since: str | None,
    until: str | None,
    offset: int | None,
    partition: int | None,
    app_id: str | None,
    subscription_id: str | None,
    property_key: str | None,
    reason: str | None,
    limit: int,
    timeout: float,
) -> None:
    """Print records of a rowstream topic as JSON lines, filtered, bounded by --limit/--timeout
    (a record holding many updates: one line per update, with its index)."""
    if topic not in TOPICS:
        raise self.UsageError(f"--topic must be one of {', '.join(TOPICS)}, not {topic!r}")
    if since and offset is not None:
        raise self.UsageError("give --since or --offset, not both")
    if limit < 1:
        raise self.UsageError("--limit must be at least 1")
    start, end = _window(self, since, until)
    wanted = Filter(app_id, subscription_id, property_key, reason, start, end)
    printed = 0
    async for record in _records(self, topic, start, offset, partition, timeout):
        for seen in unbatch(record) if topic != "dead-letters" else [record]:
            if wanted.matches(seen):
                print(orjson.dumps(seen.as_json()).decode(), flush=True)
                printed += 1
                if printed >= limit:
                    break
        if printed >= limit:
            break
    print(f"{printed} {'record' if topic == 'dead-letters' else 'update'}(s)", file=sys.stderr)


@app.command(
    option("--since", default="15m", show_default=True, help="start of the range: 15m, 2h or ISO"),
    option("--until", help="end of the range (default: now)"),
    option("--window", type=float, default=60.0, show_default=True, help="window length, seconds"),
    option("--top", type=int, default=10, show_default=True, help="how many apps and rows"),
    timeout_option(60.0),
)
@_interrupted
async def traffic(
    self: Any, since: str, until: str | None, window: float, top: int, timeout: float
) -> None:
    """Top apps and rows by events in the update topic over a time range (who floods whom)."""
    if window <= 0 or top < 1:
        raise self.UsageError("--window must be positive and --top at least 1")
    start, end = _window(self, since, until)
    wanted = Filter(since=start, until=end)
    seen = [
        s
        async for record in _records(self, "updates", start, None, None, timeout)
        for s in unbatch(record)
        if wanted.matches(s)
    ]
    apps, rows, total = top_talkers(seen, window, top)
    if not total:
        print("no updates in that range")
        return
    columns = ["who", "events", "share", "peak", "peak_window"]
    print(f"{total} updates; peak = most events in one {window:g}s window\n")
    print("top apps\n" + table([t._asdict() for t in apps], columns))
    print("top rows (app/subscription)\n" + table([t._asdict() for t in rows], columns))


@app.command(
    option("--url", help="a worker's base URL (default: this machine's ROWSTREAM_WEB_PORT)"),
    option(
        "--api-key",
        help="an unscoped API key (default: the first plain-text one in ROWSTREAM_API_KEYS)",
    ),
)
@_interrupted
async def lag(self: Any, url: str | None, api_key: str | None) -> None:
    """Print the cluster's message lag and time lag per partition and shard (GET /lag/)."""
    base = (url or f"http://127.0.0.1:{settings.web_port}").rstrip("/")
    key = api_key or next(
        (k.plain for k in settings.scoped_keys if k.apps is None and k.plain is not None), ""
    )
    headers = {"Authorization": f"Bearer {key}"}
    try:
        async with aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=15), headers=headers
        ) as session:
            async with session.get(f"{base}/lag/?format=text") as response:
                body = await response.text()
                if response.status != 200:
                    raise self.UsageError(f"{base}/lag/ answered {response.status}: {body[:200]}")
    except (TimeoutError, aiohttp.ClientError) as exc:
        raise self.UsageError(f"cannot reach a worker at {base}: {exc!r}") from None
    print(body, end="")


@app.command(
    argument("action", type=str),
    option("--reason", help="only this reason: undecodable, invalid, misrouted or rejected"),
    option("--app", "app_id", help="only this app ID"),
    option("--since", help="only dead letters since: 15m, 2h or ISO"),
    option("--limit", type=int, default=1000, show_default=True, help="redrive at most this many"),
    option(
        "--dry-run", is_flag=True, default=False, help="say what would be redriven; send nothing"
    ),
    timeout_option(60.0),
    option(
        "--api-key",
        help="required: an unscoped key of ROWSTREAM_API_KEYS (a redrive writes "
        "updates of any app, like the API)",
    ),
)
@_interrupted
async def dlq(
    self: Any,
    action: str,
    reason: str | None,
    app_id: str | None,
    since: str | None,
    limit: int,
    dry_run: bool,
    timeout: float,
    api_key: str | None,
) -> None:
    """Dead-letter actions. `dlq redrive`: send matching dead letters back to the update topic.

    Only letters that are valid updates now are sent (to their app's partition, with a new
    offset: they apply after the updates the row got since). Run it once the cause is fixed;
    running it twice sends them twice.
    """
    if action != "redrive":
        raise self.UsageError(f"unknown action {action!r}; the action is: redrive")
    if not api_key:
        raise self.UsageError("dlq redrive needs --api-key: an unscoped key of ROWSTREAM_API_KEYS")
    try:
        auth.require_admin(f"Bearer {api_key}", settings.scoped_keys)
    except auth.Refused as exc:
        raise self.UsageError(f"--api-key: {exc.error}") from None

    start, _ = _window(self, since, None)
    wanted = Filter(app_id=app_id, reason=reason, since=start)
    letters = [
        s
        async for s in _records(self, "dead-letters", start, None, None, timeout)
        if wanted.matches(s)
    ][:limit]
    ready, still_bad = [], 0
    for letter in letters:
        try:
            update = events.decode_update(letter.value or b"")
        except events.InvalidEvent as exc:
            still_bad += 1
            print(
                f"skip {letter.partition}@{letter.offset}: still {exc.reason}: {exc}",
                file=sys.stderr,
            )
            continue
        ready.append(update)
    if dry_run or not ready:
        print(f"{len(ready)} dead letter(s) would be redriven; {still_bad} still invalid")
        return
    try:
        await control.load(settings)  # the layout: each letter goes to its app's partition
    except ControlError as exc:
        raise self.UsageError(str(exc)) from None
    producer = AIOKafkaProducer(
        **broker.client_options(),
        acks="all",
        enable_idempotence=False,
        max_request_size=events.MAX_RECORD_BYTES,
    )
    await producer.start()
    try:
        sent = []
        for update in ready:  # in dead-letter order, which is per-app source order
            app_key = str(update.app_id)
            sent.append(
                await producer.send(
                    settings.topic(TOPICS["updates"]),
                    events.encode_update(
                        app_key, str(update.subscription_id), update.properties, time.time()
                    ),
                    key=app_key.encode(),
                    partition=control.layout.source_partition(app_key),
                )
            )
        await asyncio.gather(*sent)
    finally:
        await producer.stop()
    print(f"redrove {len(ready)} dead letter(s); {still_bad} still invalid, left in place")


@app.command(option("--name", help="the key's label in metrics and logs (letters, digits, _.-)"))
@_interrupted
async def hash_key(self: Any, name: str | None) -> None:
    """Print the ROWSTREAM_API_KEYS entry (sha256:…) for a key read from standard input, so
    that neither the environment nor the shell history holds the key."""
    if name is not None and not keys.valid_name(name):
        raise self.UsageError("--name: a letter, then up to 63 letters, digits, '_', '.' or '-'")
    if sys.stdin.isatty():
        key = click.prompt("key", hide_input=True, err=True)
    else:
        key = sys.stdin.readline().strip()
    if not key or "," in key:
        raise self.UsageError("give the key on standard input: one line, no comma")
    print(keys.hashed_entry(key, name))


class _Replaces(AppCommand):
    """A command that replaces the process at once: no Faust worker is started for it."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.run(*self.args, *args, **{**self.kwargs, **kwargs})


@app.command(
    option("--processes", type=int, help="processes serving the port (default: the cores)"),
    option("--bind", help="address to listen on (default: ROWSTREAM_INGEST_BIND)"),
    option("--port", type=int, help="port (default: ROWSTREAM_INGEST_PORT)"),
    base=_Replaces,
)
def ingest(self: Any, processes: int | None, bind: str | None, port: int | None) -> None:
    """Serve the HTTP API (writes, the row read, /openapi.json, probes, /metrics): the ingest
    tier, its own process type (the Procfile's web:). `python -m app.ingest --help` says more."""
    argv = [sys.executable, "-m", "app.ingest"]
    for name, value in (("--processes", processes), ("--bind", bind), ("--port", port)):
        if value is not None:
            argv += [name, str(value)]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, argv)
