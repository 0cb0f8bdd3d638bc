"""Real broker and real Postgres for the whole session (the same code as ``make run``), and a
factory for pipelines: unique topics, group and shard databases per test, workers run as
``faust -A app worker`` subprocesses on free ports."""

from __future__ import annotations

import os
import shutil
from typing import Any

import pytest

from app.settings import INTERNAL_PER_SHARD
from deploy.local import Broker, Postgres, free_port
from tests.support.helpers import Pipeline


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def stack(tmp_path_factory):
    base = tmp_path_factory.mktemp("stack")
    broker = Broker(base / "broker", free_port())
    postgres = Postgres(base / "postgres", free_port())
    broker.start()
    try:
        postgres.start()
        yield broker, postgres
    finally:
        postgres.stop()
        broker.stop()


# `make faults PARTITIONS=720`: every pipeline's update topic at that count unless a test names
# one, and its internal topic at the worker's default (INTERNAL_PER_SHARD), the seed's scale.
SCALE = int(os.environ.get("TEST_PARTITIONS") or 0)


@pytest.fixture
def pipeline_factory(stack, tmp_path, request):
    broker, postgres = stack
    made: list[Pipeline] = []

    def make(
        partitions: int = SCALE or 8,
        shards: int = 2,
        ports: dict[int, int] | None = None,
        on: Any = None,
        shards_on: Any = None,
        **settings: str,
    ) -> Pipeline:
        """``ports`` sends a shard's connections to another port (a proxy the test owns); ``on``
        is another broker than the session's (anything with a ``url``), ``shards_on`` another
        Postgres server."""
        pipeline = Pipeline.create(
            on or broker,
            shards_on or postgres,
            tmp_path,
            partitions,
            shards,
            ports,
            **({"internal_partitions": INTERNAL_PER_SHARD * shards} if SCALE else {}),
            **{"batch_wait": "0.02", **settings},
        )
        made.append(pipeline)
        return pipeline

    yield make
    for pipeline in made:
        pipeline.stop_all()
        if request.node.rep_call.failed if hasattr(request.node, "rep_call") else False:
            for process in [*pipeline.workers, *pipeline.ingests]:
                print(f"--- {process.log_path} (tail) ---\n{pipeline.log_tail(process)}")


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    setattr(item, "rep_" + report.when, report)


@pytest.fixture(scope="session")
def promtool():
    """Debian's promtool (``make test`` installs it: the Makefile's ``test-deps``)."""
    found = shutil.which("promtool")
    if found is None:
        pytest.fail(
            "promtool is missing: run `make test-deps` as root, or install Debian's "
            "prometheus package (apt-get install prometheus)"
        )
    return found
