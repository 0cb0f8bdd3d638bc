"""Moving slots to another shard while updates flow (``faust -A app move-slots``), against a
real broker and real Postgres: three shard databases, shard 2 starting with no slot; clients
send numbered updates (each after the previous one's 202) while slots 80-bf move to shard 2;
then every row, read on the shard the map names, must hold every accepted update in order."""

import asyncio
import signal
import subprocess
import time

import psycopg2
import pytest

from deploy.stack import ROOT, faust
from tests.integration.test_cli import run
from tests.support.faultload import count_anomalies, load
from tests.support.helpers import eventually

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


def during_the_move(ledger, start: float, end: float) -> str:
    """The freeze as the clients saw it, and each app's accepted updates per second before and
    during the move."""
    waited = sorted(ledger.waited)

    def rate(times: list[float], a: float, b: float) -> float:
        return sum(1 for t in times if a <= t < b) / max(b - a, 1e-9)

    rates = ", ".join(
        f"{app[:2]}: {rate(times, start - 3, start):.0f} → {rate(times, start, end):.0f}/s"
        for app, times in sorted(ledger.by_app.items())
    )
    if not waited:
        return f"no request waited; updates accepted per app before → during the move: {rates}"
    p50, p99 = waited[len(waited) // 2], waited[min(len(waited) - 1, int(len(waited) * 0.99))]
    return (
        f"{len(waited)} requests waited for the freeze: p50 {p50:.2f} s, p99 {p99:.2f} s; "
        f"updates accepted per app before → during the move: {rates}"
    )


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
    print(during_the_move(ledger, started, started + took))
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


PRELOADED = "9f000000-0000-4000-8000-00000000000f"  # slot 9f: rows that make the copy take a while


def preload(dsn: str, rows: int) -> None:
    """``rows`` rows of app PRELOADED straight into a shard (as if written long ago)."""
    conn = psycopg2.connect(dsn)
    try:
        with conn, conn.cursor() as cur:
            cur.execute(
                "INSERT INTO subscriptions (app_id, subscription_id, properties, version) "
                "SELECT %s::uuid, ('00000000-0000-4000-8000-' || lpad(to_hex(n), 12, '0'))::uuid,"
                " jsonb_build_object('n', n), 0 FROM generate_series(1, %s) n",
                (PRELOADED, rows),
            )
    finally:
        conn.close()


def start_move(pipeline, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        faust("move-slots", *args),
        env=pipeline.env,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


async def kill_at(command: subprocess.Popen, said: str, timeout: float = 120) -> str:
    """SIGKILL the command once a line of its output contains ``said``; its output."""
    lines: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = await asyncio.to_thread(command.stderr.readline)
        if not line:
            break
        lines.append(line)
        if said in line:
            command.send_signal(signal.SIGKILL)
            command.wait(10)
            return "".join(lines)
    command.kill()
    raise AssertionError(f"move-slots never said {said!r}:\n{''.join(lines)[-3000:]}")


async def finished(pipeline, ledger) -> None:
    """Wait until the clients' rows (read on the shards the map names) hold what was accepted;
    then 0 lost and 0 reordered."""

    def clients_rows() -> dict:
        found = pipeline.properties(shard_of_app=after_the_move)
        return {key: found[key] for key in found if key[0] != PRELOADED}

    async def drained() -> bool:
        return clients_rows() == ledger.rows

    await eventually(drained, 240, "every row on its shard")
    lost, reordered = count_anomalies(ledger, clients_rows())
    print(f"\n{ledger.accepted} updates accepted, {lost} lost, {reordered} reordered")
    assert (lost, reordered) == (0, 0)


@pytest.mark.faults
@pytest.mark.long  # a minute: make faults
async def test_a_move_killed_in_its_copy_and_its_freeze_goes_on_when_run_again(pipeline_factory):
    pipeline = pipeline_factory(**SETTINGS)
    pipeline.start_worker()
    ingest = pipeline.start_ingest()
    await asyncio.to_thread(run, pipeline, "slots")  # seeds the cluster, applies no schema
    async with load([ingest.port], APPS, rows_per_app=40, batch=10, rate=600) as client:
        await asyncio.sleep(3)  # the worker has made the schema by now
        preload(pipeline.dsns[1], 300_000)
        said = await kill_at(start_move(pipeline, "80-bf", "--to", "2"), "copy: ")
        print(f"\nkilled in the copy:\n{said}")
        said = await kill_at(start_move(pipeline, "80-bf", "--to", "2"), "freeze: ")
        print(f"killed in the freeze:\n{said}")
        assert "copy: done" in said and "a new move" not in said  # resumed, not restarted
        code, _, err = await asyncio.to_thread(run, pipeline, "move-slots", "80-bf", "--to", "2")
        print(f"run again:\n{err}")
        assert code == 0 and "switched: slots 80-bf on shard 2" in err, err[-3000:]
        await asyncio.sleep(2)
    await finished(pipeline, client.ledger)
    assert len(pipeline.rows(only=PRELOADED, shard_of_app=after_the_move)) == 300_000


@pytest.mark.faults
async def test_a_timed_out_switch_changes_nothing_and_a_drain_outlives_a_worker(pipeline_factory):
    pipeline = pipeline_factory(**SETTINGS)
    workers = [pipeline.start_worker(), pipeline.start_worker()]
    ingest = pipeline.start_ingest()
    async with load([ingest.port], APPS, rows_per_app=40, batch=10, rate=600) as client:
        await asyncio.sleep(5)
        code, out, err = await asyncio.to_thread(
            run, pipeline, "move-slots", "80-bf", "--to", "2", "--timeout", "0.001"
        )
        print(f"\ntimed out:\n{err}")
        assert code == 1 and "cancelled, the slots stay on shard 1" in err, err[-3000:]
        code, out, _ = await asyncio.to_thread(run, pipeline, "slots")
        assert "80-ff      1      0  active" in out, out
        accepted = client.ledger.accepted
        await asyncio.sleep(2)
        assert client.ledger.accepted > accepted  # unfrozen
        command = start_move(pipeline, "80-bf", "--to", "2", "--timeout", "60")
        said = await kill_at_worker(command, "freeze: ", workers, pipeline)
        print(f"a worker killed in the drain:\n{said}")
        assert command.returncode == 0 and "switched: slots 80-bf on shard 2" in said, said
        await asyncio.sleep(2)
    await finished(pipeline, client.ledger)


async def kill_at_worker(command, said, workers, pipeline) -> str:
    """SIGKILL the first worker once the command says ``said``, start it again; the command's
    whole output once it exits."""
    lines: list[str] = []
    while True:
        line = await asyncio.to_thread(command.stderr.readline)
        if not line:
            break
        lines.append(line)
        if said in line and len([seen for seen in lines if said in seen]) == 1:
            port = workers[0].web_port
            workers[0].kill()
            workers[0] = pipeline.start_worker(port=port)
    command.wait(60)
    return "".join(lines)
