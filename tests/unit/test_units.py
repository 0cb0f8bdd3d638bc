"""What both agents read (``app.kafka.units``) and the pure parts around it: each unit's records
decoded, the bad parts dead-lettered with the right coordinates and keys, misrouted updates
refused."""

from types import SimpleNamespace

import orjson

from app.kafka.units import decoded_units
from app.model import events
from app.model.deadletter import for_bad_entry, for_rejected

APP = "6d000000-0000-4000-8000-000000000001"
SUB = "6d000000-0000-4000-8000-0000000000aa"
APP_KEY = APP.encode()


def update(app=APP, sub=SUB, **properties):
    return orjson.dumps({"app_id": app, "subscription_id": sub, "properties": properties})


def record(value, partition=3, offset=10, key=APP_KEY, topic="p-subscription-updates"):
    return SimpleNamespace(
        value=value,
        partition=partition,
        offset=offset,
        key=key,
        topic=topic,
        timestamp=0,
        headers=[],
    )


class Stream:
    """A stream of units, as Faust's would hand them to an agent."""

    def __init__(self, units):
        self.units = units

    def noack(self):
        return self

    async def events(self):
        for unit in self.units:
            yield SimpleNamespace(value=unit)


class Topics:
    updates_name = "p-subscription-updates"

    def __init__(self):
        self.letters = []

    async def send_dead_letter(self, letter):
        self.letters.append(letter)


def headers(letter):
    return {name: value.decode() for name, value in letter.headers}


def home(app_id):
    return 3


async def test_units_come_decoded_and_their_bad_parts_dead_lettered():
    good, bad = record(update(k=1), offset=10), record(b"{nope", offset=11, key=b"k")
    batch = record(events.update_batch([update(k=2), update(sub="x", k=3)]), offset=12)
    topics = Topics()

    def decode(rec):
        return events.decode_source_at(rec.value, rec.partition, home)

    got = [
        (event, records)
        async for event, records in decoded_units(Stream([[good, bad], [batch]]), decode, topics)
    ]
    assert [
        [(rec.offset, [u.properties for u in ups]) for rec, ups in records] for _, records in got
    ] == [[(10, [{"k": 1}]), (11, [])], [(12, [{"k": 2}])]]
    undecodable, invalid = topics.letters
    assert headers(undecodable)["rowstream-reason"] == "undecodable"
    assert (undecodable.key, undecodable.value, undecodable.partition) == (b"k", b"{nope", 3)
    assert headers(invalid)["rowstream-reason"] == "invalid"
    assert invalid.key == APP.encode() and headers(invalid)["rowstream-seen-index"] == "1"
    assert headers(invalid)["rowstream-offset"] == "12"


def test_an_update_on_another_partition_than_its_apps_is_misrouted():
    updates, bad = events.decode_source_at(update(k=1), 5, home)
    assert updates == [] and [b.error.reason for b in bad] == ["misrouted"]
    assert "belongs on partition 3, not 5" in str(bad[0].error)
    updates, bad = events.decode_source_at(update(k=1), 3, home)
    assert [u.properties for u in updates] == [{"k": 1}] and bad == []


def test_a_bad_entry_of_a_batch_record_names_its_origin_in_the_update_topic():
    seen = record(b"", partition=7, offset=40, key=None, topic="p-rowstream-by-subscription")
    entry = events.BadEntry(2, update(k=1), events.InvalidEvent("invalid", []), 99, 3)
    letter = headers(for_bad_entry(seen, entry, "p-subscription-updates"))
    assert (
        letter["rowstream-topic"],
        letter["rowstream-partition"],
        letter["rowstream-offset"],
    ) == ("p-subscription-updates", "3", "99")
    assert (
        letter["rowstream-seen-topic"],
        letter["rowstream-seen-partition"],
        letter["rowstream-seen-offset"],
        letter["rowstream-seen-index"],
    ) == ("p-rowstream-by-subscription", "7", "40", "2")
    whole = for_bad_entry(
        seen,
        events.BadEntry(None, b"x", events.InvalidEvent("invalid", []), None, None),
        "p-subscription-updates",
    )
    assert whole.key is None and headers(whole)["rowstream-topic"] == seen.topic


def test_a_rejected_update_is_dead_lettered_alone_as_on_the_update_topic():
    seen = record(b"", partition=7, offset=40, key=None, topic="p-rowstream-by-subscription")
    versioned = events.Versioned(4, 99, 3, 1.5, APP, SUB, {"k": 1}, None)
    letter = for_rejected(seen, versioned, "22001: value too long", "p-subscription-updates")
    assert events.decode_update(letter.value).properties == {"k": 1}
    assert letter.key == APP.encode() and letter.partition == 3
    assert headers(letter)["rowstream-reason"] == "rejected"
    assert headers(letter)["rowstream-offset"] == "99"
    assert headers(letter)["rowstream-seen-index"] == "4"
