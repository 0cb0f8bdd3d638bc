"""Fold a batch of patches into one patch per row: pure, no I/O.

A patch sets keys and deletes the keys whose value is null; patches of one row compose by "last
writer per key wins". So a row's patches fold into one whose effect is the same as applying them
one by one, and the folded patch carries the highest version it contains.

Patches are folded in *version* order, not arrival order. After a rebalance or a crash, Kafka
re-delivers a range of events that may interleave with ones already seen; sorting by version
recovers the source order, and because every version in the fold is at or above the row's stored
version (the write applies the fold only where the stored version is older), re-applying the
overlap is exact.
"""

from __future__ import annotations

from typing import Iterable, Mapping, NamedTuple, Optional

Value = Optional[object]  # a JSON scalar; None deletes the key


class Patch(NamedTuple):
    app_id: str
    subscription_id: str
    version: int
    properties: Mapping[str, Value]


class Folded(NamedTuple):
    """One row's patches folded into one; ``events`` counts how many went in."""

    patch: Patch
    events: int


def apply(state: Mapping[str, Value], properties: Mapping[str, Value]) -> dict[str, Value]:
    """The row's properties after one patch: the reference semantics of the upsert SQL."""
    merged = {**state, **properties}
    return {key: value for key, value in merged.items() if value is not None}


def coalesce(patches: Iterable[Patch]) -> list[Folded]:
    """One folded patch per row, rows in order of first arrival."""
    rows: dict[tuple[str, str], list[Patch]] = {}
    for patch in patches:
        rows.setdefault((patch.app_id, patch.subscription_id), []).append(patch)
    folded = []
    for (app_id, subscription_id), group in rows.items():
        if any(a.version > b.version for a, b in zip(group, group[1:])):
            group.sort(key=lambda patch: patch.version)  # stable: equal versions keep arrival order
        properties: dict[str, Value] = {}
        for patch in group:
            properties.update(patch.properties)
        folded.append(
            Folded(Patch(app_id, subscription_id, group[-1].version, properties), len(group))
        )
    return folded
