"""``make bench``: rowstream against the naive pipeline, measured in one run on one machine.

Starts the embedded stack (tansu + Postgres, the code of ``make run``), then runs each case on
its own topics, consumer group and shard databases, and prints absolute figures and ratios to the
baseline measured in the same run; writes them as JSON under ``--out``.

Throughput is measured from the topic to committed rows: the topic is preloaded, the workers are
started, and the updates applied are sampled (rowstream: the updates its shard writers committed,
from each worker's /metrics; the naive baseline: its committed offsets, one update per record).
Two rates: between 10 % and 90 % of the updates (start-up and tail out), and from the first row
written to the final state (every offset of both topics committed: what a user waits for). CPU
per update of the workers, the broker and Postgres comes from /proc over the same span (first row
to final state; Postgres: the server and all its backends).
The burst case produces straight to the update topic at a steady rate, then a burst, then steady
again, samples ``GET /lag/`` every second and draws message lag and time lag over time
(``burst.png``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any, NamedTuple

import aiohttp
import orjson
import psycopg2
from aiokafka import AIOKafkaProducer

from app.kafka.security import bootstrap_servers
from app.model import events
from app.settings import INTERNAL_PER_SHARD, Settings
from deploy.local import Broker, Postgres, free_port
from deploy.stack import ROOT, Ingest, Worker
from tests.bench.wrkload import WrkResult, run_wrk
from tests.support.helpers import AUTH, KEY, Pipeline, eventually, rss_bytes

SHARDS = 2
APPS = 100
SEED_PARTITIONS = 720  # the update topic of the system this project grew from (issue 19)


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


class HttpRun(NamedTuple):
    """What ``Bench.over_http`` measured."""

    wrk: WrkResult
    applied: dict[str, Any]  # ingest_events, rows, all_applied
    lags: list[float]  # the worker's worst time lag, every 0.5 s, sorted
    cpu_per_update: dict[str, float]  # <part>_cpu_us_per_update
    seconds: float  # from wrk's start to every accepted update applied
    drained_s: float  # from wrk's end to every accepted update applied


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.base = Path(tempfile.mkdtemp(prefix="rowstream-bench-"))
        self.broker = Broker(self.base / "broker", free_port())
        self.postgres = Postgres(self.base / "postgres", free_port())

    def __enter__(self) -> Bench:
        self.broker.start()
        self.postgres.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.postgres.stop()
        self.broker.stop()
        shutil.rmtree(self.base, ignore_errors=True)

    def pipeline(self, partitions: int) -> Pipeline:
        settings = dict(item.split("=", 1) for item in self.args.set)
        internal = int(settings.pop("internal_partitions", 0)) or INTERNAL_PER_SHARD * SHARDS
        return Pipeline.create(
            self.broker,
            self.postgres,
            self.base,
            partitions,
            SHARDS,
            prefix="b",
            internal_partitions=internal,  # the product's default unless --set
            **{"log_level": "warning", **settings},
        )

    # --- load -------------------------------------------------------------------------------

    def workload(
        self, events: int, rows: int, hot_share: float, seed: int = 1, lazy: bool = False
    ) -> Any:
        """``events`` updates over ``rows`` rows of 100 apps, ``hot_share`` of them on one row."""
        rng = random.Random(seed)
        apps = [str(uuid.UUID(int=rng.getrandbits(128), version=4)) for _ in range(APPS)]
        per_app = max(1, rows // APPS)
        hot = (apps[0], str(uuid.UUID(int=0, version=4)))

        def generate():
            for n in range(events):
                if rng.random() < hot_share:
                    app_id, sub = hot
                else:
                    app_id = apps[rng.randrange(APPS)]
                    sub = str(uuid.UUID(int=rng.randrange(per_app) + 1, version=4))
                yield app_id, sub, {f"k{n % 8}": n, "plan": "pro" if n % 3 else None}

        return generate() if lazy else list(generate())

    def load_producer(self) -> AIOKafkaProducer:
        """The producer the benchmark loads topics with (not started)."""
        return AIOKafkaProducer(
            bootstrap_servers=bootstrap_servers(self.broker.url),
            acks="all",
            enable_idempotence=False,
            linger_ms=5,
            max_batch_size=256 * 1024,
        )

    async def preload(self, pipeline: Pipeline, updates: list[tuple]) -> float:
        producer = self.load_producer()
        await producer.start()
        started = time.monotonic()
        try:
            topic, layout, now = (
                pipeline.topic("subscription-updates"),
                pipeline.layout,
                time.time(),
            )
            pending = []
            for app_id, sub, properties in updates:
                pending.append(
                    await producer.send(
                        topic,
                        events.encode_update(app_id, sub, properties, now),
                        key=app_id.encode(),
                        partition=layout.source_partition(app_id),
                    )
                )
                if len(pending) >= 20_000:
                    await asyncio.gather(*pending)
                    pending = []
            await asyncio.gather(*pending)
        finally:
            await producer.stop()
        return len(updates) / (time.monotonic() - started)

    # --- measurement ------------------------------------------------------------------------

    def cpu(self, workers: list[int]) -> dict[str, float]:
        """CPU seconds used so far by the worker processes, the broker and Postgres."""
        assert self.broker.process is not None
        postmaster = int((self.postgres.data_dir / "postmaster.pid").read_text().split()[0])
        return {
            "worker": sum(process_cpu(pid) for pid in workers),
            "broker": process_cpu(self.broker.process.pid),
            "postgres": process_cpu(postmaster, exited_children=True)
            + sum(process_cpu(pid) for pid in children(postmaster)),
        }

    async def measure(
        self,
        total: int,
        applied: Any,
        finished: Any,
        workers: list[int],
        timeout: float,
        launched: float | None = None,
    ) -> dict[str, Any]:
        """Sample ``applied()`` (updates written so far) until ``finished()`` (the final state);
        the rates, CPU µs per update between the first row written and the final state, and the
        time from ``launched`` (the workers' processes made; ``time.monotonic()``) to the first
        row."""
        samples: list[tuple[float, int]] = []
        started = time.monotonic()
        launched = started if launched is None else launched
        first: tuple[float, dict[str, float]] | None = None
        last = (0.0, self.cpu(workers))
        done = False
        while time.monotonic() - started < timeout:
            now, count = time.monotonic() - started, await applied()
            samples.append((now, count))
            if first is None and count > 0:
                first = (now, self.cpu(workers))
            if count >= total and await finished():
                last, done = (time.monotonic() - started, self.cpu(workers)), True
                break
            await asyncio.sleep(0.25)
        low = next((t for t, d in samples if d >= 0.1 * total), None)
        high = next((t for t, d in samples if d >= 0.9 * total), None)
        result: dict[str, Any] = {"drained": done, "seconds": round(last[0], 1)}
        if first is not None:
            result["start_to_first_row_s"] = round(first[0] + started - launched, 1)
        result["events_per_s"] = 0
        if first is not None and done and last[0] > first[0]:
            result["first_row_to_final_per_s"] = round(total / (last[0] - first[0]))
            result["events_per_s"] = result["first_row_to_final_per_s"]  # a small run: all of it
            if low is not None and high is not None and high - low >= 2.0:
                result["events_per_s"] = round(0.8 * total / (high - low))
            for part in ("worker", "broker", "postgres"):
                result[f"{part}_cpu_us"] = round((last[1][part] - first[1][part]) / total * 1e6, 1)
        return result

    async def naive(self, updates: list[tuple]) -> dict[str, Any]:
        pipeline = self.pipeline(self.args.partitions)
        await self.preload(pipeline, updates)
        group = f"{pipeline.name}-naive"
        env = {
            **pipeline.env,
            "NAIVE_BROKER": self.broker.url,
            "NAIVE_TOPIC": pipeline.topic("subscription-updates"),
            "NAIVE_GROUP": group,
            "NAIVE_DATADIR": str(self.base / "naive"),
            "NAIVE_SHARDS": pipeline.env["ROWSTREAM_SHARDS"],
            "NAIVE_PARTITIONS": str(pipeline.partitions),
        }
        self.args.out.mkdir(parents=True, exist_ok=True)
        log = open(self.args.out / "naive-worker.log", "wb")
        process = subprocess.Popen(
            [sys.executable, "-m", "faust", "-A", "tests.bench.naive", "-l", "warn", "worker"],
            env=env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        topic = "subscription-updates"

        async def applied() -> int:
            return sum((await pipeline.committed(topic, group=group)).values())

        async def finished() -> bool:
            return True  # it commits only past written events

        try:
            return await self.measure(
                len(updates), applied, finished, [process.pid], self.args.timeout
            )
        finally:
            process.terminate()
            process.wait(30)
            log.close()

    async def rowstream(
        self, updates: list[tuple], workers: int, partitions: int | None = None
    ) -> dict[str, Any]:
        pipeline = self.pipeline(partitions or self.args.partitions)
        await self.preload(pipeline, updates)
        launched = time.monotonic()
        started = [pipeline.start_worker() for _ in range(workers)]
        internal_end: dict[int, int] = {}

        async def finished() -> bool:
            """Both topics committed to their end: every update is in Postgres."""
            source = await pipeline.committed("subscription-updates")
            if sum(source.values()) < len(updates):
                return False
            if not internal_end:  # final once the update topic is committed
                internal_end.update(await pipeline.end_offsets("rowstream-by-subscription"))
            return await pipeline.committed("rowstream-by-subscription") == internal_end

        try:
            result = await self.measure(
                len(updates),
                lambda: applied(started),
                finished,
                [w.process.pid for w in started if w.process],
                self.args.timeout,
                launched,
            )
            result["rss_mb"] = max(rss_mb(w) for w in started)
        finally:
            for worker in started:
                worker.stop()
        result["timer_warnings"] = dict(sum((timer_warnings(w) for w in started), Counter()))
        return result

    async def ingest(self) -> dict[str, Any]:
        """The ingest tier as a new user runs it (the Procfile's ``web:`` command, one process),
        one worker applying behind it; wrk with 64 connections: single PATCHes (every request a
        new row), then POSTs of 100 and of 1,000 updates. Afterwards every accepted update must
        be in its shard."""
        pipeline = self.pipeline(self.args.partitions)
        pipeline.start_worker()
        try:
            started = time.monotonic()
            ingest = Ingest(  # as users start it: the Procfile's command, one process
                pipeline.env, free_port(), self.base / f"{pipeline.name}-ingest.log"
            )
            ingest.start()
            pipeline.ingests.append(ingest)
            first_202 = await first_accepted(ingest.port) - started
            assert ingest.process is not None and self.broker.process is not None
            pids = [ingest.process.pid, self.broker.process.pid]
            url = f"http://127.0.0.1:{ingest.port}"
            result: dict[str, Any] = {"start_to_first_202_s": round(first_202, 2)}
            for name, post, updates in (
                ("patch", 0, 1),
                ("post100", 100, 100),
                ("post1000", 1000, 1000),
            ):
                before = [process_cpu(pid) for pid in pids]
                ran = await asyncio.to_thread(
                    run_wrk, url, "updates.lua", self.args.ingest_seconds, 64,
                    {"ROWSTREAM_BENCH_KEY": KEY, "ROWSTREAM_BENCH_POST": str(post)},
                )  # fmt: skip
                ingest_cpu, broker_cpu = (process_cpu(pid) - b for pid, b in zip(pids, before))
                accepted = max(1, ran.accepted)
                result[name] = {
                    "requests_per_s": round(ran.accepted_per_s),
                    "updates_per_s": round(ran.accepted_per_s * updates),
                    "p50_ms": ran.p50_ms,
                    "p99_ms": ran.p99_ms,
                    "failed": ran.failed,
                    "ingest_cpu_us_per_request": round(ingest_cpu / accepted * 1e6, 1),
                    "ingest_cpu_us_per_update": round(ingest_cpu / accepted / updates * 1e6, 2),
                    "broker_cpu_us_per_request": round(broker_cpu / accepted * 1e6, 1),
                    "accepted": ran.accepted * updates,
                }
            result["ingest_rss_mb"] = round(rss_bytes(ingest.process.pid) / 2**20, 1)
            result.update(await all_applied(pipeline, ingest.port, self.args.timeout))
            return result
        finally:
            pipeline.stop_all()

    async def http(self) -> dict[str, Any]:
        """End to end: wrk sends single PATCHes (every request a new row) to 1 ingest process
        at full speed while 1 worker applies them; the worker's time lag sampled meanwhile;
        then every accepted update must be applied."""
        pipeline = self.pipeline(self.args.partitions)
        try:
            run = await self.over_http(pipeline, self.args.e2e_seconds, 64, {})
            return {
                **run.cpu_per_update,
                "accepted_requests_per_s": round(run.wrk.accepted_per_s),
                "request_p99_ms": run.wrk.p99_ms,
                "applied_updates_per_s": round(run.applied["rows"] / run.seconds),
                "drained_s_after_load": run.drained_s,
                "time_lag_p99_s": percentile(run.lags, 0.99),
                "time_lag_max_s": percentile(run.lags, 1.0),
                **run.applied,
            }
        finally:
            pipeline.stop_all()

    async def steady(self) -> dict[str, Any]:
        """Nominal operation: wrk sends single PATCHes (every request a new row) at a steady
        ``--steady-rate`` to 1 ingest process while 1 worker applies them. Each update's latency
        is its row's ``updated_at`` (the shard transaction's start) less its ``received_at``
        (the ingest tier's answer, in its record); the request's own latency is wrk's."""
        a = self.args
        pipeline = self.pipeline(a.partitions)
        try:
            # Each connection waits between its requests (wrk has no rate option): the rate is
            # about connections / (delay + response time); 3 ms is the response time allowed.
            connections = 100
            delay_ms = max(0.0, connections * 1000 / a.steady_rate - 3)
            pace = {"ROWSTREAM_BENCH_DELAY_MS": f"{delay_ms:.1f}"}
            run = await self.over_http(
                pipeline, a.steady_seconds, connections, pace, after_first_row=True
            )
            latencies = await update_latencies(pipeline)
            return {
                "requests_per_s": round(run.wrk.accepted_per_s),
                "request_p50_ms": run.wrk.p50_ms,
                "request_p99_ms": run.wrk.p99_ms,
                "latency_p50_ms": percentile_ms(latencies.written, 0.50),
                "latency_p99_ms": percentile_ms(latencies.written, 0.99),
                "latency_max_ms": percentile_ms(latencies.written, 1.0),
                "produced_p50_ms": percentile_ms(latencies.produced, 0.50),
                "produced_p99_ms": percentile_ms(latencies.produced, 0.99),
                "worker_p50_ms": percentile_ms(latencies.through_worker, 0.50),
                "worker_p99_ms": percentile_ms(latencies.through_worker, 0.99),
                "time_lag_p99_s": percentile(run.lags, 0.99),
                "time_lag_max_s": percentile(run.lags, 1.0),
                **run.cpu_per_update,
                **run.applied,
            }
        finally:
            pipeline.stop_all()

    async def over_http(
        self,
        pipeline: Pipeline,
        seconds: float,
        connections: int,
        env: dict[str, str],
        after_first_row: bool = False,
    ) -> HttpRun:
        """1 worker and 1 ingest process on ``pipeline``; wrk sends single PATCHes (every request
        a new row) for ``seconds`` (once a first row is written, if ``after_first_row``) while
        the worker's time lag is sampled; then every accepted update must be applied."""
        worker = pipeline.start_worker()
        ingest = pipeline.start_ingest()
        await first_accepted(ingest.port)
        if after_first_row:

            async def a_row() -> bool:
                return count_rows(pipeline) > 0

            await eventually(a_row, self.args.timeout, "the first row")
        assert ingest.process is not None and worker.process is not None
        pids = ingest.process.pid, worker.process.pid

        def cpu() -> dict[str, float]:
            return {"ingest": process_cpu(pids[0]), **self.cpu([pids[1]])}

        before = cpu()
        lags: list[float] = []
        stop = asyncio.Event()
        sampler = asyncio.create_task(sample_time_lag(worker.web_port, stop, lags))
        started = time.monotonic()
        ran = await asyncio.to_thread(
            run_wrk, f"http://127.0.0.1:{ingest.port}", "updates.lua", seconds, connections,
            {"ROWSTREAM_BENCH_KEY": KEY, **env},
        )  # fmt: skip
        sent = time.monotonic()
        applied = await all_applied(pipeline, ingest.port, self.args.timeout)
        after = cpu()
        stop.set()
        await sampler
        updates = max(1, applied["rows"])
        return HttpRun(
            ran,
            applied,
            sorted(lags),
            {
                f"{part}_cpu_us_per_update": round((after[part] - before[part]) / updates * 1e6, 1)
                for part in ("ingest", "worker", "broker", "postgres")
            },
            time.monotonic() - started,
            round(time.monotonic() - sent, 1),
        )

    async def burst(self) -> dict[str, Any]:
        """Steady load, a burst, steady again (produced straight to the update topic at the given
        rates, 2 workers): lag sampled from GET /lag/ every second."""
        a = self.args
        pipeline = self.pipeline(a.partitions)
        workers = [pipeline.start_worker() for _ in range(2)]
        base = f"http://127.0.0.1:{workers[0].web_port}"
        samples: list[dict[str, float]] = []
        try:
            async with aiohttp.ClientSession(headers=AUTH) as session:

                async def lag() -> tuple[int, float] | None:
                    async with session.get(f"{base}/lag/") as response:
                        if response.status != 200:
                            return None
                        parts = (await response.json())["partitions"]
                    return (
                        sum(p["message_lag"] for p in parts),
                        max((p["time_lag_seconds"] for p in parts), default=0.0),
                    )

                deadline = time.monotonic() + 90
                while await lag() is None:
                    if time.monotonic() > deadline:
                        raise RuntimeError("the workers' /lag/ did not answer within 90 s")
                    await asyncio.sleep(1)
                producer = self.load_producer()
                await producer.start()
                updates = iter(self.workload(10**9, a.rows, 0.0, seed=4, lazy=True))
                started = time.monotonic()
                phases = [
                    (0.0, a.burst_steady_seconds, a.burst_steady_rate),
                    (a.burst_steady_seconds, a.burst_seconds, a.burst_rate),
                ]
                burst_end = a.burst_steady_seconds + a.burst_seconds
                sent = {"burst": 0}
                stop = asyncio.Event()

                async def produce() -> None:
                    topic, layout = pipeline.topic("subscription-updates"), pipeline.layout
                    tick = 0.1
                    while not stop.is_set():
                        now = time.monotonic() - started
                        rate = next(
                            (
                                r
                                for begin, length, r in reversed(phases)
                                if begin <= now < begin + length
                            ),
                            a.burst_steady_rate,
                        )
                        pending = []
                        for app_id, sub, properties in (
                            next(updates) for _ in range(int(rate * tick))
                        ):
                            pending.append(
                                await producer.send(
                                    topic,
                                    events.encode_update(app_id, sub, properties, time.time()),
                                    key=app_id.encode(),
                                    partition=layout.source_partition(app_id),
                                )
                            )
                        await asyncio.gather(*pending)
                        if a.burst_steady_seconds <= now < burst_end:
                            sent["burst"] += len(pending)
                        await asyncio.sleep(max(0.0, tick - (time.monotonic() - started - now)))

                producing = asyncio.create_task(produce())
                drained_at = None
                steady_lag = 0  # the highest message lag before the burst
                try:
                    while time.monotonic() - started < burst_end + a.timeout:
                        measured = await lag()
                        t = time.monotonic() - started
                        if measured is not None:
                            samples.append(
                                {
                                    "t": round(t, 1),
                                    "message_lag": measured[0],
                                    "time_lag_s": measured[1],
                                }
                            )
                            if t < a.burst_steady_seconds:
                                steady_lag = max(steady_lag, measured[0])
                            # drained: the backlog is back to what steady load leaves waiting
                            # (message lag, not time lag: the time lag /lag/ reports ages by up
                            # to a lag round between rounds)
                            elif t > burst_end and measured[0] <= max(
                                2 * steady_lag, 2 * a.burst_steady_rate
                            ):
                                drained_at = t
                                break
                        await asyncio.sleep(1.0)
                finally:
                    stop.set()
                    await producing
                    await producer.stop()
        finally:
            for worker in workers:
                worker.stop()
        chart(samples, a.burst_steady_seconds, burst_end, a.out / "burst.png")
        return {
            "steady_rate": a.burst_steady_rate,
            "burst_rate": a.burst_rate,
            "burst_seconds": a.burst_seconds,
            "burst_events_per_s_produced": round(sent["burst"] / a.burst_seconds),
            "peak_message_lag": max((x["message_lag"] for x in samples), default=0),
            "peak_time_lag_s": max((x["time_lag_s"] for x in samples), default=0.0),
            "drain_s_after_burst": None if drained_at is None else round(drained_at - burst_end, 1),
            "series": samples,
        }

    async def footprint(self) -> dict[str, Any]:
        partitions = self.args.footprint_partitions
        pipeline = self.pipeline(partitions)
        worker = pipeline.start_worker()
        try:
            await asyncio.sleep(self.args.settle)
            idle = rss_mb(worker)
            updates = self.workload(self.args.events // 4, self.args.rows, 0.0, seed=3)
            await self.preload(pipeline, updates)
            peak = idle
            for _ in range(int(self.args.settle * 2)):
                peak = max(peak, rss_mb(worker))
                await asyncio.sleep(0.5)
            return {"partitions": partitions, "idle_rss_mb": idle, "loaded_rss_mb": peak}
        finally:
            worker.stop()


def chart(
    samples: list[dict[str, float]], burst_start: float, burst_end: float, path: Path
) -> None:
    """Message lag and time lag over time, the burst shaded (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    figure, (top, bottom) = plt.subplots(2, 1, sharex=True, figsize=(8, 5))
    times = [x["t"] for x in samples]
    top.plot(times, [x["message_lag"] for x in samples], color="tab:blue")
    top.set_ylabel("message lag (events)")
    bottom.plot(times, [x["time_lag_s"] for x in samples], color="tab:red")
    bottom.set_ylabel("time lag (s)")
    bottom.set_xlabel("seconds since the load started")
    for axis in (top, bottom):
        axis.axvspan(burst_start, burst_end, color="0.9")
        axis.grid(alpha=0.3)
    top.set_title("rowstream burst: lag of both topics, 2 workers (shaded: the burst)")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


async def first_accepted(port: int, timeout: float = 30.0) -> float:
    """When (``time.monotonic()``) the ingest tier on ``port`` first answered a PATCH with 202."""
    row = f"/v1/apps/{uuid.uuid4()}/subscriptions/{uuid.uuid4()}"
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession(f"http://127.0.0.1:{port}", headers=AUTH) as session:
        while time.monotonic() < deadline:
            try:
                async with session.patch(row, json={"properties": {"first": 1}}) as response:
                    if response.status == 202:
                        return time.monotonic()
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.02)
    raise RuntimeError(f"the ingest tier did not accept a PATCH within {timeout:.0f} s")


async def all_applied(pipeline: Pipeline, port: int, timeout: float) -> dict[str, Any]:
    """Wait until the shards hold a row for every update the ingest tier accepted (its
    ``rowstream_ingest_events_total``, read again each time: requests wrk left in flight are
    still being answered; every update of the bench writes a new row)."""

    async def accepted(session: aiohttp.ClientSession) -> int:
        async with session.get(f"http://127.0.0.1:{port}/metrics") as response:
            text = await response.text()
        found = re.search(r"^rowstream_ingest_events_total (\S+)$", text, re.M)
        return int(float(found.group(1))) if found else 0

    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as session:
        events, rows = await accepted(session), count_rows(pipeline)
        while rows != events and time.monotonic() < deadline:
            await asyncio.sleep(0.5)
            events, rows = await accepted(session), count_rows(pipeline)
    return {"ingest_events": events, "rows": rows, "all_applied": rows == events}


async def sample_time_lag(port: int, stop: asyncio.Event, lags: list[float]) -> None:
    """Append the worst time lag the worker on ``port`` reports, every 0.5 s until ``stop``."""
    async with aiohttp.ClientSession(headers=AUTH) as session:
        while not stop.is_set():
            async with session.get(f"http://127.0.0.1:{port}/lag/") as response:
                if response.status == 200:
                    parts = (await response.json())["partitions"]
                    lags.append(max((p["time_lag_seconds"] for p in parts), default=0))
            await asyncio.sleep(0.5)


class Latencies(NamedTuple):
    """Seconds per update of the steady case (every update a row of its own), each list sorted:
    from its ``received_at`` (the ingest tier's answer) to its record's timestamp in the update
    topic (the ingest tier's produce: the internal topic's batch records carry the same
    timestamp), from that to its row's ``updated_at`` (the worker's two hops and the shard
    transaction's start), and the whole way."""

    produced: list[float]
    through_worker: list[float]
    written: list[float]


async def update_latencies(pipeline: Pipeline) -> Latencies:
    received, produced_at = {}, {}
    for record in await pipeline.read_topic("subscription-updates", timeout=120):
        update = orjson.loads(record.value)
        received[update["subscription_id"]] = update["received_at"]
        produced_at[update["subscription_id"]] = record.timestamp / 1000
    produced, through_worker, written = [], [], []
    for dsn in pipeline.dsns:
        conn = psycopg2.connect(dsn)
        try:
            with conn.cursor() as cur:
                cur.execute(
                    "SELECT subscription_id::text, extract(epoch FROM updated_at)"
                    " FROM subscriptions"
                )
                for subscription, at in cur.fetchall():
                    if subscription in received:
                        produced.append(produced_at[subscription] - received[subscription])
                        through_worker.append(float(at) - produced_at[subscription])
                        written.append(float(at) - received[subscription])
        finally:
            conn.close()
    return Latencies(sorted(produced), sorted(through_worker), sorted(written))


def percentile(values: list[float], share: float) -> float | None:
    """The value below which ``share`` of sorted ``values`` lie (None if empty)."""
    return values[int(share * (len(values) - 1))] if values else None


def percentile_ms(values: list[float], share: float) -> float | None:
    found = percentile(values, share)
    return None if found is None else round(found * 1000, 1)


def count_rows(pipeline: Pipeline) -> int:
    total = 0
    for dsn in pipeline.dsns:
        conn = psycopg2.connect(dsn)
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT to_regclass('subscriptions') IS NOT NULL")
                if cur.fetchone()[0]:
                    cur.execute("SELECT count(*) FROM subscriptions")
                    total += cur.fetchone()[0]
        finally:
            conn.close()
    return total


async def applied(workers: list[Worker]) -> int:
    """Updates the workers' shard writers committed (re-deliveries after a rebalance included),
    from their /metrics: the sum of rowstream_shard_batch_size."""
    total = 0.0
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        for worker in workers:
            try:
                async with session.get(
                    f"http://127.0.0.1:{worker.web_port}/metrics",
                    params={"name[]": "rowstream_shard_batch_size_sum"},  # not 3 per partition
                ) as response:
                    text = await response.text()
            except (TimeoutError, aiohttp.ClientError):
                continue  # starting or busy: counted at the next sample
            total += sum(
                float(line.rsplit(" ", 1)[1])
                for line in text.splitlines()
                if line.startswith("rowstream_shard_batch_size_sum")
            )
    return int(total)


TICKS = os.sysconf("SC_CLK_TCK")


def process_cpu(pid: int, exited_children: bool = False) -> float:
    """CPU seconds (user + system, all threads) of a process from /proc; with
    ``exited_children``, also those of its children that exited and were waited for."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return 0.0
    used = int(fields[11]) + int(fields[12])  # utime, stime
    if exited_children:
        used += int(fields[13]) + int(fields[14])  # cutime, cstime
    return used / TICKS


def children(parent: int) -> list[int]:
    """The running child processes of ``parent``."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == parent:
                found.append(int(stat.parent.name))
        except (FileNotFoundError, ProcessLookupError, ValueError):
            continue
    return found


def timer_warnings(worker: Worker) -> Counter[str]:
    """mode's "Timer … is overlapping" warnings in the worker's log, by timer: a timer whose
    work took longer than its interval."""
    found: Counter[str] = Counter()
    with open(worker.log_path, errors="replace") as log:
        for line in log:
            warned = re.search(r"Timer (\S+) is overlapping", line)
            if warned:
                found[warned.group(1)] += 1
    return found


def rss_mb(worker: Worker) -> float:
    assert worker.process is not None
    return round(rss_bytes(worker.process.pid) / 2**20, 1)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "settings": {k: v for k, v in vars(args).items() if k != "out"},
    }
    with Bench(args) as bench:
        uniform = bench.workload(args.events, args.rows, 0.0)
        hot = bench.workload(args.events, args.rows, 0.5, seed=2)
        cases = {
            "baseline": ("baseline (naive, 1 worker)", lambda: bench.naive(uniform)),
            "uniform1": ("uniform, 1 worker", lambda: bench.rowstream(uniform, 1)),
            "uniform2": ("uniform, 2 workers", lambda: bench.rowstream(uniform, 2)),
            "seed1": (
                f"uniform at {SEED_PARTITIONS} partitions, 1 worker",
                lambda: bench.rowstream(uniform, 1, SEED_PARTITIONS),
            ),
            "seed2": (
                f"uniform at {SEED_PARTITIONS} partitions, 2 workers",
                lambda: bench.rowstream(uniform, 2, SEED_PARTITIONS),
            ),
            "hot1": ("hot row (half on one row), 1 worker", lambda: bench.rowstream(hot, 1)),
            "hot": ("hot row (half on one row), 2 workers", lambda: bench.rowstream(hot, 2)),
            "ingest": ("ingest, 1 process", bench.ingest),
            "http": ("end to end over HTTP, 1 ingest + 1 worker", bench.http),
            "footprint": ("footprint, 1 worker", bench.footprint),
            "steady": (f"steady {args.steady_rate:,}/s over HTTP, 1 worker", bench.steady),
            "burst": ("burst, 2 workers", bench.burst),
        }
        for key in args.cases.split(","):
            name, case = cases[key]
            say(f"bench: {name} …")
            results[name] = await case()
            say(
                f"bench: {name}: "
                + json.dumps({k: v for k, v in results[name].items() if k != "series"})
            )
    return results


def table(results: dict[str, Any]) -> str:
    baseline = results.get("baseline (naive, 1 worker)", {}).get("events_per_s")
    lines = [
        f"{'case':<40} {'events/s':>10} {'× baseline':>11} {'1st→final':>10} "
        f"{'CPU µs/update: worker broker postgres':>38}  notes"
    ]
    for name, figures in results.items():
        if not isinstance(figures, dict) or "events_per_s" not in figures:
            continue
        notes = "" if figures.get("drained", True) else "NOT drained within the timeout"
        if "rss_mb" in figures:
            notes = f"worker RSS {figures['rss_mb']} MB {notes}".strip()
        if "start_to_first_row_s" in figures:
            notes = f"start to 1st row {figures['start_to_first_row_s']} s; {notes}"
        if figures.get("timer_warnings"):
            warned = ", ".join(f"{n} × {name}" for name, n in figures["timer_warnings"].items())
            notes = f"{notes}; timer warnings: {warned}"
        ratio = f"{figures['events_per_s'] / baseline:>10.1f}x" if baseline else f"{'n/a':>11}"
        cpu = " ".join(
            f"{figures.get(f'{part}_cpu_us', 'n/a'):>8}"
            for part in ("worker", "broker", "postgres")
        )
        lines.append(
            f"{name:<40} {figures['events_per_s']:>10,} {ratio} "
            f"{figures.get('first_row_to_final_per_s', 0):>10,} {cpu:>38}  {notes}"
        )
    partitions = results["settings"]["partitions"]
    for workers in (1, 2):
        plural = "worker" if workers == 1 else "workers"
        base = results.get(f"uniform, {workers} {plural}", {}).get("events_per_s")
        seed = results.get(f"uniform at {SEED_PARTITIONS} partitions, {workers} {plural}", {})
        if base and seed.get("events_per_s"):
            label = f"{SEED_PARTITIONS} / {partitions} partitions, {workers} {plural}"
            lines.append(f"{label:<40} {seed['events_per_s'] / base:>10.2f}")
    if "ingest, 1 process" in results:
        ingest = results["ingest, 1 process"]
        for name, label in (("patch", "single PATCH"), ("post100", "POST of 100"),
                            ("post1000", "POST of 1,000")):  # fmt: skip
            case = ingest[name]
            lines.append(
                f"{'ingest: ' + label:<40} {case['requests_per_s']:>10,} {'':>11}  requests/s "
                f"({case['updates_per_s']:,} updates/s), p50 {case['p50_ms']} / p99 "
                f"{case['p99_ms']} ms; CPU µs per request: ingest "
                f"{case['ingest_cpu_us_per_request']}, broker {case['broker_cpu_us_per_request']}"
                f" (ingest {case['ingest_cpu_us_per_update']} per update)"
            )
        lines.append(
            f"{'ingest: start, memory, applied':<40} {'':>10} {'':>11}  first 202 "
            f"{ingest['start_to_first_202_s']} s after start; RSS {ingest['ingest_rss_mb']} MB; "
            f"{ingest['rows']:,} of {ingest['ingest_events']:,} accepted updates in their shards"
        )
    if "end to end over HTTP, 1 ingest + 1 worker" in results:
        http = results["end to end over HTTP, 1 ingest + 1 worker"]
        lines.append(
            f"{'end to end over HTTP (PATCH)':<40} "
            f"{http['accepted_requests_per_s']:>10,} {'':>11}  requests/s accepted, "
            f"{http['applied_updates_per_s']:,} updates/s applied, time lag p99 "
            f"{http['time_lag_p99_s']} s (max {http['time_lag_max_s']} s), request p99 "
            f"{http['request_p99_ms']} ms; {http['rows']:,} of {http['ingest_events']:,} applied; "
            f"CPU µs per update: ingest {http['ingest_cpu_us_per_update']}, worker "
            f"{http['worker_cpu_us_per_update']}, broker {http['broker_cpu_us_per_update']}, "
            f"Postgres {http['postgres_cpu_us_per_update']}"
        )
    for name, steady in results.items():
        if not name.startswith("steady ") or not isinstance(steady, dict):
            continue
        lines.append(
            f"{name:<40} {steady['requests_per_s']:>10,} {'':>11}  requests/s; send to row "
            f"written: request p99 {steady['request_p99_ms']} ms + answered to written p50 "
            f"{steady['latency_p50_ms']} / p99 {steady['latency_p99_ms']} ms (max "
            f"{steady['latency_max_ms']}; answered to produced p50 {steady['produced_p50_ms']} / "
            f"p99 {steady['produced_p99_ms']}, produced to written p50 "
            f"{steady['worker_p50_ms']} / p99 {steady['worker_p99_ms']}); time lag p99 "
            f"{steady['time_lag_p99_s']} s; CPU µs per "
            f"update: ingest {steady['ingest_cpu_us_per_update']}, worker "
            f"{steady['worker_cpu_us_per_update']}, broker {steady['broker_cpu_us_per_update']}, "
            f"Postgres {steady['postgres_cpu_us_per_update']}; {steady['rows']:,} of "
            f"{steady['ingest_events']:,} applied"
        )
    if "footprint, 1 worker" in results:
        foot = results["footprint, 1 worker"]
        lines.append(
            f"{'footprint':<40} {'':>10} {'':>11}  {foot['partitions']} partitions per "
            f"topic: RSS {foot['idle_rss_mb']} MB idle, {foot['loaded_rss_mb']} MB under load"
        )
    if "burst, 2 workers" in results:
        burst = results["burst, 2 workers"]
        drain = burst["drain_s_after_burst"]
        lines.append(
            f"{'burst':<40} {burst['burst_events_per_s_produced']:>10,} {'':>11}  "
            f"events/s for {burst['burst_seconds']:g} s over {burst['steady_rate']:,}/s: "
            f"peak lag {burst['peak_message_lag']:,} events, {burst['peak_time_lag_s']:.0f} s; "
            + (f"drained {drain} s after" if drain is not None else "NOT drained")
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=200_000, help="events per throughput case")
    parser.add_argument("--rows", type=int, default=100_000, help="rows they are spread over")
    parser.add_argument(
        "--partitions",
        type=int,
        default=24,
        help=f"partitions of the update topic (the seed cases: {SEED_PARTITIONS})",
    )
    parser.add_argument("--footprint-partitions", type=int, default=720)
    parser.add_argument("--ingest-seconds", type=float, default=20.0, help="each wrk run")
    parser.add_argument("--e2e-seconds", type=float, default=60.0, help="the end-to-end run")
    parser.add_argument("--settle", type=float, default=10.0, help="seconds to let a worker settle")
    parser.add_argument("--timeout", type=float, default=600.0, help="longest wait for one case")
    parser.add_argument("--steady-rate", type=int, default=2_000, help="PATCHes/s, steady case")
    parser.add_argument("--steady-seconds", type=float, default=60.0)
    parser.add_argument(
        "--burst-steady-rate", type=int, default=2_000, help="events/s around the burst"
    )
    parser.add_argument("--burst-rate", type=int, default=20_000, help="events/s during the burst")
    parser.add_argument("--burst-seconds", type=float, default=30.0)
    parser.add_argument(
        "--burst-steady-seconds", type=float, default=10.0, help="steady load before the burst"
    )
    parser.add_argument(
        "--cases",
        default="baseline,uniform1,uniform2,seed1,seed2,hot1,hot,ingest,http,steady,footprint,burst",
        help="which cases, comma-separated",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a rowstream setting for the workers, e.g. batch_size=2000 "
        "(ROWSTREAM_BATCH_SIZE); repeatable",
    )
    parser.add_argument("--quick", action="store_true", help="a tiny run (the smoke test)")
    parser.add_argument("--out", type=Path, default=ROOT / ".local" / "bench")
    args = parser.parse_args(argv)
    for item in args.set:
        name, sep, _ = item.partition("=")
        if not sep or name.upper() not in {field.upper() for field in Settings.model_fields}:
            parser.error(
                f"--set {item!r}: expected NAME=VALUE with NAME a field of app/settings.py"
            )
    if args.quick:
        args.events, args.rows, args.ingest_seconds, args.settle = 3_000, 1_000, 2.0, 2.0
        args.e2e_seconds, args.steady_seconds, args.steady_rate = 3.0, 3.0, 200
        args.footprint_partitions, args.partitions, args.timeout = 48, 8, 120.0
        args.burst_steady_rate, args.burst_rate, args.burst_seconds = 200, 2_000, 3.0
        args.burst_steady_seconds = 3.0
    try:
        results = asyncio.run(run(args))
    except KeyboardInterrupt:
        say("bench: interrupted")
        return 130
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench.json").write_text(json.dumps(results, indent=2))
    print(table(results))
    say(
        f"bench: figures in {args.out / 'bench.json'}"
        + (f", burst chart in {args.out / 'burst.png'}" if "burst" in args.cases else "")
    )
    return 0
