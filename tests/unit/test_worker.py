"""The worker class Faust starts: it logs at ROWSTREAM_LOG_LEVEL, whatever ``-l`` says, and it
closes its loop after a tenth of a second where mode waits a whole one."""

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


# Each sleep of the worker's shutdown, recorded (the real sleep still runs).
SHUTDOWN = """
import asyncio, sys
real_sleep, slept = asyncio.sleep, []
async def recording_sleep(delay, *args, **kwargs):
    slept.append(delay)
    return await real_sleep(delay, *args, **kwargs)
asyncio.sleep = recording_sleep
import mode
from app.main import app
worker = app.conf.Worker(app, loglevel="warn") if sys.argv[1] == "ours" else mode.Worker()
worker._shutdown_loop()
print(max(slept))
"""


def run(code: str, *args: str, environ: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "FAUST_LOOP": "aio", **(environ or {})},
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def worker_level(environ: dict[str, str]) -> tuple[str, ...]:
    return tuple(run(CODE, environ=environ).split())


def test_the_worker_logs_at_the_setting_not_at_the_command_line_level():
    assert worker_level({}) == ("True", str(logging.INFO))  # the setting's default
    assert worker_level({"ROWSTREAM_LOG_LEVEL": "debug"}) == ("True", str(logging.DEBUG))
    assert worker_level({"ROWSTREAM_LOG_LEVEL": "error"}) == ("True", str(logging.ERROR))


def test_a_bad_setting_stops_every_command_with_one_line_and_exit_code_2():
    for command in (["worker"], ["create-topics"], ["inspect", "--help"]):
        done = subprocess.run(
            [str(Path(sys.executable).parent / "faust"), "-A", "app", *command],
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


def test_the_loop_s_last_turn_is_a_tenth_of_a_second_not_mode_s_second():
    assert float(run(SHUTDOWN, "mode")) == 1.0  # mode-streaming 0.7.1's _sentinel_task
    assert float(run(SHUTDOWN, "ours")) == 0.1  # the longest sleep of our shutdown
