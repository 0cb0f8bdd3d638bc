"""TLS to the broker, for real: tansu behind a TLS terminator (stunnel, checking client
certificates too) that it advertises as its listener, so every client comes back through it.
The whole pipeline (ingest, repartition, sink, lag, inspect) works over mutual TLS with the
hostname checked; an untrusted CA or a wrong hostname stops the worker with one line."""

from __future__ import annotations

import subprocess
from types import SimpleNamespace

import aiohttp
import orjson
import pytest

from deploy.local import Broker, free_port
from deploy.stack import ROOT, faust
from tests.support.certs import make_pki
from tests.support.helpers import AUTH, LoadClient, Model, eventually, make_updates
from tests.support.tls import Terminator

APP = "6d000000-0000-4000-8000-000000000001"
OTHER = "f2000000-0000-4000-8000-000000000002"


@pytest.fixture(scope="module")
def tls_broker(tmp_path_factory):
    base = tmp_path_factory.mktemp("tls")
    pki = make_pki(base)
    plain = free_port()
    terminator = Terminator(base, pki.server, plain, client_ca=pki.ca)
    broker = Broker(base / "broker", plain, advertised=f"tcp://localhost:{terminator.port}")
    broker.start()
    try:
        terminator.start()
        try:
            yield SimpleNamespace(
                url=f"kafka://localhost:{terminator.port}", port=terminator.port, ca=pki.ca,
                client=pki.client, stranger=pki.stranger,
            )  # fmt: skip
        finally:
            terminator.stop()
    finally:
        broker.stop()


def tls_settings(tls_broker, **overrides: str) -> dict[str, str]:
    return {
        "broker_tls": "true",
        "broker_ca_file": str(tls_broker.ca),
        "broker_cert_file": str(tls_broker.client.cert),
        "broker_key_file": str(tls_broker.client.key),
        **overrides,
    }


async def test_the_pipeline_runs_over_mutual_tls_with_the_hostname_checked(
    pipeline_factory, tls_broker
):
    pipeline = pipeline_factory(on=tls_broker, **tls_settings(tls_broker))  # topics made over TLS
    worker = pipeline.start_worker()
    ingest = pipeline.start_ingest()  # produces over mutual TLS too
    model = Model()
    updates = make_updates([APP, OTHER], rows_per_app=20, total=600, hot_share=100, seed=11)
    await LoadClient(ingest.port, model).send(updates, batch=100, singles=20)
    await pipeline.wait_for_rows(model.rows, 120, "the updates to be applied over TLS")

    base = f"http://127.0.0.1:{worker.web_port}"

    async def lag_reported_and_ready() -> bool:
        async with aiohttp.ClientSession(base, headers=AUTH) as session:
            async with session.get("/lag/") as lag, session.get("/readyz") as ready:
                partitions = (await lag.json())["partitions"] if lag.status == 200 else []
                return (
                    ready.status == 200
                    and len(partitions) == pipeline.partitions + pipeline.internal_partitions
                    and all(p["message_lag"] == 0 for p in partitions)
                )

    await eventually(lag_reported_and_ready, 60, "/lag/ and /readyz over TLS")
    done = subprocess.run(
        faust("inspect", "--app", APP, "--limit", "5"), env=pipeline.env, cwd=ROOT,
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    lines = [orjson.loads(line) for line in done.stdout.splitlines()]
    assert done.returncode == 0 and len(lines) == 5, done.stderr
    assert all(line["value"]["app_id"] == APP for line in lines)


@pytest.mark.parametrize(
    "change, problem",
    [
        (
            {"broker_ca_file": "stranger"},
            "failed the TLS check: self-signed certificate in certificate chain",
        ),
        ({"broker": "127.0.0.1"}, "failed the TLS check: IP address mismatch"),
    ],
)
@pytest.mark.parametrize("command", ["worker", "ingest"])
def test_an_untrusted_ca_or_a_wrong_hostname_stops_the_process_with_one_line(
    pipeline_factory, tls_broker, change, problem, command
):
    pipeline = pipeline_factory(on=tls_broker, **tls_settings(tls_broker))
    env = dict(
        pipeline.env,
        ROWSTREAM_WEB_PORT=str(free_port()),
        ROWSTREAM_INGEST_PORT=str(free_port()),
    )
    if "broker_ca_file" in change:
        env["ROWSTREAM_BROKER_CA_FILE"] = str(tls_broker.stranger)
    else:
        env["ROWSTREAM_BROKER"] = f"kafka://127.0.0.1:{tls_broker.port}"
    done = subprocess.run(
        faust(command), env=env, cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2, done.stderr[-3000:]
    refusal = [line for line in done.stderr.splitlines() if line.startswith("rowstream: ")]
    assert len(refusal) == 1 and problem in refusal[0], done.stderr[-3000:]
    assert "Traceback" not in done.stderr
