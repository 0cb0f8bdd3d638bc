"""SASL against the embedded broker, as far as it allows: with ``--authentication`` tansu offers
SCRAM-SHA-256 and -512 but cannot create users, so every login is refused — the failure path,
for real. aiokafka then raises a bare ``KeyError: 'v'``; rowstream must say instead, in one line
naming the broker and the mechanism and never the password, and exit 2: the worker at start,
``create-topics``, ``inspect`` and the ingest tier. (A successful SCRAM login could not be shown
here; what reaches Faust and aiokafka for each mechanism is tested in
tests/unit/test_security.py.)"""

from __future__ import annotations

import subprocess

import pytest

from deploy.local import Broker, free_port
from deploy.stack import ROOT, faust

PASSWORD = "pw-n0t-in-any-line"


@pytest.fixture(scope="module")
def authenticating_broker(tmp_path_factory):
    broker = Broker(tmp_path_factory.mktemp("sasl") / "broker", free_port(), authentication=True)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_a_refused_scram_login_is_one_line_and_exit_code_2(
    authenticating_broker, tmp_path, mechanism
):
    env = {
        "PATH": "/usr/bin:/bin",
        "FAUST_LOOP": "aio",
        "ROWSTREAM_BROKER": authenticating_broker.url,
        "ROWSTREAM_BROKER_SASL_MECHANISM": mechanism,
        "ROWSTREAM_BROKER_SASL_USERNAME": "rowstream",
        "ROWSTREAM_BROKER_SASL_PASSWORD": PASSWORD,
        "ROWSTREAM_WEB_PORT": str(free_port()),
        "ROWSTREAM_INGEST_PORT": str(free_port()),
        "ROWSTREAM_DATA_DIR": str(tmp_path / "worker"),
    }
    expected = (
        f"the broker at {authenticating_broker.url} refused the SASL {mechanism} login of "
        f"user 'rowstream'"
    )
    for command in (["worker"], ["create-topics"], ["inspect", "--timeout", "20"], ["ingest"]):
        done = subprocess.run(
            faust(*command), env=env, cwd=ROOT, capture_output=True, text=True, timeout=120
        )
        output = done.stdout + done.stderr
        assert done.returncode == 2, (command, output[-3000:])
        said = [line for line in done.stderr.splitlines() if expected in line]
        assert len(said) == 1, (command, output[-3000:])
        assert "Traceback" not in output and PASSWORD not in output, (command, output[-3000:])
