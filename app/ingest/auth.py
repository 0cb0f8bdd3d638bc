"""API keys: who may call what (README "HTTP API"; configured by ROWSTREAM_API_KEYS).

* the ingest tier's API (``/v1/…``) authenticates every write and row read with ``authenticate``
  and checks a scoped key's apps against the request (``app.ingest.handlers``);
* the worker's web view needs an unscoped key for every page but its public ones
  (``require_admin``, applied by ``app.ops.access``).

Keys (``app.ingest.keys``) are matched by their SHA-256 in constant time with every configured key,
and never logged or echoed. Pure: no I/O, no framework.
"""

from __future__ import annotations

from collections.abc import Iterable

from app.ingest.errors import HttpError
from app.ingest.keys import ApiKey, match

Keys = Iterable[ApiKey]

_ASK_FOR_BEARER = (("WWW-Authenticate", "Bearer"),)


class Refused(HttpError):
    """401 or 403: no known key, or a key that may not do this."""


def authenticate(authorization: str, keys: Keys) -> ApiKey:
    """The configured key the ``Authorization`` header bears (its ``apps``: None for every app);
    Refused(401) without a known key."""
    scheme, _, key = authorization.partition(" ")
    if scheme.lower() != "bearer" or not key.strip():
        raise Refused(
            401, "missing bearer key: send 'Authorization: Bearer <key>'", headers=_ASK_FOR_BEARER
        )
    found = match(key.strip(), keys)
    if found is None:
        raise Refused(401, "unknown API key", headers=_ASK_FOR_BEARER)
    return found


def check_scope(key: ApiKey, app_ids: Iterable[str]) -> None:
    """Refused(403) when the key is scoped and an app is outside its scope."""
    if key.apps is None:
        return
    outside = sorted(set(app_ids) - key.apps)
    if outside:
        raise Refused(
            403,
            "this key may not update or read these apps",
            [
                {"where": "app_id", "problem": f"{app} is outside the key's scope"}
                for app in outside[:10]
            ],
        )


def require_admin(authorization: str, keys: Keys) -> None:
    """Refused unless the header carries a known key that is not scoped to some apps."""
    if authenticate(authorization, keys).apps is not None:
        raise Refused(403, "this key is scoped to some apps; admin views need an unscoped key")


__all__ = ["Refused", "authenticate", "check_scope", "require_admin"]
