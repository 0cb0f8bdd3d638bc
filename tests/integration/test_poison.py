"""Poison in the update topic and in Postgres: each bad event reaches the dead-letter topic with
its reason and coordinates, and the updates after it are applied."""

import orjson
import psycopg2

from app.model import events
from app.sink import sql
from app.sink.coalesce import apply
from tests.support.helpers import eventually

APP = "3c000000-0000-4000-8000-000000000001"
OTHER_APP = "e1000000-0000-4000-8000-000000000002"  # belongs on another partition
SUB = "3c000000-0000-4000-8000-0000000000aa"


def update(properties, app_id=APP, **extra):
    return orjson.dumps(
        {"app_id": app_id, "subscription_id": SUB, "properties": properties, **extra}
    )


async def test_poison_goes_to_the_dead_letter_topic_and_the_partition_moves_on(pipeline_factory):
    pipeline = pipeline_factory()
    layout = pipeline.layout
    shard = layout.shard_of_app(APP)
    partition = layout.source_partition(APP)
    assert layout.source_partition(OTHER_APP) != partition

    # A constraint this shard's Postgres enforces: an event that passes validation but that
    # Postgres refuses for its data (as it would a value too large for an index).
    conn = psycopg2.connect(pipeline.dsns[shard])
    with conn, conn.cursor() as cur:
        cur.execute(sql.SCHEMA)
        cur.execute(
            "ALTER TABLE subscriptions ADD CONSTRAINT no_forbidden "
            "CHECK (NOT properties ? 'forbidden')"
        )
    conn.close()

    sequence = [
        ("good", update({"a": 1, "b": 1})),
        ("undecodable", b"\xff\xfe not json"),
        ("good", update({"c": 1})),
        ("invalid", update({"a": 1}, app_id="not-a-uuid")),
        ("invalid", update({"nested": [1, 2]})),
        ("good", update({"b": None, "d": 2})),
        ("invalid", update({"big": "x" * 5000})),
        ("invalid", update({"a": 1}, surprise=True)),
        ("misrouted", update({"a": 99}, app_id=OTHER_APP)),
        ("undecodable", None),  # a tombstone
        ("rejected", update({"forbidden": 1, "e": 5})),
        ("good", update({"a": 3})),
    ]
    producer = pipeline.producer()
    await producer.start()
    offsets = []
    try:
        for _, value in sequence:
            meta = await producer.send_and_wait(
                pipeline.topic("subscription-updates"), value, key=APP.encode(), partition=partition
            )
            offsets.append(meta.offset)
    finally:
        await producer.stop()

    expected: dict = {}
    for kind, value in sequence:
        if kind == "good":
            expected = apply(expected, orjson.loads(value)["properties"])
    pipeline.start_worker()

    await pipeline.wait_for_rows({(APP, SUB): expected}, 120, "the good updates to be applied")

    wanted = [(kind, offset) for (kind, _), offset in zip(sequence, offsets) if kind != "good"]

    async def all_dead_lettered():
        return len(await pipeline.read_topic("rowstream-dead-letters")) >= len(wanted)

    await eventually(all_dead_lettered, timeout=60, what="every poison event in the DLQ")
    letters = await pipeline.read_topic("rowstream-dead-letters")
    found = []
    for record in letters:
        headers = {name: value.decode() for name, value in record.headers}
        assert headers["rowstream-topic"] == pipeline.topic("subscription-updates")
        assert int(headers["rowstream-partition"]) == partition == record.partition
        assert headers["rowstream-error"]
        found.append((headers["rowstream-reason"], int(headers["rowstream-offset"])))
        source = sequence[offsets.index(int(headers["rowstream-offset"]))][1]
        if headers["rowstream-reason"] == "rejected":
            assert orjson.loads(record.value)["properties"] == {"forbidden": 1, "e": 5}
            assert "23514" in headers["rowstream-error"]  # check_violation
            assert headers["rowstream-seen-topic"] == pipeline.topic("rowstream-by-subscription")
            assert int(headers["rowstream-seen-index"]) >= 0  # its place in the batch record
        else:
            assert record.value == (source or b"")
    assert sorted(found, key=lambda f: f[1]) == wanted


async def test_a_poison_update_inside_a_batch_record_is_dead_lettered_alone(pipeline_factory):
    """Batch records written to the internal topic by someone else than the repartition: a bad
    update costs only itself (dead-lettered with the record's coordinates and its index), a
    record that is not a batch record is dead-lettered whole, and the good updates apply."""
    pipeline = pipeline_factory()
    layout = pipeline.layout
    target = layout.target_partition(APP, SUB)
    good = [
        events.batch_entry(10, 3, 1.0, update({"a": 1})),
        events.batch_entry(11, 3, 1.0, update({"b": 2})),
    ]
    bad = events.batch_entry(12, 3, 1.0, update({"nested": [1]}))
    after = events.batch_entry(13, 3, 1.0, update({"a": None, "c": 3}))
    records = [
        events.batch_record([good[0], bad, good[1]]),
        b"not a batch record",
        events.batch_record([after]),
    ]
    producer = pipeline.producer()
    await producer.start()
    try:
        offsets = [
            (
                await producer.send_and_wait(
                    pipeline.topic("rowstream-by-subscription"), value, partition=target
                )
            ).offset
            for value in records
        ]
    finally:
        await producer.stop()
    pipeline.start_worker()
    await pipeline.wait_for_rows({(APP, SUB): {"b": 2, "c": 3}}, 120, "the good updates")

    async def two_letters():
        return len(await pipeline.read_topic("rowstream-dead-letters")) >= 2

    await eventually(two_letters, timeout=60, what="both poison parts in the DLQ")
    letters = {}
    for record in await pipeline.read_topic("rowstream-dead-letters"):
        headers = {name: value.decode() for name, value in record.headers}
        letters[headers.get("rowstream-seen-index")] = (headers, record)
    inside, inside_record = letters["1"]
    assert (
        inside["rowstream-reason"] == "invalid"
        and "updates[1].u.properties.nested" in inside["rowstream-error"]
    )
    assert (
        inside["rowstream-seen-topic"],
        int(inside["rowstream-seen-partition"]),
        int(inside["rowstream-seen-offset"]),
    ) == (pipeline.topic("rowstream-by-subscription"), target, offsets[0])
    assert (
        inside["rowstream-topic"],
        inside["rowstream-partition"],
        inside["rowstream-offset"],
    ) == (pipeline.topic("subscription-updates"), "3", "12")  # its origin, from the entry
    assert orjson.loads(inside_record.value)["properties"] == {"nested": [1]}  # the update alone
    whole, whole_record = letters[None]
    assert whole["rowstream-reason"] == "undecodable" and whole_record.value == records[1]
    assert int(whole["rowstream-seen-offset"]) == offsets[1]


async def test_a_poison_update_inside_an_update_batch_is_dead_lettered_alone(pipeline_factory):
    """An update batch on the update topic (as the API writes for a POST of many updates of one
    app) with one bad update and one update of another app's partition: each is dead-lettered
    alone with the record's coordinates and its index; the rest applies in order."""
    pipeline = pipeline_factory()
    partition = pipeline.layout.source_partition(APP)
    parts = [
        update({"a": 1}),
        update({"nested": [1]}),
        update({"b": 2}, app_id=OTHER_APP),
        update({"a": None, "c": 3}),
    ]
    producer = pipeline.producer()
    await producer.start()
    try:
        meta = await producer.send_and_wait(
            pipeline.topic("subscription-updates"),
            events.update_batch(parts),
            key=APP.encode(),
            partition=partition,
            headers=[(events.UPDATES_HEADER, b"4")],
        )
    finally:
        await producer.stop()
    pipeline.start_worker()
    await pipeline.wait_for_rows({(APP, SUB): {"c": 3}}, 120, "the good updates, folded in order")

    async def two_letters():
        return len(await pipeline.read_topic("rowstream-dead-letters")) >= 2

    await eventually(two_letters, timeout=60, what="both bad updates in the DLQ")
    found = {}
    for record in await pipeline.read_topic("rowstream-dead-letters"):
        headers = {name: value.decode() for name, value in record.headers}
        assert (
            headers["rowstream-topic"],
            int(headers["rowstream-partition"]),
            int(headers["rowstream-offset"]),
        ) == (pipeline.topic("subscription-updates"), partition, meta.offset)
        found[headers["rowstream-seen-index"]] = (
            headers["rowstream-reason"],
            orjson.loads(record.value),
        )
    assert found == {
        "1": ("invalid", orjson.loads(parts[1])),
        "2": ("misrouted", orjson.loads(parts[2])),
    }
