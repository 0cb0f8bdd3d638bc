"""API keys: who may call what (README "HTTP API"; configured by ROWSTREAM_API_KEYS).

* the ingest and row API (``/v1/…``) authenticates in its views, which also check a scoped key's
  apps against the request (``app.ingest.api``);
* every other page — rowstream's ``/lag/`` and ``/shards/``, and Faust's own web views — needs an
  unscoped key, checked by ``admin_guard``, an aiohttp middleware on the worker's web server;
* open to all: liveness and readiness (for orchestrators), ``/metrics`` (for Prometheus), the
  API description ``/openapi.json`` and the operator page's files under ``/ui/`` (the page asks
  for an unscoped key and sends it with each of its data requests).

Keys (``app.ingest.keys``) are matched by their SHA-256 in constant time with every configured key,
and never logged or echoed.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from aiohttp import web

from app.ingest.keys import ApiKey, match

Keys = Iterable[ApiKey]

PUBLIC_PATHS = frozenset({"/healthz", "/readyz", "/metrics", "/openapi.json"})
PUBLIC_PREFIX = "/ui/"  # the operator page's static files; its data needs the unscoped key
SELF_AUTHENTICATED = "/v1/"


class Refused(Exception):
    """401 or 403, with the error line and the headers of the answer."""

    def __init__(self, status: int, error: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(error)
        self.status, self.error, self.headers = status, error, headers


def authenticate(authorization: str, keys: Keys) -> ApiKey:
    """The configured key the ``Authorization`` header bears (its ``apps``: None for every app);
    Refused(401) without a known key."""
    scheme, _, key = authorization.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise Refused(
            401,
            "missing bearer key: send 'Authorization: Bearer <key>'",
            {"WWW-Authenticate": "Bearer"},
        )
    found = match(key.strip(), keys)
    if found is None:
        raise Refused(401, "unknown API key", {"WWW-Authenticate": "Bearer"})
    return found


def require_admin(authorization: str, keys: Keys) -> None:
    """Refused unless the header carries a known key that is not scoped to some apps."""
    if authenticate(authorization, keys).apps is not None:
        raise Refused(403, "this key is scoped to some apps; admin views need an unscoped key")


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def admin_guard(keys: Callable[[], Keys]) -> Any:
    """The middleware: pages other than the public ones and the ``/v1/`` API need an unscoped
    key. ``keys()`` gives the configured keys (read when a request comes)."""

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        path = request.path
        if path in PUBLIC_PATHS or path.startswith((SELF_AUTHENTICATED, PUBLIC_PREFIX)):
            return await handler(request)
        try:
            require_admin(request.headers.get("Authorization", ""), keys())
        except Refused as exc:
            return web.json_response({"error": exc.error}, status=exc.status, headers=exc.headers)
        return await handler(request)

    return guard


__all__ = ["PUBLIC_PATHS", "Refused", "admin_guard", "authenticate", "require_admin"]
