"""rowstream: HTTP updates → Kafka → ordered, batched, idempotent writes to sharded Postgres.

``faust -A app worker`` imports this package and takes its ``app`` attribute. The Faust app is
built on first access (PEP 562), so importing a pure module such as ``app.model.partitioning`` builds
nothing and reads no environment.
"""

from typing import Any


#: Modules that register agents, tables, views and commands on the app. Imported explicitly, not
#: by Faust's autodiscovery, which logs and skips a module that fails to import: a worker
#: without its sink must not start.
COMPONENTS = (
    "app.ingest.api",
    "app.ops.commands",
    "app.observe.lag_monitor",
    "agents.repartition",
    "agents.sink",
    "tables.throughput",
    "tables.lag",
)


def __getattr__(name: str) -> Any:
    if name == "app":
        import importlib

        from app.main import app

        for module in COMPONENTS:
            importlib.import_module(module)
        return app
    raise AttributeError(name)
