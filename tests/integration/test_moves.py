"""Moving slots to another shard while updates flow (``faust -A app move-slots``), against a
real broker and real Postgres: three shard databases, shard 2 starting with no slot; clients
send numbered updates (each after the previous one's 202) while slots 80-bf move to shard 2;
then every row, read on the shard the map names, must hold every accepted update in order."""

import asyncio
import time

import psycopg2

from tests.integration.test_cli import run
from tests.support.faultload import count_anomalies, load

MOVED = "9e000000-0000-4000-8000-000000000002"  # slot 9e: shard 1, moves to 2
STAYS = "c5000000-0000-4000-8000-000000000003"  # slot c5: shard 1, stays
OTHER = "17000000-0000-4000-8000-000000000001"  # slot 17: shard 0
APPS = [OTHER, MOVED, STAYS]
SETTINGS = {
    "shards": 3,
    "partitions": 12,
    "internal_partitions": 6,
    "shard_map": "00-7f=0,80-ff=1",  # shard 2 owns nothing
}


def after_the_move(app_id: str) -> int:
    slot = int(app_id[:2], 16)
    return 0 if slot < 0x80 else 2 if slot < 0xC0 else 1


def apps_on(dsn: str) -> dict[str, int]:
    conn = psycopg2.connect(dsn)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT app_id::text, count(*) FROM subscriptions GROUP BY app_id")
            return dict(cur.fetchall())
    finally:
        conn.close()


async def test_slots_move_to_another_shard_while_updates_flow(pipeline_factory):
    pipeline = pipeline_factory(**SETTINGS)
    pipeline.start_worker()
    ingest = pipeline.start_ingest()
    async with load([ingest.port], APPS, rows_per_app=40, batch=10, rate=600) as client:
        await asyncio.sleep(3)
        started = time.monotonic()
        code, out, err = await asyncio.to_thread(run, pipeline, "move-slots", "80-bf", "--to", "2")
        took = time.monotonic() - started
        assert code == 0, err[-4000:]
        await asyncio.sleep(2)  # updates after the switch, to the new shard
    print(f"\nmove-slots 80-bf --to 2 took {took:.1f} s under load:\n{err}")
    assert "switched: slots 80-bf on shard 2" in err
    ledger = client.ledger
    await pipeline.wait_for_rows(
        ledger.rows, 120, "every row on its shard", shard_of_app=after_the_move
    )
    lost, reordered = count_anomalies(ledger, pipeline.properties(shard_of_app=after_the_move))
    assert (lost, reordered) == (0, 0)

    code, out, err = run(pipeline, "slots")
    assert code == 0, err[-3000:]
    assert "80-bf      2      1  active" in out, out
    assert MOVED in apps_on(pipeline.dsns[1])  # the old shard keeps its copy until the cleanup
    code, out, err = run(pipeline, "move-slots", "80-bf", "--cleanup")
    assert code == 0, err[-3000:]
    assert MOVED not in apps_on(pipeline.dsns[1]) and STAYS in apps_on(pipeline.dsns[1])
    assert set(apps_on(pipeline.dsns[2])) == {MOVED}


def test_move_slots_refuses_what_it_cannot_do_with_one_line(pipeline_factory):
    pipeline = pipeline_factory(**SETTINGS)
    for args, message in [
        (["80-bf"], "give either --to SHARD (move) or --cleanup"),
        (["80-zz", "--to", "2"], "write them in hex"),
        (["70-8f", "--to", "2"], "are on shards 0, 1: move each shard's slots on their own"),
        (["80-bf", "--to", "7"], "--to 7: ROWSTREAM_SHARDS names shards 0..2"),
    ]:
        code, out, err = run(pipeline, "move-slots", *args)
        assert code in (1, 2), (args, code, out, err[-3000:])
        assert message in err and "Traceback" not in err, (args, err[-3000:])
    code, out, err = run(pipeline, "move-slots", "80-bf", "--to", "1")  # where they are
    assert code == 0 and "slots 80-bf are on shard 1: nothing to do" in err, err[-3000:]
