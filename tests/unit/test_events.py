"""Validation tables: good and bad requests and topic messages, with the problem each must name."""

import json

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from app.model import events

APP = "0f8fad5b-d9cb-469f-a165-70867728950e"
SUB = "7c9e6679-7425-40de-944b-e07fc1f90ae7"


def message(**overrides):
    body = {"app_id": APP, "subscription_id": SUB, "properties": {"plan": "pro"}, **overrides}
    return orjson.dumps(body)


@pytest.mark.parametrize(
    "properties",
    [
        {},
        {"plan": "pro", "trial": None, "seats": 3, "ratio": 0.5, "active": True},
        {"k" * 128: "v"},
        {"s": "é" * 2048},  # 4096 bytes of UTF-8
        {f"k{n}": n for n in range(256)},
        {"big": 2**63 - 1, "small": -(2**63)},
    ],
)
def test_good_updates(properties):
    update = events.decode_update(message(properties=properties))
    assert update.properties == properties
    assert str(update.app_id) == APP


@pytest.mark.parametrize(
    "raw, reason, where, problem",
    [
        (b"\xff\xfe\x00", "undecodable", "body", "Invalid JSON"),
        (b"not json", "undecodable", "body", "Invalid JSON"),
        (b"", "undecodable", "body", "Invalid JSON"),
        (b"[1, 2]", "invalid", "body", "should be an object"),
        (message(app_id="nope"), "invalid", "app_id", "valid UUID"),
        (message(subscription_id=7), "invalid", "subscription_id", "UUID"),
        (message(properties=[]), "invalid", "properties", "should be an object"),
        (
            message(properties={"a": [1]}),
            "invalid",
            "properties.a",
            "string, number, boolean or null",
        ),
        (message(properties={"a": {"b": 1}}), "invalid", "properties.a", "string, number, boolean"),
        (message(properties={"": 1}), "invalid", "properties. (key)", "at least 1 character"),
        (
            message(properties={"k" * 129: 1}),
            "invalid",
            f"properties.{'k' * 129} (key)",
            "at most 128 characters",
        ),
        (message(properties={"s": "x" * 4097}), "invalid", "properties.s", "at most 4096 bytes"),
        (message(properties={"s": "é" * 2049}), "invalid", "properties.s", "at most 4096 bytes"),
        (message(properties={"s": "a\x00b"}), "invalid", "properties.s", "NUL"),
        (message(properties={"a\x00": 1}), "invalid", "properties.a\x00 (key)", "NUL"),
        (message(properties={"n": 2**63}), "invalid", "properties.n", "64 bits"),
        (
            message(properties={f"k{n}": n for n in range(257)}),
            "invalid",
            "properties",
            "at most 256",
        ),
        (
            b'{"app_id":"%s","subscription_id":"%s","properties":{"n":1e999}}'
            % (APP.encode(), SUB.encode()),
            "invalid",
            "properties.n",
            "finite",
        ),
        (message(extra=1), "invalid", "extra", "Extra inputs"),
        (
            orjson.dumps({"app_id": APP, "properties": {}}),
            "invalid",
            "subscription_id",
            "Field required",
        ),
        (message(received_at="yesterday"), "invalid", "received_at", "valid number"),
    ],
)
def test_bad_update_messages(raw, reason, where, problem):
    with pytest.raises(events.InvalidEvent) as caught:
        events.decode_update(raw)
    assert caught.value.reason == reason
    assert any(p["where"] == where and problem in p["problem"] for p in caught.value.problems), (
        caught.value.problems
    )


def test_problems_never_echo_the_input():
    secret = "Bearer sk-live-123"
    with pytest.raises(events.InvalidEvent) as caught:
        events.decode_update(message(properties={"a": [secret]}))
    assert secret not in str(caught.value)


def test_a_batch_record_round_trip_keeps_versions_origins_and_traces():
    raws = [message(received_at=12.5), message(properties={"b": None})]
    entries = [
        events.batch_entry(41, 9, 100.25, raws[0]),
        events.batch_entry(42, 9, 100.5, raws[1], trace=b"00-abc-01"),
    ]
    record = events.batch_record(entries)
    assert orjson.loads(record)["format"] == events.BATCH_FORMAT
    updates, bad = events.decode_batch(record)
    assert not bad
    assert [(u.index, u.version, u.source_partition, u.received_at, u.trace) for u in updates] == [
        (0, 41, 9, 12.5, None),
        (1, 42, 9, 100.5, "00-abc-01"),
    ]  # no received_at: the timestamp
    expected = events.decode_update(raws[1])
    assert (updates[1].app_id, updates[1].subscription_id, updates[1].properties) == (
        str(expected.app_id),
        str(expected.subscription_id),
        expected.properties,
    )


def test_a_bad_update_inside_a_batch_record_costs_only_itself():
    good = orjson.loads(events.batch_entry(7, 1, 5.0, message()))
    entries = [
        good,
        {**good, "v": 8, "u": {**good["u"], "properties": {"a": [1]}}},
        {**good, "v": 9},
        "not an entry",
        {**good, "v": -1},
    ]
    updates, bad = events.decode_batch(
        orjson.dumps({"format": events.BATCH_FORMAT, "updates": entries})
    )
    assert [u.version for u in updates] == [7, 9]
    assert [(b.index, b.version, b.source_partition, b.error.reason) for b in bad] == [
        (1, 8, 1, "invalid"),
        (3, None, None, "invalid"),
        (4, None, 1, "invalid"),
    ]
    assert "updates[1].u.properties.a" in str(bad[0].error)
    assert orjson.loads(bad[0].raw) == entries[1]["u"]  # the update alone, for a redrive
    assert bad[1].raw == b'"not an entry"'


@pytest.mark.parametrize(
    "raw, reason",
    [
        (b"\xff\x00", "undecodable"),
        (b"[]", "invalid"),
        (b'{"format": "rowstream-batch/2", "updates": []}', "invalid"),
        (b'{"format": "rowstream-batch/1", "updates": {}}', "invalid"),
        (b'{"format": "rowstream-batch/1", "updates": [], "more": 1}', "invalid"),
    ],
)
def test_a_record_that_is_not_a_batch_record_is_one_bad_part(raw, reason):
    updates, bad = events.decode_batch(raw)
    assert updates == [] and len(bad) == 1
    assert (bad[0].index, bad[0].raw, bad[0].error.reason) == (None, raw, reason)


def test_batch_names_each_bad_item_by_index():
    good = {"app_id": APP, "subscription_id": SUB, "properties": {}}
    bad = {"app_id": APP, "subscription_id": "x", "properties": {"a": []}}
    with pytest.raises(ValidationError) as caught:
        events.BatchBody.validate_json(orjson.dumps([good, bad, good, {"app_id": APP}]))
    where = {p["where"] for p in events.problems_of(caught.value)}
    assert where == {
        "[1].subscription_id",
        "[1].properties.a",
        "[3].subscription_id",
        "[3].properties",
    }


def test_batch_limits():
    item = {"app_id": APP, "subscription_id": SUB, "properties": {}}
    assert len(events.BatchBody.validate_json(orjson.dumps([item] * 1000))) == 1000
    with pytest.raises(ValidationError, match="at most 1000"):
        events.BatchBody.validate_json(orjson.dumps([item] * 1001))
    with pytest.raises(ValidationError, match="Extra inputs"):
        events.BatchBody.validate_json(orjson.dumps([{**item, "received_at": 1.0}]))


def test_patch_body():
    assert events.PatchBody.validate_json(b'{"properties": {"a": null}}')["properties"] == {
        "a": None
    }
    for raw in (b"{}", b'{"properties": 1}', b'{"properties": {}, "app_id": "x"}'):
        with pytest.raises(ValidationError):
            events.PatchBody.validate_json(raw)


def test_an_update_batch_of_the_update_topic_decodes_update_by_update():
    raws = [message(properties={"a": n}) for n in range(3)]
    updates, bad = events.decode_source(events.update_batch(raws))
    assert not bad and [u.index for u in updates] == [0, 1, 2]
    assert [u.properties for u in updates] == [{"a": 0}, {"a": 1}, {"a": 2}]
    assert orjson.loads(updates[1].raw) == orjson.loads(raws[1])
    single, bad = events.decode_source(raws[0])
    assert not bad and single[0].index is None and single[0].raw == raws[0]
    assert (single[0].app_id, single[0].subscription_id) == (APP, SUB)


def test_a_bad_update_inside_an_update_batch_costs_only_itself():
    raws = [message(), message(properties={"a": [1]}), message(subscription_id="x")]
    updates, bad = events.decode_source(events.update_batch(raws))
    assert [u.index for u in updates] == [0]
    assert [(b.index, b.error.reason) for b in bad] == [(1, "invalid"), (2, "invalid")]
    assert "updates[1].properties.a" in str(bad[0].error)
    assert orjson.loads(bad[0].raw)["properties"] == {"a": [1]}


@pytest.mark.parametrize(
    "raw, reason, where",
    [
        (b"\xff", "undecodable", "body"),
        (
            orjson.dumps({"app_id": APP, "format": "x"}),
            "invalid",
            "subscription_id",
        ),  # a bad update
        (b'{"format": "rowstream-updates/1", "updates": []}', "invalid", "body"),
        (
            orjson.dumps({"format": "rowstream-updates/1", "updates": [{}] * 1001}),
            "invalid",
            "body",
        ),
        (b'{"format":"rowstream-updates/1", broken', "undecodable", "body"),
        (b'{"format":"rowstream-updates/1","format":"x","updates":[]}', "invalid", "format"),
    ],
)
def test_a_record_that_is_neither_form_is_one_bad_part_with_its_own_problem(raw, reason, where):
    updates, bad = events.decode_source(raw)
    assert updates == [] and len(bad) == 1 and bad[0].index is None and bad[0].raw == raw
    assert bad[0].error.reason == reason and bad[0].error.problems[0]["where"] == where


def test_folding_rows_of_an_update_batch_is_exact_and_may_exceed_the_per_update_limit():
    first = [message(properties={f"k{n}": n for n in range(200)})]
    second = [message(properties={**{f"j{n}": n for n in range(200)}, "k0": None})]
    other_sub = "00000000-0000-4000-8000-0000000000bb"
    other = [message(subscription_id=other_sub, properties={"o": 1})]
    updates, _ = events.decode_source(events.update_batch(first + other + second))
    folded = events.fold_rows(updates)
    assert [(u.subscription_id, len(u.properties)) for u in folded] == [(SUB, 400), (other_sub, 1)]
    assert folded[0].properties["k0"] is None and folded[0].properties["j1"] == 1  # null kept
    assert folded[1].raw == updates[1].raw  # not folded: as it stood
    record = events.batch_record([events.batch_entry(9, 0, 1.0, u.raw) for u in folded])
    applied, bad = events.decode_batch(record)  # 400 properties pass on the internal topic
    assert not bad and len(applied[0].properties) == 400 and applied[1].subscription_id == other_sub
    assert events.fold_rows(updates[:2]) == updates[:2]  # distinct rows: unchanged


def test_updates_held_by_a_record_come_from_its_header():
    assert events.updates_in([("rowstream-updates", b"37")]) == 37
    assert events.updates_in([("traceparent", b"x")]) == 1
    assert events.updates_in(None) == 1 and events.updates_in([("rowstream-updates", b"x")]) == 1


# --- Fast and Exact (``app.model.events``): the speed never changes the result ---


def _typed(value):
    """``value`` with the type of every part spelled out (True == 1 and 1 == 1.0 in Python)."""
    if isinstance(value, dict):
        return {key: _typed(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_typed(item) for item in value]
    return (type(value).__name__, value)


_uuids = st.one_of(
    st.uuids().map(str),
    st.uuids().map(str),
    st.uuids().map(str),
    st.uuids().map(lambda u: str(u).upper()),
    st.uuids().map(lambda u: u.hex),
    st.just("not-a-uuid"),
    st.integers(),
)
_strings = st.one_of(
    st.text(max_size=20),
    st.builds(
        lambda c, n: c * n,
        st.sampled_from(["a", "é", "€", "𝄞", "\x00"]),
        st.sampled_from([1000, 1024, 1025, 1366, 2048, 4096, 4097]),
    ),
)
_scalars = st.one_of(
    st.none(),
    st.booleans(),
    _strings,
    st.integers(min_value=-(2**64), max_value=2**64),
    st.sampled_from([2**63 - 1, 2**63, -(2**63), -(2**63) - 1, 10**18, 10**19]),
    st.floats(allow_nan=False, allow_infinity=False),
)
_values = st.one_of(
    _scalars,
    _scalars,
    _scalars,
    st.lists(_scalars, max_size=2),
    st.dictionaries(st.text(max_size=3), _scalars, max_size=2),
)
_properties = st.dictionaries(
    st.one_of(
        st.text(max_size=10),
        st.text(max_size=10),
        st.text(max_size=10),
        st.just(""),
        st.just("k" * 129),
        st.just("a\x00"),
    ),
    _values,
    max_size=4,
)
_updates = st.fixed_dictionaries(
    {"app_id": _uuids, "subscription_id": _uuids, "properties": _properties},
    optional={
        "received_at": st.one_of(st.none(), st.floats(allow_nan=False), st.integers()),
        "extra": st.integers(),
    },
)


def _dumps(value, ascii_only):
    try:
        return json.dumps(value, ensure_ascii=ascii_only).encode()
    except ValueError:  # an infinity hypothesis made
        return b"{}"


def _same_at_both_speeds(shape, raw):
    try:
        exact = _typed(shape.exact.validate_json(raw))
    except ValidationError:
        exact = "refused"
    if not events.outside_fast(raw):
        try:
            fast = _typed(shape.fast.validate_json(raw))
        except ValidationError:
            pass  # Exact decides
        else:
            assert fast == exact, raw
    try:
        assert _typed(shape.validate_json(raw)) == exact
    except ValidationError:
        assert exact == "refused"


@settings(max_examples=400, deadline=None)
@given(update=_updates, ascii_only=st.booleans())
def test_an_update_of_the_update_topic_validates_the_same_at_both_speeds(update, ascii_only):
    _same_at_both_speeds(events._single, _dumps(update, ascii_only))


@settings(max_examples=200, deadline=None)
@given(updates=st.lists(_updates, min_size=1, max_size=3), ascii_only=st.booleans())
def test_a_request_validates_the_same_at_both_speeds(updates, ascii_only):
    for update in updates:
        update.pop("received_at", None)
    _same_at_both_speeds(events.BatchBody, _dumps(updates, ascii_only))
    _same_at_both_speeds(
        events.PatchBody, _dumps({"properties": updates[0]["properties"]}, ascii_only)
    )


@settings(max_examples=200, deadline=None)
@given(
    update=_updates, version=st.integers(min_value=-1, max_value=2**64), ascii_only=st.booleans()
)
def test_a_batch_record_validates_the_same_at_both_speeds(update, version, ascii_only):
    entry = {"v": version, "p": 3, "t": 1.5, "u": update}
    _same_at_both_speeds(
        events._batch_record,
        _dumps({"format": events.BATCH_FORMAT, "updates": [entry]}, ascii_only),
    )


@pytest.mark.parametrize(
    "value",
    [
        2**63 - 1,
        2**63,
        -(2**63),
        -(2**63) - 1,
        10**19,
        -(10**19),
        10**30,
        1e308,
        -0.0,
        0.1,
        "a" * 1024,
        "a" * 1025,
        "é" * 1025,
        "€" * 1366,
        "€" * 1365,
        "𝄞" * 1024,
        "𝄞" * 1025,
        "a" * 4097,
        "a\x00",
        "\x00",
        True,
        None,
        [1],
        {"a": 1},
    ],
)
@pytest.mark.parametrize("ascii_only", [True, False])
def test_the_edges_of_what_fast_accepts_validate_the_same_at_both_speeds(value, ascii_only):
    for key in ("k", "k\x00"):
        update = {"app_id": APP, "subscription_id": SUB, "properties": {key: value}}
        _same_at_both_speeds(events._single, _dumps(update, ascii_only))
        _same_at_both_speeds(events.PatchBody, _dumps({"properties": {key: value}}, ascii_only))


def test_fast_takes_the_common_case():
    """Fast is not a check that never runs: the updates of the benchmark and the API pass it."""
    assert events.BatchBody.fast.validate_json(
        orjson.dumps(
            [
                {
                    "app_id": APP,
                    "subscription_id": SUB,
                    "properties": {"k1": 3, "plan": None, "r": 0.5, "on": True, "s": "é" * 1024},
                }
            ]
        )
    )
    assert not events.outside_fast(message(received_at=1764633600.123))
