"""Fold a batch of patches into as few writes as is exact: pure, no I/O.

A patch sets keys and deletes the keys whose value is null; patches of one row compose by "last
writer per key wins" (``stored || p1 || p2 …``, nulls dropped at the end). The write applies a
folded patch only where the stored version is older than the fold's highest version.

That guard is exact for a fold of a *contiguous* run of a row's updates (no update of the row
missing in between) whose predecessor is already stored: re-applying the part of the run that is
already stored changes nothing, since every key it sets is set again by the same or a later update
of the run. Kafka delivers a partition in order, but after a crash or a rebalance it re-delivers
from the last committed offset: the stream for a row then steps *back* in version (…11, 12, 5, 6…).
Folding across such a step would carry a stale update (5, 6) under the new version (12). So a
row's patches are folded run by run, a run ending where the version does not increase, and the
runs are written in order: ``rounds[0]`` holds every row's first run, ``rounds[1]`` the second
runs of the (rare) rows that stepped back inside the batch, and so on.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import NamedTuple

Value = object | None  # a JSON scalar; None deletes the key


class Patch(NamedTuple):
    app_id: str
    subscription_id: str
    version: int
    properties: Mapping[str, Value]


class Folded(NamedTuple):
    """One run of a row's patches folded into one; ``events`` counts how many went in."""

    patch: Patch
    events: int


def apply(state: Mapping[str, Value], properties: Mapping[str, Value]) -> dict[str, Value]:
    """The row's properties after one patch: the reference semantics of the upsert SQL."""
    merged = {**state, **properties}
    return {key: value for key, value in merged.items() if value is not None}


def coalesce(patches: Iterable[Patch]) -> list[list[Folded]]:
    """Rounds of folded patches, at most one per row in each round; write them in order."""
    runs: dict[tuple[str, str], list[list[Patch]]] = {}
    for patch in patches:
        row_runs = runs.setdefault((patch.app_id, patch.subscription_id), [])
        if row_runs and row_runs[-1][-1].version < patch.version:
            row_runs[-1].append(patch)
        else:
            row_runs.append([patch])
    rounds: list[list[Folded]] = []
    for (app_id, subscription_id), row_runs in runs.items():
        for number, run in enumerate(row_runs):
            properties: dict[str, Value] = {}
            for patch in run:
                properties.update(patch.properties)
            if number == len(rounds):
                rounds.append([])
            rounds[number].append(
                Folded(Patch(app_id, subscription_id, run[-1].version, properties), len(run))
            )
    return rounds
