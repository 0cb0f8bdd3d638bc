"""Every setting of rowstream, read once from ``ROWSTREAM_*`` environment variables.

This is the only module that reads ``os.environ``. Each field's description names its variable;
pydantic validates the values (a plain model and a five-line reader rather than pydantic-settings,
so that tests can hand in an explicit mapping without the process environment leaking in).
The defaults run against the embedded stack (``make run``); point ``ROWSTREAM_BROKER`` and
``ROWSTREAM_SHARDS`` at real Kafka and Postgres for anything else.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from functools import cached_property
from uuid import UUID

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

PREFIX = "ROWSTREAM_"
SLOTS = 256  # the shard map has one slot per possible first byte of an app ID


class ConfigError(Exception):
    """A setting is missing or wrong; the message is one line meant for the operator."""


def _split(value: object) -> object:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


def parse_shard_map(text: str, shards: int) -> tuple[int, ...]:
    """Parse an explicit shard map: comma-separated ``SLOTS=SHARD`` items, slots in hex.

    ``00-7f=0,80-ff=1`` gives slots 0x00..0x7f to shard 0 and the rest to shard 1; a single slot
    is written ``a3=1``. Every one of the 256 slots must be named exactly once.
    """
    slots: list[int | None] = [None] * SLOTS
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        span, sep, shard_text = item.partition("=")
        if not sep:
            raise ValueError(f"shard map item {item!r} is not SLOTS=SHARD (e.g. 00-7f=0)")
        first_text, _, last_text = span.partition("-")
        try:
            first = int(first_text, 16)
            last = int(last_text or first_text, 16)
            shard = int(shard_text)
        except ValueError:
            raise ValueError(
                f"shard map item {item!r}: slots are hex 00-ff, shard a number"
            ) from None
        if not (0 <= first <= last < SLOTS):
            raise ValueError(f"shard map item {item!r}: slots must be 00..ff, low to high")
        if not 0 <= shard < shards:
            raise ValueError(
                f"shard map item {item!r}: shard {shard} is not one of 0..{shards - 1}"
            )
        for slot in range(first, last + 1):
            if slots[slot] is not None:
                raise ValueError(f"shard map names slot {slot:02x} twice")
            slots[slot] = shard
    missing = [f"{slot:02x}" for slot, shard in enumerate(slots) if shard is None]
    if missing:
        raise ValueError(
            f"ROWSTREAM_SHARD_MAP does not cover {len(missing)} of 256 slots (first: {missing[0]})"
        )
    return tuple(shard for shard in slots if shard is not None)


def even_shard_map(shards: int) -> tuple[int, ...]:
    """The default map: contiguous runs of slots, as even as 256 / shards allows."""
    return tuple(slot * shards // SLOTS for slot in range(SLOTS))


class Settings(BaseModel):
    """rowstream configuration. Frozen: build a new one to change anything."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    broker: str = Field(
        "kafka://127.0.0.1:9092",
        description="ROWSTREAM_BROKER: Kafka bootstrap URL(s), e.g. kafka://k1:9092;k2:9092",
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
        description="ROWSTREAM_PARTITIONS: partitions of both topics (production: 720)",
    )
    shard_map: str = Field(
        "",
        description="ROWSTREAM_SHARD_MAP: explicit slot map, e.g. 00-7f=0,80-ff=1 (default: even)",
    )
    api_keys: tuple[SecretStr, ...] = Field(
        (),
        description="ROWSTREAM_API_KEYS: comma-separated bearer keys; KEY:APP|APP limits a key "
        "to those app IDs",
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
    web_port: int = Field(6066, ge=1, le=65535, description="ROWSTREAM_WEB_PORT: HTTP port")
    web_bind: str = Field(
        "127.0.0.1",
        description="ROWSTREAM_WEB_BIND: HTTP bind address (0.0.0.0 to serve others)",
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
        for secret in value:
            key, sep, apps = secret.get_secret_value().partition(":")
            if not key:
                raise ValueError("an API key is empty")
            if sep:
                for app in apps.split("|"):
                    try:
                        UUID(app.strip())
                    except ValueError:
                        raise ValueError("a key's scope must be app IDs separated by |") from None
        return value

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        level = value.lower()
        if level not in {"debug", "info", "warning", "error", "critical"}:
            raise ValueError("must be one of debug, info, warning, error, critical")
        return level

    @field_validator("shards")
    @classmethod
    def _dsns(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("name at least one shard DSN")
        for dsn in value:
            if not dsn.startswith(("postgresql://", "postgres://")):
                raise ValueError(f"{dsn!r} is not a postgresql:// URL")
        return value

    @model_validator(mode="after")
    def _layout(self) -> Settings:
        if self.partitions % len(self.shards):
            raise ValueError(
                f"ROWSTREAM_PARTITIONS ({self.partitions}) must be divisible by the number of "
                f"shards in ROWSTREAM_SHARDS ({len(self.shards)})"
            )
        if self.shard_map:
            parse_shard_map(self.shard_map, len(self.shards))
        return self

    @property
    def slot_map(self) -> tuple[int, ...]:
        """Shard of each of the 256 slots (first byte of an app ID)."""
        if self.shard_map:
            return parse_shard_map(self.shard_map, len(self.shards))
        return even_shard_map(len(self.shards))

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(key for key, _ in self.scoped_keys)

    @cached_property  # read on every request: parse once
    def scoped_keys(self) -> tuple[tuple[str, frozenset[str] | None], ...]:
        """Each key with the app IDs it may touch (None: every app)."""
        found = []
        for secret in self.api_keys:
            key, sep, apps = secret.get_secret_value().partition(":")
            found.append(
                (key, frozenset(a.strip().lower() for a in apps.split("|")) if sep else None)
            )
        return tuple(found)

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
