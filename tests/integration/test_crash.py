"""SIGKILL the worker while it is writing; a new worker finishes the job, and the rows are exact."""

import time

from tests.integration.helpers import LoadClient, Model, eventually, make_updates

APPS = ["2a000000-0000-4000-8000-000000000001", "d4000000-0000-4000-8000-000000000002"]


async def test_sigkill_while_writing_loses_and_reorders_nothing(pipeline_factory):
    pipeline = pipeline_factory()
    worker = pipeline.start_worker()
    model = Model()
    updates = make_updates(APPS, rows_per_app=100, total=15_000, hot_share=3_000, seed=11)
    await LoadClient(worker.web_port, model).send(updates, batch=500)

    async def writing():
        return len(pipeline.rows()) >= 50

    await eventually(writing, timeout=120, what="the sink to start writing", interval=0.05)
    worker.kill()
    at_kill = pipeline.properties()
    assert at_kill != model.rows, "the sink finished before the kill: the test proves nothing"
    killed_at = time.monotonic()

    pipeline.start_worker()

    await pipeline.wait_for_rows(model.rows, 240, "the restarted worker to finish")
    print(f"\nkilled with {sum(1 for k in model.rows if at_kill.get(k) == model.rows[k])} of "
          f"{len(model.rows)} rows final; converged {time.monotonic() - killed_at:.1f}s after")
