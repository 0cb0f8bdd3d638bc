"""The lag monitor: every ROWSTREAM_LAG_INTERVAL seconds, measure the lag of the partitions this
worker owns (message lag, waiting updates, time lag), export it as Prometheus gauges, and share it
with the other workers.

Faust's own monitor does not derive lag. A partition whose committed offset equals the log end
offset that the worker's own consumer saw in a fetch response of the last ``max(2 s, interval)``
has nothing waiting: its lag is 0 and it costs no fetch (at 720 partitions that is most of them
in nominal operation). Every other owned partition is read by a small side consumer (no group
membership, no commits, paused between rounds) from its committed offset, once a round: the
fetch response carries the high watermark (the log end offset), and the first record returned
is the oldest message not yet committed (its timestamp gives the time lag). This works the same
whether the partition is flowing, idle, or paused by a held shard. Records may hold many updates
(batch records, update batches), so the monitor counts the updates the waiting records hold from
their ``rowstream-updates`` header (``app.observe.lag.UpdateCounts``): each round reads one fetch
per partition (at most 64 KiB) on from where the last round stopped, so each record is read at most
once and a round's cost does not grow with the traffic; records not read yet count at the
average of those counted (exact whenever the waiting records were all read, e.g. a held shard's
modest backlog).

The snapshot goes to ``rowstream-lag`` (one record per worker per round, key = the worker's URL);
``tables/lag.py`` keeps the newest snapshot of every worker, so any worker answers ``GET /lag/``
for the whole cluster.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import ConsumerStoppedError, KafkaConnectionError
from faust.exceptions import NotReady
from mode import Service

from app.kafka.consumer import FETCH_MAX_WAIT_MS
from app.kafka.security import CONNECTION_ERRORS, Broker, broker_failed, describe_failure
from app.kafka.topic_setup import side_consumer
from app.kafka.topics import Topics
from app.model import events
from app.observe import metrics
from app.observe.lag import PartitionLag, UpdateCounts
from app.settings import Settings

log = logging.getLogger("rowstream.lag")


class LagMonitor(Service):
    """Measures, exports and shares the lag of the partitions this worker owns."""

    def __init__(
        self, app: Any, topics: Topics, settings: Settings, broker: Broker, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.app, self.topics, self.settings, self.broker = app, topics, settings, broker
        self.interval = settings.lag_interval
        self.latest: dict[TopicPartition, PartitionLag] = {}
        self.last_success: float | None = None
        self.failing = False  # the last round failed (logged once until one succeeds)
        self._side: AIOKafkaConsumer | None = None
        self._assigned: set[TopicPartition] = set()
        self._broker_committed: dict[TopicPartition, int | None] = {}
        self._round: asyncio.Future | None = None  # the lag round in progress
        self._counts: dict[TopicPartition, UpdateCounts] = {}  # updates the records hold

    def _new_side_consumer(self) -> AIOKafkaConsumer:
        settings = self.settings
        return side_consumer(
            self.broker,
            f"{settings.group_id}-lag-monitor",
            settings.group_id,  # to read the group's committed offsets
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=64 * 1024,
            fetch_max_bytes=4 * 1024 * 1024,
            fetch_max_wait_ms=FETCH_MAX_WAIT_MS,  # a round waits no longer for a quiet partition
        )

    async def on_stop(self) -> None:
        # mode calls on_stop before it stops the timer: a round may be inside the side
        # consumer's getmany. End the round first, then the consumer (stopping the consumer under
        # a round raised ConsumerStoppedError, which crashed the worker on SIGTERM).
        if self._round is not None:
            self._round.cancel()
            await asyncio.gather(self._round, return_exceptions=True)
        if self._side is not None:
            await self._side.stop()

    @Service.task
    async def _rounds(self) -> None:
        """A round whenever one is due, checked every second after the last check ended (a
        round at 720 partitions under load can take longer than a second)."""
        while not self.should_stop:
            await self.sleep(1.0)
            if not self.should_stop:
                await self.tick()

    async def tick(self) -> None:
        """Run a lag round if one is due; a failure makes the worker not ready, never crashes it."""
        if self.last_success is not None and time.time() - self.last_success < self.interval:
            return
        if self.should_stop:
            return
        self._round = asyncio.ensure_future(
            asyncio.wait_for(self.refresh(), timeout=max(10.0, 3 * self.interval))
        )
        try:
            await self._round
        except asyncio.CancelledError:
            if self.should_stop:
                return  # on_stop ended the round
            raise
        except NotReady:
            pass  # the worker is starting or stopping: its producer is not running
        except (*CONNECTION_ERRORS, ConsumerStoppedError) as exc:
            # ConsumerStoppedError is no KafkaError: the offsets client stopped under the round
            if not broker_failed(exc):
                raise
            if self.should_stop:
                return
            if not self.failing:
                log.warning(
                    "lag refresh failed: %s (the worker reports not ready until it works "
                    "again; repeats are not logged)",
                    describe_failure(exc, self.broker),
                )
            self.failing = True
        else:
            if self.failing:
                log.info("lag refresh works again")
            self.failing = False
        finally:
            self._round = None

    def owned(self) -> list[TopicPartition]:
        watched = {self.topics.updates_name, self.topics.internal_name}
        try:
            assignment = self.app.consumer.assignment()
        except Exception:  # the consumer is not started yet
            return []
        return sorted(
            (TopicPartition(tp.topic, tp.partition) for tp in assignment if tp.topic in watched),
            key=lambda tp: (tp.topic, tp.partition),
        )

    async def refresh(self) -> None:
        if self._side is None:
            side = self._new_side_consumer()
            try:
                await side.start()
            except BaseException:
                await side.stop()
                raise
            self._side = side
        side = self._side
        owned = self.owned()
        if set(owned) != self._assigned:
            self._drop_gauges(self._assigned - set(owned))
            side.assign(owned)
            self._assigned = set(owned)
            self._broker_committed = {}
            self._counts = {}
        if not owned:
            self.latest = {}
            self.last_success = time.time()
            await self._share()
            return
        committed = await self._committed(owned)
        starts = {tp: committed[tp] or 0 for tp in owned}
        started_ms = int(time.time() * 1000)
        settled = self._settled(owned, committed, started_ms / 1000.0 - max(2.0, self.interval))
        reading = [tp for tp in owned if tp not in settled]
        for tp in reading:  # read on where the last round stopped counting
            side.seek(tp, self._counts.setdefault(tp, UpdateCounts()).resume_at(starts[tp]))
        side.resume(*reading)

        def polled(tp: TopicPartition) -> bool:
            return (side.last_poll_timestamp(tp) or 0) >= started_ms

        fetched: set[TopicPartition] = set()  # read once this round: a round's budget

        def finished(tp: TopicPartition) -> bool:
            return polled(tp) and (
                tp in fetched or self._counts[tp].resume_at(starts[tp]) >= (side.highwater(tp) or 0)
            )

        deadline = time.monotonic() + max(2.0, self.interval)
        try:
            while reading and time.monotonic() < deadline:
                batch = await side.getmany(*reading, timeout_ms=200)
                for tp, records in batch.items():
                    counts = self._counts[tp]
                    if records:
                        fetched.add(tp)
                    for record in records:
                        counts.add(
                            record.offset,
                            events.updates_in(record.headers),
                            record.timestamp / 1000.0,
                        )
                done = [tp for tp in reading if finished(tp)]
                if done:
                    side.pause(*done)
                    reading = [tp for tp in reading if tp not in done]
            if not all(polled(tp) for tp in reading):  # nothing measured is current
                raise KafkaConnectionError("the broker did not answer the lag round's fetches")
        finally:
            side.pause(*owned)
        now = time.time()
        owner = self.worker_url()
        self.latest = {}
        for tp in owned:
            if tp in settled:
                self.latest[tp] = PartitionLag(
                    tp.topic, tp.partition, settled[tp], committed[tp], None, owner, now, 0
                )
                continue
            end, counts = side.highwater(tp), self._counts[tp]
            self.latest[tp] = PartitionLag(
                tp.topic,
                tp.partition,
                end,
                committed[tp],
                counts.oldest(starts[tp]),
                owner,
                now,
                counts.waiting(starts[tp], end or 0),
            )
        for tp, lag in self.latest.items():
            labels = (self.settings.unprefixed(tp.topic), str(tp.partition))
            metrics.MESSAGE_LAG.labels(*labels).set(lag.message_lag)
            metrics.WAITING_UPDATES.labels(*labels).set(lag.waiting_updates)
            metrics.TIME_LAG.labels(*labels).set(lag.time_lag(now))
        self.last_success = now
        await self._share()

    def _settled(
        self, owned: list[TopicPartition], committed: dict[TopicPartition, int | None], since: float
    ) -> dict[TopicPartition, int]:
        """The partitions with nothing waiting, known without a fetch: the worker's own consumer
        saw their log end, since ``since``, equal to the committed offset. Their end offsets."""
        settled = {}
        for tp in owned:
            end, at = self.app.unit_consumer.fetched_end(tp)
            if end is not None and at >= since and end == committed[tp]:
                settled[tp] = end
        return settled

    async def _committed(self, owned: list[TopicPartition]) -> dict[TopicPartition, int | None]:
        """The group's committed offsets: the newer of this worker's own last commit (as Faust's
        monitor saw it) and what the broker said when the partition was assigned here (asked once
        per assignment, see app.kafka.offsets). Committed offsets only grow, so the newer of two
        true values is current."""
        own_commits = {
            (tp.topic, tp.partition): offset
            for tp, offset in self.app.monitor.tp_committed_offsets.items()
        }
        result: dict[TopicPartition, int | None] = {}
        unknown = [tp for tp in owned if tp not in self._broker_committed]
        if unknown:
            self._broker_committed.update(await self.app.group_offsets.committed(unknown))
        for tp in owned:
            known = [
                o
                for o in (own_commits.get((tp.topic, tp.partition)), self._broker_committed[tp])
                if o is not None
            ]
            result[tp] = max(known) if known else None
        return result

    def _drop_gauges(self, revoked: set[TopicPartition]) -> None:
        for tp in revoked:
            labels = (self.settings.unprefixed(tp.topic), str(tp.partition))
            for gauge in (metrics.MESSAGE_LAG, metrics.WAITING_UPDATES, metrics.TIME_LAG):
                try:
                    gauge.remove(*labels)
                except KeyError:
                    pass

    async def _share(self) -> None:
        snapshot = [lag._asdict() for lag in self.latest.values()]
        owner = self.worker_url()
        await self.topics.lag.send(
            key=owner.encode(),
            value=orjson.dumps(
                {
                    "owner": owner,
                    "at": time.time(),
                    "partitions": snapshot,
                    "dead_letters": dict(self.topics.dead_lettered),
                }
            ),
        )

    def worker_url(self) -> str:
        return str(self.app.conf.canonical_url)
