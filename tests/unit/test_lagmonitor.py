"""The lag monitor's stop: a SIGTERM in the middle of a lag round ends the round before the side
consumer stops (stopping it under the round raised ConsumerStoppedError and crashed the worker)."""

import asyncio
from types import SimpleNamespace

import pytest
from aiokafka import TopicPartition
from aiokafka.errors import ConsumerStoppedError

from app.observe.lag_monitor import LagMonitor


class SideConsumer:
    """A side consumer whose fetch blocks until it is stopped, as aiokafka's getmany does."""

    def __init__(self, events):
        self.events = events
        self.fetching = asyncio.Event()
        self._stopped = asyncio.Event()

    async def getmany(self):
        self.fetching.set()
        try:
            await self._stopped.wait()
        except asyncio.CancelledError:
            self.events.append("round cancelled")
            raise
        raise ConsumerStoppedError()

    async def stop(self):
        self.events.append("side consumer stopped")
        self._stopped.set()


def monitor_alone() -> LagMonitor:
    """A monitor whose round the test replaces: it needs no app, topics or broker."""
    return LagMonitor(
        app=None, topics=None, settings=SimpleNamespace(lag_interval=0.1), broker=None
    )


async def test_a_stop_in_the_middle_of_a_lag_round_ends_the_round_first():
    events: list[str] = []
    monitor = monitor_alone()
    side = monitor._side = SideConsumer(events)

    async def refresh():
        await side.getmany()

    monitor.refresh = refresh
    tick = asyncio.ensure_future(monitor.tick())
    await asyncio.wait_for(side.fetching.wait(), 5)
    monitor._stopped.set()  # what mode's Service.stop does before on_stop
    await asyncio.wait_for(monitor.on_stop(), 5)
    await asyncio.wait_for(tick, 5)  # ends quietly: no ConsumerStoppedError, no crash
    assert events == ["round cancelled", "side consumer stopped"]
    assert monitor._round is None


async def test_a_stopped_offsets_client_under_a_round_is_no_crash_either():
    monitor = monitor_alone()

    async def refresh():
        monitor._stopped.set()  # the worker is stopping; its offsets client stopped first
        raise ConsumerStoppedError()

    monitor.refresh = refresh
    await asyncio.wait_for(monitor.tick(), 5)
    assert not monitor.failing  # not reported as a broker failure either


async def test_a_refused_login_later_makes_the_worker_not_ready_with_one_line(caplog):
    """A SCRAM login refused after the start (credentials rotated on the broker, say) fails the
    lag round: the worker reports not ready (no successful round) and says why once."""
    from aiokafka.conn import ScramAuthenticator

    from app.kafka.security import broker_of
    from app.settings import load

    broker = broker_of(load({
        "ROWSTREAM_BROKER": "kafka://k1:9092",
        "ROWSTREAM_BROKER_SASL_MECHANISM": "SCRAM-SHA-256",
        "ROWSTREAM_BROKER_SASL_USERNAME": "rowstream",
        "ROWSTREAM_BROKER_SASL_PASSWORD": "pw-1",
    }))  # fmt: skip
    monitor = LagMonitor(
        app=None, topics=None, settings=SimpleNamespace(lag_interval=0.1), broker=broker
    )

    async def refresh():
        scram = ScramAuthenticator(
            loop=None, sasl_plain_password="pw-1", sasl_plain_username="rowstream",
            sasl_mechanism="SCRAM-SHA-256",
        )  # fmt: skip
        scram.process_server_final_message("e=unknown-user")  # aiokafka: KeyError('v')

    monitor.refresh = refresh
    for _ in range(2):
        await asyncio.wait_for(monitor.tick(), 5)
    assert monitor.failing and monitor.last_success is None  # /readyz answers 503
    [line] = [r.getMessage() for r in caplog.records if "lag refresh failed" in r.getMessage()]
    assert "refused the SASL SCRAM-SHA-256 login of user 'rowstream'" in line
    assert "pw-1" not in line


async def test_any_other_key_error_is_not_taken_for_a_refused_login():
    monitor = monitor_alone()

    async def refresh():
        raise KeyError("v")  # not from aiokafka's SCRAM client: a bug, and it must show

    monitor.refresh = refresh
    with pytest.raises(KeyError):
        await asyncio.wait_for(monitor.tick(), 5)


def test_only_partitions_seen_caught_up_lately_are_settled_without_a_fetch():
    tp = [TopicPartition("t", n) for n in range(5)]
    seen = {  # the worker's own consumer: (log end in its last fetch response, when)
        tp[0]: (40, 100.0),  # caught up, seen lately: settled
        tp[1]: (41, 100.0),  # a record waits
        tp[2]: (40, 10.0),  # caught up, but seen too long ago (e.g. its fetches stopped)
        tp[3]: (None, 0.0),  # never fetched yet
        tp[4]: (0, 100.0),  # empty partition, nothing ever committed: read to be sure
    }
    monitor = LagMonitor(
        app=SimpleNamespace(unit_consumer=SimpleNamespace(fetched_end=seen.__getitem__)),
        topics=None,
        settings=SimpleNamespace(lag_interval=1.0),
        broker=None,
    )
    committed = {tp[0]: 40, tp[1]: 40, tp[2]: 40, tp[3]: 40, tp[4]: None}
    assert monitor._settled(tp, committed, since=98.0) == {tp[0]: 40}
