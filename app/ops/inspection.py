"""What the inspection commands compute from records: pure, no I/O.

A record here is ``Seen``: a message of the update, internal or dead-letter topic with its value
decoded as far as it goes (a dead letter's value is the original bytes, maybe undecodable). A
batch record of the internal topic, and an update batch of the update topic, is shown as one
``Seen`` per update (``unbatch``), with its place in the record as ``index``, so that filters,
output and counts work per update.
"""

from __future__ import annotations

import base64
import re
from collections import Counter, defaultdict
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, NamedTuple

import orjson

from app.model.events import UPDATES_FORMAT

_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_time(text: str, now: float) -> float:
    """``15m``, ``2h``, ``30s``, ``1d`` (ago) or an ISO-8601 time → epoch seconds."""
    match = _RELATIVE.match(text.strip())
    if match:
        return now - float(match.group(1)) * _UNITS[match.group(2)]
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"{text!r} is neither a duration like 15m / 2h / 30s nor an ISO time"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


class Seen(NamedTuple):
    topic: str
    partition: int
    offset: int
    timestamp: float  # seconds
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()
    index: int | None = None  # type: ignore[assignment]  # its place in a batch record

    @property
    def body(self) -> dict | None:
        """The value as a JSON object, or None when it is not one."""
        try:
            decoded = orjson.loads(self.value or b"")
        except orjson.JSONDecodeError:
            return None
        return decoded if isinstance(decoded, dict) else None

    def as_json(self) -> dict[str, Any]:
        body = self.body
        out: dict[str, Any] = {
            "topic": self.topic,
            "partition": self.partition,
            "offset": self.offset,
            **({} if self.index is None else {"index": self.index}),
            "timestamp": datetime.fromtimestamp(self.timestamp, UTC).isoformat(),
            "key": (self.key or b"").decode(errors="replace"),
        }
        if body is not None:
            out["value"] = body
        else:
            out["value_base64"] = base64.b64encode(self.value or b"").decode()
        if self.headers:
            out["headers"] = {name: value.decode(errors="replace") for name, value in self.headers}
        return out


def unbatch(seen: Seen) -> list[Seen]:
    """A batch record of the internal topic as one ``Seen`` per update (the update with its
    ``version`` and ``source_partition``), an update batch of the update topic as one per update;
    any other record as it is."""
    body = seen.body
    updates = body.get("updates") if body is not None and "format" in body else None
    if body is None or not isinstance(updates, list):
        return [seen]
    if body.get("format") == UPDATES_FORMAT:  # an update batch: its entries are updates
        return [
            seen._replace(value=orjson.dumps(entry), index=index)
            for index, entry in enumerate(updates)
        ]
    found = []
    for index, entry in enumerate(updates):
        if isinstance(entry, dict) and isinstance(entry.get("u"), dict):
            value = orjson.dumps(
                {**entry["u"], "version": entry.get("v"), "source_partition": entry.get("p")}
            )
        else:
            value = orjson.dumps(entry)
        found.append(seen._replace(value=value, index=index))
    return found


class Filter(NamedTuple):
    app_id: str | None = None
    subscription_id: str | None = None
    property_key: str | None = None
    reason: str | None = None  # dead letters only
    since: float | None = None
    until: float | None = None

    def matches(self, seen: Seen) -> bool:
        if self.since is not None and seen.timestamp < self.since:
            return False
        if self.until is not None and seen.timestamp > self.until:
            return False
        if (
            self.reason is not None
            and dict(seen.headers).get("rowstream-reason") != self.reason.encode()
        ):
            return False
        if self.app_id or self.subscription_id or self.property_key:
            body = seen.body or {}
            if self.app_id and body.get("app_id") != self.app_id:
                return False
            if self.subscription_id and body.get("subscription_id") != self.subscription_id:
                return False
            properties = body.get("properties")
            if self.property_key and not (
                isinstance(properties, dict) and self.property_key in properties
            ):
                return False
        return True


class Talker(NamedTuple):
    who: str
    events: int
    peak: int  # most events in one window
    peak_window: str  # start of that window
    share: float  # of all events in the range


def top_talkers(
    records: Iterable[Seen], window: float, top: int
) -> tuple[list[Talker], list[Talker], int]:
    """The apps and the rows with the most events, and their busiest window: who floods whom."""
    apps: Counter = Counter()
    rows: Counter = Counter()
    app_windows: dict[str, Counter] = defaultdict(Counter)
    row_windows: dict[str, Counter] = defaultdict(Counter)
    total = 0
    for seen in records:
        body = seen.body
        if not body or "app_id" not in body:
            continue
        total += 1
        bucket = int(seen.timestamp // window)
        app = str(body["app_id"])
        row = f"{app}/{body.get('subscription_id')}"
        apps[app] += 1
        rows[row] += 1
        app_windows[app][bucket] += 1
        row_windows[row][bucket] += 1

    def ranked(counts: Counter, windows: dict[str, Counter]) -> list[Talker]:
        out = []
        for who, events in counts.most_common(top):
            bucket, peak = windows[who].most_common(1)[0]
            start = datetime.fromtimestamp(bucket * window, UTC).strftime("%Y-%m-%d %H:%M:%S")
            out.append(Talker(who, events, peak, start, round(events / total, 4)))
        return out

    return ranked(apps, app_windows), ranked(rows, row_windows), total


__all__ = ["Filter", "Seen", "Talker", "parse_time", "top_talkers", "unbatch"]
