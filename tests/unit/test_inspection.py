"""Filters, time parsing and top talkers of the inspection commands."""

import orjson
import pytest

from app.ops.inspection import Filter, Seen, parse_time, top_talkers, unbatch

NOW = 1_800_000_000.0


def seen(app="a", sub="s", ts=NOW, props=None, headers=(), value=None):
    body = {"app_id": app, "subscription_id": sub, "properties": props or {"k": 1}}
    return Seen(
        "t", 0, 0, ts, app.encode(), value if value is not None else orjson.dumps(body), headers
    )


@pytest.mark.parametrize(
    "text, expected",
    [
        ("15m", NOW - 900),
        ("2h", NOW - 7200),
        ("30s", NOW - 30),
        ("1.5d", NOW - 129600),
        ("2027-01-15T10:00:00Z", 1800007200.0),
        ("2027-01-15T10:00:00", 1800007200.0),
        ("2027-01-15T12:00:00+02:00", 1800007200.0),
    ],
)
def test_parse_time(text, expected):
    assert parse_time(text, NOW) == expected


@pytest.mark.parametrize("text", ["yesterday", "15", "m15", "-5m", ""])
def test_parse_time_refuses(text):
    with pytest.raises(ValueError, match="neither a duration"):
        parse_time(text, NOW)


def test_filters():
    assert Filter(app_id="a").matches(seen())
    assert not Filter(app_id="b").matches(seen())
    assert Filter(subscription_id="s", property_key="k").matches(seen())
    assert not Filter(property_key="gone").matches(seen())
    assert Filter(property_key="gone").matches(seen(props={"gone": None}))
    assert not Filter(since=NOW + 1).matches(seen())
    assert not Filter(until=NOW - 1).matches(seen())
    letter = seen(headers=(("rowstream-reason", b"invalid"),))
    assert Filter(reason="invalid").matches(letter) and not Filter(reason="rejected").matches(
        letter
    )
    garbage = seen(value=b"\xff")
    assert Filter().matches(garbage) and not Filter(app_id="a").matches(garbage)
    assert garbage.as_json()["value_base64"] == "/w=="


def test_top_talkers_rank_apps_and_rows_with_their_busiest_window():
    records = (
        [seen("a", "s1", NOW + i) for i in range(5)]
        + [seen("a", "s2", NOW + 100)]
        + [seen("b", "s1", NOW + 130 + i) for i in range(3)]
        + [seen(value=b"junk")]
    )
    apps, rows, total = top_talkers(records, window=60, top=2)
    assert total == 9
    assert [(t.who, t.events, t.peak) for t in apps] == [("a", 6, 5), ("b", 3, 3)]
    assert [(t.who, t.events) for t in rows] == [("a/s1", 5), ("b/s1", 3)]
    assert apps[0].share == round(6 / 9, 4)


def test_a_batch_record_is_seen_as_one_record_per_update():
    entry = {
        "v": 7,
        "p": 2,
        "t": NOW,
        "u": {"app_id": "a", "subscription_id": "s", "properties": {"k": 1}, "received_at": None},
    }
    record = Seen(
        "internal",
        3,
        40,
        NOW,
        None,
        orjson.dumps(
            {
                "format": "rowstream-batch/1",
                "updates": [
                    entry,
                    {**entry, "v": 8, "u": {**entry["u"], "subscription_id": "other"}},
                    "junk",
                ],
            }
        ),
    )
    parts = unbatch(record)
    assert [(p.partition, p.offset, p.index) for p in parts] == [(3, 40, 0), (3, 40, 1), (3, 40, 2)]
    assert parts[0].as_json()["index"] == 0
    assert parts[0].body == {**entry["u"], "version": 7, "source_partition": 2}
    assert [p.index for p in parts if Filter(subscription_id="other").matches(p)] == [1]
    assert parts[2].body is None and parts[2].value == b'"junk"'
    plain = seen()
    assert unbatch(plain) == [plain] and "index" not in plain.as_json()


def test_an_update_batch_is_seen_as_one_record_per_update():
    updates = [{"app_id": "a", "subscription_id": "s", "properties": {"k": n}} for n in range(2)]
    record = Seen(
        "updates",
        1,
        7,
        NOW,
        b"a",
        orjson.dumps({"format": "rowstream-updates/1", "updates": updates}),
    )
    parts = unbatch(record)
    assert [(p.index, p.body) for p in parts] == [(0, updates[0]), (1, updates[1])]
    assert top_talkers(parts, window=60, top=1)[2] == 2  # counted per update
