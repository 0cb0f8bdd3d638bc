"""Bad HTTP input against a live worker: a clear JSON error for every 4xx, and nothing produced."""

import aiohttp
import pytest

from tests.integration.helpers import AUTH

APP = "0f8fad5b-d9cb-469f-a165-70867728950e"
SUB = "7c9e6679-7425-40de-944b-e07fc1f90ae7"
ROW = f"/v1/apps/{APP}/subscriptions/{SUB}"


OTHER_APP = "ff8fad5b-d9cb-469f-a165-70867728950e"
SCOPED = {"Authorization": "Bearer scoped-key"}


@pytest.fixture
async def api(pipeline_factory):
    pipeline = pipeline_factory(api_keys=f"test-key,scoped-key:{APP}")
    worker = pipeline.start_worker()
    async with aiohttp.ClientSession(f"http://127.0.0.1:{worker.web_port}") as session:
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
    await call(session, "PATCH", ROW, 401, headers={"Authorization": "Basic dGVzdC1rZXk="}, json=good)
    await call(session, "GET", ROW, 401, headers={})
    _, body = await call(session, "PATCH", f"/v1/apps/nope/subscriptions/{SUB}", 400, json=good)
    assert body["problems"] == [{"where": "app_id", "problem": "not a UUID"}]
    _, body = await call(session, "PATCH", ROW, 400, data=b"{not json")
    assert "Invalid JSON" in body["problems"][0]["problem"]
    _, body = await call(session, "PATCH", ROW, 400, json={"properties": {"a": {"b": 1}}})
    assert body["problems"][0]["where"] == "properties.a"
    _, body = await call(session, "POST", "/v1/updates", 400, json=[
        {"app_id": APP, "subscription_id": SUB, "properties": {}},
        {"app_id": APP, "subscription_id": "x", "properties": {}},
    ])
    assert [p["where"] for p in body["problems"]] == ["[1].subscription_id"]
    await call(session, "POST", "/v1/updates", 400, json={"not": "a list"})
    _, body = await call(session, "POST", "/v1/updates", 413, data=b"[" + b" " * (1024 * 1024) + b"]")
    assert "1048576" in body["error"]
    _, body = await call(session, "GET", ROW, 404)
    assert body == {"error": "no such row"}

    assert await pipeline.read_topic("subscription-updates") == []


async def test_scoped_keys_and_secrets_stay_out_of_logs_and_bodies(api):
    pipeline, session = api
    await call(session, "PATCH", ROW, 202, headers=SCOPED, json={"properties": {"a": 1}})
    other_row = f"/v1/apps/{OTHER_APP}/subscriptions/{SUB}"
    _, body = await call(session, "PATCH", other_row, 403, headers=SCOPED, json={"properties": {}})
    assert body["problems"] == [{"where": "app_id", "problem": f"{OTHER_APP} is outside the key's scope"}]
    await call(session, "GET", other_row, 403, headers=SCOPED)
    _, body = await call(session, "POST", "/v1/updates", 403, headers=SCOPED, json=[
        {"app_id": APP, "subscription_id": SUB, "properties": {}},
        {"app_id": OTHER_APP, "subscription_id": SUB, "properties": {}},
    ])
    await call(session, "PATCH", other_row, 202, json={"properties": {"b": 2}})  # unscoped key
    _, body = await call(session, "PATCH", ROW, 401, headers={"Authorization": "Bearer sk-wrong-42"},
                         json={"properties": {}})
    assert "sk-wrong-42" not in str(body)
    worker_log = pipeline.log_tail(pipeline.workers[0], 1_000_000)
    for secret in ("scoped-key", "test-key", "sk-wrong-42"):
        assert secret not in worker_log


async def test_health_and_openapi(api):
    _, session = api
    _, body = await call(session, "GET", "/healthz", 200, headers={})
    assert body == {"ok": True}
    _, document = await call(session, "GET", "/openapi.json", 200, headers={})
    assert document["openapi"].startswith("3.0")
    assert set(document["paths"]) == {"/v1/apps/{app_id}/subscriptions/{subscription_id}", "/v1/updates"}


async def test_broker_down_means_503_with_retry_after_never_202(stack, pipeline_factory, tmp_path):
    from deploy.local import Broker, free_port

    own_broker = Broker(tmp_path / "own-broker", free_port())
    own_broker.start()
    try:
        pipeline = pipeline_factory(broker=own_broker.url, produce_timeout="2")
        worker = pipeline.start_worker()
        async with aiohttp.ClientSession(f"http://127.0.0.1:{worker.web_port}") as session:
            await call(session, "PATCH", ROW, 202, json={"properties": {"a": 1}})
            own_broker.kill()
            response, body = await call(session, "PATCH", ROW, 503, json={"properties": {"a": 2}})
            assert response.headers["Retry-After"] == "1"
            assert "retry" in body["error"]
        worker.kill()  # a worker without its broker waits long for it on a graceful stop
    finally:
        own_broker.stop()
