"""Test certificates made with ``openssl``: a CA and leaf certificates it signs (server and
client use), for the TLS tests of the broker and Postgres. Valid for two days."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import NamedTuple


class Leaf(NamedTuple):
    cert: Path
    key: Path


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_ca(folder: Path, name: str = "ca") -> Path:
    """A self-signed CA in ``folder``; its certificate's path (the key lies beside it)."""
    folder.mkdir(parents=True, exist_ok=True)
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", f"{name}.key", "-out", f"{name}.pem", "-days", "2",
        "-subj", f"/CN=rowstream test {name}", cwd=folder,
    )  # fmt: skip
    return folder / f"{name}.pem"


def make_leaf(ca: Path, name: str, hosts: tuple[str, ...] = ("localhost",)) -> Leaf:
    """A certificate signed by ``ca`` for ``hosts`` (DNS names), for servers and clients."""
    folder = ca.parent
    _openssl(
        "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={hosts[0]}", cwd=folder,
    )  # fmt: skip
    (folder / f"{name}.ext").write_text(
        "subjectAltName=" + ",".join(f"DNS:{host}" for host in hosts) + "\n"
        "basicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth,clientAuth\n"
    )
    _openssl(
        "x509", "-req", "-in", f"{name}.csr", "-CA", ca.name, "-CAkey", ca.with_suffix(".key").name,
        "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext",
        cwd=folder,
    )  # fmt: skip
    (folder / f"{name}.key").chmod(0o600)
    return Leaf(folder / f"{name}.pem", folder / f"{name}.key")


class Pki(NamedTuple):
    ca: Path
    server: Leaf  # for localhost
    client: Leaf  # a client certificate the CA signed
    stranger: Path  # another CA, which signed none of these


def make_pki(folder: Path) -> Pki:
    """What a TLS test needs: a CA, a server and a client certificate it signed, and a CA that
    trusts neither (the wrong root)."""
    ca = make_ca(folder / "pki")
    return Pki(
        ca,
        make_leaf(ca, "server", ("localhost",)),
        make_leaf(ca, "client", ("rowstream-worker",)),
        make_ca(folder / "other-pki", "stranger-ca"),
    )
