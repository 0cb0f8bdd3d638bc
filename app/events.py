"""What an update is, on the HTTP API and on both topics; validation with exact problem locations.

Wire formats (JSON, UTF-8; renaming a field is a data migration):

* update topic ``subscription-updates``, key = app ID::

    {"app_id": uuid, "subscription_id": uuid, "properties": {...}, "received_at": epoch-seconds}

* internal topic ``rowstream-by-subscription``, key = subscription ID: the same fields plus
  ``version`` (the offset of the event in the update topic) and ``source_partition``.

The agents read raw bytes and decode here, not through Faust Records, so that a message that
does not decode is dead-lettered with its reason instead of being dropped by the framework.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Optional
from uuid import UUID

import orjson
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictStr, TypeAdapter, ValidationError

MAX_BODY_BYTES = 1024 * 1024
# A Kafka record of ours: one update of up to MAX_BODY_BYTES, plus the fields the API and the
# repartition add, plus a dead letter's headers. Producers and topics allow this much (Kafka's own
# default, ~1 MB, would refuse the largest update the API accepts).
MAX_RECORD_BYTES = 2 * 1024 * 1024
MAX_ITEMS = 1000
MAX_PROPERTIES = 256
MAX_KEY_CHARS = 128
MAX_STRING_BYTES = 4096
INT64 = 2**63


def _no_nul(text: str) -> str:
    # Postgres jsonb cannot store U+0000: refuse it here instead of at write time.
    if "\x00" in text:
        raise ValueError("must not contain the NUL character (U+0000)")
    return text


def _scalar(value: Any) -> Any:
    """A property value: a JSON scalar (string, number, boolean) or null (delete the key)."""
    kind = type(value)
    if kind is str:
        if len(value) * 4 > MAX_STRING_BYTES and len(value.encode("utf-8")) > MAX_STRING_BYTES:
            raise ValueError(f"string values are at most {MAX_STRING_BYTES} bytes of UTF-8")
        return _no_nul(value)
    if kind is int:
        if not -INT64 <= value < INT64:
            raise ValueError("integers must fit in 64 bits")
        return value
    if kind is float:
        if not math.isfinite(value):
            raise ValueError("numbers must be finite")
        return value
    if value is None or kind is bool:
        return value
    raise ValueError("values must be a string, number, boolean or null")


PropertyKey = Annotated[
    StrictStr, Field(min_length=1, max_length=MAX_KEY_CHARS), AfterValidator(_no_nul)
]
PropertyValue = Annotated[Any, AfterValidator(_scalar)]
Properties = Annotated[dict[PropertyKey, PropertyValue], Field(max_length=MAX_PROPERTIES)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class PatchBody(_Strict):
    """Body of ``PATCH /v1/apps/{app_id}/subscriptions/{subscription_id}``."""

    properties: Properties


class UpdateRequest(_Strict):
    """One item of ``POST /v1/updates``: a patch of one row."""

    app_id: Annotated[UUID, Field(strict=False)]
    subscription_id: Annotated[UUID, Field(strict=False)]
    properties: Properties


class Update(UpdateRequest):
    """One patch of one row on the update topic: set keys, delete the keys whose value is null."""

    received_at: Optional[float] = None


class Versioned(Update):
    """An update on the internal topic: ``version`` orders the patches of one row."""

    version: Annotated[int, Field(ge=0)]
    source_partition: Annotated[int, Field(ge=0)]


BatchBody = TypeAdapter(Annotated[list[UpdateRequest], Field(max_length=MAX_ITEMS)])


class InvalidEvent(Exception):
    """A message or request that cannot be applied. ``reason`` is a short metric label."""

    def __init__(self, reason: str, problems: list[dict[str, str]]) -> None:
        super().__init__("; ".join(f"{p['where']}: {p['problem']}" for p in problems))
        self.reason = reason
        self.problems = problems


def problems_of(exc: ValidationError, prefix: str = "") -> list[dict[str, str]]:
    """Readable ``{"where", "problem"}`` items of a pydantic error (no input values echoed)."""
    found = []
    for error in exc.errors(include_url=False, include_input=False):
        where = prefix
        for part in error["loc"]:
            if part == "[key]":  # the problem is the key itself, named by the part before
                where += " (key)"
            elif isinstance(part, int):
                where += f"[{part}]"
            else:
                where += f".{part}" if where else str(part)
        found.append({"where": where or "body", "problem": error["msg"].removeprefix("Value error, ")})
    return found


def _decode(model: type[_Strict], raw: bytes) -> Any:
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        reason = "undecodable" if exc.errors()[0]["type"] == "json_invalid" else "invalid"
        raise InvalidEvent(reason, problems_of(exc)) from None


def decode_update(raw: bytes) -> Update:
    """Decode a message of the update topic; raise InvalidEvent (undecodable/invalid)."""
    return _decode(Update, raw)


def decode_versioned(raw: bytes) -> Versioned:
    """Decode a message of the internal topic; raise InvalidEvent (undecodable/invalid)."""
    return _decode(Versioned, raw)


def encode_update(app_id: str, subscription_id: str, properties: dict, received_at: float) -> bytes:
    return orjson.dumps(
        {
            "app_id": app_id,
            "subscription_id": subscription_id,
            "properties": properties,
            "received_at": received_at,
        }
    )


def encode_versioned(app_id: str, subscription_id: str, properties: dict, received_at: float,
                     version: int, source_partition: int) -> bytes:
    return orjson.dumps(
        {
            "app_id": app_id,
            "subscription_id": subscription_id,
            "properties": properties,
            "received_at": received_at,
            "version": version,
            "source_partition": source_partition,
        }
    )
