"""Postgres over TLS, for real: a server with ``ssl=on`` and a test certificate; the worker's
shard DSNs ask for ``sslmode=verify-full`` with the test CA. The pipeline applies updates over
TLS connections; a wrong root certificate stops the worker with one line; a DSN's password
appears in no log line, error, ``/readyz`` or ``/shards/``."""

from __future__ import annotations

import subprocess
from types import SimpleNamespace

import aiohttp
import psycopg2
import pytest

from deploy.local import Postgres, free_port, system_postgres_bindir
from deploy.stack import ROOT, faust
from tests.support.certs import make_pki
from tests.support.helpers import AUTH, LoadClient, Model, eventually, make_updates

APP = "6d000000-0000-4000-8000-000000000001"
OTHER = "f2000000-0000-4000-8000-000000000002"
PASSWORD = "Pw-n0t-in-any-line"


@pytest.fixture(scope="module")
def tls_postgres(tmp_path_factory):
    base = tmp_path_factory.mktemp("pgtls")
    pki = make_pki(base)
    postgres = Postgres(
        base / "data", free_port(), tls=pki.server, host="localhost",
        dsn_options=f"sslmode=verify-full&sslrootcert={pki.ca}", bindir=system_postgres_bindir(),
    )  # fmt: skip
    postgres.start()
    try:
        yield SimpleNamespace(server=postgres, ca=pki.ca, stranger=pki.stranger)
    finally:
        postgres.stop()


def with_password(dsn: str) -> str:
    return dsn.replace("postgresql://postgres@", f"postgresql://postgres:{PASSWORD}@")


async def test_the_sink_writes_over_verified_tls_and_no_password_shows(
    pipeline_factory, tls_postgres
):
    pipeline = pipeline_factory(shards_on=tls_postgres.server)
    shards = ",".join(with_password(dsn) for dsn in pipeline.dsns)  # trust auth ignores it
    worker = pipeline.start_worker(shards=shards)
    ingest = pipeline.start_ingest(shards=shards)
    model = Model()
    updates = make_updates([APP, OTHER], rows_per_app=20, total=400, hot_share=50, seed=21)
    await LoadClient(ingest.port, model).send(updates, batch=100, singles=10)
    await pipeline.wait_for_rows(model.rows, 120, "the updates to be applied over TLS")

    # The ingest tier's row read goes over TLS too, and shows no password.
    (app_id, subscription_id), expected = next(
        (row, properties)
        for row, properties in model.rows.items()
        if pipeline.layout.shard_of_app(row[0]) == 0  # the shard whose connections are checked
    )
    row = f"http://127.0.0.1:{ingest.port}/v1/apps/{app_id}/subscriptions/{subscription_id}"
    async with aiohttp.ClientSession(headers=AUTH) as s, s.get(row) as response:
        assert response.status == 200, await response.text()
        read = await response.json()
    assert read["properties"] == expected and PASSWORD not in str(read)

    conn = psycopg2.connect(pipeline.dsns[0])
    try:
        with conn.cursor() as cur:  # the worker's pool connections to shard 0 use TLS
            cur.execute(
                "SELECT count(*), bool_and(ssl) FROM pg_stat_ssl JOIN pg_stat_activity "
                "USING (pid) WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
            connections, all_tls = cur.fetchone()
    finally:
        conn.close()
    assert connections >= 2 and all_tls  # the worker's pool and the ingest tier's row read

    async with aiohttp.ClientSession(f"http://127.0.0.1:{worker.web_port}", headers=AUTH) as s:

        async def ready() -> bool:
            async with s.get("/readyz") as response:
                return response.status == 200

        await eventually(ready, 60, "the worker to be ready")
        bodies = []
        for path in ("/readyz", "/shards/", "/shards/?format=text", "/lag/", "/metrics"):
            async with s.get(path) as response:
                assert response.status == 200, (path, await response.text())
                bodies.append(await response.text())
    worker.stop()
    assert not any(PASSWORD in body for body in bodies)
    assert PASSWORD not in worker.log_path.read_text(errors="replace")


def test_a_wrong_root_certificate_stops_the_worker_with_one_line(pipeline_factory, tls_postgres):
    pipeline = pipeline_factory(shards_on=tls_postgres.server)
    shards = ",".join(
        with_password(dsn).replace(str(tls_postgres.ca), str(tls_postgres.stranger))
        for dsn in pipeline.dsns
    )
    env = dict(pipeline.env, ROWSTREAM_SHARDS=shards, ROWSTREAM_WEB_PORT=str(free_port()))
    done = subprocess.run(
        faust("worker"), env=env, cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    output = done.stdout + done.stderr
    assert done.returncode == 2, output[-3000:]
    [line] = [line for line in done.stderr.splitlines() if line.startswith("rowstream: ")]
    assert line.startswith("rowstream: shard 0 (postgresql://postgres:***@localhost:"), line
    assert "certificate verify failed" in line
    assert PASSWORD not in output and "Traceback" not in output
