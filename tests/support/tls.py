"""A TLS terminator in front of a plain TCP server, for the tests: Debian's ``stunnel4``, on a
free loopback port, with a certificate the test made (``tests.support.certs``); optionally it
also asks for and checks client certificates (mutual TLS)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from deploy.local import free_port, port_open, stop_child, wait_until
from tests.support.certs import Leaf


class Terminator:
    def __init__(self, folder: Path, leaf: Leaf, target_port: int, client_ca: Path | None = None):
        self.folder, self.leaf, self.target_port, self.client_ca = (
            folder,
            leaf,
            target_port,
            client_ca,
        )
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 30.0) -> None:
        binary = shutil.which("stunnel4") or shutil.which("stunnel")
        assert binary, "stunnel4 is missing: make test-deps installs it (Debian package stunnel4)"
        self.folder.mkdir(parents=True, exist_ok=True)
        config = self.folder / f"stunnel-{self.port}.conf"
        lines = [
            "foreground = yes",
            "pid =",
            f"output = {self.folder / f'stunnel-{self.port}.log'}",
            "[broker]",
            f"accept = 127.0.0.1:{self.port}",
            f"connect = 127.0.0.1:{self.target_port}",
            f"cert = {self.leaf.cert}",
            f"key = {self.leaf.key}",
        ]
        if self.client_ca is not None:
            lines += [f"CAfile = {self.client_ca}", "verifyChain = yes", "requireCert = yes"]
        config.write_text("\n".join(lines) + "\n")
        self.process = subprocess.Popen(
            [binary, str(config)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        wait_until(
            lambda: port_open(self.port) or self.process.poll() is not None,
            timeout,
            f"stunnel on port {self.port}",
        )
        assert self.process.poll() is None, (self.folder / f"stunnel-{self.port}.log").read_text()

    def stop(self) -> None:
        if self.process:
            stop_child(self.process)
