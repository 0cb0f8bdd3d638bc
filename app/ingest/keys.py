"""API keys as configured in ``ROWSTREAM_API_KEYS``: parsing, hashing and matching. Pure.

One entry per key, comma-separated::

    [NAME=]KEY[:APP|APP…]             the key in plain text
    [NAME=]sha256:<64 hex>[:APP|APP…]  the SHA-256 of the key: the environment holds no secret

``:APP|APP`` limits the key to those app IDs (an unscoped key may touch every app and the admin
views). ``NAME`` labels the key in metrics and logs; without one the label is ``key-`` and the
first 8 hex digits of the key's SHA-256, so a key's label is the same whether it is configured in
plain text or hashed. (A plain key that itself holds a ``=`` followed by another character must
be named.) Several entries may be valid at once: to rotate, add the new key, move the clients,
remove the old one. ``faust -A app hash-key`` prints the hashed entry for a key.

Every presented key is hashed once and compared, in constant time, with every configured hash.
Nothing here puts a key into a message.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable
from typing import NamedTuple
from uuid import UUID

HASHED = "sha256:"
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,63}")
_HEX = re.compile(r"[0-9a-f]{64}")


class ApiKey(NamedTuple):
    name: str  # the label in metrics and logs, never the key
    digest: bytes  # SHA-256 of the key
    apps: frozenset[str] | None  # the app IDs it may touch; None: every app
    plain: str | None  # the key itself when configured in plain text (the CLI calls with it)

    def __repr__(self) -> str:
        return f"ApiKey(name={self.name!r}, apps={self.apps!r})"


def valid_name(name: str) -> bool:
    return _NAME.fullmatch(name) is not None


def digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def label(key_digest: bytes) -> str:
    return f"key-{key_digest.hex()[:8]}"


def hashed_entry(key: str, name: str | None = None) -> str:
    """The ``ROWSTREAM_API_KEYS`` entry that accepts ``key`` without holding it."""
    return f"{name + '=' if name else ''}{HASHED}{digest(key).hex()}"


def parse(entry: str) -> ApiKey:
    """One configured entry; ValueError (naming no secret) when it is malformed."""
    name = None
    head, sep, rest = entry.partition("=")
    if sep and _NAME.fullmatch(head) and rest and not rest.startswith("="):
        name, entry = head, rest
    plain: str | None
    if entry.startswith(HASHED):
        hex_digest, sep, apps_text = entry[len(HASHED) :].partition(":")
        if not _HEX.fullmatch(hex_digest):
            raise ValueError(f"a {HASHED} entry needs the key's SHA-256 as 64 lowercase hex digits")
        key_digest, plain = bytes.fromhex(hex_digest), None
    else:
        plain, sep, apps_text = entry.partition(":")
        if not plain:
            raise ValueError("an API key is empty")
        key_digest = digest(plain)
    apps = None
    if sep:
        try:
            apps = frozenset(str(UUID(app.strip())) for app in apps_text.split("|"))
        except ValueError:
            raise ValueError("a key's scope must be app IDs separated by |") from None
    return ApiKey(name or label(key_digest), key_digest, apps, plain)


def parse_all(entries: Iterable[str]) -> tuple[ApiKey, ...]:
    keys = tuple(parse(entry) for entry in entries)
    if len({key.digest for key in keys}) < len(keys):
        raise ValueError("two entries hold the same key")
    names = [key.name for key in keys]
    for name in names:
        if names.count(name) > 1:
            raise ValueError(f"two keys are named {name!r}")
    return keys


def match(presented: str, keys: Iterable[ApiKey]) -> ApiKey | None:
    """The configured key ``presented`` is, if any: compared with every one, in constant time."""
    given = digest(presented)
    found = None
    for key in keys:
        if hmac.compare_digest(given, key.digest):
            found = key
    return found


__all__ = [
    "HASHED",
    "ApiKey",
    "digest",
    "hashed_entry",
    "label",
    "match",
    "parse",
    "parse_all",
    "valid_name",
]
