"""The row read of the ingest tier: ``GET /v1/apps/{app_id}/subscriptions/{subscription_id}``
answers from the row's shard, through one small aiopg pool per shard, opened on first use (a
shard that is down costs only its own reads a 503). Postgres TLS comes with the shard DSNs, as
for the worker. Reads only: the schema is the worker's to apply; before it exists no row does.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

import aiopg
import psycopg2.errors

from app.sink import sql

POOL_SIZE = 2  # connections per shard per ingest process: reads are rare next to writes


class Rows:
    def __init__(self, dsns: Sequence[str], shard_of_app: Callable[[str], int]) -> None:
        self.dsns, self.shard_of_app = list(dsns), shard_of_app
        self._pools: dict[int, aiopg.Pool] = {}
        self._lock = asyncio.Lock()

    async def _pool(self, shard: int) -> aiopg.Pool:
        pool = self._pools.get(shard)
        if pool is None:
            async with self._lock:
                pool = self._pools.get(shard)
                if pool is None:
                    pool = self._pools[shard] = await aiopg.create_pool(
                        self.dsns[shard], minsize=0, maxsize=POOL_SIZE, timeout=5.0
                    )
        return pool

    async def fetch(self, app_id: str, subscription_id: str) -> dict | None:
        """The row as stored, or None; raises when its shard cannot answer."""
        pool = await self._pool(self.shard_of_app(app_id))
        statement, params = sql.select_row(app_id, subscription_id)
        async with pool.acquire() as conn, conn.cursor() as cur:
            try:
                await cur.execute(statement, params)
            except psycopg2.errors.UndefinedTable:
                return None  # no worker has written to this shard yet
            row = await cur.fetchone()
        return None if row is None else sql.row_of(row)

    async def close(self) -> None:
        for pool in self._pools.values():
            pool.close()
            await pool.wait_closed()
