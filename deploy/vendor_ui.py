"""Vendor the operator page's chart library: ``python -m deploy.vendor_ui [VERSION]`` fetches
uPlot from the npm registry (``npm pack``), checks the tarball against the registry's integrity,
and copies the browser build, its CSS and its licence into ``app/ops/ui/vendor/uplot/`` with
their checksums in ``VENDOR.json`` (which ``tests/unit/test_page.py`` checks)."""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

TARGET = Path(__file__).resolve().parents[1] / "app" / "ops" / "ui" / "vendor" / "uplot"
FILES = ("dist/uPlot.iife.min.js", "dist/uPlot.min.css", "LICENSE")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    current = json.loads((TARGET / "VENDOR.json").read_text())["version"]
    parser.add_argument("version", nargs="?", default=current, help=f"default: {current}")
    version = parser.parse_args().version
    with tempfile.TemporaryDirectory() as folder:
        done = subprocess.run(
            ["npm", "pack", f"uplot@{version}", "--json"], cwd=folder, check=True,
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        packed = json.loads(done.stdout)[0]
        tarball = Path(folder) / packed["filename"]
        algorithm, _, expected = packed["integrity"].partition("-")
        digest = hashlib.new(algorithm, tarball.read_bytes()).digest()
        if base64.b64encode(digest).decode() != expected:
            raise SystemExit(f"{tarball.name} does not match the registry's integrity")
        with tarfile.open(tarball) as archive:
            archive.extractall(folder, filter="data")
        checksums = {}
        for name in FILES:
            source = Path(folder) / "package" / name
            shutil.copyfile(source, TARGET / source.name)
            checksums[name] = hashlib.sha256(source.read_bytes()).hexdigest()
    manifest = {
        "package": "uplot", "version": version, "license": "MIT",
        "tarball": f"https://registry.npmjs.org/uplot/-/uplot-{version}.tgz",
        "integrity": packed["integrity"], "files": checksums,
    }  # fmt: skip
    (TARGET / "VENDOR.json").write_text(json.dumps(manifest, indent=2) + "\n")
    print(f"vendored uplot {version} into {TARGET}")


if __name__ == "__main__":
    main()
