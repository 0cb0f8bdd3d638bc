"""What a write request says, and the records it becomes. Pure: no I/O, no clock.

* ``patch(app_id, subscription_id, body)``: ``PATCH /v1/apps/{app_id}/subscriptions/
  {subscription_id}``, body ``{"properties": {...}}``;
* ``post(body)``: ``POST /v1/updates``, a JSON array of ``{"app_id", "subscription_id",
  "properties"}``; every item is validated before any is accepted.

Both return the updates in request order or raise ``HttpError`` 400 naming each problem (the
shapes and limits are ``app.model.events``'). ``to_records`` turns them into the records of the
update topic as ``app.model.events`` defines them: one record per app, a single update where the
app has one, an update batch where it has more, on the app's partition, keyed by the app ID.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import NamedTuple
from uuid import UUID

from pydantic import ValidationError

from app.ingest.errors import invalid
from app.model import events

#: A patch of one row as the API accepted it: (app ID, subscription ID, properties), the IDs as
#: canonical UUID text. A plain tuple: a POST makes a thousand of them.
Update = tuple[str, str, dict]


class Record(NamedTuple):
    """A record of the update topic, ready to produce."""

    partition: int
    key: bytes
    value: bytes
    headers: list[tuple[str, bytes]]


_CANONICAL = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}").fullmatch


def canonical_uuid(text: str, where: str) -> str:
    """``text`` as canonical UUID text (any spelling ``uuid.UUID`` reads), else 400."""
    if _CANONICAL(text):  # the common spelling, without building a UUID
        return text
    try:
        return str(UUID(text))
    except ValueError:
        raise invalid([{"where": where, "problem": "not a UUID"}]) from None


def patch(app_id: str, subscription_id: str, body: bytes) -> list[Update]:
    """``app_id`` and ``subscription_id`` as ``canonical_uuid`` gave them."""
    try:
        properties = events.PatchBody.validate_json(body)["properties"]
    except ValidationError as exc:
        raise invalid(events.problems_of(exc)) from None
    return [(app_id, subscription_id, properties)]


def post(body: bytes) -> list[Update]:
    try:
        items = events.BatchBody.validate_json(body)
    except ValidationError as exc:
        raise invalid(events.problems_of(exc)) from None
    return [(item["app_id"], item["subscription_id"], item["properties"]) for item in items]


def apps_of(updates: Iterable[Update]) -> set[str]:
    return {update[0] for update in updates}


def to_records(
    updates: list[Update],
    partition_of_app: Callable[[str], int],
    received_at: float,
    trace: list[tuple[str, bytes]] | None = None,
) -> list[Record]:
    """One record per app, in request order per app; ``trace`` (the request's trace context
    headers) goes on each."""
    by_app: dict[str, list[bytes]] = {}
    for app_id, subscription_id, properties in updates:
        by_app.setdefault(app_id, []).append(
            events.encode_update(app_id, subscription_id, properties, received_at)
        )
    records = []
    for app_id, encoded in by_app.items():
        headers = list(trace or ())
        if len(encoded) == 1:
            value = encoded[0]
        else:
            value = events.update_batch(encoded)
            headers.append((events.UPDATES_HEADER, b"%d" % len(encoded)))
        records.append(Record(partition_of_app(app_id), app_id.encode(), value, headers))
    return records
