"""Postgres shard access: one aiopg pool per shard, the schema migration, and error classes.

``Shards`` is a mode Service: pools open in ``on_start`` and close in ``on_stop``. Pools open
lazily (``minsize=0``) so that a shard that is down at start delays only its own writes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any, Protocol

import aiopg
import psycopg2
from mode import Service

from app.observe import metrics
from app.settings import redact_dsn
from app.sink import sql
from app.sink.coalesce import Patch

log = logging.getLogger("rowstream.shards")

# SQLSTATE classes (first two characters) that a retry cannot fix: the data itself is refused.
_REJECTING_CLASSES = {"22", "23", "54"}  # data exception, integrity violation, program limit
_TRANSIENT_CODES = {"23505"}  # unique_violation: two writers raced to insert one new row


# What libpq says when no retry can help: the TLS check failed or the login was refused.
_REFUSALS = (
    "certificate verify failed",
    "does not match host name",
    "root certificate file",
    "SSL error",
    "server does not support SSL",
    "password authentication failed",
    "no pg_hba.conf entry",
)


class ShardRefused(Exception):
    """A shard refuses these settings (TLS, login); the message is one line for the operator."""


class Rejected(Exception):
    """Postgres refused the data itself (e.g. a value too large); retrying cannot help."""


def is_rejection(exc: BaseException) -> bool:
    """True for errors caused by the data, False for errors worth retrying (the default).

    Anything not known to be the data's fault is retried: a wrongly retried error holds a shard
    (visible in lag and logs) while a wrongly skipped one would lose updates.
    """
    code: str = getattr(exc, "pgcode", None) or ""
    return bool(code) and code not in _TRANSIENT_CODES and code[:2] in _REJECTING_CLASSES


async def apply_schema(pool: aiopg.Pool) -> None:
    """The schema on a shard, idempotently (workers and ``move-slots`` alike)."""
    async with pool.acquire() as conn, conn.cursor() as cur:
        # Two processes migrating at once would race on CREATE TABLE IF NOT EXISTS.
        await cur.execute("SELECT pg_advisory_lock(%s)", (sql.SCHEMA_LOCK,))
        try:
            await cur.execute(sql.SCHEMA)
        finally:
            await cur.execute("SELECT pg_advisory_unlock(%s)", (sql.SCHEMA_LOCK,))


class ShardStore(Protocol):
    """What the writer needs from Postgres; tests use their own implementation."""

    async def write(self, shard: int, rounds: Sequence[Sequence[Patch]]) -> int: ...


class Shards(Service):
    """The Postgres shards, numbered in the order of their DSNs."""

    def __init__(self, dsns: Sequence[str], pool_size: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.dsns = list(dsns)
        self.pool_size = pool_size
        self._pools: list[aiopg.Pool | None] = [None] * len(self.dsns)
        self._locks = [asyncio.Lock() for _ in self.dsns]
        self._migrated = [False] * len(self.dsns)

    async def on_stop(self) -> None:
        for pool in self._pools:
            if pool is not None:
                pool.close()
                await pool.wait_closed()

    async def check_access(self, timeout: float = 10.0) -> None:
        """Raise ``ShardRefused`` when a shard fails the TLS check or refuses the login. A shard
        that does not answer is no error here: its writes wait for it, as always."""
        for shard, dsn in enumerate(self.dsns):
            try:
                connection = await aiopg.connect(dsn, timeout=timeout)
            except (psycopg2.Error, OSError, TimeoutError) as exc:
                said = " ".join(str(exc).split())  # libpq's message, on one line
                if any(refusal in said for refusal in _REFUSALS):
                    raise ShardRefused(f"shard {shard} ({redact_dsn(dsn)}): {said}") from None
                continue
            connection.close()

    async def _pool(self, shard: int) -> aiopg.Pool:
        pool = self._pools[shard]
        if pool is None:
            async with self._locks[shard]:
                if self._pools[shard] is None:
                    self._pools[shard] = await aiopg.create_pool(
                        self.dsns[shard], minsize=0, maxsize=self.pool_size, timeout=10.0
                    )
                pool = self._pools[shard]
        assert pool is not None
        if not self._migrated[shard]:
            await self._migrate(shard, pool)
        return pool

    async def _migrate(self, shard: int, pool: aiopg.Pool) -> None:
        async with self._locks[shard]:
            if self._migrated[shard]:
                return
            await apply_schema(pool)
            self._migrated[shard] = True
            log.info("shard %d: schema is up to date", shard)

    async def write(self, shard: int, rounds: Sequence[Sequence[Patch]]) -> int:
        """Apply the rounds (at most one patch per row each) in one transaction, in order.

        Returns the rows changed. Raises Rejected when Postgres refuses the data; any other
        error is worth a retry.
        """
        statements = [sql.upsert(patches) for patches in rounds if patches]
        pool = await self._pool(shard)
        async with pool.acquire() as conn, conn.cursor() as cur:
            changed = 0
            try:
                if len(statements) == 1:
                    await cur.execute(*statements[0])  # one statement: one transaction
                    return cur.rowcount
                await cur.execute("BEGIN")
                for statement, params in statements:
                    await cur.execute(statement, params)
                    changed += cur.rowcount
                await cur.execute("COMMIT")
                return changed
            except psycopg2.Error as exc:
                if len(statements) > 1:
                    try:
                        await cur.execute("ROLLBACK")
                    except psycopg2.Error:
                        conn.close()  # broken: the pool drops closed connections
                if is_rejection(exc):
                    raise Rejected(f"{exc.pgcode}: {str(exc).strip()}") from exc
                raise

    async def ping(self, shard: int) -> None:
        pool = await self._pool(shard)
        async with pool.acquire() as conn, conn.cursor() as cur:
            await cur.execute(sql.PING)

    async def ping_ok(self, shard: int, timeout: float = 2.0) -> bool:
        """True when the shard answers a ping within ``timeout``; updates rowstream_shard_up."""
        try:
            await asyncio.wait_for(self.ping(shard), timeout)
        except Exception:
            metrics.SHARD_UP.labels(str(shard)).set(0)
            return False
        metrics.SHARD_UP.labels(str(shard)).set(1)
        return True

    async def up(self) -> list[bool]:
        """``ping_ok`` of every shard, at once (readiness and ``GET /shards/``)."""
        return list(await asyncio.gather(*(self.ping_ok(n) for n in range(len(self.dsns)))))
