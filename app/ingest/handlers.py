"""What the ingest tier answers, request by request: authenticate, parse, limit, publish, answer.

A handler takes a ``Request`` and returns a ``Response`` now, or ``Later``: an answer that waits
for the broker's acknowledgement (writes) or for Postgres (the row read). Problems are raised as
``HttpError`` and turned into responses once, at the edge (``app.ingest.http``). Handlers hold
nothing global: ``Api`` is handed what it uses (``app.ingest.server.build``).

Writes answer 202 only once the broker acknowledged every record of the request (acks=all);
otherwise 503 with ``Retry-After`` (``app.ingest.publish``: the updates may have been written
once already; a retry is safe). The order of checks: 401 before anything else, then 400 for the
row's IDs, 403 for a scoped key, 400 for the body, 429 for the rate limit.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

import orjson

from app.ingest import auth, contract
from app.ingest.contract import Record, Update
from app.ingest.errors import HttpError, Unavailable
from app.ingest.keys import ApiKey
from app.ingest.limits import RateLimiter
from app.observe import metrics, tracing

JSON = "application/json"


class Request(NamedTuple):
    method: str
    path: str
    authorization: str  # the Authorization header, "" when absent
    body: bytes


class Response(NamedTuple):
    status: int
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()
    content_type: str = JSON
    updates: int = 0  # updates this answer accepts (counted in rowstream_ingest_events_total)


class Later(NamedTuple):
    """An answer that waits: ``response`` once ``done`` succeeds (``done``'s own result when
    ``response`` is None), or ``done``'s ``HttpError``."""

    done: asyncio.Future
    response: Response | None = None


Answer = Response | Later


class Publishing(Protocol):
    def publish(self, records: list[Record]) -> asyncio.Future: ...

    async def ping(self) -> bool: ...


class RowReading(Protocol):
    async def fetch(self, app_id: str, subscription_id: str) -> dict | None: ...


def accepted(updates: int) -> Response:
    return Response(202, b'{"accepted":%d}' % updates, updates=updates)


ACCEPTED_ONE = accepted(1)


class Api:
    def __init__(
        self,
        keys: tuple[ApiKey, ...],
        limiter: RateLimiter | None,
        publisher: Publishing,
        partition_of_app: Callable[[str], int],
        rows: RowReading,
        exposition: Callable[[], bytes],
        openapi: dict[str, Any],
        clock: Callable[[], float] = time.time,
        frozen_slots: Callable[[], frozenset[int]] = frozenset,
    ) -> None:
        self.keys, self.limiter, self.publisher = keys, limiter, publisher
        self.partition_of_app, self.rows, self.clock = partition_of_app, rows, clock
        self.frozen_slots = frozen_slots
        self._exposition = exposition
        self._openapi = orjson.dumps(openapi)

    # --- writes and the row read --------------------------------------------------------------

    def patch(self, request: Request, app_id: str, subscription_id: str) -> Answer:
        key = auth.authenticate(request.authorization, self.keys)
        app_id = contract.canonical_uuid(app_id, "app_id")
        subscription_id = contract.canonical_uuid(subscription_id, "subscription_id")
        auth.check_scope(key, (app_id,))
        return self._accept(key, contract.patch(app_id, subscription_id, request.body))

    def post(self, request: Request) -> Answer:
        key = auth.authenticate(request.authorization, self.keys)
        updates = contract.post(request.body)
        auth.check_scope(key, contract.apps_of(updates))
        return self._accept(key, updates)

    def get(self, request: Request, app_id: str, subscription_id: str) -> Answer:
        key = auth.authenticate(request.authorization, self.keys)
        app_id = contract.canonical_uuid(app_id, "app_id")
        subscription_id = contract.canonical_uuid(subscription_id, "subscription_id")
        auth.check_scope(key, (app_id,))
        return Later(asyncio.ensure_future(self._row(app_id, subscription_id)))

    def _accept(self, key: ApiKey, updates: list[Update]) -> Answer:
        self._limit(key, len(updates))
        frozen = self.frozen_slots()
        if frozen:
            self._refuse_frozen(frozen, updates)
        answer = ACCEPTED_ONE if len(updates) == 1 else accepted(len(updates))
        if tracing.enabled():
            return Later(asyncio.ensure_future(self._traced(updates, answer)))
        records = contract.to_records(updates, self.partition_of_app, self.clock())
        return Later(self.publisher.publish(records), answer)

    async def _traced(self, updates: list[Update], answer: Response) -> Response:
        """The write inside an ingest span whose context each record carries."""
        with tracing.ingest(len(updates)) as headers:
            records = contract.to_records(updates, self.partition_of_app, self.clock(), headers)
            await self.publisher.publish(records)
        return answer

    @staticmethod
    def _refuse_frozen(frozen: frozenset[int], updates: list[Update]) -> None:
        """503 + Retry-After while an app's slot is frozen for a move to another shard (seconds,
        bounded by the move's --timeout; ``app.ops.moves``)."""
        for app_id, _, _ in updates:
            if int(app_id[:2], 16) in frozen:
                raise Unavailable(
                    f"app {app_id} is moving to another shard: retry in a moment", retry_after=1
                )

    def _limit(self, key: ApiKey, updates: int) -> None:
        """429 with Retry-After when the key's rate limit (``app.ingest.limits``) refuses them."""
        if self.limiter is None:
            return
        wait = self.limiter.take(key.name, updates)
        if wait is None:
            return
        metrics.RATE_LIMITED.labels(key.name).inc()
        rate, burst = self.limiter.rate, self.limiter.burst
        raise HttpError(
            429,
            f"rate limit: key {key.name!r} may send {rate:g} updates/s (bursts of {burst}); "
            f"retry after {wait} s",
            [
                {
                    "where": "limit",
                    "problem": f"{rate:g} updates/s, burst {burst}, per ingest process; "
                    f"this request holds {updates}",
                }
            ],
            headers=(("Retry-After", str(wait)),),
        )

    async def _row(self, app_id: str, subscription_id: str) -> Response:
        try:
            row = await self.rows.fetch(app_id, subscription_id)
        except Exception as exc:
            raise Unavailable(
                f"the row's shard is unavailable ({type(exc).__name__}); retry later"
            ) from None
        if row is None:
            raise HttpError(404, "no such row")
        return Response(200, orjson.dumps(row))

    # --- open to all: probes, metrics, the API description ------------------------------------

    def healthz(self, request: Request) -> Answer:
        return Response(200, b'{"ok":true}')

    def readyz(self, request: Request) -> Answer:
        """Ready while the broker answers: a process that cannot write is taken out of rotation;
        the row read's shards do not count (their failures are the row read's own 503)."""
        return Later(asyncio.ensure_future(self._ready()))

    async def _ready(self) -> Response:
        broker = await self.publisher.ping()
        return Response(200 if broker else 503, orjson.dumps({"ready": broker, "broker": broker}))

    def metrics(self, request: Request) -> Answer:
        return Response(200, self._exposition(), content_type="text/plain; version=0.0.4")

    def openapi(self, request: Request) -> Answer:
        return Response(200, self._openapi)
