"""HTTP ingest and row reads (README "HTTP API"): validate, authenticate, produce, answer.

Writes answer 202 only after the broker acknowledged every event of the request (acks=all);
when it cannot within ROWSTREAM_PRODUCE_TIMEOUT the answer is 503 with Retry-After, and the client
must retry (an event may then have been written once already: the pipeline is at-least-once and
patches are idempotent). No view writes to Postgres.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from typing import Any, cast
from uuid import UUID

from aiohttp import web as aiohttp_web
from aiokafka.errors import KafkaError, MessageSizeTooLargeError
from faust.exceptions import ProducerSendError
from faust.web import Request, Response, View
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import ValidationError

from app.ingest import auth, openapi
from app.ingest.keys import ApiKey
from app.main import app, layout, limiter, monitor, settings, shards, topics
from app.model import events
from app.observe import metrics, tracing

log = logging.getLogger("rowstream.web")


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        error: str,
        problems: list | None = None,
        headers: dict | None = None,
    ) -> None:
        super().__init__(error)
        self.status, self.error, self.problems, self.headers = status, error, problems, headers


def _authenticate(request: Request) -> ApiKey:
    """401 without a known key; else the key (its ``apps``: None for every app)."""
    try:
        return auth.authenticate(request.headers.get("Authorization", ""), settings.scoped_keys)
    except auth.Refused as exc:
        raise ApiError(exc.status, exc.error, headers=exc.headers) from None


def _check_scope(scope: frozenset[str] | None, app_ids: Iterable[str]) -> None:
    """403 when the key is scoped and an app is outside its scope."""
    if scope is not None:
        outside = sorted(set(app_ids) - scope)
        if outside:
            raise ApiError(
                403,
                "this key may not update or read these apps",
                [
                    {"where": "app_id", "problem": f"{app} is outside the key's scope"}
                    for app in outside[:10]
                ],
            )


def _limit(key: ApiKey, updates: int) -> None:
    """429 with Retry-After when the key's rate limit (``app.ingest.limits``) refuses them."""
    if limiter is None:
        return
    wait = limiter.take(key.name, updates)
    if wait is not None:
        metrics.RATE_LIMITED.labels(key.name).inc()
        raise ApiError(
            429,
            f"rate limit: key {key.name!r} may send {settings.rate_limit:g} updates/s "
            f"(bursts of {settings.burst}); retry after {wait} s",
            [
                {
                    "where": "limit",
                    "problem": f"{settings.rate_limit:g} updates/s, burst "
                    f"{settings.burst}, per worker; this request holds {updates}",
                }
            ],
            headers={"Retry-After": str(wait)},
        )


def _uuid(text: str, where: str) -> str:
    try:
        return str(UUID(text))
    except ValueError:
        raise ApiError(
            400, "invalid request", [{"where": where, "problem": "not a UUID"}]
        ) from None


async def _body(request: Request) -> bytes:
    """The body, at most MAX_BODY_BYTES held at any time, within ROWSTREAM_BODY_TIMEOUT: a huge
    or a slow client costs at most that much memory and that long a connection."""
    raw = cast(aiohttp_web.Request, request)  # Faust's aiohttp driver hands aiohttp's own
    length = raw.content_length
    if length is not None and length > events.MAX_BODY_BYTES:
        raise ApiError(413, f"request body over {events.MAX_BODY_BYTES} bytes")

    async def read() -> bytes:
        chunks, size = [], 0
        while chunk := await raw.content.read(64 * 1024):  # b"" at the end of the body
            size += len(chunk)
            if size > events.MAX_BODY_BYTES:  # a client that lied about (or omitted) its length
                raise ApiError(413, f"request body over {events.MAX_BODY_BYTES} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    try:
        async with asyncio.timeout(settings.body_timeout):  # no task per request, as wait_for makes
            return await read()
    except TimeoutError:
        raise ApiError(
            408, f"request body not received within {settings.body_timeout:g} s"
        ) from None


async def _produce(updates: list[tuple[str, str, dict]]) -> None:
    """Send every update to the update topic and wait until the broker acknowledged all: one
    record per app, an update batch where the app has more than one (``app.model.events``), so a
    1,000-update request costs a producer send per app, not per update.

    Straight to Faust's producer, not through ``Topic.send``: the topic layer's per-message
    bookkeeping is not needed for a send that is awaited right here."""
    received_at = time.time()
    topic = topics.updates_name
    by_app: dict[str, list[bytes]] = {}
    for app_id, subscription_id, properties in updates:  # in request order per app
        by_app.setdefault(app_id, []).append(
            events.encode_update(app_id, subscription_id, properties, received_at)
        )

    async def send_all(headers: list | None) -> None:
        pending = []
        for app_id, encoded in by_app.items():
            if len(encoded) == 1:
                value, record_headers = encoded[0], headers
            else:
                value = events.update_batch(encoded)
                record_headers = [*(headers or ()), (events.UPDATES_HEADER, b"%d" % len(encoded))]
            pending.append(
                await app.producer.send(
                    topic,
                    app_id.encode(),
                    value,
                    layout.source_partition(app_id),
                    None,  # the producer stamps the time
                    record_headers,
                )
            )
        await asyncio.gather(*pending)

    try:
        with tracing.ingest(len(updates)) as headers:
            async with asyncio.timeout(settings.produce_timeout):
                await send_all(headers)
        metrics.INGEST_EVENTS.inc(len(updates))
    except (KafkaError, ProducerSendError, TimeoutError, OSError) as exc:
        # Faust wraps the client's errors raised while queueing in ProducerSendError.
        cause = exc.__cause__ if isinstance(exc, ProducerSendError) else exc
        if isinstance(cause, MessageSizeTooLargeError):
            log.warning("the broker refused an update as too large: %r", exc)
            raise ApiError(
                413, "an update is larger than the broker accepts (its max.message.bytes)"
            ) from None
        log.warning("produce failed, answering 503: %r", exc)
        raise ApiError(
            503,
            "the broker did not acknowledge the update; retry later",
            headers={"Retry-After": "1"},
        ) from None


class ApiView(View):
    """Turns ApiError into a JSON error body, and any other exception into a JSON 500."""

    async def dispatch(self, request: Any) -> Any:
        try:
            response = await super().dispatch(request)
        except ApiError as exc:
            body: dict[str, Any] = {"error": exc.error}
            if exc.problems:
                body["problems"] = exc.problems
            response = self.json(body, status=exc.status, headers=exc.headers)
        except Exception:
            log.exception("unexpected error in %s %s", request.method, request.path)
            response = self.json({"error": "internal error"}, status=500)
        metrics.INGEST_REQUESTS.labels(str(response.status)).inc()
        return response


@app.page("/v1/apps/{app_id}/subscriptions/{subscription_id}")
class SubscriptionView(ApiView):
    async def patch(self, request: Request, app_id: str, subscription_id: str) -> Response:
        key = _authenticate(request)  # 401 before any 400
        app_id, subscription_id = _uuid(app_id, "app_id"), _uuid(subscription_id, "subscription_id")
        _check_scope(key.apps, [app_id])
        try:
            body = events.PatchBody.validate_json(await _body(request))
        except ValidationError as exc:
            raise ApiError(400, "invalid request", events.problems_of(exc)) from None
        _limit(key, 1)
        await _produce([(app_id, subscription_id, body["properties"])])
        return self.json({"accepted": 1}, status=202)

    async def get(self, request: Request, app_id: str, subscription_id: str) -> Response:
        key = _authenticate(request)  # 401 before any 400
        app_id, subscription_id = _uuid(app_id, "app_id"), _uuid(subscription_id, "subscription_id")
        _check_scope(key.apps, [app_id])
        try:
            row = await shards.fetch(layout.shard_of_app(app_id), app_id, subscription_id)
        except Exception as exc:
            log.warning("row read failed: %r", exc)
            raise ApiError(
                503, "the row's shard is unavailable; retry later", headers={"Retry-After": "1"}
            ) from None
        if row is None:
            raise ApiError(404, "no such row")
        return self.json(row)


@app.page("/v1/updates")
class UpdatesView(ApiView):
    async def post(self, request: Request) -> Response:
        key = _authenticate(request)
        try:
            batch = events.BatchBody.validate_json(await _body(request))
        except ValidationError as exc:
            raise ApiError(400, "invalid request", events.problems_of(exc)) from None
        _check_scope(key.apps, {update["app_id"] for update in batch})
        _limit(key, len(batch))
        await _produce(
            [
                (update["app_id"], update["subscription_id"], update["properties"])
                for update in batch
            ]
        )
        return self.json({"accepted": len(batch)}, status=202)


@app.page("/openapi.json")
async def openapi_view(web: View, request: Request) -> Response:
    return web.json(openapi.document())


@app.page("/healthz")
async def healthz(web: View, request: Request) -> Response:
    return web.json({"ok": True})


@app.page("/readyz")
async def readyz(web: View, request: Request) -> Response:
    """Ready when the broker answered the last lag round and every shard answers a ping."""
    last = monitor.last_success
    broker_ok = last is not None and time.time() - last < max(10.0, 3 * settings.lag_interval)

    shard_ok = await shards.up()
    ready = broker_ok and all(shard_ok)
    body = {
        "ready": ready,
        "broker": broker_ok,
        "shards": [{"shard": n, "up": up} for n, up in enumerate(shard_ok)],
    }
    return web.json(body, status=200 if ready else 503)


@app.page("/metrics")
async def metrics_view(web: View, request: Request) -> Response:
    return web.bytes(
        generate_latest(metrics.REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST}
    )
