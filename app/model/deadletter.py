"""Dead-letter records: the original key and bytes, with the reason and coordinates in headers.

Headers (all UTF-8 text):

* ``rowstream-reason``: ``undecodable`` | ``invalid`` | ``misrouted`` | ``rejected``
* ``rowstream-error``: what was wrong, for a person (at most 2,000 characters)
* ``rowstream-topic``, ``rowstream-partition``, ``rowstream-offset``: where the event stood in
  the update topic (for ``rejected``: its origin in the update topic, recovered from the version)
* ``rowstream-seen-topic``, ``rowstream-seen-partition``, ``rowstream-seen-offset``: where the
  agent that gave up read it (differs from the above for events rejected by the sink)
* ``rowstream-seen-index``: for an update read from a batch record of the internal topic, its
  place in the record's ``updates`` (absent for a whole record and on the update topic)

The value of a dead letter from the internal topic is the update alone (as on the update topic),
so that ``dlq redrive`` can send it again; where the origin in the update topic is not known (a
record that is not a batch record), the origin headers repeat where it was seen.
"""

from __future__ import annotations

from typing import NamedTuple, Protocol

import orjson

from app.model.events import BadEntry, Versioned, encode_update

MAX_ERROR_CHARS = 2000


class Coordinates(NamedTuple):
    topic: str
    partition: int
    offset: int


class DeadLetter(NamedTuple):
    key: bytes | None
    value: bytes
    partition: int
    headers: list[tuple[str, bytes]]


def dead_letter(
    key: bytes | None,
    value: bytes,
    reason: str,
    error: str,
    origin: Coordinates,
    seen: Coordinates | None = None,
    index: int | None = None,
) -> DeadLetter:
    seen = seen or origin
    headers = [
        ("rowstream-reason", reason),
        ("rowstream-error", error[:MAX_ERROR_CHARS]),
        ("rowstream-topic", origin.topic),
        ("rowstream-partition", str(origin.partition)),
        ("rowstream-offset", str(origin.offset)),
        ("rowstream-seen-topic", seen.topic),
        ("rowstream-seen-partition", str(seen.partition)),
        ("rowstream-seen-offset", str(seen.offset)),
    ]
    if index is not None:
        headers.append(("rowstream-seen-index", str(index)))
    return DeadLetter(
        key, value, origin.partition, [(name, text.encode()) for name, text in headers]
    )


def app_key(update: bytes) -> bytes | None:
    """The key of a dead-lettered update taken out of a record holding many: its app ID, if it
    has one to read (as on the update topic)."""
    try:
        return str(orjson.loads(update)["app_id"]).encode()
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return None


class Seen(Protocol):
    """Where an agent read a record: an aiokafka ``ConsumerRecord`` is one."""

    topic: str
    partition: int
    offset: int
    key: bytes | None


def for_bad_entry(record: Seen, bad: BadEntry, source_topic: str) -> DeadLetter:
    """The letter for a part of a record an agent cannot apply: the whole record (``bad.index``
    None, with the record's key) or one update of a record holding many (keyed by its app ID).
    Its origin is the update's place in the update topic when the record says it (a batch
    record's entries do), else where it was read."""
    seen = Coordinates(record.topic, record.partition, record.offset)
    origin = seen
    if bad.version is not None and bad.source_partition is not None:
        origin = Coordinates(source_topic, bad.source_partition, bad.version)
    key = record.key if bad.index is None else app_key(bad.raw)
    return dead_letter(key, bad.raw, bad.error.reason, str(bad.error), origin, seen, bad.index)


def for_rejected(record: Seen, update: Versioned, error: str, source_topic: str) -> DeadLetter:
    """The letter for an update of a batch record that Postgres refused: the update alone, as on
    the update topic, with its origin there recovered from its version."""
    return dead_letter(
        key=update.app_id.encode(),
        value=encode_update(
            update.app_id, update.subscription_id, update.properties, update.received_at
        ),
        reason="rejected",
        error=error,
        origin=Coordinates(source_topic, update.source_partition, update.version),
        seen=Coordinates(record.topic, record.partition, record.offset),
        index=update.index,
    )
