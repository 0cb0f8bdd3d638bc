"""The inspection commands against a real broker: empty topics, bad arguments, filters, traffic,
lag, and a dead-letter redrive that brings a fixed event back."""

import subprocess

import orjson

from deploy.local import free_port
from deploy.stack import ROOT, faust
from tests.support.helpers import LoadClient, Model, eventually, make_updates

APP = "6d000000-0000-4000-8000-000000000001"
OTHER = "f2000000-0000-4000-8000-000000000002"


def run(pipeline, *args, timeout=120, **settings):
    """``faust -A app *args`` with the pipeline's settings and ``settings`` (ROWSTREAM_*)."""
    env = {**pipeline.env, **{f"ROWSTREAM_{key.upper()}": value for key, value in settings.items()}}
    done = subprocess.run(
        faust(*args), env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )
    return done.returncode, done.stdout, done.stderr


def test_topics_with_another_partition_count_or_none_are_refused(pipeline_factory, tmp_path):
    """create-topics and a starting worker refuse an internal topic whose count differs from the
    settings (a row's new updates would go to another partition than its waiting ones), and a
    worker refuses to start before the topics exist: one line, exit code 2, no traceback."""
    pipeline = pipeline_factory()
    other = str(pipeline.internal_partitions + 2)
    need = f"has {pipeline.internal_partitions} partitions but the settings need {other}"
    worker = {"web_port": str(free_port()), "data_dir": str(tmp_path / "refused")}
    for args, settings, message in [
        (["create-topics"], {"internal_partitions": other}, need),
        (["worker"], {"internal_partitions": other, **worker}, need),
        (["worker"], {"topic_prefix": "never-made-", **worker}, "run `faust -A app create-topics`"),
    ]:
        code, out, err = run(pipeline, *args, **settings)
        assert code == 2, (args, code, out, err[-3000:])
        said = [line for line in err.splitlines() if message in line]
        assert len(said) == 1 and "Traceback" not in out + err, (args, err[-3000:])


def test_bad_arguments_and_an_empty_topic(pipeline_factory):
    pipeline = pipeline_factory()
    code, out, err = run(pipeline, "inspect", "--timeout", "10")
    assert (code, out) == (0, "") and "0 update(s)" in err
    for args, message in [
        (["inspect", "--since", "yesterday"], "neither a duration"),
        (["inspect", "--topic", "nope"], "--topic must be one of"),
        (["inspect", "--since", "5m", "--offset", "3"], "not both"),
        (["inspect", "--partition", "99"], "has no partition 99"),
        (["traffic", "--window", "0"], "--window must be positive"),
        (["dlq", "explode"], "unknown action 'explode'"),
        (["lag", "--url", "http://127.0.0.1:1"], "cannot reach a worker"),
    ]:
        code, out, err = run(pipeline, *args)
        assert code == 2, (args, code, out, err)
        assert message in err and "Traceback" not in err, (args, err)
    code, out, _ = run(pipeline, "inspect", "--help")
    assert code == 0 and "--subscription" in out


async def test_inspect_traffic_lag_and_redrive(pipeline_factory):
    pipeline = pipeline_factory()
    worker = pipeline.start_worker()
    model = Model()
    updates = make_updates([APP, OTHER], rows_per_app=20, total=600, hot_share=300, seed=5)
    await LoadClient(pipeline.start_ingest().port, model).send(updates, batch=100)

    # A valid update produced to the wrong partition is dead-lettered as misrouted...
    wrong = next(
        p for p in range(pipeline.partitions) if p != pipeline.layout.source_partition(APP)
    )
    fixed_row = (APP, f"{APP[:8]}-0000-4000-8000-0000000fffff")
    producer = pipeline.producer()
    await producer.start()
    try:
        await producer.send_and_wait(
            pipeline.topic("subscription-updates"),
            orjson.dumps(
                {
                    "app_id": fixed_row[0],
                    "subscription_id": fixed_row[1],
                    "properties": {"redriven": True},
                }
            ),
            key=APP.encode(),
            partition=wrong,
        )
    finally:
        await producer.stop()
    await pipeline.wait_for_rows(model.rows, 120, "the load to be applied")

    hot = max(model.rows, key=lambda row: sum(1 for u in updates if (u[0], u[1]) == row))
    code, out, _ = run(pipeline, "inspect", "--app", APP, "--subscription", hot[1], "--limit", "5")
    lines = [orjson.loads(line) for line in out.splitlines()]
    assert code == 0 and len(lines) == 5
    assert all(line["value"]["subscription_id"] == hot[1] for line in lines)
    # The internal topic's batch records: one line per update, with its place in the record.
    code, out, err = run(
        pipeline,
        "inspect",
        "--topic",
        "internal",
        "--app",
        APP,
        "--subscription",
        hot[1],
        "--limit",
        "5",
    )
    parts = [orjson.loads(line) for line in out.splitlines()]
    assert code == 0 and len(parts) == 5 and "5 update(s)" in err, err
    assert all(
        p["value"]["subscription_id"] == hot[1]
        and isinstance(p["index"], int)
        and isinstance(p["value"]["version"], int)
        for p in parts
    )
    assert [p["value"]["version"] for p in parts] == sorted(p["value"]["version"] for p in parts)
    code, out, _ = run(pipeline, "inspect", "--key", "u7", "--limit", "50")
    # update 7 sets u7; the third later update of its row deletes it
    assert [orjson.loads(line)["value"]["properties"]["u7"] for line in out.splitlines()] == [
        7,
        None,
    ]

    code, out, _ = run(pipeline, "traffic", "--since", "1h", "--top", "2")
    assert code == 0 and f"{len(updates) + 1} updates" in out
    top_row_line = out.split("top rows")[1].splitlines()[3]
    assert top_row_line.startswith(f"{hot[0]}/{hot[1]}") and " 300 " in top_row_line

    async def letter_arrived():
        return len(await pipeline.read_topic("rowstream-dead-letters")) == 1

    await eventually(letter_arrived, 60, "the misrouted update in the DLQ")
    code, out, _ = run(pipeline, "inspect", "--topic", "dead-letters", "--reason", "misrouted")
    [letter] = [orjson.loads(line) for line in out.splitlines()]
    assert letter["headers"]["rowstream-reason"] == "misrouted"
    assert int(letter["headers"]["rowstream-partition"]) == wrong

    for key_args, problem in (([], "needs --api-key"), (["--api-key", "nope"], "unknown API key")):
        code, out, err = run(pipeline, "dlq", "redrive", "--reason", "misrouted", *key_args)
        assert code == 2 and problem in err and "Traceback" not in err, err
    code, out, _ = run(
        pipeline, "dlq", "redrive", "--reason", "misrouted", "--dry-run", "--api-key", "test-key"
    )
    assert code == 0 and "1 dead letter(s) would be redriven" in out
    assert fixed_row not in pipeline.properties()
    code, out, _ = run(pipeline, "dlq", "redrive", "--reason", "misrouted", "--api-key", "test-key")
    assert code == 0 and "redrove 1 dead letter(s)" in out
    await pipeline.wait_for_rows(
        {**model.rows, fixed_row: {"redriven": True}}, 60, "the redriven update to be applied"
    )

    code, out, _ = run(pipeline, "lag", "--url", f"http://127.0.0.1:{worker.web_port}")
    assert code == 0 and "message_lag" in out and "subscription-updates" in out
