"""End to end through HTTP, a real broker and real Postgres: every accepted update reaches its
row, in order; a replay of the internal topic changes nothing."""

import time

import aiohttp

from tests.support.helpers import AUTH, LoadClient, Model, differences, eventually, make_updates

# First bytes 1a and 5b land on shard 0, c3 on shard 1 (256 slots over 2 shards).
APPS = [
    "1a2b3c4d-0000-4000-8000-000000000001",
    "5b2b3c4d-0000-4000-8000-000000000002",
    "c32b3c4d-0000-4000-8000-000000000003",
]
TOTAL = 20_000
HOT = 5_000


async def test_every_accepted_update_reaches_its_row_in_order_and_replay_changes_nothing(
    pipeline_factory,
):
    pipeline = pipeline_factory()
    worker = pipeline.start_worker()
    ingest = pipeline.start_ingest()
    model = Model()
    updates = make_updates(APPS, rows_per_app=167, total=TOTAL, hot_share=HOT)
    assert {pipeline.layout.shard_of_app(app) for app in APPS} == {0, 1}

    started = time.monotonic()
    await LoadClient(ingest.port, model).send(updates, batch=1000, singles=100)
    sent = time.monotonic() - started
    assert model.accepted == TOTAL
    assert len(model.rows) == 501

    await pipeline.wait_for_rows(model.rows, 240, "the rows to equal the model")
    elapsed = time.monotonic() - started
    print(
        f"\n{TOTAL} updates: accepted in {sent:.1f}s ({TOTAL / sent:,.0f}/s), "
        f"applied end to end in {elapsed:.1f}s ({TOTAL / elapsed:,.0f} events/s)"
    )

    hot_row = max(model.rows, key=lambda key: sum(1 for u in updates if (u[0], u[1]) == key))
    async with aiohttp.ClientSession(headers=AUTH) as session:
        url = f"http://127.0.0.1:{ingest.port}/v1/apps/{hot_row[0]}/subscriptions/{hot_row[1]}"
        async with session.get(url) as response:
            assert response.status == 200
            body = await response.json()
        assert body["properties"] == model.rows[hot_row]
        assert len(body["properties"]) == 4  # "last" and the unique keys of its last 3 updates

        # Every update the repartition forwarded (an update batch's updates of one row folded
        # into one) is counted by the writers.
        forwarded = sum((await pipeline.updates_in("rowstream-by-subscription")).values())
        assert len(model.rows) <= forwarded <= TOTAL

        async def shards_counted():
            async with session.get(f"http://127.0.0.1:{worker.web_port}/shards/") as response:
                report = await response.json()
            shards = report["shards"]
            return sum(s["total"]["events"] for s in shards) >= forwarded and all(
                s["total"]["rows"] > 0
                and s["current_window"]["batches"] + s["previous_window"]["batches"] > 0
                for s in shards
            )

        await eventually(shards_counted, timeout=60, what="/shards/ to count every event")

    # Replay: a new consumer group reads both topics from offset 0; its sink re-applies the
    # whole internal topic (and the duplicates its own repartition adds to it).
    before = pipeline.rows()
    source_end = await pipeline.committed("subscription-updates")
    assert source_end == await pipeline.end_offsets("subscription-updates")
    assert sum((await pipeline.updates_in("subscription-updates")).values()) == TOTAL
    assert sum(source_end.values()) < TOTAL  # POSTs of many updates of an app: update batches
    worker.stop()
    replay_group = pipeline.name + "-replay"
    pipeline.create_topics(group_id=replay_group)  # the new group's table changelogs
    pipeline.start_worker(group_id=replay_group)

    async def source_read():
        return await pipeline.committed("subscription-updates", replay_group) == source_end

    await eventually(source_read, timeout=180, what="the replay group to read the update topic")
    internal_end = await pipeline.end_offsets("rowstream-by-subscription")
    assert sum((await pipeline.updates_in("rowstream-by-subscription")).values()) >= 2 * forwarded
    assert sum(internal_end.values()) < TOTAL  # batch records: many updates each

    async def internal_read():
        committed = await pipeline.committed("rowstream-by-subscription", replay_group)
        return all(committed[p] >= internal_end[p] for p in internal_end)

    await eventually(internal_read, timeout=180, what="the replay group's sink to finish")
    after = pipeline.rows()
    assert after == before, differences(before, after)


async def test_the_largest_update_the_api_accepts_is_applied(pipeline_factory):
    """A body just under the 1 MiB limit is one record on each topic, far over the worker's
    per-partition fetch size (app/main.py): the broker must still hand it over, and the small
    updates behind it on the same partitions must follow."""
    pipeline = pipeline_factory()
    pipeline.start_worker()
    ingest = pipeline.start_ingest()
    app_id, big_row, small_row = (
        APPS[0],
        "00000000-0000-4000-8000-00000000000b",
        "00000000-0000-4000-8000-00000000000c",
    )
    big = {f"key{n:03d}": chr(ord("a") + n % 26) * 4000 for n in range(250)}
    base = f"http://127.0.0.1:{ingest.port}/v1/apps/{app_id}/subscriptions"
    async with aiohttp.ClientSession(headers=AUTH) as session:
        body = {"properties": big}
        assert 900_000 < len(str(body)) < 1024 * 1024
        async with session.patch(f"{base}/{big_row}", json=body) as response:
            assert response.status == 202, await response.text()
        for n in range(20):
            async with session.patch(
                f"{base}/{small_row}", json={"properties": {"n": n}}
            ) as response:
                assert response.status == 202, await response.text()
    await pipeline.wait_for_rows(
        {(app_id, big_row): big, (app_id, small_row): {"n": 19}},
        60,
        "the largest update and the small ones behind it to be applied",
    )
