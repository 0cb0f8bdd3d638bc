"""Per-key rate limits and hashed keys against a live ingest process: a key flooding far above its
limit gets 429 with Retry-After while another key's requests all get 202; every update either
had accepted is applied, and the metric counts the refusals by the key's name, never the key."""

import aiohttp

from app.ingest.keys import hashed_entry
from tests.support.helpers import Model, make_updates

FLOOD_APP = "6d000000-0000-4000-8000-000000000001"
CALM_APP = "f2000000-0000-4000-8000-000000000002"
FLOOD = {"Authorization": "Bearer flood-s3cret"}
CALM = {"Authorization": "Bearer calm-s3cret"}


async def test_a_flooding_key_gets_429_and_another_key_keeps_getting_202(pipeline_factory):
    pipeline = pipeline_factory(
        api_keys=f"{hashed_entry('flood-s3cret', 'flood')},calm=calm-s3cret,test-key",
        rate_limit="100",
        rate_burst="1000",
    )
    pipeline.start_worker()
    ingest = pipeline.start_ingest()
    model, refused = Model(), []
    flood = make_updates([FLOOD_APP], rows_per_app=50, total=8000, hot_share=100, seed=3)
    calm = make_updates([CALM_APP], rows_per_app=20, total=200, hot_share=10, seed=4)
    base = f"http://127.0.0.1:{ingest.port}"
    async with aiohttp.ClientSession(base) as session:
        for start in range(0, len(flood), 1000):  # 8 requests of 1,000 as fast as it can
            chunk = flood[start : start + 1000]
            body = [{"app_id": a, "subscription_id": s, "properties": p} for a, s, p in chunk]
            async with session.post("/v1/updates", json=body, headers=FLOOD) as response:
                answer = await response.json()
                if response.status == 202:
                    for update in chunk:
                        model.accept(*update)
                else:
                    assert response.status == 429, answer
                    refused.append((response.headers.get("Retry-After"), answer))
            for app_id, sub, properties in calm[start // 40 : start // 40 + 25]:  # 25 singles
                url = f"/v1/apps/{app_id}/subscriptions/{sub}"
                async with session.patch(url, json={"properties": properties}, headers=CALM) as r:
                    assert r.status == 202, await r.text()  # never limited by the flood
                model.accept(app_id, sub, properties)
        async with session.get("/metrics") as response:
            metrics = await response.text()

    assert model.accepted >= 1000 + len(calm)  # the flood's burst, and every calm update
    assert len(refused) >= 6  # 100 updates/s refills a tenth of a request a second
    for retry_after, answer in refused:
        assert retry_after is not None and 1 <= int(retry_after) <= 10
        assert "rate limit: key 'flood' may send 100 updates/s" in answer["error"]
        assert answer["problems"][0]["where"] == "limit"
    assert f'rowstream_ingest_rate_limited_total{{key="flood"}} {len(refused)}.0' in metrics
    assert "s3cret" not in metrics and 'key="calm"' not in metrics
    await pipeline.wait_for_rows(model.rows, 120, "every accepted update to be applied")
