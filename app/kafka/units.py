"""What both agents read: each unit of their topic (``app.kafka.consumer``) with its records
decoded, and every part that cannot be applied already sent to the dead-letter topic."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

from app.kafka.topics import Topics
from app.model.deadletter import for_bad_entry
from app.model.events import BadEntry

T = TypeVar("T")

#: A record's updates that can be applied, and the parts that cannot.
Decode = Callable[[Any], "tuple[list[T], list[BadEntry]]"]


async def decoded_units(
    stream: Any, decode: Decode[T], topics: Topics
) -> AsyncIterator[tuple[Any, list[tuple[Any, list[T]]]]]:
    """Per unit: the event (to acknowledge once its updates are handled) and each record with
    its good updates. The stream acknowledges nothing itself (``noack``): the agent decides."""
    async for event in stream.noack().events():
        decoded = []
        for record in event.value:
            good, bad = decode(record)
            for part in bad:
                await topics.send_dead_letter(for_bad_entry(record, part, topics.updates_name))
            decoded.append((record, good))
        yield event, decoded
