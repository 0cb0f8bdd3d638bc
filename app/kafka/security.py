"""How rowstream reaches the broker: its address and its security (TLS, SASL), built once from the
settings (``ROWSTREAM_BROKER*``) for every Kafka connection — the worker's consumer and producer
(Faust's ``broker_credentials``), the side consumers of the lag monitor, the group's offsets and
the CLI's reader, ``create-topics``, ``dlq redrive`` and the ingest tier's producer.

``Broker.auth`` holds aiokafka's security options; ``Broker.credentials`` is the same in Faust's
form, which Faust's own ``credentials_to_aiokafka_auth`` turns into exactly ``auth`` again
(``tests/unit/test_security.py``), so every connection logs in as the worker does. This module
imports no Faust: the ingest tier uses it without loading the framework. ``check_access`` is a
process's first step: a certificate it does not trust, a wrong hostname or a refused login stop
it with one line (``BrokerRefused``) instead of a traceback, and so does a broker that does not
answer at all; ``refusal`` words such a failure met later (the lag monitor's rounds, the CLI).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import traceback
from dataclasses import dataclass, field
from typing import Any

from aiokafka import AIOKafkaClient
from aiokafka.errors import (
    AuthenticationFailedError,
    AuthenticationMethodNotSupported,
    IllegalSaslStateError,
    KafkaError,
    SaslAuthenticationFailed,
    UnsupportedSaslMechanismError,
)

from app.settings import Settings


def bootstrap_servers(broker_url: str) -> str:
    """``kafka://h1:9092;h2:9092`` (Faust's form) → ``h1:9092,h2:9092`` (aiokafka's)."""
    hosts = []
    for part in broker_url.replace(",", ";").split(";"):
        part = part.strip()
        if part:
            hosts.append(part.split("://", 1)[-1].rstrip("/"))
    return ",".join(hosts)


@dataclass(frozen=True)
class Broker:
    url: str  # Faust's form, kafka://h1:9092;h2:9092
    #: aiokafka's security options (``security_protocol``, ``ssl_context``, ``sasl_*``); kept
    #: out of ``repr``: it may hold the password.
    auth: dict[str, Any] = field(
        default_factory=lambda: {"security_protocol": "PLAINTEXT"}, repr=False
    )

    @property
    def mechanism(self) -> str:
        """The SASL mechanism, "" without SASL."""
        return str(self.auth.get("sasl_mechanism", ""))

    @property
    def username(self) -> str:
        return str(self.auth.get("sasl_plain_username", ""))

    @property
    def tls(self) -> bool:
        return self.auth.get("ssl_context") is not None

    def client_options(self) -> dict[str, Any]:
        """What an aiokafka client needs to reach and log in to the broker."""
        return {"bootstrap_servers": bootstrap_servers(self.url), **self.auth}

    @property
    def credentials(self) -> Any:
        """The same security in Faust's form (the worker's ``broker_credentials``; None: plain
        TCP). Faust is imported here, not at the top: only the worker asks for this."""
        from faust.auth import SASLCredentials, SSLCredentials

        if self.mechanism:
            return SASLCredentials(
                username=self.username,
                password=self.auth["sasl_plain_password"],
                ssl_context=self.auth["ssl_context"],
                mechanism=self.mechanism,
            )
        if self.tls:
            return SSLCredentials(self.auth["ssl_context"])
        return None

    def describe(self) -> str:
        """For messages: where and how, never the password."""
        how = ["TLS" if self.tls else "plain TCP"]
        if self.mechanism:
            how.append(f"SASL {self.mechanism} as {self.username!r}")
        return f"{self.url} ({', '.join(how)})"


def broker_of(settings: Settings) -> Broker:
    context = settings.broker_ssl_context
    if settings.broker_sasl_mechanism:
        auth = {
            "security_protocol": "SASL_SSL" if context is not None else "SASL_PLAINTEXT",
            "sasl_mechanism": settings.broker_sasl_mechanism,
            "sasl_plain_username": settings.broker_sasl_username,
            "sasl_plain_password": settings.broker_password,
            "ssl_context": context,
        }
    elif context is not None:
        auth = {"security_protocol": "SSL", "ssl_context": context}
    else:
        auth = {"security_protocol": "PLAINTEXT"}
    return Broker(settings.broker, auth)


class BrokerRefused(Exception):
    """The broker cannot be used with these settings; the message is one line for the operator."""


_LOGIN_ERRORS = (
    AuthenticationFailedError,
    AuthenticationMethodNotSupported,
    IllegalSaslStateError,
    SaslAuthenticationFailed,
    UnsupportedSaslMechanismError,
)


def _scram_refused(exc: BaseException) -> bool:
    """aiokafka 0.14's SCRAM client raises a bare ``KeyError`` when the server's answer carries
    an error (``e=…``, e.g. an unknown user) instead of its proof: recognised by where it came
    from, so that no other KeyError is taken for a refused login."""
    if not isinstance(exc, KeyError):
        return False
    return any(
        frame.name.startswith("process_server_") and frame.filename.endswith("aiokafka/conn.py")
        for frame in traceback.extract_tb(exc.__traceback__)
    )


#: What a failed connection to the broker raises: aiokafka's refused SCRAM login among them, as
#: a bare KeyError, which ``broker_failed`` tells apart from a KeyError of a bug.
CONNECTION_ERRORS = (KafkaError, OSError, TimeoutError, KeyError)


def broker_failed(exc: BaseException) -> bool:
    """For an exception of ``CONNECTION_ERRORS``: a failure to reach or log in to the broker
    (rather than a bug that must not be swallowed)."""
    return not isinstance(exc, KeyError) or _scram_refused(exc)


def refusal(exc: BaseException, broker: Broker) -> str | None:
    """One line for a failure that is the broker refusing these credentials, else None."""
    if isinstance(exc, _LOGIN_ERRORS) or _scram_refused(exc):
        reason = f": {exc}" if isinstance(exc, _LOGIN_ERRORS) and str(exc) else ""
        return (
            f"the broker at {broker.url} refused the SASL {broker.mechanism or '(none)'} login "
            f"of user {broker.username!r}{reason} (check the user, its password and the mechanism)"
        )
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"the broker at {broker.url} failed the TLS check: {exc.verify_message}"
    if isinstance(exc, ssl.SSLError):
        return f"TLS with the broker at {broker.url} failed: {exc.reason or exc}"
    return None


def describe_failure(exc: BaseException, broker: Broker) -> str:
    return refusal(exc, broker) or f"cannot reach the broker at {broker.describe()}: {exc!r}"


async def check_access(broker: Broker, timeout: float = 15.0) -> None:
    """Raise ``BrokerRefused`` when the broker's certificate is not trusted or names another host,
    when it refuses the SASL login, or when no bootstrap server answers (Faust would stop the
    worker then too, with a traceback)."""
    context = broker.client_options().get("ssl_context")
    if context is not None:
        for address in bootstrap_servers(broker.url).split(","):
            host, _, port = address.rpartition(":")
            try:
                _, writer = await asyncio.wait_for(
                    asyncio.open_connection(host, int(port), ssl=context, server_hostname=host),
                    timeout,
                )
            except ssl.SSLError as exc:
                raise BrokerRefused(refusal(exc, broker)) from None
            except (OSError, TimeoutError):
                continue
            writer.close()
            with contextlib.suppress(OSError, ssl.SSLError):
                await writer.wait_closed()
    client = AIOKafkaClient(**broker.client_options(), request_timeout_ms=int(timeout * 1000))
    try:
        await asyncio.wait_for(client.bootstrap(), timeout)
    except CONNECTION_ERRORS as exc:
        if not broker_failed(exc):
            raise
        line = refusal(exc, broker) or f"cannot reach the broker at {broker.describe()}"
        raise BrokerRefused(line) from None
    finally:
        await client.close()


__all__ = [
    "CONNECTION_ERRORS",
    "Broker",
    "BrokerRefused",
    "bootstrap_servers",
    "broker_failed",
    "broker_of",
    "check_access",
    "describe_failure",
    "refusal",
]
