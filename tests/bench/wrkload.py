"""HTTP load with ``wrk`` (Debian's package; a C load generator, so that the load does not eat
the cores it measures): run a script of ``tests/bench/wrk/`` and read its figures."""

from __future__ import annotations

import os
import random
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

SCRIPTS = Path(__file__).parent / "wrk"
_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


@dataclass
class WrkResult:
    requests: int  # answered within the run
    failed: int  # answered with a non-2xx/3xx status, or lost to a socket error
    seconds: float
    p50_ms: float
    p99_ms: float

    @property
    def accepted(self) -> int:
        return self.requests - self.failed

    @property
    def accepted_per_s(self) -> float:
        return self.accepted / self.seconds


def wrk_path() -> str:
    found = shutil.which("wrk")
    if found is None:
        raise RuntimeError("wrk is missing: `make test-deps` as root, or apt-get install wrk")
    return found


def run_wrk(
    url: str,
    script: str,
    seconds: float,
    connections: int = 64,
    env: dict[str, str] | None = None,
) -> WrkResult:
    """``wrk -t1 -c<connections> -d<seconds>`` with ``tests/bench/wrk/<script>`` against
    ``url``; a generous request timeout, so that a slow answer counts as an answer; a seed of
    its own, so that the rows of one run are not those of another."""
    seed = {"ROWSTREAM_BENCH_SEED": str(random.randrange(1, 2**31))}
    done = subprocess.run(
        [
            wrk_path(), "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s",
            "--timeout", "30s", "--latency", "-s", str(SCRIPTS / script), url,
        ],
        env={**os.environ, **seed, **(env or {})},
        capture_output=True,
        text=True,
        timeout=seconds + 60,
    )  # fmt: skip
    if done.returncode:
        raise RuntimeError(f"wrk failed: {done.stderr.strip()[-500:]}")
    return parse(done.stdout)


def parse(text: str) -> WrkResult:
    answered = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m),", text)
    if answered is None:
        raise RuntimeError(f"no figures in wrk's output: {text[-500:]}")
    seconds = (
        float(answered.group(2)) * {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}[answered.group(3)]
    )
    failed = sum(int(n) for n in re.findall(r"Non-2xx or 3xx responses: (\d+)", text))
    errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text
    )
    if errors:
        failed += sum(int(n) for n in errors.groups())

    def percentile(label: str) -> float:
        found = re.search(rf"^\s+{label}%\s+([\d.]+)(us|ms|s)\s*$", text, re.M)
        return round(float(found.group(1)) * _UNITS[found.group(2)], 2) if found else 0.0

    return WrkResult(int(answered.group(1)), failed, seconds, percentile("50"), percentile("99"))
