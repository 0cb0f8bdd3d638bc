"""rowstream's own ``faust -A app <command>`` commands."""

from __future__ import annotations

import asyncio

from app.admin import TopicError, ensure_topics
from app.main import app, settings


def wanted_topics() -> dict[str, int]:
    """Every topic the app reads or writes (changelogs included) → its partition count."""
    from app.topics import OWN_TOPICS

    wanted = {topic.get_topic_name(): topic.partitions for topic in OWN_TOPICS}
    for table in app.tables.values():
        wanted[table.changelog_topic.get_topic_name()] = table.partitions or settings.partitions
    return wanted


@app.command()
async def create_topics(self) -> None:
    """Create rowstream's topics with ROWSTREAM_PARTITIONS partitions (run before any worker)."""
    try:
        created = await asyncio.wait_for(
            ensure_topics(settings.broker, wanted_topics(), settings.replication), 60
        )
    except (TopicError, asyncio.TimeoutError) as exc:
        raise self.UsageError(str(exc) or "timed out talking to the broker") from None
    self.say(f"created {len(created)} topic(s)" + (": " + ", ".join(created) if created else ""))
