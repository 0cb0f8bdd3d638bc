"""What an update is, on the HTTP API and on both topics; validation with exact problem locations.

Wire formats (JSON, UTF-8; renaming a field is a data migration):

* update topic ``subscription-updates``, key = app ID, one update per record::

    {"app_id": uuid, "subscription_id": uuid, "properties": {...}, "received_at": epoch-seconds}

* internal topic ``rowstream-by-subscription``, no key, partition = the rows' target partition:
  a **batch record** holding many updates, each with its version and origin::

    {"format": "rowstream-batch/1",
     "updates": [{"v": version, "p": source partition, "t": source timestamp (epoch s),
                  "u": {the update, as on the update topic}, "tp": "traceparent (optional)"},
                 ...]}

  Each batch record carries the header ``rowstream-updates``: how many updates it holds (the lag
  monitor counts waiting updates from it). ``v`` is the update's offset in the update topic
  (the row's version); ``u.received_at`` may be
  null, and then ``t`` stands for it. The entries of one batch record are in source order per
  row. ``format`` names this layout: a reader refuses a record of another format (dead letter,
  reason ``invalid``) instead of guessing.

The agents read raw bytes and decode here, not through Faust Records, so that a message that
does not decode is dead-lettered with its reason instead of being dropped by the framework.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal, NamedTuple, Optional

from typing_extensions import NotRequired, TypedDict
from uuid import UUID

import orjson
from pydantic import (AfterValidator, BaseModel, ConfigDict, Field, StrictStr, TypeAdapter,
                      ValidationError, with_config)

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


BATCH_FORMAT = "rowstream-batch/1"
UPDATES_HEADER = "rowstream-updates"  # on each batch record: how many updates it holds


def updates_in(headers: Any, value: Optional[bytes]) -> int:
    """How many updates a record of the internal topic holds: its header, or its value."""
    for name, count in headers or ():
        if name == UPDATES_HEADER:
            try:
                return int(count)
            except ValueError:
                break
    try:
        updates = orjson.loads(value or b"").get("updates")
    except (orjson.JSONDecodeError, AttributeError):
        return 1  # poison: one part for the dead-letter topic
    return len(updates) if isinstance(updates, list) else 1


@with_config(ConfigDict(extra="forbid", strict=True))
class UpdateFields(TypedDict):
    """An update inside a batch record: the fields of ``Update``, validated into a plain dict (the
    sink reads hundreds per record; a model instance each cost a third more)."""

    app_id: Annotated[UUID, Field(strict=False)]
    subscription_id: Annotated[UUID, Field(strict=False)]
    properties: Properties
    received_at: NotRequired[Optional[float]]


@with_config(ConfigDict(extra="forbid", strict=True))
class Entry(TypedDict):
    """One update of a batch record on the internal topic."""

    v: Annotated[int, Field(ge=0)]
    p: Annotated[int, Field(ge=0)]
    t: float
    u: UpdateFields
    tp: NotRequired[str]


@with_config(ConfigDict(extra="forbid", strict=True))
class BatchRecord(TypedDict):
    """A record of the internal topic (see the module docstring)."""

    format: Literal["rowstream-batch/1"]
    updates: Annotated[list[Entry], Field(min_length=1)]


_batch_record = TypeAdapter(BatchRecord)
_entry = TypeAdapter(Entry)


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


class Versioned(NamedTuple):
    """An update read from a batch record, with where it stands there and where it came from."""

    index: int  # its place in the batch record
    version: int  # its offset in the update topic
    source_partition: int
    received_at: float
    app_id: str  # canonical UUID text
    subscription_id: str
    properties: dict
    trace: Optional[str]  # the ingest span's traceparent, if any


class BadEntry(NamedTuple):
    """A part of a batch record that cannot be applied (``index`` None: the whole record)."""

    index: Optional[int]
    raw: bytes  # the update (the entry itself when it has none), as JSON
    error: InvalidEvent
    version: Optional[int]
    source_partition: Optional[int]


def _versioned(index: int, entry: Entry) -> Versioned:
    update = entry["u"]
    received_at = update.get("received_at")
    return Versioned(index, entry["v"], entry["p"], entry["t"] if received_at is None else received_at,
                     str(update["app_id"]), str(update["subscription_id"]), update["properties"],
                     entry.get("tp"))


def decode_batch(raw: bytes) -> tuple[list[Versioned], list[BadEntry]]:
    """The updates of a batch record, and the parts that cannot be applied: a bad update inside a
    good record costs only itself; a record that is not a batch record is one bad part."""
    try:
        record = _batch_record.validate_json(raw)
    except ValidationError:
        pass  # find out which parts are bad, below
    else:
        return [_versioned(i, entry) for i, entry in enumerate(record["updates"])], []
    try:
        parsed = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return [], [BadEntry(None, raw, InvalidEvent("undecodable", [
            {"where": "body", "problem": f"not JSON: {exc}"}]), None, None)]
    if (not isinstance(parsed, dict) or parsed.get("format") != BATCH_FORMAT
            or not isinstance(parsed.get("updates"), list) or set(parsed) != {"format", "updates"}):
        problem = (f"not a batch record of format {BATCH_FORMAT!r} (an object with exactly "
                   f"'format' and a list 'updates')")
        return [], [BadEntry(None, raw, InvalidEvent("invalid", [
            {"where": "body", "problem": problem}]), None, None)]
    good, bad = [], []
    for index, item in enumerate(parsed["updates"]):
        encoded = orjson.dumps(item)
        try:
            good.append(_versioned(index, _entry.validate_json(encoded)))
        except ValidationError as exc:
            fields = item if isinstance(item, dict) else {}
            update = fields.get("u")
            version, partition = fields.get("v"), fields.get("p")
            bad.append(BadEntry(
                index, orjson.dumps(update) if isinstance(update, dict) else encoded,
                InvalidEvent("invalid", problems_of(exc, f"updates[{index}]")),
                version if type(version) is int and version >= 0 else None,
                partition if type(partition) is int and partition >= 0 else None,
            ))
    return good, bad


def encode_update(app_id: str, subscription_id: str, properties: dict, received_at: float) -> bytes:
    return orjson.dumps(
        {
            "app_id": app_id,
            "subscription_id": subscription_id,
            "properties": properties,
            "received_at": received_at,
        }
    )


def batch_entry(version: int, source_partition: int, timestamp: float, update: bytes,
                trace: Optional[bytes] = None) -> bytes:
    """One entry of a batch record. ``update`` is the source record's value, which the caller
    has decoded (``decode_update``): it is a JSON object and goes in as it is."""
    if trace is None:
        return b'{"v":%d,"p":%d,"t":%.3f,"u":%b}' % (version, source_partition, timestamp, update)
    return b'{"v":%d,"p":%d,"t":%.3f,"u":%b,"tp":%b}' % (
        version, source_partition, timestamp, update, orjson.dumps(trace.decode("ascii", "replace")))


def batch_record(entries: list[bytes]) -> bytes:
    """A batch record of entries made by ``batch_entry``."""
    return b'{"format":"' + BATCH_FORMAT.encode() + b'","updates":[' + b",".join(entries) + b"]}"
