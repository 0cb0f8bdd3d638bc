"""``python -m app.ingest``: the ingest tier (``faust -A app ingest`` runs this). ``--help``
lists the options; the settings are the ``ROWSTREAM_*`` variables (README "Configuration").

Before anything imports prometheus_client, ``PROMETHEUS_MULTIPROC_DIR`` is pointed at a fresh
folder (or the given one, emptied): the tier's processes keep their counters there
(``app.observe.metrics``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import sys
import tempfile
from pathlib import Path


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="faust -A app ingest",
        description="Serve rowstream's HTTP API: validate, authenticate, produce to Kafka with "
        "acks=all, answer 202. Several processes share one port.",
        epilog="Settings come from ROWSTREAM_* environment variables (README.md); "
        "ROWSTREAM_INGEST_BIND and ROWSTREAM_INGEST_PORT give the defaults below.",
    )
    parser.add_argument(
        "--processes",
        type=int,
        default=os.cpu_count() or 1,
        help="processes serving the port (default: the cores, %(default)s here)",
    )
    parser.add_argument("--bind", help="address to listen on (default: ROWSTREAM_INGEST_BIND)")
    parser.add_argument("--port", type=int, help="port (default: ROWSTREAM_INGEST_PORT)")
    args = parser.parse_args(argv)
    if args.processes < 1:
        parser.error("--processes must be at least 1")
    return args


def metrics_folder() -> tuple[str, bool]:
    """The multiprocess metrics folder, emptied, and whether it is ours to remove at the end."""
    given = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if given:
        Path(given).mkdir(parents=True, exist_ok=True)
        for stale in Path(given).glob("*.db"):
            stale.unlink()
        return given, False
    made = tempfile.mkdtemp(prefix="rowstream-ingest-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = made
    return made, True


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    from app.settings import ConfigError, load

    try:
        settings = load()
    except ConfigError as exc:
        print(f"rowstream: configuration error: {exc}", file=sys.stderr)
        return 2
    bind = args.bind or settings.ingest_bind
    port = args.port if args.port is not None else settings.ingest_port
    folder, ours = metrics_folder()
    try:
        from app.ingest import server  # imports prometheus_client: after the folder is set
        from app.kafka.names import UPDATES
        from app.kafka.security import BrokerRefused, broker_of, check_access

        server.log_to_stderr(settings.log_level)
        try:
            server.check_port(bind, port)
        except OSError as exc:
            print(f"rowstream: cannot listen on {bind}:{port}: {exc.strerror}", file=sys.stderr)
            return 2
        from app.sink.control import ControlError, check_control

        broker = broker_of(settings)
        try:
            asyncio.run(check_access(broker))
            asyncio.run(check_control(settings))
        except (BrokerRefused, ControlError) as exc:
            print(f"rowstream: {exc}", file=sys.stderr)
            return 2
        server.log.info(
            "serving http://%s:%d/ with %d process(es); broker %s, topic %s",
            bind,
            port,
            args.processes,
            broker.describe(),
            settings.topic(UPDATES),
        )
        code = server.run(settings, bind, port, args.processes, folder)
        server.log.info("stopped")
        return code
    except KeyboardInterrupt:
        return 0
    finally:
        if ours:
            with contextlib.suppress(OSError):
                shutil.rmtree(folder)


if __name__ == "__main__":
    sys.exit(main())
