"""The control store against real Postgres: a cluster keeps the layout and the map it was seeded
with, a shard appended to ROWSTREAM_SHARDS later owns no slot and moves nothing, and settings
that cannot run the seeded layout stop a worker with one line."""

import psycopg2

from deploy.local import free_port
from tests.integration.test_cli import run
from tests.support.helpers import LoadClient, Model, eventually, make_updates

# First bytes 1a lands on shard 0, c3 on shard 1 (256 slots over 2 shards).
APPS = ["1a2b3c4d-0000-4000-8000-000000000001", "c32b3c4d-0000-4000-8000-000000000003"]


def has_schema(dsn: str) -> bool:
    conn = psycopg2.connect(dsn)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT to_regclass('subscriptions') IS NOT NULL")
            return cur.fetchone()[0]
    finally:
        conn.close()


async def test_a_shard_added_owns_no_slot_and_moves_nothing(stack, pipeline_factory, tmp_path):
    _, postgres = stack
    # Two shards seeded, with room in the internal topic for a third (2 partitions per shard).
    pipeline = pipeline_factory(internal_partitions=6, internal_block="2")
    model = Model()
    pipeline.start_worker()
    ingest = pipeline.start_ingest()
    await LoadClient(ingest.port, model).send(make_updates(APPS, 20, 400, 0), batch=50)
    await pipeline.wait_for_rows(model.rows, 120, "the rows before the shard is added")
    code, out, err = run(pipeline, "slots")
    assert code == 0, err[-3000:]
    assert out.splitlines()[2:4] == ["00-7f      0      0  active", "80-ff      1      0  active"]
    assert "internal topic: 2 partitions per shard" in out and "without slots" not in out
    before = pipeline.layout

    pipeline.stop_all()
    added = pipeline.add_shard(postgres)
    worker = pipeline.start_worker()
    ingest = pipeline.start_ingest()
    await LoadClient(ingest.port, model).send(make_updates(APPS, 20, 400, 0), batch=50)
    await pipeline.wait_for_rows(model.rows, 120, "the rows after the shard is added")
    assert pipeline.layout == before  # seeded with 2: the third shard changes no partition
    for app in APPS:
        assert set(pipeline.rows(only=app)) == {key for key in model.rows if key[0] == app}
    code, out, err = run(pipeline, "slots")
    assert code == 0 and out.endswith("shards without slots: 2\n"), (out, err[-3000:])

    async def schema_applied() -> bool:  # as to the others, once the worker talked to it
        return has_schema(added)

    await eventually(schema_applied, 60, "the schema on the added shard")
    conn = psycopg2.connect(added)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM subscriptions")
            assert cur.fetchone()[0] == 0
    finally:
        conn.close()
    assert worker.process is not None and worker.process.poll() is None


def test_settings_the_seeded_layout_cannot_run_stop_the_worker_with_one_line(
    stack, pipeline_factory, tmp_path
):
    _, postgres = stack
    pipeline = pipeline_factory()  # 2 shards, 2 internal partitions each, no room
    code, out, err = run(pipeline, "slots")  # seeds the cluster
    assert code == 0, err[-3000:]
    first, second = pipeline.env["ROWSTREAM_SHARDS"].split(",")
    third = pipeline.add_shard(postgres)
    worker = {"web_port": str(free_port()), "data_dir": str(tmp_path / "refused")}
    for shards, message in [
        (first, "ROWSTREAM_SHARDS names 1 shard(s) but the cluster uses 2"),
        (f"{first},{second},{third}", "ROWSTREAM_INTERNAL_PARTITIONS is 4 but 3 shards need 6"),
    ]:
        code, out, err = run(pipeline, "worker", shards=shards, **worker)
        assert code == 2, (shards, code, out, err[-3000:])
        said = [line for line in err.splitlines() if message in line]
        assert len(said) == 1 and "Traceback" not in out + err, err[-3000:]
