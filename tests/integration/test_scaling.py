"""Two workers share the partitions; each answers for the whole cluster and rows stay exact."""

import aiohttp

from tests.support.helpers import AUTH, LoadClient, Model, eventually, make_updates

APPS = ["4e000000-0000-4000-8000-000000000001", "b7000000-0000-4000-8000-000000000002"]


async def shards_report(session, worker):
    async with session.get(f"http://127.0.0.1:{worker.web_port}/shards/") as response:
        assert response.status == 200
        return await response.json()


async def test_two_workers_split_the_work_and_agree_on_the_shard_figures(pipeline_factory):
    pipeline = pipeline_factory()
    first = pipeline.start_worker()
    second = pipeline.start_worker()
    apis = [pipeline.start_ingest().port, pipeline.start_ingest().port]
    model = Model()
    updates = make_updates(APPS, rows_per_app=60, total=6_000, hot_share=1_000, seed=3)
    # Each app's requests go to one ingest process, in order; the two apps to different ones.
    await LoadClient(apis[0], model).send([u for u in updates if u[0] == APPS[0]], batch=250)
    await LoadClient(apis[1], model).send([u for u in updates if u[0] == APPS[1]], batch=250)

    await pipeline.wait_for_rows(model.rows, 180, "the rows to equal the model")

    # Every update on the internal topic (an update batch's updates of a row folded into one) is
    # applied at least once, so the writers count at least that many.
    forwarded = sum((await pipeline.updates_in("rowstream-by-subscription")).values())
    async with aiohttp.ClientSession(headers=AUTH) as session:

        async def both_count_everything():
            reports = [await shards_report(session, w) for w in (first, second)]
            totals = [[s["total"] for s in r["shards"]] for r in reports]
            return totals[0] == totals[1] and sum(t["events"] for t in totals[0]) >= forwarded

        try:
            await eventually(
                both_count_everything,
                timeout=60,
                what="both workers to report the same cluster-wide figures",
            )
        except AssertionError as exc:
            reports = [await shards_report(session, w) for w in (first, second)]
            raise AssertionError(f"{exc}: {reports}") from None

    # Both workers owned internal-topic partitions (Faust logs each assignment as a table).
    for worker in (first, second):
        assigned = [
            line
            for line in pipeline.log_tail(worker, 500_000).splitlines()
            if f"{pipeline.topic('rowstream-by-subscription')} " in line and "{" in line
        ]
        assert assigned, f"{worker.log_path}: no internal-topic partitions assigned"
