"""Connections to the broker: the URL forms, and the one factory of side consumers."""

from app.kafka.security import Broker, bootstrap_servers
from app.kafka.topic_setup import side_consumer


def test_faust_broker_urls_become_aiokafka_bootstrap_servers():
    assert bootstrap_servers("kafka://h1:9092;h2:9092") == "h1:9092,h2:9092"
    assert bootstrap_servers("kafka://127.0.0.1:9092") == "127.0.0.1:9092"


async def test_a_side_consumer_never_commits_and_carries_its_purpose():
    reader = side_consumer(
        Broker("kafka://h1:9092;h2:9092"), "rowstream-inspect",
        auto_offset_reset="earliest",
    )  # fmt: skip
    offsets = side_consumer(Broker("kafka://h1:9092"), "g-offsets", "g")
    try:
        assert reader._group_id is None and offsets._group_id == "g"
        assert not reader._enable_auto_commit and not offsets._enable_auto_commit
        assert reader._client._client_id == "rowstream-inspect"
        assert reader._client._bootstrap_servers == "h1:9092,h2:9092"
        assert reader._auto_offset_reset == "earliest"
    finally:
        await reader.stop()
        await offsets.stop()
