"""The worker's probes and metrics on its web view: ``/healthz`` (liveness), ``/readyz`` (the
broker answered the last lag round and every shard answers a ping) and ``/metrics``
(Prometheus; ``?name[]=…`` limits it to those series, as prometheus_client's own exporters do:
the per-partition gauges make the whole page large at 720 partitions). Open to all
(``app.ops.access``)."""

from __future__ import annotations

import time
from typing import Any

from faust.web import Request, Response, View
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from app.observe import metrics


def register(app: Any, monitor: Any, shards: Any, lag_interval: float) -> None:
    """Add the three pages to ``app``, reading ``monitor`` (the lag monitor) and ``shards``."""

    @app.page("/healthz")
    async def healthz(web: View, request: Request) -> Response:
        return web.json({"ok": True})

    @app.page("/readyz")
    async def readyz(web: View, request: Request) -> Response:
        last = monitor.last_success
        broker_ok = last is not None and time.time() - last < max(10.0, 3 * lag_interval)
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
        names = [value for key, value in request.query.items() if key == "name[]"]  # repeatable
        registry = metrics.REGISTRY.restricted_registry(names) if names else metrics.REGISTRY
        return web.bytes(generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST})
