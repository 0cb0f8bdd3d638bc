"""The Kafka topics of rowstream. A topic's name is its identity: renaming one is a migration.

Agents read raw bytes and decode in ``app.model.events``, so that a message that fails to decode
reaches the dead-letter topic instead of vanishing in the framework.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

import faust
import orjson

from app.kafka.names import DEAD_LETTERS, INTERNAL, LAG, SHARD_STATS, UPDATES
from app.model.deadletter import DeadLetter
from app.model.events import UPDATES_HEADER
from app.observe import metrics
from app.settings import Settings

log = logging.getLogger("rowstream.deadletters")


class RawSchema(faust.Schema):
    """Keys and values as the bytes on the wire. Faust's own decoding of a "raw" schema looks
    the codec up and calls it for every key and value (5 % of a worker's time in make bench);
    this hands the message's bytes to the event as they are."""

    def __init__(self) -> None:
        super().__init__(
            key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw"
        )

    def compile(self, app: Any, **kwargs: Any) -> Any:
        create_event = app.create_event

        async def decode(message: Any, *, propagate: bool = False) -> Any:
            return create_event(message.key, message.value, message.headers, message)

        return decode


class Topics:
    """rowstream's topics on one app, declared once (``app.main``), and the sends agents share.

    The update and internal topics reach their agents as units (records of one partition from one
    fetch), in offset order from the committed offset: ``app.kafka.consumer``.
    """

    def __init__(self, app: Any, settings: Settings) -> None:
        self.app = app
        self.dead_lettered: Counter[str] = Counter()  # by reason, since this worker started

        def raw(name: str, partitions: int) -> Any:
            return app.topic(settings.topic(name), schema=RawSchema(), partitions=partitions)

        #: HTTP ingest writes here; key = app ID; partition = the app's shard block
        #: (``app.model.partitioning``).
        self.updates = raw(UPDATES, settings.partitions)
        #: The repartition agent writes batch records here (``app.model.events``), no key;
        #: partition = the rows' subscription IDs hashed inside the app's shard block.
        self.internal = raw(INTERNAL, settings.internal_partitions)
        #: Events that cannot be applied: original key and bytes, reason and coordinates in
        #: headers (``app.model.deadletter``). Partition = the source partition in the update
        #: topic, so a redrive keeps per-app order.
        self.dead_letters = raw(DEAD_LETTERS, settings.partitions)
        #: The sink's per-shard counts, once a second; feeds ``tables/throughput.py``.
        self.stats = raw(SHARD_STATS, 1)
        #: Each worker's lag snapshot, once a round (key = the worker's URL); feeds
        #: ``tables/lag.py``.
        self.lag = raw(LAG, 1)
        self.own = (self.updates, self.internal, self.dead_letters, self.stats, self.lag)
        self.updates_name = self.updates.get_topic_name()
        self.internal_name = self.internal.get_topic_name()
        app.deliver_in_units(self.updates, UPDATES)
        app.deliver_in_units(self.internal, INTERNAL)

    async def send_batch(self, partition: int, value: bytes, timestamp: float, updates: int) -> Any:
        """Queue one batch record on the internal topic; the future answers when the broker has
        it. The header tells the lag monitor how many updates it holds without decoding it."""
        return await self.app.producer.send(
            self.internal_name,
            None,
            value,
            partition,
            timestamp,
            [(UPDATES_HEADER, b"%d" % updates)],
        )

    async def send_dead_letter(self, letter: DeadLetter) -> None:
        """Queue a dead letter now; Faust flushes the producer before it commits offsets, so the
        event it replaces is never committed before the letter is durable."""
        headers = {name: value.decode() for name, value in letter.headers}
        metrics.DEAD_LETTERS.labels(headers["rowstream-reason"]).inc()
        self.dead_lettered[headers["rowstream-reason"]] += 1
        log.warning(
            "dead-lettered %s event from %s[%s]@%s: %s",
            headers["rowstream-reason"],
            headers["rowstream-seen-topic"],
            headers["rowstream-seen-partition"],
            headers["rowstream-seen-offset"],
            headers["rowstream-error"][:300],
        )
        await self.dead_letters.send(
            key=letter.key,
            value=letter.value,
            partition=letter.partition,
            headers=letter.headers,
            force=True,  # now, not at the next commit (Faust's default inside an agent)
        )

    async def send_stats(self, shard: int, counts: dict[str, int]) -> None:
        await self.stats.send(key=str(shard).encode(), value=orjson.dumps(counts))
