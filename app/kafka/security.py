"""How rowstream reaches the broker: its address and its security (TLS, SASL), built once from the
settings (``ROWSTREAM_BROKER*``) for every Kafka connection — the worker's consumer and producer
(Faust's ``broker_credentials``), the side consumers of the lag monitor, the group's offsets and
the CLI's reader, ``create-topics`` and ``dlq redrive``.

The aiokafka options come from Faust's own ``credentials_to_aiokafka_auth``, so that a side
consumer logs in exactly as the worker does. ``check_access`` is the worker's first step: a
certificate the worker does not trust, a wrong hostname or a refused login stop it with one line
(``BrokerRefused``) instead of a traceback, and so does a broker that does not answer at all;
``refusal`` words such a failure met later (the lag monitor's rounds, the CLI).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import traceback
from typing import Any, NamedTuple

from aiokafka import AIOKafkaClient
from aiokafka.errors import (
    AuthenticationFailedError,
    AuthenticationMethodNotSupported,
    IllegalSaslStateError,
    KafkaError,
    SaslAuthenticationFailed,
    UnsupportedSaslMechanismError,
)
from faust.auth import SASLCredentials, SSLCredentials
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth
from faust.types.auth import CredentialsT

from app.settings import Settings


def bootstrap_servers(broker_url: str) -> str:
    """``kafka://h1:9092;h2:9092`` (Faust's form) → ``h1:9092,h2:9092`` (aiokafka's)."""
    hosts = []
    for part in broker_url.replace(",", ";").split(";"):
        part = part.strip()
        if part:
            hosts.append(part.split("://", 1)[-1].rstrip("/"))
    return ",".join(hosts)


class Broker(NamedTuple):
    url: str  # Faust's form, kafka://h1:9092;h2:9092
    credentials: CredentialsT | None  # None: plain TCP, no login

    @property
    def mechanism(self) -> str:
        """The SASL mechanism, "" without SASL."""
        if isinstance(self.credentials, SASLCredentials):
            return self.credentials.mechanism.value
        return ""

    @property
    def tls(self) -> bool:
        return isinstance(self.credentials, SSLCredentials) or (
            isinstance(self.credentials, SASLCredentials)
            and self.credentials.ssl_context is not None
        )

    def client_options(self) -> dict[str, Any]:
        """What an aiokafka client needs to reach and log in to the broker."""
        return {
            "bootstrap_servers": bootstrap_servers(self.url),
            **credentials_to_aiokafka_auth(self.credentials),
        }

    def describe(self) -> str:
        """For messages: where and how, never the password."""
        how = ["TLS" if self.tls else "plain TCP"]
        if self.mechanism:
            username = getattr(self.credentials, "username", "")
            how.append(f"SASL {self.mechanism} as {username!r}")
        return f"{self.url} ({', '.join(how)})"


def broker_of(settings: Settings) -> Broker:
    context = settings.broker_ssl_context
    credentials: CredentialsT | None = None
    if settings.broker_sasl_mechanism:
        credentials = SASLCredentials(
            username=settings.broker_sasl_username,
            password=settings.broker_password,
            ssl_context=context,
            mechanism=settings.broker_sasl_mechanism,
        )
    elif context is not None:
        credentials = SSLCredentials(context)
    return Broker(settings.broker, credentials)


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
        username = getattr(broker.credentials, "username", "")
        reason = f": {exc}" if isinstance(exc, _LOGIN_ERRORS) and str(exc) else ""
        return (
            f"the broker at {broker.url} refused the SASL {broker.mechanism or '(none)'} login "
            f"of user {username!r}{reason} (check the user, its password and the mechanism)"
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
