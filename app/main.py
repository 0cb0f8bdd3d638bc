"""The one place the worker is built: the settings, the Faust app, its topics and every service,
each given what it depends on. Agents, tables, views and commands register on what is built here
when ``app.COMPONENTS`` are imported (``app/__init__.py``); they build nothing themselves.

Importing this module reads the environment and raises ``ConfigError`` for a bad setting; it
connects to nothing (the services start with the worker). Names that become Kafka topic or group
names (the app id, every topic and table) are noted where they are declared: renaming one is a
data migration.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

import faust
import mode.loop

from app import settings as settings_module
from app.kafka.consumer import RowstreamApp
from app.kafka.forwarding import Forwarder
from app.kafka.offsets import GroupOffsets
from app.kafka.security import BrokerRefused, broker_of, check_access
from app.kafka.topic_setup import TopicError, check_topics
from app.kafka.topics import Topics
from app.model import events
from app.model.deadletter import for_rejected
from app.observe import tracing
from app.observe.history import Ring
from app.observe.lag_monitor import LagMonitor
from app.ops import access, probes
from app.sink.control import Control, ControlError
from app.sink.shards import ShardRefused, Shards
from app.sink.writer import Item
from app.sink.writers import Writers

settings = settings_module.load()

# uvloop runs Faust's per-event path ~10 % faster than asyncio's loop (make bench). Chosen here,
# before the worker makes its loop; `faust -L aio …` (or FAUST_LOOP) picks another.
if not os.environ.get("FAUST_LOOP"):
    mode.loop.use("uvloop")

# One producer batch holds a whole batch record of the repartition agent.
PRODUCER_BATCH_BYTES = 256 * 1024

#: Where the broker is and how to log in: every Kafka connection uses it.
broker = broker_of(settings)

#: The layout the cluster was seeded with and the live shard map (loaded as the worker starts).
control = Control(settings.control)


class Worker(faust.Worker):
    """Faust's worker, logging at ``ROWSTREAM_LOG_LEVEL`` however it is started (``make run``, the
    Procfile, a container): the setting wins over ``faust worker -l``.

    Its stop ends with mode's one-second last turn of the loop (``_sentinel_task``): keep it. That
    second is what lets the consumer thread's LeaveGroup reach the broker; with 0.1 s the stopped
    worker stayed a member and its restart waited out the session timeout (tried: the SIGTERM
    fault scenario's drain went from 0.5 s to 8.6 s)."""

    def __init__(self, app: Any, *services: Any, loglevel: Any = None, **kwargs: Any) -> None:
        super().__init__(
            app, *services, loglevel=logging.getLevelName(settings.log_level.upper()), **kwargs
        )

    def on_setup_root_logger(self, logger: logging.Logger, level: int) -> None:
        """No terminal spinner: Faust adds one at WARNING and above and turns the root logger to
        DEBUG for it, so every debug call of aiokafka and Faust would build a record."""
        self.spinner = None
        super().on_setup_root_logger(logger, level)

    async def on_first_start(self) -> None:
        """First, the broker, the topics, the shards and the control store: an untrusted
        certificate, a wrong hostname, a refused login, a missing topic or one with another
        partition count than the settings give it, settings the control store's layout cannot
        run with stop the worker with one line and exit code 2 (``check_access`` of
        ``app.kafka.security`` and ``app.sink.shards``, ``check_topics``, ``Control.load``)."""
        try:
            await check_access(broker)
            await check_topics(broker, wanted_topics())
            await shards.check_access()
            await control.load_waiting(settings)
        except (BrokerRefused, ShardRefused, TopicError, ControlError) as exc:
            print(f"rowstream: {exc}", file=sys.stderr, flush=True)
            raise SystemExit(2) from None
        await shards.up()  # the schema on every shard that answers, one added lately included
        await super().on_first_start()


if settings.otlp_endpoint:
    tracing.configure(settings.otlp_endpoint)

app = RowstreamApp(
    settings.group_id,  # the Kafka consumer group: renaming it is a migration
    group_offsets=GroupOffsets(broker, settings.group_id),
    fetch_wait=settings.fetch_wait,
    broker=settings.broker,
    broker_credentials=broker.credentials,  # TLS and SASL, as every other connection
    origin="app",
    Worker=Worker,
    datadir=settings.data_dir or str(Path(".local") / f"worker-{settings.web_port}"),
    store="memory://",
    # tansu has no idempotent producer or transactions; the sink is idempotent instead.
    processing_guarantee="at_least_once",
    producer_acks=-1,
    # Faust's defaults (no linger, 16 KB batches) make one produce request per few messages.
    producer_linger=0.005,
    producer_max_batch_size=PRODUCER_BATCH_BYTES,
    producer_max_request_size=events.MAX_RECORD_BYTES,
    # Fairness between the agents' topics. aiokafka hands out fetched records partition by
    # partition in the order they arrived, and Faust takes all of them (no poll limit) before it
    # asks again: with 1 MiB per partition, a backlog on the update topic kept the sink from its
    # records for 20-30 s (seen in make bench). Small per-partition fetches, bounded polls.
    consumer_max_fetch_size=128 * 1024,
    broker_max_poll_records=2000,
    topic_partitions=settings.partitions,
    topic_allow_declare=False,  # topics are created by `faust -A app create-topics`
    consumer_auto_offset_reset="earliest",
    broker_session_timeout=settings.session_timeout,
    broker_heartbeat_interval=settings.session_timeout / 4,
    broker_rebalance_timeout=settings.session_timeout * 2,
    broker_commit_interval=0.5,
    # On stop, commit what was acknowledged and go; do not wait for events a held shard may never
    # acknowledge (they are read again after the restart, and the version guard absorbs them).
    stream_wait_empty=False,
    # The check compares a table's restored offset with the broker's end offset from ListOffsets,
    # which tansu answers too low (broker-notes): it crashed a worker that took a table over.
    # With the memory store nothing persists across restarts, so there is nothing it protects.
    recovery_consistency_check=False,
    web_port=settings.web_port,
    # Every page but the public ones needs an unscoped key (app.ops.access).
    web_application_options={"middlewares": [access.admin_guard(lambda: settings.scoped_keys)]},
    web_bind=settings.web_bind,
    **({"web_host": "127.0.0.1"} if settings.web_bind in ("127.0.0.1", "localhost") else {}),
)

topics = Topics(app, settings)


def wanted_topics() -> dict[str, int]:
    """Every topic the worker reads or writes (changelogs included) → its partition count: what
    ``create-topics`` makes and the worker checks at start."""
    wanted = {topic.get_topic_name(): topic.partitions for topic in topics.own}
    for table_ in app.tables.values():
        wanted[table_.changelog_topic.get_topic_name()] = table_.partitions or settings.partitions
    return wanted


# The shard pools live as long as the worker; the sink and the read views share them.
shards = Shards(settings.shards, settings.pool_size)

#: The repartition agent's batches of updates per internal partition (``agents/repartition.py``).
forwarder = Forwarder(
    topics.send_batch,
    events.batch_record,
    max_updates=settings.forward_batch,
    max_bytes=PRODUCER_BATCH_BYTES,
    linger=settings.forward_linger,
)


async def dead_letter_rejected(item: Item, error: str) -> None:
    record, update = item.origin
    await topics.send_dead_letter(for_rejected(record, update, error, topics.updates_name))


#: The sink agent's writers, one per shard (``agents/sink.py``).
writers = Writers(
    shards,
    len(settings.shards),
    batch_size=settings.batch_size,
    batch_wait=settings.batch_wait,
    retry_max=settings.retry_max,
    partitions_of=lambda shard: control.layout.internal.partitions_of(shard),
    pause=lambda partitions: app.unit_consumer.hold(topics.internal_name, partitions),
    resume=lambda partitions: app.unit_consumer.release(topics.internal_name, partitions),
    on_rejected=dead_letter_rejected,
    send_stats=topics.send_stats,
)

#: The last 15 minutes for the operator page, kept where the cluster-wide tables live
#: (``tables/lag.py``: a sample per lag round; ``tables/throughput.py``: one a second).
lag_history = Ring(settings.lag_interval)
shard_history = Ring(1.0)

#: Measures and shares the lag of this worker's partitions (``GET /lag/``, ``/readyz``).
monitor = LagMonitor(app, topics, settings, broker)

for service in (shards, writers, monitor):
    app.add_service(service)

probes.register(app, monitor, shards, settings.lag_interval)


@app.timer(1.0)
async def follow_the_map() -> None:
    """The live shard map once a second, for the pages; the agents read it again themselves
    when a move needs it (``agents/repartition.py``)."""
    await control.try_refresh()


@app.on_partitions_assigned.connect  # type: ignore[arg-type]  # Faust's signal type is narrow
async def read_the_map(sender: Any, assigned: Any, **kwargs: Any) -> None:
    """A partition taken over may be past a move's marker its previous owner saw: the map is
    read again before its records are (rule 12 holds them until the rebalance ends)."""
    await control.try_refresh()


@app.on_partitions_revoked.connect  # type: ignore[arg-type]  # Faust's signal type is narrow
async def forget_revoked(sender: Any, revoked: Any, **kwargs: Any) -> None:
    writers.forget({tp.partition for tp in revoked if tp.topic == topics.internal_name})
