"""All SQL of rowstream: statements and ``(sql, params)`` builders; nothing here touches a
connection.

The upsert is one MERGE per batch (Postgres 15 or newer). The batch travels as one jsonb array
(``jsonb_to_recordset``): one parameter, parsed once by the server, whatever the batch size.

* a new row gets the patch with its null values dropped;
* an existing row gets ``stored || patch`` with null values dropped (nulls delete keys; stored
  properties never hold nulls), but only where the stored version is older than the patch's:
  a batch replayed after a crash changes nothing it already changed.

Two writers racing to insert the same new row (only possible for a moment during a rebalance)
make one MERGE fail with unique_violation; the writer treats that as transient and retries, and
the retry takes the MATCHED branch.
"""

from __future__ import annotations

from collections.abc import Sequence

import orjson

from app.sink.coalesce import Patch

SCHEMA = """
CREATE TABLE IF NOT EXISTS subscriptions (
    app_id          uuid        NOT NULL,
    subscription_id uuid        NOT NULL,
    properties      jsonb       NOT NULL DEFAULT '{}',
    version         bigint      NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (app_id, subscription_id)
)
"""

UPSERT = """
MERGE INTO subscriptions AS s
USING jsonb_to_recordset(%(batch)s::jsonb) AS b(a uuid, s uuid, v bigint, p jsonb)
ON s.app_id = b.a AND s.subscription_id = b.s
WHEN MATCHED AND s.version < b.v THEN
    UPDATE SET properties = jsonb_strip_nulls(s.properties || b.p), version = b.v,
               updated_at = now()
WHEN NOT MATCHED THEN
    INSERT (app_id, subscription_id, properties, version)
    VALUES (b.a, b.s, jsonb_strip_nulls(b.p), b.v)
"""

SELECT_ROW = """
SELECT app_id::text, subscription_id::text, properties, version, updated_at
FROM subscriptions WHERE app_id = %(app_id)s AND subscription_id = %(subscription_id)s
"""

PING = "SELECT 1"


def upsert(patches: Sequence[Patch]) -> tuple[str, dict[str, str]]:
    """The MERGE that applies ``patches`` (at most one per row) under the version guard."""
    batch = [
        {"a": p.app_id, "s": p.subscription_id, "v": p.version, "p": p.properties} for p in patches
    ]
    return UPSERT, {"batch": orjson.dumps(batch).decode()}


def select_row(app_id: str, subscription_id: str) -> tuple[str, dict[str, str]]:
    return SELECT_ROW, {"app_id": app_id, "subscription_id": subscription_id}


def row_of(selected: Sequence) -> dict:
    """A row selected by ``SELECT_ROW``, as the API shows it."""
    app_id, subscription_id, properties, version, updated_at = selected
    return {
        "app_id": app_id,
        "subscription_id": subscription_id,
        "properties": properties,
        "version": version,
        "updated_at": updated_at.isoformat(),
    }
