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

SCHEMA_LOCK = 72417  # advisory lock around SCHEMA: two processes creating it at once would race
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


# The control store (``app.sink.control``): the pinned layout and the live shard map, in their
# own schema of the control database (ROWSTREAM_CONTROL_DSN, shard 0's by default).
CONTROL_SCHEMA = """
CREATE SCHEMA IF NOT EXISTS rowstream_control;
CREATE TABLE IF NOT EXISTS rowstream_control.layout (
    only_row        boolean     PRIMARY KEY DEFAULT true CHECK (only_row),
    partitions      integer     NOT NULL,
    home_blocks     integer     NOT NULL,
    internal_block  integer     NOT NULL,
    version         bigint      NOT NULL DEFAULT 0,
    seeded_at       timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS rowstream_control.moves (
    id              bigserial   PRIMARY KEY,
    slots           smallint[]  NOT NULL,
    source          smallint    NOT NULL,
    target          smallint    NOT NULL,
    phase           text        NOT NULL,
    markers         jsonb       NOT NULL DEFAULT '{}',
    progress        jsonb       NOT NULL DEFAULT '{}',
    started_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS rowstream_control.slots (
    slot            smallint    PRIMARY KEY CHECK (slot BETWEEN 0 AND 255),
    home            smallint    NOT NULL,
    shard           smallint    NOT NULL,
    epoch           integer     NOT NULL DEFAULT 0,
    move_id         bigint      REFERENCES rowstream_control.moves
);
CREATE TABLE IF NOT EXISTS rowstream_control.processes (
    name            text        PRIMARY KEY,
    seen_version    bigint      NOT NULL,
    seen_at         timestamptz NOT NULL DEFAULT now()
)
"""

SEED_LAYOUT = """
INSERT INTO rowstream_control.layout (partitions, home_blocks, internal_block)
VALUES (%(partitions)s, %(home_blocks)s, %(internal_block)s)
ON CONFLICT DO NOTHING
"""

SEED_SLOTS = """
INSERT INTO rowstream_control.slots (slot, home, shard)
SELECT slot - 1, shard, shard FROM unnest(%(shards)s::smallint[]) WITH ORDINALITY AS m(shard, slot)
ON CONFLICT DO NOTHING
"""

SELECT_LAYOUT = """
SELECT partitions, home_blocks, internal_block, version FROM rowstream_control.layout
"""

SELECT_VERSION = "SELECT version FROM rowstream_control.layout"

SELECT_SLOTS = """
SELECT s.home, s.shard, s.epoch,
       m.id, m.slots, m.source, m.target, m.phase, m.markers
FROM rowstream_control.slots s LEFT JOIN rowstream_control.moves m ON m.id = s.move_id
ORDER BY s.slot
"""

# Every change of the map raises its version, in the change's transaction.
BUMP_VERSION = "UPDATE rowstream_control.layout SET version = version + 1 RETURNING version"

LOCK_SLOTS = """
SELECT s.slot, s.shard, s.move_id FROM rowstream_control.slots s
WHERE s.slot = ANY(%(slots)s::smallint[]) ORDER BY s.slot FOR UPDATE
"""

SELECT_MOVE = """
SELECT id, slots, source, target, phase, markers, progress FROM rowstream_control.moves
WHERE id = %(id)s
"""

INSERT_MOVE = """
INSERT INTO rowstream_control.moves (slots, source, target, phase)
VALUES (%(slots)s::smallint[], %(source)s, %(target)s, %(phase)s) RETURNING id
"""

ATTACH_MOVE = """
UPDATE rowstream_control.slots SET move_id = %(id)s WHERE slot = ANY(%(slots)s::smallint[])
"""

SET_PHASE = """
UPDATE rowstream_control.moves SET phase = %(phase)s, updated_at = now()
WHERE id = %(id)s AND phase = %(was)s
"""

SET_PROGRESS = """
UPDATE rowstream_control.moves SET progress = progress || %(progress)s::jsonb, updated_at = now()
WHERE id = %(id)s
"""

# The first marker recorded for a partition stays (the command's or the agent's that saw it).
RECORD_MARKER = """
UPDATE rowstream_control.moves SET markers = markers || jsonb_build_object(%(partition)s::text,
    %(offset)s::bigint), updated_at = now()
WHERE id = %(id)s AND phase = 'freeze' AND NOT markers ? %(partition)s::text
"""

SWITCH_SLOTS = """
UPDATE rowstream_control.slots SET shard = %(target)s, epoch = epoch + 1, move_id = NULL
WHERE move_id = %(id)s
"""

DETACH_MOVE = "UPDATE rowstream_control.slots SET move_id = NULL WHERE move_id = %(id)s"

LAST_SWITCHED = """
SELECT id, slots, source, target, phase, markers, progress FROM rowstream_control.moves
WHERE phase = 'switched' AND slots && %(slots)s::smallint[] ORDER BY id DESC
"""

SEEN = """
INSERT INTO rowstream_control.processes (name, seen_version) VALUES (%(name)s, %(version)s)
ON CONFLICT (name) DO UPDATE SET seen_version = EXCLUDED.seen_version, seen_at = now()
"""

FORGET_PROCESS = "DELETE FROM rowstream_control.processes WHERE name = %(name)s"

# Processes heard from lately that have not seen a version yet.
BEHIND = """
SELECT name FROM rowstream_control.processes
WHERE seen_at > now() - make_interval(secs => %(within)s) AND seen_version < %(version)s
"""

# Moving slots (``app.ops.moves``): a key range covers whole slots (the first byte of a uuid is
# its slot; uuids sort bytewise), paged by key.
SLOT_ROWS = """
SELECT count(DISTINCT app_id), count(*) FROM subscriptions
WHERE app_id BETWEEN %(low)s AND %(high)s
"""

COPY_PAGE = """
SELECT app_id::text, subscription_id::text, properties, version, updated_at FROM subscriptions
WHERE app_id BETWEEN %(low)s AND %(high)s AND (app_id, subscription_id) > (%(app)s, %(sub)s)
ORDER BY app_id, subscription_id LIMIT %(limit)s
"""

CHANGED_PAGE = """
SELECT app_id::text, subscription_id::text, properties, version, updated_at FROM subscriptions
WHERE app_id BETWEEN %(low)s AND %(high)s AND (app_id, subscription_id) > (%(app)s, %(sub)s)
  AND updated_at >= %(since)s
ORDER BY app_id, subscription_id LIMIT %(limit)s
"""

# The target takes a copied row only where it holds an older version (or none): copies and the
# updates applied there after the switch commute.
COPY_ROWS = """
MERGE INTO subscriptions AS s
USING jsonb_to_recordset(%(rows)s::jsonb) AS r(a uuid, s uuid, p jsonb, v bigint, t timestamptz)
ON s.app_id = r.a AND s.subscription_id = r.s
WHEN MATCHED AND s.version < r.v THEN
    UPDATE SET properties = r.p, version = r.v, updated_at = r.t
WHEN NOT MATCHED THEN
    INSERT (app_id, subscription_id, properties, version, updated_at)
    VALUES (r.a, r.s, r.p, r.v, r.t)
"""

# Every row changed by a transaction that commits later has updated_at at or after this: the
# start of the oldest transaction open now (updated_at is its transaction's start), or now.
HORIZON = """
SELECT least(now(), min(xact_start)) FROM pg_stat_activity
WHERE datname = current_database() AND pid <> pg_backend_pid()
"""

DELETE_PAGE = """
DELETE FROM subscriptions WHERE (app_id, subscription_id) IN (
    SELECT app_id, subscription_id FROM subscriptions
    WHERE app_id BETWEEN %(low)s AND %(high)s LIMIT %(limit)s)
"""
