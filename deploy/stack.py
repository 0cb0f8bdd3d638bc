"""``make run``: the whole pipeline on the embedded stack, in one command.

Starts a Kafka-API broker and a Postgres server with one database per shard (unless
ROWSTREAM_BROKER / ROWSTREAM_SHARDS point at real ones), creates the topics, starts one worker
(its web view: the operator's pages) and one ingest process (the HTTP API), each with the
Procfile's command, prints where to reach them, and stops everything it started on Ctrl-C.
Every ROWSTREAM_* setting in the environment is passed to both. State: ``.local/``.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import secrets
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

from app import settings as settings_module
from deploy.local import (
    Broker,
    Postgres,
    StackError,
    free_port,
    port_open,
    stop_child,
    stop_stale,
    wait_until,
)

log = logging.getLogger("rowstream.stack")

ROOT = Path(__file__).resolve().parent.parent
STATE = ROOT / ".local"
DEFAULT_BROKER_PORT = 9092
DEFAULT_PG_PORT = 54320
FAUST_LEVELS = {
    "debug": "debug",
    "info": "info",
    "warning": "warn",
    "error": "error",
    "critical": "crit",
}


def faust(*args: str) -> list[str]:
    return [sys.executable, "-m", "faust", "-A", "app", *args]


def procfile_command(process_type: str) -> list[str]:
    """The Procfile's command for ``process_type`` (``web``, ``worker``), run with this
    Python: the same command a platform that reads the Procfile runs."""
    for line in (ROOT / "Procfile").read_text().splitlines():
        name, sep, command = line.partition(":")
        if sep and name.strip() == process_type:
            words = shlex.split(command)
            if words and words[0] == "faust":
                words = [sys.executable, "-m", "faust", *words[1:]]
            return words
    raise StackError(f"the Procfile has no {process_type}: line")


class Child:
    """A rowstream process (``command``) run as a child with the given environment, its output
    in ``log_path``; started once it listens on ``port``."""

    what = "the process"

    def __init__(
        self,
        command: list[str],
        env: dict[str, str],
        port: int,
        log_path: Path,
        pid_file: Path | None = None,
    ):
        self.command, self.env, self.port = command, env, port
        self.log_path, self.pid_file = log_path, pid_file
        self.process: subprocess.Popen | None = None

    def start(self, wait: float = 90.0) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as out:
            self.process = subprocess.Popen(
                self.command,
                env=self.env,
                cwd=ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        if self.pid_file:
            self.pid_file.write_text(str(self.process.pid))
        wait_until(
            lambda: port_open(self.port) or self.process.poll() is not None,
            wait,
            f"{self.what} on port {self.port}",
        )
        if self.process.poll() is not None:
            raise StackError(f"{self.what} exited at start; see {self.log_path}")

    def stop(self, timeout: float = 30.0) -> None:
        if self.process:
            stop_child(self.process, timeout)
        if self.pid_file:
            with contextlib.suppress(FileNotFoundError):
                self.pid_file.unlink()

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


class Worker(Child):
    """``faust -A app worker`` (its web view on ``web_port``)."""

    what = "the worker's web view"

    def __init__(
        self,
        env: dict[str, str],
        web_port: int,
        log_path: Path,
        loglevel: str = "info",
        pid_file: Path | None = None,
    ):
        super().__init__(
            faust("-l", FAUST_LEVELS[loglevel], "worker"), env, web_port, log_path, pid_file
        )
        self.web_port = web_port


class Ingest(Child):
    """The ingest tier: ``processes`` of its processes on ``port``, started with the Procfile's
    ``web:`` command, or with ``command`` (the tests start ``python -m app.ingest``, what that
    command becomes, a second sooner)."""

    what = "the ingest tier"

    def __init__(
        self,
        env: dict[str, str],
        port: int,
        log_path: Path,
        processes: int = 1,
        pid_file: Path | None = None,
        command: list[str] | None = None,
    ):
        super().__init__(
            [*(command or procfile_command("web")), "--processes", str(processes)],
            {**env, "ROWSTREAM_INGEST_PORT": str(port)},
            port,
            log_path,
            pid_file,
        )


def create_topics(env: dict[str, str]) -> None:
    done = subprocess.run(
        faust("create-topics"), env=env, cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    if done.returncode:
        raise StackError(f"creating topics failed: {(done.stderr or done.stdout).strip()[-2000:]}")
    log.info("%s", done.stdout.strip())


def _cmdline(pid: int) -> str:
    """The command line of a live process; empty for a dead one (or a zombie)."""
    try:
        return (
            Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        )
    except OSError:
        return ""


def _claim_run_lock() -> Path:
    lock = STATE / "run.pid"
    with contextlib.suppress(FileNotFoundError, ValueError):
        pid = int(lock.read_text())
        if pid != os.getpid() and "deploy.stack" in _cmdline(pid):
            raise StackError(
                f"rowstream is already running from this folder (pid {pid}): stop it with "
                f"Ctrl-C in its terminal or `kill {pid}`, then run `make run` again"
            )
    STATE.mkdir(parents=True, exist_ok=True)
    lock.write_text(str(os.getpid()))
    return lock


def run(args: argparse.Namespace) -> int:
    try:
        settings = settings_module.load()
    except settings_module.ConfigError as exc:
        raise StackError(f"configuration error: {exc}") from None
    given = settings_module.given()
    lock = _claim_run_lock()
    env = dict(os.environ)
    started: list = []
    try:
        # Services a crashed run left behind go first, so that their ports are free again.
        worker_pid = STATE / f"worker-{settings.web_port}.pid"
        stop_stale(worker_pid, "faust", "worker")
        ingest_pid = STATE / f"ingest-{settings.ingest_port}.pid"
        stop_stale(ingest_pid, "app.ingest", "ingest tier")
        stop_stale(STATE / "broker" / "broker.pid", "tansu", "broker")
        if "broker" not in given:
            broker = Broker(STATE / "broker", free_port(DEFAULT_BROKER_PORT))
            log.info("starting the embedded broker (tansu, memory storage) on %s", broker.url)
            broker.start()
            started.append(broker)
            env["ROWSTREAM_BROKER"] = broker.url
        if "shards" not in given:
            postgres = Postgres(STATE / "postgres", 0)
            postgres.stop()  # a server left running by a crashed run
            postgres.port = free_port(DEFAULT_PG_PORT)
            log.info(
                "starting Postgres on 127.0.0.1:%d (data in %s)", postgres.port, postgres.data_dir
            )
            postgres.start()
            started.append(postgres)
            names = [f"rowstream_shard{n}" for n in range(args.shards)]
            postgres.create_databases(names)
            env["ROWSTREAM_SHARDS"] = ",".join(postgres.dsn(name) for name in names)
            if "partitions" not in given and settings.partitions % args.shards:
                env["ROWSTREAM_PARTITIONS"] = str(args.shards * 12)
        if "api_keys" not in given:
            env["ROWSTREAM_API_KEYS"] = "dev-" + secrets.token_urlsafe(18)
        for port, variable in (
            (settings.web_port, "ROWSTREAM_WEB_PORT"),
            (settings.ingest_port, "ROWSTREAM_INGEST_PORT"),
        ):
            if port_open(port):
                raise StackError(
                    f"port {port} is taken: stop what listens there or set {variable} to a free "
                    f"port"
                )
        log.info("creating topics")
        create_topics(env)
        worker = Worker(
            env,
            settings.web_port,
            STATE / f"worker-{settings.web_port}.log",
            settings.log_level,
            worker_pid,
        )
        log.info("starting the worker (log: %s)", worker.log_path)
        worker.start()
        started.append(worker)
        ingest = Ingest(
            env, settings.ingest_port, STATE / f"ingest-{settings.ingest_port}.log", 1, ingest_pid
        )
        log.info("starting the ingest tier (log: %s)", ingest.log_path)
        ingest.start()
        started.append(ingest)
        _banner(settings.web_port, settings.ingest_port, env)
        while True:
            for name, child in (("worker", worker), ("ingest tier", ingest)):
                if child.process is not None and child.process.poll() is not None:
                    log.error(
                        "the %s exited (code %s); see %s",
                        name,
                        child.process.returncode,
                        child.log_path,
                    )
                    return 1
            time.sleep(0.5)
    except KeyboardInterrupt:
        print("\nstopping…", file=sys.stderr)
        return 0
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the cleanup
        for service in reversed(started):
            with contextlib.suppress(Exception):
                service.stop()
        with contextlib.suppress(FileNotFoundError):
            lock.unlink()
        log.info("stopped")


def _banner(port: int, ingest_port: int, env: dict[str, str]) -> None:
    key = env["ROWSTREAM_API_KEYS"].split(",")[0]
    base = f"http://127.0.0.1:{port}"
    api = f"http://127.0.0.1:{ingest_port}"
    print(
        f"""
rowstream is running.
  API (ingest tier)  {api}/v1/…   (its description: {api}/openapi.json)
  worker's web view  {base}/          (Faust's own views: {base}/router/ …)
  per-shard stats    {base}/shards/
  operator page      {base}/ui/   (asks for the API key below)
  broker             {env["ROWSTREAM_BROKER"]}
  shards             {",".join(map(settings_module.redact_dsn, env["ROWSTREAM_SHARDS"].split(",")))}
  API key            {key}

Try:
  curl -X PATCH -H 'Authorization: Bearer {key}' -H 'Content-Type: application/json' \\
       -d '{{"properties": {{"plan": "pro", "trial": null}}}}' \\
       {api}/v1/apps/0f8fad5b-d9cb-469f-a165-70867728950e/subscriptions/7c9e6679-7425-40de-944b-e07fc1f90ae7
  curl -H 'Authorization: Bearer {key}' \\
       {api}/v1/apps/0f8fad5b-d9cb-469f-a165-70867728950e/subscriptions/7c9e6679-7425-40de-944b-e07fc1f90ae7
  curl -H 'Authorization: Bearer {key}' '{base}/lag/?format=text'     (web views need the key too)

The embedded broker keeps every record in memory and reads a partition's whole log on each
fetch: it slows as its topics grow (minutes at thousands of updates a second; see
docs/operating.md, "The embedded stack"). Restart `make run` to start empty. A real Kafka has no
such limit.

Ctrl-C stops everything.
""",
        flush=True,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="make run",
        description=__doc__.split("\n\n")[1] if __doc__ else None,
        epilog="Settings come from ROWSTREAM_* environment variables; see README.md.",
    )
    parser.add_argument(
        "--shards",
        type=int,
        default=2,
        help="shard databases to create when ROWSTREAM_SHARDS is not set (default 2)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="rowstream: %(message)s")
    try:
        return run(args)
    except StackError as exc:
        log.error("%s", exc)
        return 2


if __name__ == "__main__":
    sys.exit(main())
