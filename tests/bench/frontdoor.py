"""The front door's microbenchmark: which HTTP server and which Kafka producer the ingest tier is
built on, chosen by CPU µs per request (docs/benchmark.md, "The front door").

Three stages, each a single-update PATCH of a new row from ``wrk`` (1 thread, 64 connections):

* ``http``: the server alone answers 202;
* ``validate``: + the tier's own path: authentication, the row's IDs, the body's validation, the
  records built (``app.ingest.handlers`` behind ``app.ingest.http.Router``), a publisher that
  acknowledges at once;
* ``produce``: + produced to the embedded broker with acks=all and the 202 after the
  acknowledgement (a fresh broker per case: its memory storage slows as a log grows).

Servers: ``httptools`` (the tier's own edge, ``app.ingest.http``: an asyncio protocol on
httptools, uvloop), ``uvicorn`` (+ httptools, uvloop, a bare ASGI app), ``granian`` (RSGI, one
worker, one runtime thread) and ``aiohttp`` (a bare ``web.Application``). Producers for
``produce``, each with a 2 ms linger: ``aiokafka`` (the tier's ``app.ingest.publish``:
aiokafka's ``send()`` per record), ``batches`` (aiokafka's batch API, one batch per partition
per linger: tried and dropped) and ``librdkafka`` (confluent-kafka's ``Producer``, one poll
thread handing delivery results to the loop in batches). CPU is the server's processes' (all
threads, children too) and the broker's, from /proc, over the measured run.

``python -m tests.bench.frontdoor --help``; figures printed and written to
``.local/bench/frontdoor.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import threading
from collections import deque
from functools import partial
from pathlib import Path
from typing import Any

from deploy.local import Broker, free_port, port_open, stop_child, wait_until
from tests.bench.wrkload import run_wrk

ROOT = Path(__file__).resolve().parents[2]
KEY = "bench-key"
TOPIC = "subscription-updates"
PARTITIONS = 24
SERVERS = ("httptools", "uvicorn", "granian", "aiohttp")
STAGES = ("http", "validate", "produce")
PRODUCERS = ("aiokafka", "batches", "librdkafka")


# --- the candidate, in its own process -------------------------------------------------------


class Immediate:
    """The ``validate`` stage's publisher: acknowledged at once."""

    def publish(self, records: Any) -> asyncio.Future:
        done = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done

    async def ping(self) -> bool:
        return True


class Librdkafka:
    """confluent-kafka's Producer: ``produce()`` on the loop's thread, one thread polling for
    delivery reports and handing each pass's results to the loop at once."""

    def __init__(self, broker: str) -> None:
        import confluent_kafka

        self.producer = confluent_kafka.Producer(
            {
                "bootstrap.servers": broker,
                "acks": "all",
                "enable.idempotence": False,
                "linger.ms": 2,
                "socket.nagle.disable": True,
            }
        )
        self.results: list[tuple[asyncio.Future, Any]] = []

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        threading.Thread(target=self._poll, daemon=True).start()

    def _poll(self) -> None:
        while True:
            self.producer.poll(0.1)
            if self.results:
                results, self.results = self.results, []
                self.loop.call_soon_threadsafe(self._resolve, results)

    @staticmethod
    def _resolve(results: list[tuple[asyncio.Future, Any]]) -> None:
        for future, error in results:
            if not future.done():
                if error is None:
                    future.set_result(None)
                else:
                    future.set_exception(RuntimeError(str(error)))

    def publish(self, records: Any) -> asyncio.Future:
        futures = []
        for r in records:
            future = self.loop.create_future()
            self.producer.produce(
                TOPIC,
                r.value,
                r.key,
                r.partition,
                on_delivery=lambda error, message, f=future: self.results.append((f, error)),
            )
            futures.append(future)
        return futures[0] if len(futures) == 1 else asyncio.gather(*futures)


class _Batch:
    __slots__ = ("acknowledged", "builder", "size")

    def __init__(self, builder: Any, acknowledged: asyncio.Future) -> None:
        self.builder, self.acknowledged, self.size = builder, acknowledged, 0


Acknowledged = asyncio.Future


class BatchApi:
    """The dropped candidate: aiokafka's batch API (``create_batch``/``send_batch``), one batch
    per partition per linger, a partition's next batch handed over once the one before is
    settled (the ingest tier's first publisher, before the figures said otherwise)."""

    def __init__(self, producer: Any, topic: str, linger: float, max_buffer: int) -> None:
        self._producer, self._topic = producer, topic
        self._linger, self._max_buffer = linger, max_buffer
        self._open: dict[int, _Batch] = {}  # partition → the batch records join now
        self._closed: dict[int, deque[_Batch]] = {}  # partition → batches to hand over, in order
        self._with_producer: set[int] = set()  # partitions with a batch in aiokafka's hands
        self._ready: deque[int] = deque()  # partitions whose next closed batch may go now
        self._handing_over: asyncio.Future | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._unsettled: set[Acknowledged] = set()  # of every batch not yet settled
        self._buffered = 0  # bytes published and not yet acknowledged or failed
        self._loop: asyncio.AbstractEventLoop | None = None

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        await self._producer.start()

    async def stop(self, timeout: float = 30.0) -> None:
        """Hand over what is open, wait (at most ``timeout``) until every batch is settled, stop
        the producer."""
        self.flush()
        if self._unsettled:
            await asyncio.wait(set(self._unsettled), timeout=timeout)
        await self._producer.stop()

    @property
    def buffered(self) -> int:
        return self._buffered

    def publish(self, records: Any) -> Acknowledged:
        """A future that succeeds once every record is acknowledged (see the module's contract).
        It may be shared by other callers: never cancel it."""
        size = sum(len(record.value) for record in records)
        if self._buffered and self._buffered + size > self._max_buffer:
            raise RuntimeError(
                f"the ingest buffer is full ({self._max_buffer} bytes wait for the broker); "
                f"retry later"
            )
        self._buffered += size
        futures = [self._append(record) for record in records]
        if self._timer is None:
            assert self._loop is not None, "publish before start"
            self._timer = self._loop.call_later(self._linger, self.flush)
        if len(futures) == 1:
            return futures[0]
        return asyncio.gather(*futures)

    def _append(self, record: Any) -> Acknowledged:
        partition = record.partition
        batch = self._open.get(partition) or self._open_batch(partition)
        if (
            batch.builder.append(
                timestamp=None, key=record.key, value=record.value, headers=record.headers
            )
            is None
        ):  # full: it goes now, the record starts the next (a first record always fits)
            self._close(partition)
            batch = self._open_batch(partition)
            batch.builder.append(
                timestamp=None, key=record.key, value=record.value, headers=record.headers
            )
        batch.size += len(record.value)
        return batch.acknowledged

    def _open_batch(self, partition: int) -> _Batch:
        assert self._loop is not None
        acknowledged = self._loop.create_future()
        acknowledged.add_done_callback(self._settled)
        self._unsettled.add(acknowledged)
        batch = self._open[partition] = _Batch(self._producer.create_batch(), acknowledged)
        return batch

    def flush(self) -> None:
        """Hand over every open batch now (the linger timer calls this)."""
        self._timer = None
        for partition in list(self._open):
            self._close(partition)

    def _close(self, partition: int) -> None:
        batch = self._open.pop(partition)
        waiting = self._closed.setdefault(partition, deque())
        waiting.append(batch)
        if len(waiting) == 1 and partition not in self._with_producer:
            self._become_ready(partition)

    def _become_ready(self, partition: int) -> None:
        self._ready.append(partition)
        if self._handing_over is None:
            self._handing_over = asyncio.ensure_future(self._hand_over())

    async def _hand_over(self) -> None:
        """Give aiokafka the next batch of each ready partition. A partition's next batch goes
        only once its previous one is settled, so ``send_batch`` never waits for room."""
        try:
            while self._ready:
                partition = self._ready.popleft()
                batch = self._closed[partition].popleft()
                self._with_producer.add(partition)
                try:
                    delivery = await self._producer.send_batch(
                        batch.builder, self._topic, partition=partition
                    )
                except Exception as exc:  # metadata or queueing failed: never queued
                    self._delivered(partition, batch, None, exc)
                else:
                    delivery.add_done_callback(partial(self._delivered, partition, batch))
        finally:
            self._handing_over = None

    def _delivered(
        self,
        partition: int,
        batch: _Batch,
        delivery: asyncio.Future | None,
        error: BaseException | None = None,
    ) -> None:
        if delivery is not None and error is None:
            error = RuntimeError("cancelled") if delivery.cancelled() else delivery.exception()
        self._with_producer.discard(partition)
        if self._closed.get(partition):
            self._become_ready(partition)
        self._settle(batch, error)

    def _settled(self, acknowledged: Acknowledged) -> None:
        self._unsettled.discard(acknowledged)
        if not acknowledged.cancelled():
            acknowledged.exception()

    def _settle(self, batch: _Batch, error: BaseException | None) -> None:
        self._buffered -= batch.size
        if error is None:
            batch.acknowledged.set_result(None)
        else:
            batch.acknowledged.set_exception(RuntimeError(f"not acknowledged: {error!r}"))


class Candidate:
    """The handler path of one stage, built lazily on the serving loop."""

    def __init__(self, stage: str, producer: str, broker: str) -> None:
        self.stage, self.producer_kind, self.broker = stage, producer, broker
        self.route: Any = None
        self._ready: asyncio.Future | None = None

    async def _build(self) -> None:
        from app.ingest.handlers import Api, Response
        from app.ingest.http import Router
        from app.ingest.keys import parse_all
        from app.model.partitioning import Layout
        from app.model.slots import even_shard_map

        if self.stage == "http":
            accepted = Response(202, b'{"accepted":1}')
            self.route = lambda request: accepted
            return
        publisher: Any = Immediate()
        if self.stage == "produce":
            from app.ingest.publish import Publisher, producer_for

            if self.producer_kind == "aiokafka":
                producer = producer_for({"bootstrap_servers": self.broker}, 2**21, 10.0, 0.002)
                publisher = Publisher(producer, TOPIC, max_buffer=2**26)
            elif self.producer_kind == "batches":
                producer = producer_for({"bootstrap_servers": self.broker}, 2**21, 10.0, 0)
                publisher = BatchApi(producer, TOPIC, linger=0.002, max_buffer=2**26)
            else:
                publisher = Librdkafka(self.broker)
            await publisher.start()
        layout = Layout(PARTITIONS, even_shard_map(2), 2, PARTITIONS // 2)
        api = Api(parse_all([KEY]), None, publisher, layout.source_partition, None, bytes, {})
        self.route = Router(api)

    async def answer(self, method: str, path: str, authorization: str, body: bytes) -> Any:
        """The Response the tier would send, awaited (for servers that are not its edge)."""
        from app.ingest.errors import HttpError
        from app.ingest.handlers import Later, Request

        if self._ready is None:
            self._ready = asyncio.ensure_future(self._build())
        await self._ready
        try:
            answer = self.route(Request(method, path, authorization, body))
            if type(answer) is Later:
                result = await answer.done
                answer = answer.response or result
        except HttpError as error:
            from app.ingest.http import _error

            return _error(error)
        return answer


def candidate() -> Candidate:
    return Candidate(os.environ["FD_STAGE"], os.environ["FD_PRODUCER"], os.environ["FD_BROKER"])


async def rsgi_app(scope: Any, proto: Any) -> None:
    """granian's RSGI entry."""
    global _candidate
    if _candidate is None:
        _candidate = candidate()
    body = await proto()
    response = await _candidate.answer(
        scope.method, scope.path, scope.headers.get("authorization", ""), body
    )
    proto.response_bytes(
        response.status,
        [("content-type", response.content_type), *response.headers],
        response.body,
    )


async def asgi_app(scope: Any, receive: Any, send: Any) -> None:
    """uvicorn's ASGI entry."""
    global _candidate
    if scope["type"] != "http":
        return
    if _candidate is None:
        _candidate = candidate()
    chunks, more = [], True
    while more:
        message = await receive()
        chunks.append(message.get("body", b""))
        more = message.get("more_body", False)
    authorization = next((v for k, v in scope["headers"] if k == b"authorization"), b"")
    response = await _candidate.answer(
        scope["method"], scope["path"], authorization.decode("latin-1"), b"".join(chunks)
    )
    await send(
        {
            "type": "http.response.start",
            "status": response.status,
            "headers": [(b"content-type", response.content_type.encode())]
            + [(k.encode(), v.encode()) for k, v in response.headers],
        }
    )
    await send({"type": "http.response.body", "body": response.body})


_candidate: Candidate | None = None


def serve(server: str, port: int) -> None:
    if server == "httptools":
        import uvloop

        from app.ingest.http import Server

        async def main() -> None:
            made = candidate()
            await made.answer("GET", "/healthz", "", b"")  # builds it
            edge = Server(body_timeout=10, route=made.route)
            await asyncio.get_running_loop().create_server(
                edge.connection, "127.0.0.1", port, reuse_port=True, backlog=4096
            )
            await asyncio.Event().wait()

        uvloop.run(main())
    elif server == "uvicorn":
        import uvicorn

        uvicorn.run(
            asgi_app, host="127.0.0.1", port=port, http="httptools", loop="uvloop",
            log_level="warning", access_log=False, lifespan="off",
        )  # fmt: skip
    elif server == "granian":
        from granian.constants import Interfaces, Loops
        from granian.server import Server as Granian

        Granian(
            "tests.bench.frontdoor:rsgi_app", address="127.0.0.1", port=port,
            interface=Interfaces.RSGI, workers=1, runtime_threads=1, loop=Loops.uvloop,
            log_enabled=False, log_access=False,
        ).serve()  # fmt: skip
    else:
        import uvloop
        from aiohttp import web

        async def handle(request: web.Request) -> web.Response:
            global _candidate
            if _candidate is None:
                _candidate = candidate()
            response = await _candidate.answer(
                request.method,
                request.path,
                request.headers.get("Authorization", ""),
                await request.read(),
            )
            return web.Response(
                status=response.status,
                body=response.body,
                headers={"Content-Type": response.content_type, **dict(response.headers)},
            )

        application = web.Application()
        application.router.add_route("*", "/{tail:.*}", handle)
        web.run_app(
            application, host="127.0.0.1", port=port, access_log=None, print=None,
            loop=uvloop.new_event_loop(),
        )  # fmt: skip


# --- the driver -------------------------------------------------------------------------------


def process_tree_cpu(pid: int) -> float:
    """CPU seconds of a process and its live children (granian's worker), from /proc."""
    from tests.bench.bench import children, process_cpu

    return process_cpu(pid) + sum(process_cpu(child) for child in children(pid))


def make_topic(broker: Broker) -> None:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    async def make() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=f"127.0.0.1:{broker.port}")
        await admin.start()
        try:
            await admin.create_topics([NewTopic(TOPIC, PARTITIONS, 1)])
        finally:
            await admin.close()

    asyncio.run(make())


def measure(server: str, stage: str, producer: str, args: argparse.Namespace) -> dict[str, Any]:
    base = Path(tempfile.mkdtemp(prefix="rowstream-frontdoor-"))
    broker = Broker(base / "broker", free_port())
    if stage == "produce":
        broker.start()
        make_topic(broker)
    port = free_port()
    env = {
        **os.environ,
        "FD_STAGE": stage,
        "FD_PRODUCER": producer,
        "FD_BROKER": f"127.0.0.1:{broker.port}",
        "PROMETHEUS_MULTIPROC_DIR": str(base),
    }
    child = subprocess.Popen(
        [sys.executable, "-m", "tests.bench.frontdoor", "serve", server, str(port)],
        env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=open(base / "serve.log", "wb"),
    )  # fmt: skip
    try:
        wait_until(lambda: port_open(port) or child.poll() is not None, 60, f"{server} to listen")
        url, key = f"http://127.0.0.1:{port}", {"ROWSTREAM_BENCH_KEY": KEY}
        run_wrk(url, "updates.lua", 2, args.connections, key)  # warm up (and connect)
        broker_pid = broker.process.pid if broker.process else None
        before = (process_tree_cpu(child.pid), process_tree_cpu(broker_pid) if broker_pid else 0)
        ran = run_wrk(url, "updates.lua", args.seconds, args.connections, key)
        server_cpu = process_tree_cpu(child.pid) - before[0]
        broker_cpu = (process_tree_cpu(broker_pid) - before[1]) if broker_pid else 0.0
        accepted = max(1, ran.accepted)
        return {
            "server": server, "stage": stage, "producer": producer if stage == "produce" else "",
            "requests_per_s": round(ran.accepted_per_s), "p50_ms": ran.p50_ms,
            "p99_ms": ran.p99_ms, "failed": ran.failed,
            "server_cpu_us": round(server_cpu / accepted * 1e6, 1),
            "broker_cpu_us": round(broker_cpu / accepted * 1e6, 1),
        }  # fmt: skip
    finally:
        stop_child(child, 10)
        broker.stop()


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        f"{'server':<10} {'stage':<9} {'producer':<11} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} "
        f"{'CPU µs/req':>10} {'broker µs/req':>13}"
    ]
    for r in rows:
        lines.append(
            f"{r['server']:<10} {r['stage']:<9} {r['producer']:<11} {r['requests_per_s']:>8,} "
            f"{r['p50_ms']:>7} {r['p99_ms']:>7} {r['server_cpu_us']:>10} {r['broker_cpu_us']:>13}"
            + (f"  ({r['failed']} failed)" if r["failed"] else "")
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["serve"]:
        serve(argv[1], int(argv[2]))
        return 0
    parser = argparse.ArgumentParser(
        prog="python -m tests.bench.frontdoor", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--seconds", type=float, default=8.0, help="each measured wrk run")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--servers", default=",".join(SERVERS))
    parser.add_argument("--stages", default=",".join(STAGES))
    parser.add_argument(
        "--producers",
        default=",".join(PRODUCERS),
        help="compared on the httptools server; the other servers produce with 'aiokafka'",
    )
    parser.add_argument("--out", type=Path, default=ROOT / ".local" / "bench")
    args = parser.parse_args(argv)
    cases = []
    for stage in args.stages.split(","):
        for server in args.servers.split(","):
            if stage != "produce":
                cases.append((server, stage, ""))
            elif server == "httptools":
                cases += [(server, stage, p) for p in args.producers.split(",")]
            else:
                cases.append((server, stage, "aiokafka"))
    rows = []
    for server, stage, producer in cases:
        print(f"frontdoor: {server} {stage} {producer} …", file=sys.stderr, flush=True)
        rows.append(measure(server, stage, producer, args))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "frontdoor.json").write_text(json.dumps(rows, indent=2))
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
