"""The worker class Faust starts: it logs at ROWSTREAM_LOG_LEVEL, whatever ``-l`` says, and
builds no record for a level it does not log."""

import logging
import subprocess
import sys
from pathlib import Path

CODE = """
import asyncio
import sys
async def main():
    from app.main import Worker, app
    worker = app.conf.Worker(app, loglevel="warn")  # what `faust worker -l warn` passes
    worker._setup_logging()  # what starting it does first
    import logging
    debug = logging.getLogger("aiokafka.consumer.fetcher").isEnabledFor(logging.DEBUG)
    print(type(worker) is Worker, worker.loglevel, debug, file=sys.__stdout__, flush=True)
asyncio.run(main())
"""


def worker_level(environ: dict[str, str]) -> tuple[str, ...]:
    done = subprocess.run(
        [sys.executable, "-c", CODE],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "FAUST_LOOP": "aio", **environ},
    )
    assert done.returncode == 0, done.stderr
    return tuple(done.stdout.split())


def test_the_worker_logs_at_the_setting_not_at_the_command_line_level_and_nothing_below():
    assert worker_level({}) == ("True", str(logging.INFO), "False")  # the setting's default
    assert worker_level({"ROWSTREAM_LOG_LEVEL": "debug"}) == ("True", str(logging.DEBUG), "True")
    # At WARNING and above Faust 0.15.3 adds a terminal spinner that turns the root logger to
    # DEBUG, so every library's debug call built a record (found in a py-spy profile).
    assert worker_level({"ROWSTREAM_LOG_LEVEL": "warning"}) == (
        "True",
        str(logging.WARNING),
        "False",
    )
    assert worker_level({"ROWSTREAM_LOG_LEVEL": "error"}) == ("True", str(logging.ERROR), "False")


def test_a_bad_setting_stops_every_command_with_one_line_and_exit_code_2():
    faust = [str(Path(sys.executable).parent / "faust"), "-A", "app"]
    for command in (
        [*faust, "worker"],
        [*faust, "create-topics"],
        [*faust, "inspect", "--help"],
        [*faust, "ingest"],
        [sys.executable, "-m", "app.ingest"],  # what `faust -A app ingest` becomes
    ):
        done = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=60,
            env={"PATH": "/usr/bin:/bin", "ROWSTREAM_PARTITIONS": "zero"},
        )
        assert done.returncode == 2, (command, done.stderr)
        assert done.stderr.splitlines() == [
            "rowstream: configuration error: ROWSTREAM_PARTITIONS: Input should be a valid "
            "integer, unable to parse string as an integer"
        ], (command, done.stderr)
