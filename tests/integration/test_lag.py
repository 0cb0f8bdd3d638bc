"""Lag tells the truth: metric values equal an independent count, and the podcast's burst
scenario (one shard held while updates arrive) shows in message lag and time lag."""

import subprocess
import time

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from tests.support.helpers import AUTH, LoadClient, Model, eventually, make_updates

HELD_APP = "c5000000-0000-4000-8000-000000000001"  # shard 1
FREE_APP = "35000000-0000-4000-8000-000000000002"  # shard 0
INTERNAL, SOURCE = "rowstream-by-subscription", "subscription-updates"


async def scrape(session, port):
    async with session.get(f"http://127.0.0.1:{port}/metrics") as response:
        assert response.status == 200
        text = await response.text()
    values = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in (
                "rowstream_message_lag",
                "rowstream_waiting_updates",
                "rowstream_time_lag_seconds",
            ):
                key = (sample.name, sample.labels["topic"], int(sample.labels["partition"]))
                values[key] = sample.value
    return text, values


async def expected_lag(pipeline, topic):
    """The test's own count: messages in each partition minus what the group committed."""
    end = await pipeline.end_offsets(topic)
    committed = await pipeline.committed(topic)
    return {p: end[p] - committed[p] for p in end}


async def expected_waiting(pipeline, topic):
    """The test's own count of the updates the waiting records hold (batch records and update
    batches: the length of their ``updates``)."""
    return await pipeline.updates_in(topic, from_offsets=await pipeline.committed(topic))


async def test_lag_metrics_and_the_burst_scenario(pipeline_factory, promtool):
    pipeline = pipeline_factory(lag_interval="1")
    layout = pipeline.layout
    assert layout.shard_of_app(HELD_APP) == 1 and layout.shard_of_app(FREE_APP) == 0
    worker = pipeline.start_worker()
    port = worker.web_port
    held_partitions = set(layout.internal.partitions_of(1))
    async with aiohttp.ClientSession(headers=AUTH) as session:
        # Without traffic: every owned partition is reported, all at 0.
        async def idle_and_complete():
            _, values = await scrape(session, port)
            lags = {k: v for k, v in values.items() if k[0] == "rowstream_message_lag"}
            return len(lags) == pipeline.partitions + pipeline.internal_partitions and not any(
                values.values()
            )

        await eventually(idle_and_complete, 60, "every partition reported at zero lag")

        # Hold shard 1, then send a burst to both shards.
        pipeline.hold_shard(1)
        model = Model()
        updates = make_updates([HELD_APP, FREE_APP], rows_per_app=40, total=1_200, hot_share=200)
        await LoadClient(pipeline.start_ingest().port, model).send(updates, batch=100)

        # The free shard keeps flowing: its rows are applied while shard 1 is held.
        free_rows = {key: value for key, value in model.rows.items() if key[0] == FREE_APP}
        await pipeline.wait_for_rows(free_rows, 60, "the free shard's rows", only=FREE_APP)

        # Message lag equals the independent count exactly, partition by partition: the held
        # shard's partitions hold everything sent to them, the free shard's nothing.
        # So do the waiting updates: on the internal topic each waiting batch record holds many.
        async def metrics_match_the_count():
            source, internal = (
                await expected_lag(pipeline, SOURCE),
                await expected_lag(pipeline, INTERNAL),
            )
            waiting = {
                SOURCE: await expected_waiting(pipeline, SOURCE),
                INTERNAL: await expected_waiting(pipeline, INTERNAL),
            }
            _, values = await scrape(session, port)
            got_source = {p: values[("rowstream_message_lag", SOURCE, p)] for p in source}
            got_internal = {p: values[("rowstream_message_lag", INTERNAL, p)] for p in internal}
            got_waiting = {
                topic: {
                    p: values[("rowstream_waiting_updates", topic, p)]
                    for p in pipeline.partitions_of(topic)
                }
                for topic in waiting
            }
            return (
                got_source == source
                and got_internal == internal
                and got_waiting == waiting
                and sum(internal[p] for p in held_partitions) > 0
                and sum(waiting[INTERNAL].values()) > sum(internal.values())
                and not any(internal[p] for p in internal if p not in held_partitions)
            )

        await eventually(metrics_match_the_count, 60, "lag metrics equal to the test's count")

        # Time lag of the held partitions rises steadily while nothing is applied.
        def worst_time_lag(values):
            return max(values[("rowstream_time_lag_seconds", INTERNAL, p)] for p in held_partitions)

        # (Measured once a lag round, so it moves in steps: wait for a rise of 2 s, bounded.)
        first = worst_time_lag((await scrape(session, port))[1])
        rising: dict = {}

        async def risen():
            rising["text"], rising["values"] = await scrape(session, port)
            return worst_time_lag(rising["values"]) >= first + 2

        await eventually(risen, 15, "the held partitions' time lag to rise by 2 s")
        text, values = rising["text"], rising["values"]
        second = worst_time_lag(values)
        assert all(
            values[("rowstream_time_lag_seconds", INTERNAL, p)] == 0
            for p in pipeline.partitions_of(INTERNAL)
            if p not in held_partitions
        )
        check = subprocess.run(
            [promtool, "check", "metrics"], input=text.encode(), capture_output=True, timeout=60
        )
        assert check.returncode == 0, check.stdout.decode() + check.stderr.decode()

        # /lag/ (JSON and text) and /readyz say the same.
        async with session.get(f"http://127.0.0.1:{port}/lag/") as response:
            report = await response.json()
        shard_totals = {(t["topic"], t["shard"]): t for t in report["shards"]}
        assert shard_totals[(INTERNAL, 1)]["message_lag"] > 0
        assert shard_totals[(INTERNAL, 1)]["waiting_updates"] == sum(
            values[("rowstream_waiting_updates", INTERNAL, p)] for p in held_partitions
        )
        assert shard_totals[(INTERNAL, 1)]["time_lag_seconds"] >= 2
        assert shard_totals[(INTERNAL, 0)]["message_lag"] == 0
        async with session.get(f"http://127.0.0.1:{port}/lag/?format=text") as response:
            text_report = await response.text()
        assert "message_lag" in text_report and "waiting_updates" in text_report
        assert INTERNAL in text_report

        async def shards_tell_of_the_outage():
            async with session.get(f"http://127.0.0.1:{port}/shards/") as response:
                report = {s["shard"]: s for s in (await response.json())["shards"]}
            return (
                not report[1]["up"]
                and report[0]["up"]
                and report[1]["total"]["errors_transient"] > 0
                and report[0]["total"]["errors_transient"] == 0
            )

        await eventually(shards_tell_of_the_outage, 30, "/shards/ to show shard 1 down with errors")
        async with session.get(f"http://127.0.0.1:{port}/readyz") as response:
            assert response.status == 503
            assert (await response.json())["shards"] == [
                {"shard": 0, "up": True},
                {"shard": 1, "up": False},
            ]

        # Release: the backlog is applied, and both lags return to 0.
        released = time.monotonic()
        pipeline.hold_shard(1, held=False)
        await pipeline.wait_for_rows(model.rows, 120, "the held shard to catch up")

        async def all_zero():
            _, values = await scrape(session, port)
            return not any(values.values())

        await eventually(all_zero, 60, "message lag and time lag back to 0")
        async with session.get(f"http://127.0.0.1:{port}/readyz") as response:
            assert response.status == 200
        print(
            f"\nheld shard: time lag {first:.1f}s -> {second:.1f}s while held; "
            f"drained {time.monotonic() - released:.1f}s after release"
        )
