"""Every setting of rowstream, read once from ``ROWSTREAM_*`` environment variables.

This is the only module that reads ``os.environ``. Each field's description names its variable;
pydantic validates the values (a plain model and a five-line reader rather than pydantic-settings,
so that tests can hand in an explicit mapping without the process environment leaking in).
The defaults run against the embedded stack (``make run``); point ``ROWSTREAM_BROKER`` and
``ROWSTREAM_SHARDS`` at real Kafka and Postgres for anything else.
"""

from __future__ import annotations

import math
import os
import re
import ssl
from collections.abc import Mapping
from functools import cached_property

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from app.ingest.keys import ApiKey, parse_all
from app.model.events import MAX_ITEMS, MAX_RECORD_BYTES
from app.model.slots import even_shard_map, parse_shard_map

PREFIX = "ROWSTREAM_"
SASL_MECHANISMS = ("", "PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
INTERNAL_PER_SHARD = 12  # default partitions of the internal topic per shard


def redact_dsn(dsn: str) -> str:
    """A DSN fit for a log line, an error or a page: its password (in the URL or a
    ``password=`` option) replaced by ``***``."""
    dsn = re.sub(r"^(\w+://[^:/@?#]*:)[^@/?#]*@", r"\1***@", dsn)
    return re.sub(r"(?i)([?&]password=)[^&]*", r"\1***", dsn)


class ConfigError(Exception):
    """A setting is missing or wrong; the message is one line meant for the operator."""


def _split(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class Settings(BaseModel):
    """rowstream configuration. Frozen: build a new one to change anything."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    broker: str = Field(
        "kafka://127.0.0.1:9092",
        description="ROWSTREAM_BROKER: Kafka bootstrap URL(s), e.g. kafka://k1:9092;k2:9092",
    )
    broker_tls: bool = Field(
        False,
        description="ROWSTREAM_BROKER_TLS: talk TLS to the broker (SSL, or SASL_SSL with SASL)",
    )
    broker_ca_file: str = Field(
        "", description="ROWSTREAM_BROKER_CA_FILE: CA bundle (PEM) for the broker; default: system"
    )
    broker_cert_file: str = Field(
        "", description="ROWSTREAM_BROKER_CERT_FILE: client certificate (PEM), for mutual TLS"
    )
    broker_key_file: str = Field(
        "", description="ROWSTREAM_BROKER_KEY_FILE: the client certificate's private key (PEM)"
    )
    broker_check_hostname: bool = Field(
        True,
        description="ROWSTREAM_BROKER_CHECK_HOSTNAME: the broker's certificate must name its host",
    )
    broker_sasl_mechanism: str = Field(
        "",
        description="ROWSTREAM_BROKER_SASL_MECHANISM: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512; "
        "empty: no SASL",
    )
    broker_sasl_username: str = Field("", description="ROWSTREAM_BROKER_SASL_USERNAME")
    broker_sasl_password: SecretStr = Field(
        SecretStr(""), description="ROWSTREAM_BROKER_SASL_PASSWORD (or the _FILE form)"
    )
    broker_sasl_password_file: str = Field(
        "",
        description="ROWSTREAM_BROKER_SASL_PASSWORD_FILE: a file holding the password (a mounted "
        "secret); its one line is read at start",
    )
    shards: tuple[str, ...] = Field(
        (
            "postgresql://postgres@127.0.0.1:5432/rowstream_shard0",
            "postgresql://postgres@127.0.0.1:5432/rowstream_shard1",
        ),
        description="ROWSTREAM_SHARDS: comma-separated Postgres DSNs, shard 0 first",
    )
    partitions: int = Field(
        24,
        ge=1,
        le=100_000,
        description="ROWSTREAM_PARTITIONS: partitions of the update topic (production: 720)",
    )
    internal_partitions: int = Field(
        0,
        ge=0,
        le=100_000,
        description="ROWSTREAM_INTERNAL_PARTITIONS: partitions of the internal topic, a block per "
        f"shard (0: {INTERNAL_PER_SHARD} per shard; add a block for each shard added)",
    )
    internal_block: int = Field(
        0,
        ge=0,
        le=100_000,
        description="ROWSTREAM_INTERNAL_BLOCK: internal partitions per shard, fixed when the "
        "cluster is seeded (0: ROWSTREAM_INTERNAL_PARTITIONS / shards; less leaves room for "
        "shards added later on a broker that cannot grow a topic)",
    )
    shard_map: str = Field(
        "",
        description="ROWSTREAM_SHARD_MAP: the slot map the cluster is seeded with, e.g. "
        "00-7f=0,80-ff=1 (default: even); later the control store's map is the live one",
    )
    control_dsn: str = Field(
        "",
        description="ROWSTREAM_CONTROL_DSN: Postgres DSN of the control store, the layout and "
        "the live shard map (default: shard 0's)",
    )
    api_keys: tuple[SecretStr, ...] = Field(
        (),
        description="ROWSTREAM_API_KEYS: comma-separated [NAME=]KEY or [NAME=]sha256:<hex>; "
        ":APP|APP limits a key to those app IDs (app.ingest.keys)",
    )
    group_id: str = Field(
        "rowstream",
        min_length=1,
        description="ROWSTREAM_GROUP_ID: Faust app id = Kafka consumer group (a rename migrates)",
    )
    replication: int = Field(
        1,
        ge=1,
        le=10,
        description="ROWSTREAM_REPLICATION: replication factor of the topics it creates (prod: 3)",
    )
    topic_prefix: str = Field(
        "",
        description="ROWSTREAM_TOPIC_PREFIX: prefix for every topic name (tests, tenancy)",
    )
    batch_size: int = Field(
        3000,
        ge=1,
        le=100_000,
        description="ROWSTREAM_BATCH_SIZE: most updates in one shard write",
    )
    batch_wait: float = Field(
        0.05,
        gt=0,
        le=60,
        description="ROWSTREAM_BATCH_WAIT: seconds a batch waits to fill up",
    )
    forward_batch: int = Field(
        1000,
        ge=1,
        le=100_000,
        description="ROWSTREAM_FORWARD_BATCH: most updates in one batch record (internal topic)",
    )
    forward_linger: float = Field(
        0.01,
        gt=0,
        le=5,
        description="ROWSTREAM_FORWARD_LINGER: seconds a batch record waits to fill up",
    )
    fetch_wait: float = Field(
        0.25,
        gt=0,
        le=5,
        description="ROWSTREAM_FETCH_WAIT: seconds a worker's fetch waits for new records "
        "(a bound on each hop's wait in nominal operation)",
    )
    pool_size: int = Field(
        4,
        ge=1,
        le=100,
        description="ROWSTREAM_POOL_SIZE: Postgres connections per shard",
    )
    retry_max: float = Field(
        5.0,
        gt=0,
        le=600,
        description="ROWSTREAM_RETRY_MAX: longest backoff between shard retries (s)",
    )
    web_port: int = Field(
        6066, ge=1, le=65535, description="ROWSTREAM_WEB_PORT: the worker's web view port"
    )
    web_bind: str = Field(
        "127.0.0.1",
        description="ROWSTREAM_WEB_BIND: HTTP bind address (0.0.0.0 to serve others)",
    )
    ingest_port: int = Field(
        6067, ge=1, le=65535, description="ROWSTREAM_INGEST_PORT: HTTP port of the ingest tier"
    )
    ingest_bind: str = Field(
        "127.0.0.1",
        description="ROWSTREAM_INGEST_BIND: the ingest tier's bind address (0.0.0.0: all)",
    )
    ingest_linger: float = Field(
        0.002,
        gt=0,
        le=1,
        description="ROWSTREAM_INGEST_LINGER: seconds the ingest tier gathers records into one "
        "produce request",
    )
    ingest_buffer: int = Field(
        64 * 1024 * 1024,
        ge=MAX_RECORD_BYTES,
        description="ROWSTREAM_INGEST_BUFFER: bytes of updates an ingest process holds "
        "unacknowledged (beyond: 503)",
    )
    log_level: str = Field("info", description="ROWSTREAM_LOG_LEVEL: debug, info, warning, error")
    produce_timeout: float = Field(
        10.0,
        gt=0,
        le=300,
        description="ROWSTREAM_PRODUCE_TIMEOUT: seconds ingest waits for the broker ack before 503",
    )
    body_timeout: float = Field(
        10.0,
        gt=0,
        le=300,
        description="ROWSTREAM_BODY_TIMEOUT: seconds a client has to send its body (then 408)",
    )
    rate_limit: float = Field(
        0.0,
        ge=0,
        description="ROWSTREAM_RATE_LIMIT: updates/s a key may send to one ingest process; "
        "0: no limit",
    )
    rate_burst: int = Field(
        0,
        ge=0,
        description="ROWSTREAM_RATE_BURST: updates a key may send at once (default: 1 s of the "
        "limit, at least one full request)",
    )
    session_timeout: float = Field(
        10.0,
        gt=0,
        le=300,
        description="ROWSTREAM_SESSION_TIMEOUT: consumer session timeout (s), short for dev",
    )
    lag_interval: float = Field(
        1.0,
        gt=0,
        le=300,
        description="ROWSTREAM_LAG_INTERVAL: seconds between lag measurements",
    )
    otlp_endpoint: str = Field(
        "",
        description="ROWSTREAM_OTLP_ENDPOINT: OTLP/HTTP traces URL; empty: tracing off",
    )
    data_dir: str = Field(
        "",
        description="ROWSTREAM_DATA_DIR: worker state folder (default: .local/worker-<port>)",
    )

    @field_validator("shards", "api_keys", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        return _split(value)

    @field_validator("api_keys")
    @classmethod
    def _scopes(cls, value: tuple[SecretStr, ...]) -> tuple[SecretStr, ...]:
        parse_all(secret.get_secret_value() for secret in value)
        return value

    @field_validator("broker_sasl_mechanism")
    @classmethod
    def _mechanism(cls, value: str) -> str:
        mechanism = value.strip().upper()
        if mechanism not in SASL_MECHANISMS:
            raise ValueError("must be PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 or empty")
        return mechanism

    @field_validator(
        "broker_ca_file", "broker_cert_file", "broker_key_file", "broker_sasl_password_file"
    )
    @classmethod
    def _readable(cls, value: str) -> str:
        if value and not os.access(value, os.R_OK):
            raise ValueError(f"cannot read {value}")
        return value

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        level = value.lower()
        if level not in {"debug", "info", "warning", "error", "critical"}:
            raise ValueError("must be one of debug, info, warning, error, critical")
        return level

    @field_validator("control_dsn")
    @classmethod
    def _control_dsn(cls, value: str) -> str:
        if value and not value.startswith(("postgresql://", "postgres://")):
            raise ValueError("not a postgresql:// URL")
        return value

    @field_validator("shards")
    @classmethod
    def _dsns(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("name at least one shard DSN")
        for n, dsn in enumerate(value):
            if not dsn.startswith(("postgresql://", "postgres://")):
                raise ValueError(f"shard {n} is not a postgresql:// URL")
        return value

    @model_validator(mode="after")
    def _layout(self) -> Settings:
        if not self.internal_partitions:
            object.__setattr__(self, "internal_partitions", INTERNAL_PER_SHARD * len(self.shards))
        if self.shard_map:
            parse_shard_map(self.shard_map, len(self.shards))
        self._check_broker_security()
        if 0 < self.rate_burst < MAX_ITEMS:
            raise ValueError(
                f"ROWSTREAM_RATE_BURST ({self.rate_burst}) must be at least {MAX_ITEMS}, the "
                f"most updates one request may hold, or 0"
            )
        return self

    def _check_broker_security(self) -> None:
        tls_files = [
            name
            for name, value in (
                ("ROWSTREAM_BROKER_CA_FILE", self.broker_ca_file),
                ("ROWSTREAM_BROKER_CERT_FILE", self.broker_cert_file),
                ("ROWSTREAM_BROKER_KEY_FILE", self.broker_key_file),
            )
            if value
        ]
        if tls_files and not self.broker_tls:
            raise ValueError(f"{tls_files[0]} is set but ROWSTREAM_BROKER_TLS is not true")
        if bool(self.broker_cert_file) != bool(self.broker_key_file):
            raise ValueError("ROWSTREAM_BROKER_CERT_FILE and ROWSTREAM_BROKER_KEY_FILE go together")
        if self.broker_tls:
            try:
                _ = (
                    self.broker_ssl_context
                )  # built once, here: files that do not load stop the start
            except (ssl.SSLError, OSError) as exc:
                raise ValueError(f"the broker's TLS files do not load: {exc}") from None
        password_given = [
            name
            for name, given in (
                (
                    "ROWSTREAM_BROKER_SASL_PASSWORD",
                    bool(self.broker_sasl_password.get_secret_value()),
                ),
                ("ROWSTREAM_BROKER_SASL_PASSWORD_FILE", bool(self.broker_sasl_password_file)),
            )
            if given
        ]
        if not self.broker_sasl_mechanism:
            if self.broker_sasl_username or password_given:
                raise ValueError(
                    "SASL credentials are set but ROWSTREAM_BROKER_SASL_MECHANISM is empty"
                )
            return
        if not self.broker_sasl_username:
            raise ValueError("ROWSTREAM_BROKER_SASL_MECHANISM needs ROWSTREAM_BROKER_SASL_USERNAME")
        if len(password_given) != 1:
            raise ValueError(
                "SASL needs exactly one of ROWSTREAM_BROKER_SASL_PASSWORD and "
                "ROWSTREAM_BROKER_SASL_PASSWORD_FILE"
            )
        if not self.broker_password:
            raise ValueError(f"{self.broker_sasl_password_file} holds no password")

    @cached_property
    def broker_ssl_context(self) -> ssl.SSLContext | None:
        """The TLS context for the broker (None: plain TCP): the CA bundle (or the system's),
        the client certificate if any, the hostname checked unless switched off."""
        if not self.broker_tls:
            return None
        context = ssl.create_default_context(cafile=self.broker_ca_file or None)
        context.check_hostname = self.broker_check_hostname
        if self.broker_cert_file:
            context.load_cert_chain(self.broker_cert_file, self.broker_key_file)
        return context

    @cached_property
    def broker_password(self) -> str:
        """The SASL password, from the setting or the first line of its file."""
        if self.broker_sasl_password_file:
            with open(self.broker_sasl_password_file, encoding="utf-8") as file:
                return file.readline().strip()
        return self.broker_sasl_password.get_secret_value()

    @property
    def burst(self) -> int:
        """The updates a key may send at once when rate limits are on."""
        return self.rate_burst or max(math.ceil(self.rate_limit), MAX_ITEMS)

    @property
    def control(self) -> str:
        """The control store's DSN."""
        return self.control_dsn or self.shards[0]

    @property
    def slot_map(self) -> tuple[int, ...]:
        """Shard of each of the 256 slots (first byte of an app ID)."""
        if self.shard_map:
            return parse_shard_map(self.shard_map, len(self.shards))
        return even_shard_map(len(self.shards))

    @cached_property  # read on every request: parse once
    def scoped_keys(self) -> tuple[ApiKey, ...]:
        """Each configured key: its name, hash and the app IDs it may touch (None: every app)."""
        return parse_all(secret.get_secret_value() for secret in self.api_keys)

    @property
    def keys(self) -> tuple[str, ...]:
        """The keys configured in plain text (the CLI calls the API with the first unscoped)."""
        return tuple(key.plain for key in self.scoped_keys if key.plain is not None)

    def topic(self, name: str) -> str:
        return f"{self.topic_prefix}{name}"

    def unprefixed(self, topic: str) -> str:
        """A topic's name without the deployment's prefix (the metric and ``/lag/`` label)."""
        return topic.removeprefix(self.topic_prefix)


def given(environ: Mapping[str, str] | None = None) -> set[str]:
    """Names of the settings set explicitly in the environment (e.g. ``{"broker"}``)."""
    environ = os.environ if environ is None else environ
    return {name for name in Settings.model_fields if PREFIX + name.upper() in environ}


def load(environ: Mapping[str, str] | None = None) -> Settings:
    """Build the settings from the environment; raise ConfigError with one readable line."""
    environ = os.environ if environ is None else environ
    known = {PREFIX + name.upper() for name in Settings.model_fields}
    unknown = sorted(name for name in environ if name.startswith(PREFIX) and name not in known)
    if unknown:
        raise ConfigError(f"unknown setting {unknown[0]} (known: {', '.join(sorted(known))})")
    values = {
        name: environ[PREFIX + name.upper()]
        for name in Settings.model_fields
        if PREFIX + name.upper() in environ
    }
    try:
        return Settings.model_validate(values)
    except ValidationError as exc:
        error = exc.errors()[0]
        message = error["msg"].removeprefix("Value error, ")
        if error["loc"]:
            message = f"{PREFIX}{str(error['loc'][0]).upper()}: {message}"
        raise ConfigError(message) from None
