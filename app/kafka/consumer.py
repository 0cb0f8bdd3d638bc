"""rowstream's Kafka client classes: every delivery rule of both agents, in the classes Faust lets
an app install (``RowstreamApp`` → ``Transport`` → ``Consumer`` → ``ConsumerThread``, and the
``Producer``). Written against faust-streaming 0.15.3 and aiokafka 0.14.0 (pinned; the unit tests
check the versions and each rule against Faust's own code).

For the *unit topics* (the update topic and the internal topic, named by ``deliver_in_units``):

1. **Units.** The records of one partition from one fetch cross Faust as one message, a ``Unit``:
   ``offset`` is its last record's offset, ``first_offset`` its first's, ``value`` the list of
   records (aiokafka ``ConsumerRecord``). Faust's per-message path (drain loop, conductor, stream,
   acknowledgement: 35-110 µs) is paid once per unit, not once per record. Acknowledging a unit
   acknowledges each of its records.
2. **In order from the committed offset** (``app.kafka.delivery``): a unit reaches the conductor
   only if no record before it was skipped; otherwise it is dropped unacknowledged and the
   partition is read again from the missing offset. Faust 0.15.3 skips records around rebalances
   and pauses (``app.kafka.ordering`` tells how). Faust's own "already read" drop, which is how it
   skips, is not applied to these topics: a re-delivery is handed on (the sink's writes are
   idempotent).
3. **Acknowledgements that cannot be trusted are refused**: of a unit from an earlier consumer
   generation, or while the flow is stopped for a rebalance. (Faust's stream acknowledges the
   events it drops then; for a unit of a thousand records that would let a later commit pass
   records the new generation has not processed.) What is refused is read again.
4. **Commits move past acknowledged runs only.** Faust counts a jump in offsets as records that
   need no acknowledgement ("gaps": right for compacted or transactional topics; ours have
   contiguous offsets, so a jump is a skip), and its ``_new_offset`` commits past the first
   unacknowledged record when it is the only one missing at the head, or when nothing was
   committed before. Units acknowledged out of order make both likely, so here the committed
   offset moves only along a run of acknowledged offsets that starts at the committed offset
   (or where this generation began the partition).

For every topic, two per-message costs of the framework are removed:

5. **The hand-over.** Faust's drain loop awaits ``wait_first(callback(message),
   suspend_flow.wait())`` per message: four tasks made, three cancelled. The delivery completes
   in its first step unless the flow is stopped or a buffer is full, so while the flow is not
   suspended it is awaited directly; Faust's race runs while ``suspend_flow`` is set. The one
   difference is a delivery blocked when a rebalance starts: it finishes once the flow resumes,
   and the stream drops it as an event of an earlier generation, like every stale event.
   Stopping the worker cancels the loop's task, and a blocked delivery with it.
6. **The commit's assignment check.** ``AIOKafkaConsumerThread._commit`` tests each offset
   against a new set of the whole assignment: quadratic in partitions owned (7.5 % of a worker
   at 720 partitions). ``ConsumerThread._commit`` is Faust's method with the assignment taken once.

8. **The fetch wait.** A fetch that finds less than ``fetch_min_bytes`` waits on the broker for up
   to ``fetch_max_wait_ms`` (Faust asks for 1 byte and 1,500 ms). tansu does not answer such a
   fetch when records arrive meanwhile; it answers at the end of the wait. So at every quiet
   moment delivery paused for up to 1.5 s on both topics: a time lag floor of 2-3 s at 2,000
   updates/s. ``ConsumerThread`` asks for ``ROWSTREAM_FETCH_WAIT`` (default 250 ms) and
   ``FETCH_MIN_BYTES`` (64 KiB): a record waits at most that long for its fetch, and under
   moderate load a fetch still gathers that long of records into one unit instead of returning
   each few records alone (the trade-off's figures: docs/benchmark.md).

9. **Table recovery reads the changelog it seeks to.** Faust's recovery seeks a table's
   changelog partitions with ``seek_wait``, which, unlike Faust's ``seek``, leaves the read
   offset where it was, and Faust drops every record at or before the read offset as already
   read. A worker that read a changelog as a standby (its read offset at the end) and then takes
   the table over seeks it back to 0 to rebuild the table, and every record was dropped: the
   recovery waited for ever, and so did every agent of that worker (seen once in ``make
   faults``, SIGKILL ×3: 4 minutes of "No event received for active tp"). ``Consumer.seek_wait``
   moves the read offset of changelog partitions with the seek, as ``seek`` does.

10. **A fetch that outlives a rebalance puts its records back.** Faust runs the consumer's calls
    on a thread, two at a time, and a call keeps running when the drain loop that asked for it is
    cancelled at a rebalance. aiokafka's ``fetched_records`` waits out the reassignment and then
    takes records of the *new* generation, for a caller that is gone: their positions move on and
    nobody sees them. A table's changelog read that way is lost to its recovery, which Faust had
    just seeked back to 0 (``make test`` in CI: SIGKILL ×3, "No event received for active tp",
    the worker's agents stopped for good). So ``ConsumerThread._fetch_records`` seeks every
    partition back to its first record and returns nothing when the assignment changed during
    the call or the flow is stopped (the caller drops such records).

11. **Periodic work paced by its own length.** A Faust commit waits for the producer's flush and
    the broker's answer; under load that took longer than the 0.5 s commit interval, and mode's
    timer logged "Timer commit is overlapping" and started the next at once.
    ``Consumer._commit_handler`` waits the interval after each commit instead. Faust's livelock
    check gives the loop a turn after each partition: at 720 partitions under load one pass took
    longer than its 1.25 s interval ("Timer livelock is overlapping");
    ``verify_all_partitions_active`` gives it one every 100 partitions.

12. **Units wait for the end of a rebalance.** Faust's recovery resumes the stream partitions
    and the flow, seeks them to the committed offsets, and only then calls
    ``flow_control.resume()``, which empties every agent's queue (mode's ``FlowControlEvent``).
    A unit handed on in that window would be dropped there unacknowledged after the guard let it
    pass, and the units after it applied first: the version guard would then refuse it when read
    again (found at 720 partitions: docs/faults.md). While ``app.rebalancing`` is set (until
    Faust's ``on_rebalance_end``, after that resume), ``getmany`` hands no unit on and puts its
    records back; other topics (the changelogs a recovery reads) flow as before.

And one of aiokafka's producer:

7. **The topic's partition set.** ``ClusterMetadata.partitions_for_topic`` builds a new set of a
   topic's partitions at every call, and the producer calls it twice per message (24 µs each at
   720 partitions). ``PartitionSets`` builds it once per metadata update and hands out a
   frozenset: every caller in aiokafka and Faust only reads it.
"""

from __future__ import annotations

import asyncio
from bisect import bisect_left
from collections.abc import AsyncIterator, Collection, Mapping
from time import monotonic
from typing import Any, cast

import aiokafka
import faust
from aiokafka import TopicPartition
from aiokafka.cluster import ClusterMetadata
from aiokafka.errors import CommitFailedError
from aiokafka.structs import OffsetAndMetadata
from faust.transport.consumer import CONSUMER_FETCHING
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP, ConsumerMessage, Message
from faust.types.tuples import ack_lock
from mode import Service
from mode.utils.futures import notify

from app.kafka.delivery import DeliveryGuard
from app.kafka.offsets import GroupOffsets


class Unit(ConsumerMessage):
    """The records of one partition from one fetch, as one Faust message (rule 1)."""

    __slots__ = ("first_offset",)

    def __init__(self, tp: TP, records: list, generation_id: int | None) -> None:
        last = records[-1]
        super().__init__(
            last.topic,
            last.partition,
            last.offset,
            last.timestamp / 1000.0,
            last.timestamp_type,
            None,
            None,
            cast(Any, records),  # the unit's value: its records
            None,
            0,
            0,
            tp,
            generation_id=generation_id,
        )
        self.first_offset: int = records[0].offset

    def __repr__(self) -> str:
        return f"<Unit: {self.tp} offsets {self.first_offset}..{self.offset}>"


FETCH_MAX_WAIT_MS = 250  # rule 8
FETCH_MIN_BYTES = 64 * 1024


class ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> aiokafka.AIOKafkaConsumer:
        """Faust's consumer with rule 8's fetch wait. Faust passes its own to the constructor, with
        no setting to change it; the consumer keeps both until ``start()`` makes its fetcher, so
        they are set in between."""
        consumer = super()._create_worker_consumer(transport)
        consumer._fetch_max_wait_ms = getattr(self.app, "fetch_wait_ms", FETCH_MAX_WAIT_MS)
        consumer._fetch_min_bytes = FETCH_MIN_BYTES
        return consumer

    async def _fetch_records(
        self,
        consumer: aiokafka.AIOKafkaConsumer,
        active_partitions: Any,
        timeout: float | None = None,
        max_records: int | None = None,
    ) -> Any:
        """Faust's fetch call, whose records go back to the consumer when it outlived a
        rebalance or returns while the flow is stopped (rule 10)."""
        assignment = consumer._subscription.subscription.assignment
        records = await super()._fetch_records(consumer, active_partitions, timeout, max_records)
        if records and (
            consumer._subscription.subscription.assignment is not assignment
            or not self.consumer.flow_active
        ):
            put_back(consumer, records)
            self.log.info(
                "a fetch outlived a rebalance or the flow's stop: %d records of %d partitions "
                "put back",
                sum(len(fetched) for fetched in records.values()),
                len(records),
            )
            return {}
        return records

    async def _commit(self, offsets: Any) -> bool:
        """Faust 0.15.3's ``_commit`` with the assignment taken once (rule 6)."""
        consumer = self._ensure_consumer()
        now = monotonic()
        assigned = self.assignment()
        commitable_offsets = {tp: offset for tp, offset in offsets.items() if tp in assigned}
        try:
            aiokafka_offsets = {
                faust_aiokafka.ensure_aiokafka_TP(tp): OffsetAndMetadata(offset, "")
                for tp, offset in commitable_offsets.items()
            }
            self.tp_last_committed_at.update({tp: now for tp in commitable_offsets})
            await consumer.commit(aiokafka_offsets)
        except CommitFailedError as exc:
            if "already rebalanced" in str(exc):
                return False
            self.log.exception("Committing raised exception: %r", exc)
            await self.crash(exc)
            return False
        except Exception as exc:  # Faust handles IllegalStateError and the rest alike
            self.log.exception("Got exception: %r\nCurrent assignment: %r", exc, self.assignment())
            await self.crash(exc)
            return False
        return True


def put_back(consumer: Any, records: Mapping[Any, list]) -> None:
    """Move each partition's position back to the first of ``records`` (nothing was consumed);
    a partition no longer assigned is left to its next owner."""
    assigned = consumer.assignment()
    for tp, fetched in records.items():
        if fetched and tp in assigned:
            consumer.seek(tp, fetched[0].offset)


class Consumer(faust_aiokafka.Consumer):
    """Faust's aiokafka consumer with rowstream's delivery rules (the module docstring)."""

    app: RowstreamApp

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._guards: dict[str, DeliveryGuard] = {
            topic: self._new_guard(topic, label) for topic, label in self.app.unit_topics.items()
        }

    def _new_consumer_thread(self) -> ConsumerThread:
        return ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    def _new_guard(self, topic: str, label: str) -> DeliveryGuard:
        def assigned() -> list[int]:
            return [tp.partition for tp in self.assignment() if tp.topic == topic]

        async def starts(partitions: list[int]) -> dict[int, int | None]:
            answers = await self.app.group_offsets.starts(
                TopicPartition(topic, p) for p in partitions
            )
            return {tp.partition: offset for tp, offset in answers.items()}

        async def seek(tp: Any, offset: int) -> None:
            # In the consumer's own thread: a seek from the event loop's thread can be undone by
            # a fetch in flight (seen once: a partition stalled with 1,327 events waiting).
            await self.seek_wait({tp: offset})

        return DeliveryGuard(label, assigned, starts, seek)

    # --- what the agents use ---------------------------------------------------------------

    def read_again(self, message: Message, why: str) -> None:
        """A unit that was handed on could not be processed: read its partition again from it."""
        self._guards[message.topic].read_again(message, why)

    def expected(self, tp: TP) -> int | None:
        """The next offset the guard of ``tp``'s topic lets through (None: not known yet)."""
        return self._guards[tp.topic].expected(tp.partition)

    async def seek_wait(self, partitions: Mapping[TP, int]) -> None:
        """Faust's ``seek_wait``; for table changelogs, also what Faust's ``seek`` does (rule 9)."""
        await super().seek_wait(partitions)
        changelogs = self.app.tables.changelog_topics
        for tp, offset in partitions.items():
            if tp.topic in changelogs:
                self._read_offset[tp] = offset if offset else None

    def fetched_end(self, tp: TP) -> tuple[int | None, float]:
        """The log end offset (high watermark) of ``tp`` in this worker's last fetch response
        for it, and when that response came (epoch seconds; 0.0: none yet). aiokafka updates both
        for every response naming the partition, with records or without."""
        consumer = self._thread._ensure_consumer()
        try:
            return consumer.highwater(tp), (consumer.last_poll_timestamp(tp) or 0) / 1000.0
        except AssertionError:  # not (or no longer) assigned
            return None, 0.0

    def hold(self, topic: str, partitions: Collection[int]) -> None:
        """Pause the partitions of ``topic`` among ``partitions`` that this worker owns."""
        self.pause_partitions(self._owned(topic, partitions))

    async def release(self, topic: str, partitions: Collection[int]) -> None:
        """Resume them, each from the next offset its guard lets through: Faust's fetcher skips
        the records already fetched for a partition paused while it walks a batch
        (``app.kafka.ordering``), and the guard notices a skip only at the partition's next
        unit, which an idle partition never has."""
        owned = self._owned(topic, partitions)
        for tp in owned:
            expected = self.expected(tp)
            if expected is not None:
                await self.seek_wait({tp: expected})
        self.resume_partitions(owned)

    def _owned(self, topic: str, partitions: Collection[int]) -> list[TP]:
        return [tp for tp in self.assignment() if tp.topic == topic and tp.partition in partitions]

    # --- units (rule 1) --------------------------------------------------------------------

    async def getmany(self, timeout: float) -> AsyncIterator[tuple[TP, Message]]:
        """Faust's ``Consumer.getmany`` (0.15.3), yielding one ``Unit`` per partition of a unit
        topic and, as Faust does, one message per record of any other topic."""
        records, active_partitions = await self._wait_next_records(timeout)
        generation_id = self.app.consumer_generation_id
        if records is None or self.should_stop:
            return
        if not self.flow_active:
            try:  # as Faust: a fetch that returns while the flow is stopped seeks back
                await self.perform_seek()
            except Exception as exc:
                self.log.warning(f"exception performing seek when flow not active {exc}")
            return
        guards, track_end = self._guards, self.app.monitor.track_tp_end_offset
        held = self.app.rebalancing  # rule 12: units wait for the end of the rebalance
        if held:
            await self._put_back(
                {
                    tp: fetched[0].offset
                    for tp, fetched in records.items()
                    if fetched and tp.topic in guards
                }
            )
        for tp, fetched in records.items():
            if not self.flow_active or self.app.consumer_generation_id != generation_id:
                break
            if not fetched or not (
                active_partitions is None
                or tp in active_partitions
                or tp in self._buffered_partitions
            ):
                continue
            track_end(tp, self.highwater(tp))
            if tp.topic in guards:
                if not held:
                    yield tp, Unit(tp, fetched, generation_id)
            else:
                for record in fetched:
                    yield tp, self._to_message(tp, record)

    async def _put_back(self, offsets: Mapping[TP, int]) -> None:
        """Move each partition back to its offset in ``offsets``, as if its records had not been
        fetched (in the consumer's thread, where a fetch cannot undo it)."""
        if not offsets:
            return
        try:
            await self.seek_wait(offsets)
        except Exception as exc:  # revoked meanwhile: its next owner starts at the committed offset
            self.log.info("could not put back %d partition(s): %r", len(offsets), exc)

    # --- acknowledgements and commits (rules 3 and 4) ---------------------------------------

    def ack(self, message: Message) -> bool:
        if not isinstance(message, Unit):
            return super().ack(message)
        with ack_lock:
            if message.acked:
                return False
            message.acked = True
            self._unacked_messages.discard(message)
            try:
                if message.generation_id != self.app.consumer_generation_id or not self.flow_active:
                    return False  # rule 3: the new generation reads it again
                tp = message.tp
                committed = self._committed_offset[tp]
                first = (
                    message.first_offset
                    if committed is None
                    else max(message.first_offset, committed)
                )
                index = self._acked_index[tp]
                fresh = [
                    offset for offset in range(first, message.offset + 1) if offset not in index
                ]
                index.update(fresh)
                self._acked[tp].extend(fresh)
                self._n_acked += len(fresh)
                return bool(fresh)
            finally:
                notify(self._waiting_for_ack)

    def _new_offset(self, tp: TP) -> int | None:
        guard = self._guards.get(tp.topic)
        if guard is None:
            return super()._new_offset(tp)
        acked = self._acked[tp]
        if not acked:
            return None
        acked.sort()
        committed = self._committed_offset[tp]
        if committed is None:
            committed = guard.began(tp.partition)
        if committed is None:
            return None  # where the partition starts is not known yet: nothing to commit
        stale = bisect_left(acked, committed)
        if stale:
            self._acked_index[tp].difference_update(acked[:stale])
            del acked[:stale]
        if not acked or acked[0] != committed:
            return None  # the head of the partition is not acknowledged yet
        end = 1
        while end < len(acked) and acked[end] == acked[end - 1] + 1:
            end += 1
        self._acked_index[tp].difference_update(acked[:end])
        offset = acked[end - 1] + 1
        del acked[:end]
        return offset

    async def _add_gap(self, tp: TP, offset_from: int, offset_to: int) -> None:
        """No gaps (rule 4): our offsets are contiguous; a jump is a skip the guard handles."""

    # --- the drain loop (rules 2 and 5) -----------------------------------------------------

    async def _drain_messages(self, fetcher: Any) -> None:  # pragma: no cover - needs a broker
        """Faust's ``Consumer._drain_messages`` (0.15.3) with the guard in front of the unit
        topics instead of its "already read" drop, the hand-over awaited directly while the flow
        runs, and without gaps. Tested end to end (tests/integration) and rule by rule in
        tests/unit/test_consumer.py."""
        callback, getmany, guards = self.callback, self.getmany, self._guards
        consumer_should_stop = cast(Service, self)._stopped.is_set
        fetcher_should_stop = cast(Service, fetcher)._stopped.is_set
        get_read_offset = self._read_offset.__getitem__
        set_read_offset = self._read_offset.__setitem__
        set_flag, unset_flag = self.diag.set_flag, self.diag.unset_flag
        commit_every = self._commit_every
        suspended = self.suspend_flow.is_set
        since_yield = 0
        try:
            while not (consumer_should_stop() or fetcher_should_stop()):
                set_flag(CONSUMER_FETCHING)
                # getmany can return at once many times in a row: give the loop a turn
                await self.sleep(0)
                if not self.should_stop:
                    async for tp, message in getmany(timeout=1.0):
                        since_yield += 1
                        if since_yield > 100:
                            await asyncio.sleep(0)
                            since_yield = 0
                        guard = guards.get(tp.topic)
                        if guard is not None:
                            if not await guard.admit(message):
                                continue  # skipped records before it: the guard reads them again
                        else:
                            read = get_read_offset(tp)
                            if read is not None and message.offset < read:
                                continue  # Faust's rule for its own topics: already read
                        if commit_every is not None and self._n_acked >= commit_every:
                            self._n_acked = 0
                            await self.commit()
                        if suspended():
                            await self.wait_first(callback(message), self.suspend_flow.wait())
                        else:
                            await callback(message)
                        set_read_offset(tp, message.offset)
                    unset_flag(CONSUMER_FETCHING)
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                self.log.info("Broker stopped consumer, shutting down...")
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                self.log.info("Consumer shutting down for user cancel.")
                return
            raise
        except Exception as exc:
            self.log.exception("Drain messages raised: %r", exc)
            raise
        finally:
            unset_flag(CONSUMER_FETCHING)

    # --- rebalances and the guard's timer ---------------------------------------------------

    async def on_partitions_revoked(self, revoked: set[TP]) -> None:
        await super().on_partitions_revoked(revoked)
        for topic, guard in self._guards.items():
            guard.forget(sorted(tp.partition for tp in revoked if tp.topic == topic))

    @Service.timer(1.0)
    async def _seek_stalled(self) -> None:
        for guard in self._guards.values():
            await guard.seek_stalled()

    # --- Faust's periodic work, paced by its own length (rule 11) ---------------------------

    @Service.task
    async def _commit_handler(self) -> None:
        """Faust's commit timer, the interval counted from the end of each commit."""
        while not self.should_stop:
            await self.sleep(self.commit_interval)
            if not self.should_stop:
                await self.commit()

    async def verify_all_partitions_active(self) -> None:
        """Faust's livelock check, giving the loop a turn every 100 partitions, not each one."""
        now = monotonic()
        for n, tp in enumerate(self.assignment()):
            if n % 100 == 99:
                await self.sleep(0)
            if self.should_stop:
                return
            self.verify_event_path(now, tp)


class PartitionSets(ClusterMetadata):
    """aiokafka's cluster metadata, each topic's partition set built once per update (rule 7)."""

    def partitions_for_topic(self, topic: str) -> frozenset[int] | None:
        partitions = self._partitions.get(topic)
        if partitions is None:
            return None
        built = self.__dict__.setdefault("_rowstream_partition_sets", {})
        cached = built.get(topic)
        if cached is None or cached[0] is not partitions:  # the metadata replaced its dict
            cached = built[topic] = (partitions, frozenset(partitions))
        return cached[1]


class AIOKafkaProducer(aiokafka.AIOKafkaProducer):
    def __init__(self, **configs: Any) -> None:
        super().__init__(**configs)
        # The client made a ClusterMetadata before anything was fetched; PartitionSets adds no
        # state, only the cached method, so the object becomes one.
        self.client.cluster.__class__ = PartitionSets


class Producer(faust_aiokafka.Producer):
    @property
    def _producer_type(self) -> type[aiokafka.AIOKafkaProducer]:
        return AIOKafkaProducer


class Transport(faust_aiokafka.Transport):
    Consumer = Consumer
    Producer = Producer


class RowstreamApp(faust.App):
    """A Faust app on rowstream's transport. ``group_offsets`` answers where the group starts each
    partition; ``deliver_in_units`` names the topics whose records travel as units."""

    def __init__(
        self,
        *args: Any,
        group_offsets: GroupOffsets,
        fetch_wait: float = FETCH_MAX_WAIT_MS / 1000,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.group_offsets = group_offsets
        self.fetch_wait_ms = round(fetch_wait * 1000)  # rule 8
        self.unit_topics: dict[str, str] = {}  # topic name → label in logs and metrics
        self.add_service(group_offsets)

    @property
    def unit_consumer(self) -> Consumer:
        """The consumer, typed as rowstream's (what the agents and writers call on it)."""
        return cast(Consumer, self.consumer)

    def add_service(self, service: Service) -> None:
        """Start ``service``, an instance, with the app. Faust's ``service`` takes one (its
        ``on_init_extra_service`` accepts both), although its type names only classes."""
        self.service(cast(Any, service))

    def deliver_in_units(self, topic: Any, label: str) -> None:
        """Hand ``topic``'s records to its agent as units, under the delivery guard. Call before
        the worker starts (when the topics are declared)."""
        self.unit_topics[topic.get_topic_name()] = label

    def _new_transport(self) -> Transport:
        return Transport(self.conf.broker_consumer, self)

    def _new_producer_transport(self) -> Transport:
        return Transport(self.conf.broker_producer, self)


__all__ = ["Consumer", "RowstreamApp", "Transport", "Unit"]
