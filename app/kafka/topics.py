"""The Kafka topics of rowstream. A topic's name is its identity: renaming one is a migration.

Agents read raw bytes and decode in ``app.model.events``, so that a message that fails to decode
reaches the dead-letter topic instead of vanishing in the framework.
"""

from __future__ import annotations

import logging
from typing import Any

import faust

from app.observe import metrics
from app.model.deadletter import DeadLetter
from app.main import app, settings

log = logging.getLogger("rowstream.deadletters")


class RawSchema(faust.Schema):
    """Keys and values as the bytes on the wire. Faust's own decoding of a "raw" schema looks
    the codec up and calls it for every key and value (5 % of a worker's time in make bench);
    this hands the message's bytes to the event as they are."""

    def __init__(self) -> None:
        super().__init__(key_type=bytes, value_type=bytes, key_serializer="raw",
                         value_serializer="raw")

    def compile(self, app: Any, **kwargs: Any) -> Any:
        create_event = app.create_event

        async def decode(message: Any, *, propagate: bool = False) -> Any:
            return create_event(message.key, message.value, message.headers, message)

        return decode


# The topics' names before the deployment's prefix (``ROWSTREAM_TOPIC_PREFIX``): a wire contract.
UPDATES = "subscription-updates"
INTERNAL = "rowstream-by-subscription"
DEAD_LETTERS = "rowstream-dead-letters"
SHARD_STATS = "rowstream-shard-stats"
LAG = "rowstream-lag"


def _raw_topic(name: str, partitions: int):
    return app.topic(settings.topic(name), schema=RawSchema(), partitions=partitions)


#: HTTP ingest writes here; key = app ID; partition = the app's shard block (app.model.partitioning).
updates_topic = _raw_topic(UPDATES, settings.partitions)

#: The repartition agent writes batch records here (app.model.events), no key; partition = the rows'
#: subscription IDs hashed inside the app's shard block.
by_subscription_topic = _raw_topic(INTERNAL, settings.partitions)

#: Events that cannot be applied: original key and bytes, reason and coordinates in headers.
#: Partition = the source partition in the update topic, so a redrive keeps per-app order.
dead_letter_topic = _raw_topic(DEAD_LETTERS, settings.partitions)

#: One small record per committed batch; feeds the per-shard throughput tables.
stats_topic = _raw_topic(SHARD_STATS, 1)

#: Each worker's lag snapshot, once a round (key = the worker's URL); feeds tables/lag.py.
lag_topic = _raw_topic(LAG, 1)

# The agents' input topics reach them as units (records of one partition from one fetch), in
# offset order from the committed offset: app/kafka/consumer.py.
app.deliver_in_units(updates_topic, UPDATES)
app.deliver_in_units(by_subscription_topic, INTERNAL)

OWN_TOPICS = (updates_topic, by_subscription_topic, dead_letter_topic, stats_topic, lag_topic)


async def send_dead_letter(letter: DeadLetter) -> None:
    """Queue a dead letter now; Faust flushes the producer before it commits offsets, so the
    event it replaces is never committed before the letter is durable."""
    headers = {name: value.decode() for name, value in letter.headers}
    metrics.DEAD_LETTERS.labels(headers["rowstream-reason"]).inc()
    log.warning(
        "dead-lettered %s event from %s[%s]@%s: %s", headers["rowstream-reason"],
        headers["rowstream-seen-topic"], headers["rowstream-seen-partition"],
        headers["rowstream-seen-offset"], headers["rowstream-error"][:300],
    )
    await dead_letter_topic.send(
        key=letter.key, value=letter.value, partition=letter.partition, headers=letter.headers,
        force=True,  # now, not at the next commit (Faust's default inside an agent)
    )
