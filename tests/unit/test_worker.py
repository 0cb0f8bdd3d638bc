"""The worker class Faust starts: it logs at ROWSTREAM_LOG_LEVEL, whatever ``-l`` says."""

import logging
import subprocess
import sys

CODE = """
import asyncio
async def main():
    from app.main import Worker, app
    worker = app.conf.Worker(app, loglevel="warn")  # what `faust worker -l warn` passes
    print(type(worker) is Worker, worker.loglevel)
asyncio.run(main())
"""


def worker_level(environ: dict[str, str]) -> tuple[str, str]:
    done = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin", "FAUST_LOOP": "aio", **environ})
    assert done.returncode == 0, done.stderr
    return tuple(done.stdout.split())


def test_the_worker_logs_at_the_setting_not_at_the_command_line_level():
    assert worker_level({}) == ("True", str(logging.INFO))  # the setting's default
    assert worker_level({"ROWSTREAM_LOG_LEVEL": "debug"}) == ("True", str(logging.DEBUG))
    assert worker_level({"ROWSTREAM_LOG_LEVEL": "error"}) == ("True", str(logging.ERROR))
