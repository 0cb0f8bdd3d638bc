"""Bad HTTP input against a live ingest tier: a clear JSON error for every 4xx, and nothing
produced; the HTTP details a client meets (pipelining, Expect, HTTP/1.0, malformed requests); the
worker's web view without the API; the broker's outage; slow and huge clients."""

import asyncio

import aiohttp
import orjson
import pytest

from tests.support.helpers import AUTH, eventually, rss_bytes

APP = "0f8fad5b-d9cb-469f-a165-70867728950e"
SUB = "7c9e6679-7425-40de-944b-e07fc1f90ae7"
ROW = f"/v1/apps/{APP}/subscriptions/{SUB}"


OTHER_APP = "ff8fad5b-d9cb-469f-a165-70867728950e"
SCOPED = {"Authorization": "Bearer scoped-key"}


@pytest.fixture
async def api(pipeline_factory):
    pipeline = pipeline_factory(api_keys=f"test-key,scoped-key:{APP}")
    ingest = pipeline.start_ingest()
    async with aiohttp.ClientSession(f"http://127.0.0.1:{ingest.port}") as session:
        yield pipeline, session


async def call(session, method, path, status, headers=AUTH, **kwargs):
    async with session.request(method, path, headers=headers, **kwargs) as response:
        body = await response.json()
        assert response.status == status, body
        return response, body


async def test_bad_requests_get_a_json_error_and_produce_nothing(api):
    pipeline, session = api
    good = {"properties": {"plan": "pro"}}
    await call(session, "PATCH", ROW, 401, headers={}, json=good)
    await call(session, "PATCH", ROW, 401, headers={"Authorization": "Bearer wrong"}, json=good)
    await call(
        session, "PATCH", ROW, 401, headers={"Authorization": "Basic dGVzdC1rZXk="}, json=good
    )
    await call(session, "GET", ROW, 401, headers={})
    _, body = await call(session, "PATCH", f"/v1/apps/nope/subscriptions/{SUB}", 400, json=good)
    assert body["problems"] == [{"where": "app_id", "problem": "not a UUID"}]
    _, body = await call(session, "PATCH", ROW, 400, data=b"{not json")
    assert "Invalid JSON" in body["problems"][0]["problem"]
    _, body = await call(session, "PATCH", ROW, 400, json={"properties": {"a": {"b": 1}}})
    assert body["problems"][0]["where"] == "properties.a"
    _, body = await call(
        session,
        "POST",
        "/v1/updates",
        400,
        json=[
            {"app_id": APP, "subscription_id": SUB, "properties": {}},
            {"app_id": APP, "subscription_id": "x", "properties": {}},
        ],
    )
    assert [p["where"] for p in body["problems"]] == ["[1].subscription_id"]
    await call(session, "POST", "/v1/updates", 400, json={"not": "a list"})
    _, body = await call(
        session, "POST", "/v1/updates", 413, data=b"[" + b" " * (1024 * 1024) + b"]"
    )
    assert "1048576" in body["error"]
    _, body = await call(session, "GET", ROW, 404)
    assert body == {"error": "no such row"}
    _, body = await call(session, "DELETE", ROW, 405)
    assert body == {"error": "DELETE is not allowed here"}
    _, body = await call(session, "GET", "/v1/nothing", 404)
    assert body == {"error": "no such path: /v1/nothing"}

    assert await pipeline.read_topic("subscription-updates") == []


async def raw_exchange(port: int, data: bytes, answers: int) -> list[bytes]:
    """Send ``data`` as it is and read ``answers`` HTTP answers (status line, headers and a
    body of Content-Length) from the connection."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    got = []
    try:
        for _ in range(answers):
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            length = int(next(
                line.split(b":")[1] for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            ))  # fmt: skip
            got.append(head + await asyncio.wait_for(reader.readexactly(length), 10))
    finally:
        writer.close()
    return got


async def test_http_details_a_client_meets(pipeline_factory):
    """Pipelined requests are answered in order; Expect: 100-continue is answered; HTTP/1.0
    closes after its answer; a malformed request gets 400 and the connection is closed."""
    pipeline = pipeline_factory()
    port = pipeline.start_ingest().port
    auth = b"Authorization: Bearer test-key\r\n"

    def patch(n: int) -> bytes:
        body = b'{"properties": {"n": %d}}' % n
        return b"PATCH %b HTTP/1.1\r\nHost: x\r\n%bContent-Length: %d\r\n\r\n%b" % (
            ROW.encode(),
            auth,
            len(body),
            body,
        )

    # Three writes and a bad one in one packet: four answers, in order.
    answers = await raw_exchange(
        port, patch(1) + patch(2) + b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n" + patch(3), 4
    )
    assert [a.split(b" ")[1] for a in answers] == [b"202", b"202", b"404", b"202"]
    assert all(b"\r\ndate: " in a for a in answers)
    records = await pipeline.read_topic("subscription-updates")
    assert [orjson.loads(r.value)["properties"]["n"] for r in records] == [1, 2, 3]

    body = b'{"properties": {"n": 4}}'
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        b"PATCH %b HTTP/1.1\r\nHost: x\r\n%bExpect: 100-continue\r\nContent-Length: %d\r\n\r\n"
        % (ROW.encode(), auth, len(body))
    )
    assert await asyncio.wait_for(reader.readline(), 10) == b"HTTP/1.1 100 Continue\r\n"
    writer.write(body)
    assert await asyncio.wait_for(reader.readline(), 10) == b"\r\n"  # the end of the 100
    assert b" 202 " in await asyncio.wait_for(reader.readline(), 10)
    writer.close()

    [answer] = await raw_exchange(port, b"GET /healthz HTTP/1.0\r\n\r\n", 1)
    assert answer.startswith(b"HTTP/1.1 200 ") and b"connection: close" in answer

    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"PATCH \x00 nonsense\r\n\r\n")
    answer = await asyncio.wait_for(reader.read(), 10)  # read() ends: the tier closed
    assert answer.startswith(b"HTTP/1.1 400 ") and b"malformed HTTP request" in answer
    writer.close()


async def test_scoped_keys_and_secrets_stay_out_of_logs_and_bodies(api):
    pipeline, session = api
    await call(session, "PATCH", ROW, 202, headers=SCOPED, json={"properties": {"a": 1}})
    other_row = f"/v1/apps/{OTHER_APP}/subscriptions/{SUB}"
    _, body = await call(session, "PATCH", other_row, 403, headers=SCOPED, json={"properties": {}})
    assert body["problems"] == [
        {"where": "app_id", "problem": f"{OTHER_APP} is outside the key's scope"}
    ]
    await call(session, "GET", other_row, 403, headers=SCOPED)
    _, body = await call(
        session,
        "POST",
        "/v1/updates",
        403,
        headers=SCOPED,
        json=[
            {"app_id": APP, "subscription_id": SUB, "properties": {}},
            {"app_id": OTHER_APP, "subscription_id": SUB, "properties": {}},
        ],
    )
    await call(session, "PATCH", other_row, 202, json={"properties": {"b": 2}})  # unscoped key
    _, body = await call(
        session,
        "PATCH",
        ROW,
        401,
        headers={"Authorization": "Bearer sk-wrong-42"},
        json={"properties": {}},
    )
    assert "sk-wrong-42" not in str(body)
    ingest_log = pipeline.log_tail(pipeline.ingests[0], 1_000_000)
    for secret in ("scoped-key", "test-key", "sk-wrong-42"):
        assert secret not in ingest_log


async def test_health_metrics_and_openapi(api):
    _, session = api
    _, body = await call(session, "GET", "/healthz", 200, headers={})
    assert body == {"ok": True}
    _, body = await call(session, "GET", "/readyz", 200, headers={})
    assert body == {"ready": True, "broker": True}
    await call(session, "PATCH", ROW, 202, json={"properties": {"a": 1}})
    await call(session, "PATCH", ROW, 401, headers={}, json={"properties": {"a": 1}})
    async with session.get("/metrics") as response:
        assert response.status == 200
        text = await response.text()
    assert 'rowstream_ingest_requests_total{status="202"} 1.0' in text
    assert 'rowstream_ingest_requests_total{status="401"} 1.0' in text
    assert "rowstream_ingest_events_total 1.0" in text
    assert "rowstream_forward" not in text and "rowstream_shard" not in text  # the worker's
    _, document = await call(session, "GET", "/openapi.json", 200, headers={})
    assert document["openapi"].startswith("3.0")
    assert set(document["paths"]) == {
        "/v1/apps/{app_id}/subscriptions/{subscription_id}",
        "/v1/updates",
    }


@pytest.fixture
async def web_view(pipeline_factory):
    pipeline = pipeline_factory(api_keys=f"test-key,scoped-key:{APP}")
    worker = pipeline.start_worker()
    async with aiohttp.ClientSession(f"http://127.0.0.1:{worker.web_port}") as session:
        yield pipeline, session


async def test_admin_views_need_an_unscoped_key_and_probes_stay_open(web_view):
    _, session = web_view
    async with session.get(ROW, headers=AUTH) as response:
        assert response.status == 404  # the API is the ingest tier's, not the worker's
    for path in ("/lag/", "/shards/", "/router/"):  # rowstream's views and Faust's own
        _, body = await call(session, "GET", path, 401, headers={})
        assert body == {"error": "missing bearer key: send 'Authorization: Bearer <key>'"}
        await call(session, "GET", path, 401, headers={"Authorization": "Bearer wrong"})
        _, body = await call(session, "GET", path, 403, headers=SCOPED)
        assert "unscoped" in body["error"]

        async def answers(path=path):
            async with session.get(path, headers=AUTH) as response:
                return response.status == 200  # 503 while the worker's tables are starting

        await eventually(answers, 60, f"{path} to answer with an unscoped key")
    for path in ("/healthz", "/metrics"):
        async with session.get(path) as response:
            assert response.status == 200, path
    # /metrics?name[]=… answers only those series (what the benchmark polls)
    async with session.get("/metrics", params={"name[]": "rowstream_shard_up"}) as response:
        lines = [line for line in (await response.text()).splitlines() if line[:1] != "#"]
    assert lines and all(line.startswith("rowstream_shard_up{") for line in lines), lines
    async with session.get("/readyz") as response:
        assert response.status in (200, 503)  # open to probes; ready or not is another test


async def test_broker_down_means_503_and_not_ready_then_recovers_without_a_restart(
    stack, pipeline_factory, tmp_path
):
    from deploy.local import Broker, free_port

    port = free_port()
    own_broker = Broker(tmp_path / "own-broker", port)
    own_broker.start()
    try:
        pipeline = pipeline_factory(broker=own_broker.url, produce_timeout="2", lag_interval="1")
        worker = pipeline.start_worker()
        ingest = pipeline.start_ingest()
        async with (
            aiohttp.ClientSession(f"http://127.0.0.1:{ingest.port}") as api,
            aiohttp.ClientSession(f"http://127.0.0.1:{worker.web_port}") as web,
        ):

            async def ready(session=web):
                async with session.get("/readyz") as response:
                    return response.status == 200

            await eventually(ready, 60, "the worker to be ready")
            await call(api, "PATCH", ROW, 202, json={"properties": {"a": 1}})
            own_broker.kill()
            response, body = await call(api, "PATCH", ROW, 503, json={"properties": {"a": 2}})
            assert response.headers["Retry-After"] == "1"
            assert "retry" in body["error"]

            async def not_ready(session):
                async with session.get("/readyz") as response:
                    body = await response.json()
                    return response.status == 503 and body["broker"] is False

            await eventually(lambda: not_ready(web), 30, "the worker's /readyz: broker down")
            await eventually(lambda: not_ready(api), 30, "the ingest tier's /readyz: broker down")

            # The same broker back (memory storage: its topics are gone, so make them again).
            own_broker = Broker(tmp_path / "own-broker", port)
            own_broker.start()
            pipeline.create_topics()

            # The memory storage lost every topic, offset and group with the broker: recovery is
            # shown at the API (202 again) and in readiness. That updates written after such a
            # restart are applied is not shown: the worker's consumer positions are ahead of the
            # new, empty logs, and Faust drops records below its read offset. A durable Kafka
            # keeps its logs across a restart (broker-notes: memory storage).
            async def accepted():
                async with api.patch(ROW, headers=AUTH, json={"properties": {"a": 3}}) as response:
                    return response.status == 202

            await eventually(accepted, 90, "the API to accept updates again")
            await eventually(ready, 60, "the worker to be ready again")
            await eventually(lambda: ready(api), 30, "the ingest tier to be ready again")
        worker.kill()  # its state from before the broker restart is not worth a graceful stop
    finally:
        own_broker.stop()


async def test_slow_and_huge_clients_cost_bounded_time_and_memory(pipeline_factory):
    pipeline = pipeline_factory(body_timeout="1")
    ingest = pipeline.start_ingest()
    port = ingest.port
    async with aiohttp.ClientSession(f"http://127.0.0.1:{port}") as session:

        async def up():
            async with session.patch(ROW, headers=AUTH, json={"properties": {"a": 0}}) as response:
                return response.status == 202

        await eventually(up, 60, "the ingest tier to accept updates")
        before = rss_bytes(ingest.process.pid)

        # Slow: the headers promise 1,000 bytes of body, 10 come, then nothing.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            f"PATCH {ROW} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer test-key\r\n"
            "Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
            '{"propert'.encode()
        )
        await writer.drain()
        await call(session, "PATCH", ROW, 202, json={"properties": {"a": 1}})  # others are served
        status_line = await asyncio.wait_for(reader.readline(), 10)
        assert b" 408 " in status_line, status_line
        writer.close()

        # Huge: 20 clients at once stream 5 MiB each without a Content-Length (chunked).
        async def huge_body():
            for _ in range(80):
                yield b" " * 65536

        async def upload():
            try:
                async with session.post("/v1/updates", headers=AUTH, data=huge_body()) as response:
                    return response.status, await response.json()
            except (aiohttp.ClientOSError, aiohttp.ServerDisconnectedError):
                return "cut off", None  # the tier answered 413 and closed before the rest came

        answers = await asyncio.gather(*(upload() for _ in range(20)))
        assert all(status in (413, "cut off") for status, _ in answers), answers
        assert any(status == 413 for status, _ in answers)
        assert all("1048576" in body["error"] for status, body in answers if status == 413)
        grown = rss_bytes(ingest.process.pid) - before
        print(f"\ningest RSS grew by {grown / 2**20:.1f} MiB over 20 × 5 MiB uploads")
        assert grown < 100 * 2**20
        await call(session, "PATCH", ROW, 202, json={"properties": {"a": 2}})  # still serving
