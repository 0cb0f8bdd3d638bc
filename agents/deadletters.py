"""Sending to the dead-letter topic, shared by both agents."""

from __future__ import annotations

import logging

from app.deadletter import DeadLetter
from app.topics import dead_letter_topic

log = logging.getLogger("rowstream.deadletters")


async def send_dead_letter(letter: DeadLetter) -> None:
    """Queue the record now; the producer is flushed before offsets are committed."""
    headers = dict(letter.headers)
    log.warning(
        "dead-lettered %s event from %s[%s]@%s: %s",
        headers["rowstream-reason"].decode(), headers["rowstream-seen-topic"].decode(),
        headers["rowstream-seen-partition"].decode(), headers["rowstream-seen-offset"].decode(),
        headers["rowstream-error"].decode()[:300],
    )
    await dead_letter_topic.send(
        key=letter.key,
        value=letter.value,
        partition=letter.partition,
        headers=letter.headers,
        force=True,
    )
