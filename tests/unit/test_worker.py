"""The worker class Faust starts: it logs at ROWSTREAM_LOG_LEVEL, whatever ``-l`` says."""

import logging
import subprocess
import sys
from pathlib import Path

CODE = """
import asyncio
async def main():
    from app.main import Worker, app
    worker = app.conf.Worker(app, loglevel="warn")  # what `faust worker -l warn` passes
    print(type(worker) is Worker, worker.loglevel)
asyncio.run(main())
"""


def worker_level(environ: dict[str, str]) -> tuple[str, str]:
    done = subprocess.run(
        [sys.executable, "-c", CODE],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "FAUST_LOOP": "aio", **environ},
    )
    assert done.returncode == 0, done.stderr
    return tuple(done.stdout.split())


def test_the_worker_logs_at_the_setting_not_at_the_command_line_level():
    assert worker_level({}) == ("True", str(logging.INFO))  # the setting's default
    assert worker_level({"ROWSTREAM_LOG_LEVEL": "debug"}) == ("True", str(logging.DEBUG))
    assert worker_level({"ROWSTREAM_LOG_LEVEL": "error"}) == ("True", str(logging.ERROR))


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
