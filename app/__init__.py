"""rowstream: HTTP updates → Kafka → ordered, batched, idempotent writes to sharded Postgres.

``faust -A app worker`` imports this package and takes its ``app`` attribute. The Faust app is
built on first access (PEP 562), so importing a pure module such as ``app.model.partitioning``
builds nothing and reads no environment.
"""

import importlib
from typing import Any

import click

from app.settings import ConfigError

#: Modules that register agents, tables, views and commands on the app. Imported explicitly, not
#: by Faust's autodiscovery, which logs and skips a module that fails to import: a worker
#: without its sink must not start.
COMPONENTS = (
    "app.ops.commands",
    "app.ops.page",
    "app.observe.lag_monitor",
    "agents.repartition",
    "agents.sink",
    "tables.throughput",
    "tables.lag",
)


class ConfigurationError(click.ClickException):
    """A bad setting, as one line and exit code 2 from ``faust -A app …`` (Faust's command line
    is click's: it shows a ``ClickException`` raised while it looks the app up, without a
    traceback)."""

    exit_code = 2

    def show(self, file: Any = None) -> None:
        click.echo(f"rowstream: configuration error: {self.message}", file=file, err=True)


def __getattr__(name: str) -> Any:
    if name == "app":
        try:
            from app.main import app
        except ConfigError as exc:
            raise ConfigurationError(str(exc)) from None
        for module in COMPONENTS:
            importlib.import_module(module)
        return app
    raise AttributeError(name)
