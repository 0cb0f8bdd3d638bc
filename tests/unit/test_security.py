"""The broker's security settings (``ROWSTREAM_BROKER_*``) and what they become: Faust's
credentials and the aiokafka options every side connection uses, for each SASL mechanism with and
without TLS; and every bad combination refused at start with one line that names no password.

``Broker.auth`` is built without Faust (the ingest tier does not load it); each case checks that
Faust's own mapping of the worker's credentials gives exactly the same options."""

import ssl

import pytest
from faust.auth import SASLCredentials, SSLCredentials
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

from app.kafka.security import BrokerRefused, broker_of, check_access
from app.settings import ConfigError, load
from deploy.local import free_port
from tests.support.certs import make_pki


def same_as_the_worker(broker):
    assert dict(credentials_to_aiokafka_auth(broker.credentials)) == broker.auth


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    made = make_pki(tmp_path_factory.mktemp("pki"))
    return made.ca, made.client


def test_plain_tcp_by_default():
    broker = broker_of(load({}))
    assert broker.credentials is None and not broker.tls
    assert broker.client_options() == {
        "bootstrap_servers": "127.0.0.1:9092",
        "security_protocol": "PLAINTEXT",
    }
    assert broker.describe() == "kafka://127.0.0.1:9092 (plain TCP)"
    same_as_the_worker(broker)


def test_tls_with_a_ca_and_a_client_certificate(pki):
    ca, client = pki
    broker = broker_of(load({
        "ROWSTREAM_BROKER": "kafka://k1:9093;k2:9093",
        "ROWSTREAM_BROKER_TLS": "true",
        "ROWSTREAM_BROKER_CA_FILE": str(ca),
        "ROWSTREAM_BROKER_CERT_FILE": str(client.cert),
        "ROWSTREAM_BROKER_KEY_FILE": str(client.key),
    }))  # fmt: skip
    assert isinstance(broker.credentials, SSLCredentials)
    options = broker.client_options()
    assert options["security_protocol"] == "SSL"
    context = options["ssl_context"]
    assert context.check_hostname and context.verify_mode == ssl.CERT_REQUIRED
    assert [c["subject"] for c in context.get_ca_certs()] == [
        ((("commonName", "rowstream test ca"),),)
    ]
    assert broker.describe() == "kafka://k1:9093;k2:9093 (TLS)"
    same_as_the_worker(broker)
    off = broker_of(load({"ROWSTREAM_BROKER_TLS": "1", "ROWSTREAM_BROKER_CHECK_HOSTNAME": "0"}))
    assert not off.client_options()["ssl_context"].check_hostname


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "scram-sha-512"])
@pytest.mark.parametrize("tls", [False, True])
def test_sasl_for_each_mechanism_with_and_without_tls(mechanism, tls, tmp_path):
    secret = tmp_path / "password"
    secret.write_text("hunter2-from-a-file\n")
    env = {
        "ROWSTREAM_BROKER_SASL_MECHANISM": mechanism,
        "ROWSTREAM_BROKER_SASL_USERNAME": "rowstream",
        "ROWSTREAM_BROKER_SASL_PASSWORD_FILE": str(secret),
    }
    if tls:
        env["ROWSTREAM_BROKER_TLS"] = "true"
    broker = broker_of(load(env))
    credentials = broker.credentials
    assert isinstance(credentials, SASLCredentials)
    assert (credentials.username, credentials.password) == ("rowstream", "hunter2-from-a-file")
    assert credentials.mechanism.value == mechanism.upper()
    options = broker.client_options()
    assert options["security_protocol"] == ("SASL_SSL" if tls else "SASL_PLAINTEXT")
    assert options["sasl_mechanism"] == mechanism.upper()
    assert options["sasl_plain_username"] == "rowstream"
    assert options["sasl_plain_password"] == "hunter2-from-a-file"
    assert (options["ssl_context"] is not None) == tls
    assert "hunter2" not in broker.describe() + repr(credentials) + repr(broker)
    same_as_the_worker(broker)
    assert f"SASL {mechanism.upper()} as 'rowstream'" in broker.describe()
    direct = load({**env, "ROWSTREAM_BROKER_SASL_PASSWORD_FILE": "",
                   "ROWSTREAM_BROKER_SASL_PASSWORD": "from-the-env"})  # fmt: skip
    assert broker_of(direct).client_options()["sasl_plain_password"] == "from-the-env"
    assert "from-the-env" not in repr(direct)


def test_bad_combinations_are_one_line_naming_no_password(pki, tmp_path):
    ca, client = pki
    empty = tmp_path / "empty"
    empty.write_text("\n")
    not_pem = tmp_path / "not.pem"
    not_pem.write_text("nope")
    sasl = {"ROWSTREAM_BROKER_SASL_MECHANISM": "PLAIN", "ROWSTREAM_BROKER_SASL_USERNAME": "u"}
    cases = [
        ({"ROWSTREAM_BROKER_CA_FILE": str(ca)}, "ROWSTREAM_BROKER_CA_FILE is set but"),
        ({"ROWSTREAM_BROKER_TLS": "1", "ROWSTREAM_BROKER_CERT_FILE": str(client.cert)},
         "go together"),
        ({"ROWSTREAM_BROKER_TLS": "1", "ROWSTREAM_BROKER_CA_FILE": str(tmp_path / "missing")},
         "ROWSTREAM_BROKER_CA_FILE: cannot read"),
        ({"ROWSTREAM_BROKER_TLS": "1", "ROWSTREAM_BROKER_CA_FILE": str(not_pem)},
         "TLS files do not load"),
        ({"ROWSTREAM_BROKER_TLS": "maybe"}, "ROWSTREAM_BROKER_TLS"),
        ({"ROWSTREAM_BROKER_SASL_MECHANISM": "GSSAPI"}, "must be PLAIN, SCRAM-SHA-256"),
        ({"ROWSTREAM_BROKER_SASL_USERNAME": "u"}, "MECHANISM is empty"),
        ({"ROWSTREAM_BROKER_SASL_MECHANISM": "PLAIN", "ROWSTREAM_BROKER_SASL_PASSWORD": "pw-1"},
         "needs ROWSTREAM_BROKER_SASL_USERNAME"),
        (sasl, "exactly one of"),
        ({**sasl, "ROWSTREAM_BROKER_SASL_PASSWORD": "pw-1",
          "ROWSTREAM_BROKER_SASL_PASSWORD_FILE": str(empty)}, "exactly one of"),
        ({**sasl, "ROWSTREAM_BROKER_SASL_PASSWORD_FILE": str(empty)}, "holds no password"),
    ]  # fmt: skip
    for env, problem in cases:
        with pytest.raises(ConfigError) as caught:
            load(env)
        text = str(caught.value)
        assert problem in text and "\n" not in text and "pw-1" not in text, (env, text)


async def test_a_broker_that_does_not_answer_at_start_is_one_line():
    port = free_port()  # nothing listens there
    with pytest.raises(BrokerRefused) as refused:
        await check_access(broker_of(load({"ROWSTREAM_BROKER": f"kafka://127.0.0.1:{port}"})), 5)
    assert str(refused.value) == f"cannot reach the broker at kafka://127.0.0.1:{port} (plain TCP)"
