"""The ingest tier, built in one place and run: ``build`` makes the producer, the keys, the rate
limiter, the row reader and the API from the settings; ``serve`` runs one process of it until
SIGTERM or SIGINT; ``run`` starts ``processes`` of them on one port (SO_REUSEPORT: the kernel
spreads connections over them) and stops them together.

A stop is graceful: the listening socket closes, each connection gets the answer it is owed and
is closed, the producer hands over and waits for what it holds (answers of requests still waiting
for the broker are sent as they come), then the process exits 0.

Nothing of Faust is imported here: ``faust -A app ingest`` replaces itself with
``python -m app.ingest`` (``app.ops.commands``), whose process holds only this path.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
from dataclasses import dataclass

from app.ingest import openapi
from app.ingest.handlers import Api
from app.ingest.http import Router, Server
from app.ingest.limits import RateLimiter
from app.ingest.publish import Publisher, producer_for
from app.ingest.rows import Rows
from app.kafka.names import UPDATES
from app.kafka.security import broker_of
from app.model import events
from app.observe import metrics, tracing
from app.settings import Settings
from app.sink.control import Control

log = logging.getLogger("rowstream.ingest")

MAP_INTERVAL = 0.25  # seconds between reads of the shard map (a move's freeze waits on them)


@dataclass
class Tier:
    """One process of the ingest tier."""

    settings: Settings
    publisher: Publisher
    rows: Rows
    http: Server


def build(settings: Settings, control: Control, metrics_dir: str) -> Tier:
    """The tier on ``control``'s layout and live map (``Control.load`` first)."""
    producer = producer_for(
        broker_of(settings).client_options(),
        events.MAX_RECORD_BYTES,
        settings.produce_timeout,
        settings.ingest_linger,
    )
    publisher = Publisher(producer, settings.topic(UPDATES), max_buffer=settings.ingest_buffer)
    rows = Rows(settings.shards, lambda app_id: control.slots.shard_of_app(app_id))
    limiter = RateLimiter(settings.rate_limit, settings.burst) if settings.rate_limit else None
    http = Server(settings.body_timeout)

    def exposition() -> bytes:
        http.flush_counts()  # this process's counts of the last second; the others' within 1 s
        return metrics.ingest_exposition(metrics_dir)

    api = Api(
        keys=settings.scoped_keys,
        limiter=limiter,
        publisher=publisher,
        partition_of_app=control.layout.source_partition,
        rows=rows,
        exposition=exposition,
        openapi=openapi.document(),
        frozen_slots=lambda: control.slots.frozen_slots,
    )
    http.route = Router(api)
    return Tier(settings, publisher, rows, http)


async def serve(settings: Settings, bind: str, port: int, metrics_dir: str) -> None:
    """One process: serve until SIGTERM or SIGINT, then stop gracefully."""
    if settings.otlp_endpoint:
        tracing.configure(settings.otlp_endpoint)
    control = Control(settings.control)
    await control.load_waiting(settings)
    tier = build(settings, control, metrics_dir)
    name = f"ingest {socket.gethostname()}:{os.getpid()}"
    following = asyncio.ensure_future(follow(control, name))
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await tier.publisher.start()
    listener = await loop.create_server(
        tier.http.connection, bind, port, reuse_port=True, backlog=4096
    )
    tier.http.start_ticking()
    log.debug("process %d serves %s:%d", os.getpid(), bind, port)
    await stop.wait()

    listener.close()
    for connection in list(tier.http.connections):
        connection.stop()
    await tier.http.all_answered(timeout=settings.produce_timeout + 1)
    tier.http.stop_ticking()
    await tier.publisher.stop()
    await tier.rows.close()
    following.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await following
    with contextlib.suppress(Exception):
        await control.forget(name)
    await control.close()
    await listener.wait_closed()


async def follow(control: Control, name: str, interval: float = MAP_INTERVAL) -> None:
    """Read the shard map again every ``interval`` and tell the control store this process
    has seen it: a move's freeze waits for every ingest process to have seen it."""
    while True:
        await asyncio.sleep(interval)
        await control.try_refresh()
        try:
            await control.seen(name)
        except Exception as exc:  # the store is down: try_refresh said so already
            log.debug("cannot report the map's version: %s", exc)


def check_port(bind: str, port: int) -> None:
    """Raise OSError when something listens on the port already (SO_REUSEPORT would otherwise
    let this tier share it silently with a stale one)."""
    family = socket.AF_INET6 if ":" in bind else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((bind, port))


def run(settings: Settings, bind: str, port: int, processes: int, metrics_dir: str) -> int:
    """Run ``processes`` processes of the tier on one port; the exit code."""
    import uvloop

    if processes == 1:
        uvloop.run(serve(settings, bind, port, metrics_dir))
        return 0
    children: dict[int, int] = {}  # pid → its number
    for number in range(processes):
        pid = os.fork()
        if pid == 0:  # the child: serve, then leave without the parent's cleanup
            code = 0
            try:
                uvloop.run(serve(settings, bind, port, metrics_dir))
            except BaseException:
                log.exception("ingest process %d failed", number)
                code = 1
            finally:
                logging.shutdown()
                os._exit(code)
        children[pid] = number

    stopping = False

    def stop_children(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True
        for child in children:
            os.kill(child, signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop_children)
    signal.signal(signal.SIGINT, stop_children)
    code = 0
    while children:
        pid, status = os.wait()
        if pid not in children:
            continue
        number = children.pop(pid)
        exit_code = os.waitstatus_to_exitcode(status)
        if exit_code and not stopping:
            log.error("ingest process %d (pid %d) exited with %d: stopping", number, pid, exit_code)
            code = 1
            stop_children(signal.SIGTERM, None)
    return code


def log_to_stderr(level: str) -> None:
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.getLevelName(level.upper()),
        format="%(asctime)s %(levelname)s %(name)s[%(process)d] %(message)s",
    )
    logging.getLogger("aiokafka").setLevel(max(logging.WARNING, logging.root.level))
