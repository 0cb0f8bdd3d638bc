"""What an update is, on the HTTP API and on both topics; validation with exact problem locations.

Wire formats (JSON, UTF-8; renaming a field is a data migration):

* update topic ``subscription-updates``, key = app ID, partition = the app's: either one update
  per record::

    {"app_id": uuid, "subscription_id": uuid, "properties": {...}, "received_at": epoch-seconds}

  or an **update batch** of one app, with the header ``rowstream-updates`` (how many it holds;
  the API writes one per app of a ``POST /v1/updates`` with more than one update of that app)::

    {"format": "rowstream-updates/1", "updates": [{an update as above}, ...]}

  Every update of a record has the record's offset as its version; the repartition folds the
  updates of one row inside one record into one (patches compose exactly: "last writer per key
  wins", nulls delete), so a version names one update of a row and versions increase strictly
  per row. A bad update inside an update batch is dead-lettered alone, with its index.

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
  row. An entry's update may hold up to 1,000 × 256 properties (a fold of a whole update batch
  of one row). ``format`` names this layout: a reader refuses a record of another format (dead
  letter, reason ``invalid``) instead of guessing, so a new layout gets a new name and readers
  learn it before writers use it.

The agents read raw bytes and decode here, not through Faust Records, so that a message that
does not decode is dead-lettered with its reason instead of being dropped by the framework.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Annotated, Any, Literal, NamedTuple, NotRequired
from uuid import UUID

import orjson
from pydantic import (
    AfterValidator,
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    TypeAdapter,
    ValidationError,
    with_config,
)
from typing_extensions import TypedDict

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

BATCH_FORMAT = "rowstream-batch/1"  # the internal topic's records
UPDATES_FORMAT = "rowstream-updates/1"  # an update batch on the update topic
UPDATES_HEADER = "rowstream-updates"  # on every record of either format: how many updates


# --- the shapes, each validated at two speeds -------------------------------------------------
#
# ``Exact`` is the definition: Python validators name each problem precisely, and a UUID may be
# spelled any way ``uuid.UUID`` reads (it comes out as canonical text). ``Fast`` runs every check
# inside pydantic-core, at about a third of the cost of Exact plus the UUID's text, but accepts
# less: canonical UUID text only, strings of at most 1,024 characters (so at most 4,096 bytes of
# UTF-8), and only JSON that holds no ``\u0000`` and no run of 19 digits (so no NUL anywhere and
# no integer outside 64 bits). Whatever Fast accepts, Exact accepts with an equal result
# (tests/unit/test_events.py checks it on generated input); what Fast refuses is validated again
# by Exact, which accepts it or names its problems. So the result never depends on the speed.


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


class _Kinds(NamedTuple):
    """The field types a shape is built of, at one speed."""

    uuid: Any
    key: Any
    value: Any


Exact = _Kinds(
    uuid=Annotated[UUID, Field(strict=False), AfterValidator(str)],
    key=Annotated[
        StrictStr, Field(min_length=1, max_length=MAX_KEY_CHARS), AfterValidator(_no_nul)
    ],
    value=Annotated[Any, AfterValidator(_scalar)],
)
_CANONICAL_UUID = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
Fast = _Kinds(
    uuid=Annotated[StrictStr, Field(pattern=_CANONICAL_UUID)],
    key=Annotated[StrictStr, Field(min_length=1, max_length=MAX_KEY_CHARS)],
    value=None
    | StrictBool
    | StrictInt
    | Annotated[StrictFloat, Field(allow_inf_nan=False)]
    | Annotated[StrictStr, Field(max_length=MAX_STRING_BYTES // 4)],
)
_DIGITS_AS_ZERO = bytes.maketrans(b"123456789", b"000000000")


def outside_fast(raw: bytes) -> bool:
    """JSON that Fast leaves to Exact: it holds ``\\u0000`` or a run of 19 digits. (Two scans in
    C, a tenth of the cost of one regular expression.)"""
    return b"\\u0000" in raw or b"0" * 19 in raw.translate(_DIGITS_AS_ZERO)


_STRICT = ConfigDict(extra="forbid", strict=True)


def _shape(name: str, fields: dict[str, Any]) -> Any:
    return with_config(_STRICT)(TypedDict(name, fields))  # type: ignore[operator]


def _properties(kinds: _Kinds, most: int = MAX_PROPERTIES) -> Any:
    return Annotated[dict[kinds.key, kinds.value], Field(max_length=most)]  # type: ignore[name-defined]


def _update(kinds: _Kinds, most: int = MAX_PROPERTIES, received_at: bool = True) -> Any:
    """A patch of one row: set keys, delete the keys whose value is null. On the update topic it
    may carry ``received_at``; an item of ``POST /v1/updates`` may not."""
    fields = {
        "app_id": kinds.uuid,
        "subscription_id": kinds.uuid,
        "properties": _properties(kinds, most),
    }
    if received_at:
        fields["received_at"] = NotRequired[float | None]
    return _shape("Update", fields)


class _TwoSpeed:
    """A shape's validator: Fast where it accepts, else Exact (see above)."""

    def __init__(self, make: Any) -> None:
        self.fast, self.exact = TypeAdapter(make(Fast)), TypeAdapter(make(Exact))

    def validate_json(self, raw: bytes) -> Any:
        """The validated value; raises ``ValidationError`` with Exact's problems."""
        if not outside_fast(raw):
            try:
                return self.fast.validate_json(raw)
            except ValidationError:
                pass
        return self.exact.validate_json(raw)


PatchBody = _TwoSpeed(lambda k: _shape("PatchBody", {"properties": _properties(k)}))
"""Body of ``PATCH /v1/apps/{app_id}/subscriptions/{subscription_id}``."""

BatchBody = _TwoSpeed(
    lambda k: Annotated[list[_update(k, received_at=False)], Field(max_length=MAX_ITEMS)]  # type: ignore[misc]  # a shape built at run time
)
"""Body of ``POST /v1/updates``: patches of rows."""

_single = _TwoSpeed(_update)  # an update of the update topic: a record, or one of an update batch
_update_batch = _TwoSpeed(
    lambda k: _shape(
        "UpdateBatch",
        {
            "format": Literal[UPDATES_FORMAT],
            "updates": Annotated[list[_update(k)], Field(min_length=1, max_length=MAX_ITEMS)],  # type: ignore[misc]  # a shape built at run time
        },
    )
)


def _entry_shape(kinds: _Kinds) -> Any:
    """One update of a batch record on the internal topic. ``u`` may be the fold of up to
    ``MAX_ITEMS`` updates of one row (one update batch), so it may set up to that many times
    ``MAX_PROPERTIES`` properties."""
    return _shape(
        "Entry",
        {
            "v": Annotated[int, Field(ge=0)],
            "p": Annotated[int, Field(ge=0)],
            "t": float,
            "u": _update(kinds, MAX_ITEMS * MAX_PROPERTIES),
            "tp": NotRequired[str],
        },
    )


_entry = _TwoSpeed(_entry_shape)
_batch_record = _TwoSpeed(
    lambda k: _shape(
        "BatchRecord",
        {
            "format": Literal[BATCH_FORMAT],
            "updates": Annotated[list[_entry_shape(k)], Field(min_length=1)],  # type: ignore[misc]  # a shape built at run time
        },
    )
)


MARKER_HEADER = "rowstream-marker"  # a move's marker record (``app.ops.moves``): the move's id


def marker(move_id: int, slots: str) -> tuple[bytes, list[tuple[str, bytes]]]:
    """A move's marker record: value and headers. It holds no update; the agents that read it
    learn that the move's slots are frozen from here on in that partition."""
    value = orjson.dumps({"marker": move_id, "slots": slots})
    return value, [(MARKER_HEADER, str(move_id).encode()), (UPDATES_HEADER, b"0")]


def marker_of(headers: Any) -> int | None:
    """The move whose marker a record is, or None for any other record."""
    for name, value in headers or ():
        if name == MARKER_HEADER:
            try:
                return int(value)
            except ValueError:
                return None
    return None


def updates_in(headers: Any) -> int:
    """How many updates a record holds: its ``rowstream-updates`` header, or one (a record
    without it is a single update, or poison that becomes one dead letter)."""
    for name, count in headers or ():
        if name == UPDATES_HEADER:
            try:
                return max(1, int(count))
            except ValueError:
                return 1
    return 1


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
        found.append(
            {"where": where or "body", "problem": error["msg"].removeprefix("Value error, ")}
        )
    return found


def decode_update(raw: bytes) -> SourceUpdate:
    """Decode a record of the update topic that holds one update; raise InvalidEvent
    (undecodable/invalid)."""
    try:
        update = _single.validate_json(raw)
    except ValidationError as exc:
        reason = "undecodable" if exc.errors()[0]["type"] == "json_invalid" else "invalid"
        raise InvalidEvent(reason, problems_of(exc)) from None
    return SourceUpdate(
        None, update["app_id"], update["subscription_id"], update["properties"], raw
    )


class Versioned(NamedTuple):
    """An update read from a batch record, with where it stands there and where it came from."""

    index: int  # type: ignore[assignment]  # its place in the batch record (shadows tuple.index)
    version: int  # its offset in the update topic
    source_partition: int
    received_at: float
    app_id: str  # canonical UUID text
    subscription_id: str
    properties: dict
    trace: str | None  # the ingest span's traceparent, if any


class BadEntry(NamedTuple):
    """A part of a batch record that cannot be applied (``index`` None: the whole record)."""

    index: int | None  # type: ignore[assignment]  # shadows tuple.index, like each index below
    raw: bytes  # the update (the entry itself when it has none), as JSON
    error: InvalidEvent
    version: int | None
    source_partition: int | None


def _versioned(index: int, entry: dict) -> Versioned:
    update = entry["u"]
    received_at = update.get("received_at")
    if received_at is None:
        received_at = entry["t"]
    return Versioned(
        index,
        entry["v"],
        entry["p"],
        received_at,
        update["app_id"],
        update["subscription_id"],
        update["properties"],
        entry.get("tp"),
    )


def _whole(raw: bytes, reason: str, where: str, problem: str) -> tuple[list, list[BadEntry]]:
    """A record that cannot be applied at all: one bad part, no updates."""
    return [], [
        BadEntry(
            None, raw, InvalidEvent(reason, [{"where": where, "problem": problem}]), None, None
        )
    ]


def _envelope(parsed: Any, format_: str, most: int | None = None) -> bool:
    """``parsed`` is ``{"format": format_, "updates": [1 to most items]}`` and nothing more."""
    updates = parsed.get("updates") if isinstance(parsed, dict) else None
    return (
        isinstance(updates, list)
        and parsed.get("format") == format_
        and set(parsed) == {"format", "updates"}
        and (most is None or 1 <= len(updates) <= most)
    )


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
        return _whole(raw, "undecodable", "body", f"not JSON: {exc}")
    if not _envelope(parsed, BATCH_FORMAT):
        return _whole(
            raw,
            "invalid",
            "body",
            f"not a batch record of format {BATCH_FORMAT!r} (an object with exactly "
            f"'format' and a list 'updates')",
        )
    good, bad = [], []
    for index, item in enumerate(parsed["updates"]):
        encoded = orjson.dumps(item)
        try:
            good.append(_versioned(index, _entry.validate_json(encoded)))
        except ValidationError as exc:
            fields = item if isinstance(item, dict) else {}
            update = fields.get("u")
            version, partition = fields.get("v"), fields.get("p")
            bad.append(
                BadEntry(
                    index,
                    orjson.dumps(update) if isinstance(update, dict) else encoded,
                    InvalidEvent("invalid", problems_of(exc, f"updates[{index}]")),
                    version if type(version) is int and version >= 0 else None,
                    partition if type(partition) is int and partition >= 0 else None,
                )
            )
    return good, bad


class SourceUpdate(NamedTuple):
    """An update read from the update topic, in either form."""

    index: int | None  # type: ignore[assignment]  # its place in an update batch (None: one update)
    app_id: str  # canonical UUID text
    subscription_id: str
    properties: dict
    raw: bytes  # the update as JSON, as it stood on the topic


_UPDATE_BATCH_START = b'{"format":"' + UPDATES_FORMAT.encode() + b'"'


def decode_source(raw: bytes) -> tuple[list[SourceUpdate], list[BadEntry]]:
    """The updates of a record of the update topic (one update, or an update batch), and the
    parts that cannot be applied: a bad update inside a good batch costs only itself."""
    not_an_update: InvalidEvent | None = None
    if not raw.startswith(_UPDATE_BATCH_START):  # the API's update batches start so; others
        try:  # try the single form first
            return [decode_update(raw)], []
        except InvalidEvent as exc:
            not_an_update = exc
    try:
        batch = _update_batch.validate_json(raw)
    except ValidationError:
        pass  # find out which parts are bad, below
    else:
        items = orjson.loads(raw)["updates"]
        return [
            SourceUpdate(
                index,
                u["app_id"],
                u["subscription_id"],
                u["properties"],
                orjson.dumps(items[index]),
            )
            for index, u in enumerate(batch["updates"])
        ], []
    try:
        parsed = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        if not_an_update is None:
            not_an_update = InvalidEvent(
                "undecodable", [{"where": "body", "problem": f"not JSON: {exc}"}]
            )
        parsed = None
    if not isinstance(parsed, dict) or parsed.get("format") != UPDATES_FORMAT:
        if not_an_update is not None:  # a bad single update
            return [], [BadEntry(None, raw, not_an_update, None, None)]
        return _whole(
            raw,
            "invalid",
            "format",  # e.g. a second "format" key
            f"must be {UPDATES_FORMAT!r} for an update batch",
        )
    if not _envelope(parsed, UPDATES_FORMAT, MAX_ITEMS):
        return _whole(
            raw,
            "invalid",
            "body",
            f"an update batch of format {UPDATES_FORMAT!r} is "
            f"an object with exactly 'format' and a list of "
            f"1 to {MAX_ITEMS} 'updates'",
        )
    good, bad = [], []
    for index, item in enumerate(parsed["updates"]):
        encoded = orjson.dumps(item)
        try:
            u = _single.validate_json(encoded)
        except ValidationError as exc:
            bad.append(
                BadEntry(
                    index,
                    encoded,
                    InvalidEvent("invalid", problems_of(exc, f"updates[{index}]")),
                    None,
                    None,
                )
            )
            continue
        good.append(
            SourceUpdate(index, u["app_id"], u["subscription_id"], u["properties"], encoded)
        )
    return good, bad


def decode_source_at(
    raw: bytes, partition: int, home: Callable[[str], int]
) -> tuple[list[SourceUpdate], list[BadEntry]]:
    """``decode_source`` of a record read on ``partition``: an update of an app whose partition
    (``home``, the layout's ``source_partition``) is another is bad too, as ``misrouted``."""
    updates, bad = decode_source(raw)
    routed = []
    for update in updates:
        expected = home(update.app_id)
        if partition == expected:
            routed.append(update)
            continue
        bad.append(
            BadEntry(
                update.index,
                update.raw,
                InvalidEvent(
                    "misrouted",
                    [
                        {
                            "where": "partition",
                            "problem": f"app {update.app_id} belongs on partition {expected}, "
                            f"not {partition} (produce through the API or its partitioner)",
                        }
                    ],
                ),
                None,
                None,
            )
        )
    return routed, bad


def fold_rows(updates: list[SourceUpdate]) -> list[SourceUpdate]:
    """One update per row, in the order each row first appears: a row's patches folded in order
    ("last writer per key wins", nulls kept: they delete), which is exact (``app.sink.coalesce``).
    An update that needs no fold keeps its raw bytes."""
    rows: dict[tuple[str, str], list[SourceUpdate]] = {}
    for update in updates:
        rows.setdefault((update.app_id, update.subscription_id), []).append(update)
    if len(rows) == len(updates):
        return updates
    folded = []
    for (app_id, subscription_id), parts in rows.items():
        if len(parts) == 1:
            folded.append(parts[0])
            continue
        properties: dict = {}
        for part in parts:
            properties.update(part.properties)
        received_at = orjson.loads(parts[-1].raw).get("received_at")
        folded.append(
            SourceUpdate(
                parts[-1].index,
                app_id,
                subscription_id,
                properties,
                encode_update(app_id, subscription_id, properties, received_at),
            )
        )
    return folded


def encode_update(
    app_id: str, subscription_id: str, properties: dict, received_at: float | None
) -> bytes:
    """One update as the update topic holds it (the fields in this order; orjson's JSON for each
    value, put together without building a dict: the ingest tier does this per update)."""
    return b'{"app_id":%b,"subscription_id":%b,"properties":%b,"received_at":%b}' % (
        orjson.dumps(app_id),
        orjson.dumps(subscription_id),
        orjson.dumps(properties),
        orjson.dumps(received_at),
    )


def batch_entry(
    version: int,
    source_partition: int,
    timestamp: float,
    update: bytes,
    trace: bytes | None = None,
) -> bytes:
    """One entry of a batch record. ``update`` is the source record's value, which the caller
    has decoded (``decode_update``): it is a JSON object and goes in as it is."""
    if trace is None:
        return b'{"v":%d,"p":%d,"t":%.3f,"u":%b}' % (version, source_partition, timestamp, update)
    return b'{"v":%d,"p":%d,"t":%.3f,"u":%b,"tp":%b}' % (
        version,
        source_partition,
        timestamp,
        update,
        orjson.dumps(trace.decode("ascii", "replace")),
    )


def batch_record(entries: list[bytes]) -> bytes:
    """A batch record of entries made by ``batch_entry``."""
    return b'{"format":"' + BATCH_FORMAT.encode() + b'","updates":[' + b",".join(entries) + b"]}"


def update_batch(updates: list[bytes]) -> bytes:
    """An update batch of the update topic, of updates made by ``encode_update``."""
    return b'{"format":"' + UPDATES_FORMAT.encode() + b'","updates":[' + b",".join(updates) + b"]}"
