"""Who may read the worker's web view: every page needs an unscoped API key
(``app.ingest.auth.require_admin``) but the public ones — liveness, readiness, ``/metrics`` (for
orchestrators and Prometheus) and the operator page's files under ``/ui/`` (the page asks for an
unscoped key and sends it with each of its data requests). Installed as an aiohttp middleware on
the worker's web server (``app.main``)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from app.ingest.auth import Keys, Refused, require_admin

PUBLIC_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
PUBLIC_PREFIX = "/ui/"  # the operator page's static files; its data needs the unscoped key

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def admin_guard(keys: Callable[[], Keys]) -> Any:
    """The middleware: pages other than the public ones need an unscoped key. ``keys()`` gives
    the configured keys (read when a request comes)."""

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        path = request.path
        if path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIX):
            return await handler(request)
        try:
            require_admin(request.headers.get("Authorization", ""), keys())
        except Refused as exc:
            return web.json_response(
                {"error": exc.error}, status=exc.status, headers=dict(exc.headers)
            )
        return await handler(request)

    return guard
