"""Load for the fault tests: a workload whose final rows tell lost updates from reordered ones,
and a client that keeps sending through worker crashes and records exactly what was accepted.

Update number n of a row (its per-row sequence) sets

* ``u<n>`` — a key only it writes: missing at the end means the update was **lost**;
* ``p<n//2>`` (even n: the pair n, n+1) or ``q<(n+1)//2>`` (odd n: the pair n, n+1) to n — each
  adjacent pair of updates shares one key, whose final value must be the later one. Any order
  other than the accepted one inverts some adjacent pair, so a wrong pair key means the pair was
  **reordered** (when neither update was lost).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiohttp

from app.sink.coalesce import apply
from tests.support.helpers import AUTH


def pair_key(n: int) -> str:
    """The key update n shares with update n + 1."""
    return f"p{n // 2}" if n % 2 == 0 else f"q{(n + 1) // 2}"


def patch(n: int) -> dict:
    properties = {f"u{n}": n, pair_key(n): n}
    if n > 0:
        properties[pair_key(n - 1)] = n  # update n is the later one of the pair (n - 1, n)
    return properties


@dataclass
class Ledger:
    """What the API accepted, per row, in order."""

    sequences: dict[tuple[str, str], int] = field(default_factory=dict)
    rows: dict[tuple[str, str], dict] = field(default_factory=dict)
    accepted: int = 0
    retried: int = 0
    accepted_at: list[float] = field(default_factory=list)
    by_app: dict[str, list[float]] = field(default_factory=dict)  # acceptance times per app
    waited: list[float] = field(default_factory=list)  # seconds, of requests answered 503 first

    def next_patch(self, row: tuple[str, str]) -> tuple[int, dict]:
        n = self.sequences.get(row, 0)
        return n, patch(n)

    def accept(self, row: tuple[str, str], n: int) -> None:
        self.rows[row] = apply(self.rows.get(row, {}), patch(n))
        self.sequences[row] = n + 1
        self.accepted += 1
        now = time.monotonic()
        self.accepted_at.append(now)
        self.by_app.setdefault(row[0], []).append(now)


def count_anomalies(ledger: Ledger, actual: dict[tuple[str, str], dict]) -> tuple[int, int]:
    """(lost, reordered) updates, from the final rows alone."""
    lost = reordered = 0
    for row, count in ledger.sequences.items():
        properties = actual.get(row, {})
        missing = {n for n in range(count) if properties.get(f"u{n}") != n}
        lost += len(missing)
        for n in range(count - 1):  # the pair (n, n+1) must end with n + 1
            if n in missing or n + 1 in missing:
                continue
            if properties.get(pair_key(n)) != n + 1:
                reordered += 1
    return lost, reordered


class FailoverClient:
    """Sends batches per app, one request at a time per app (so acceptance order is send order),
    to the first ingest process that answers; retries on connection errors and 503 until
    accepted. A batch of one update is a PATCH.

    A retried request may have been written once already: the duplicate lands right after the
    original, before the app's next request, and re-applying a patch is harmless.
    """

    def __init__(self, ports: list[int], ledger: Ledger) -> None:
        self.ports = ports
        self.ledger = ledger
        self.stop = asyncio.Event()
        self.started = time.monotonic()

    async def run(
        self,
        apps: list[str],
        rows_per_app: int,
        batch: int,
        rate: float | None,
        seed: int = 1,
        total: int | None = None,
    ) -> None:
        """Send until ``stop`` is set (or ``total`` updates are accepted), at about ``rate``
        updates per second overall when given."""
        timeout = aiohttp.ClientTimeout(total=30)
        async with aiohttp.ClientSession(headers=AUTH, timeout=timeout) as session:
            per_app_total = None if total is None else total // len(apps)
            per_app_rate = None if rate is None else rate / len(apps)
            await asyncio.gather(
                *(
                    self._app(
                        session, app, rows_per_app, batch, per_app_rate, seed + i, per_app_total
                    )
                    for i, app in enumerate(apps)
                )
            )

    async def _app(self, session, app, rows_per_app, batch, rate, seed, total) -> None:
        rng = random.Random(seed)
        rows = [(app, f"{app[:8]}-0000-4000-8000-{n:012x}") for n in range(rows_per_app)]
        sent = 0
        worker = seed % len(self.ports)
        while not self.stop.is_set() and (total is None or sent < total):
            started = time.monotonic()
            chosen = [rng.choice(rows) for _ in range(batch)]
            body, numbered = [], []
            pending_seq: dict = {}
            for row in chosen:  # sequences within the batch continue per row
                n = pending_seq.get(row, self.ledger.sequences.get(row, 0))
                pending_seq[row] = n + 1
                body.append({"app_id": row[0], "subscription_id": row[1], "properties": patch(n)})
                numbered.append((row, n))
            worker = await self._post(session, body, worker)
            for row, n in numbered:
                self.ledger.accept(row, n)
            sent += len(body)
            if rate:
                await asyncio.sleep(max(0.0, len(body) / rate - (time.monotonic() - started)))

    async def _post(self, session, body, worker) -> int:
        """POST the batch (a single update: PATCH it) to an ingest process, the next one after
        a failure, until one accepts it."""
        first = time.monotonic()
        deadline = first + 120
        refused = False
        while True:
            port = self.ports[worker % len(self.ports)]
            if len(body) == 1:
                row = f"/v1/apps/{body[0]['app_id']}/subscriptions/{body[0]['subscription_id']}"
                method, path, json = "PATCH", row, {"properties": body[0]["properties"]}
            else:
                method, path, json = "POST", "/v1/updates", body
            try:
                async with session.request(
                    method, f"http://127.0.0.1:{port}{path}", json=json
                ) as response:
                    if response.status == 202:
                        if refused:
                            self.ledger.waited.append(time.monotonic() - first)
                        return worker
                    assert response.status == 503, (response.status, await response.text())
                    refused = True
            except (TimeoutError, aiohttp.ClientError):
                pass
            self.ledger.retried += 1
            if time.monotonic() > deadline:
                raise AssertionError("no ingest process accepted a request for 120 s")
            worker += 1
            await asyncio.sleep(0.2)


@contextlib.asynccontextmanager
async def load(ports: list[int], apps: list[str], **run: object) -> AsyncIterator[FailoverClient]:
    """Send load (``FailoverClient.run(apps, **run)``) while the block runs; stop it and wait for
    the last request when it ends. The client's ``ledger`` holds what was accepted."""
    client = FailoverClient(list(ports), Ledger())
    sending = asyncio.create_task(client.run(apps, **run))  # type: ignore[arg-type]
    try:
        yield client
    finally:
        client.stop.set()
        await sending
