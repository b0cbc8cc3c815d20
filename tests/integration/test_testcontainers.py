"""The same round trips against container images, where a Docker engine exists.

These run only with CLOSEDLOOP_TESTCONTAINERS=1 and a reachable Docker engine (the
`testcontainers_enabled` fixture skips with the reason otherwise); CI has no engine, so
there they are reported as skipped, never counted as passing.
"""

from __future__ import annotations

import asyncio
import uuid

import pytest
from confluent_kafka import Consumer

from schemas.topics import ALL_TOPICS, EVENTS_RAW
from services.common.avro import AvroCodec
from services.common.kafka import KafkaPublisher, consumer_config, ensure_topics
from services.common.settings import KafkaSettings
from tests.samples import tracking_event

pytestmark = [pytest.mark.containers, pytest.mark.usefixtures("testcontainers_enabled")]


def test_apache_kafka_container_round_trip() -> None:
    from testcontainers.kafka import KafkaContainer

    with KafkaContainer("apache/kafka:4.1.1").with_kraft() as kafka:
        settings = KafkaSettings(bootstrap_servers=kafka.get_bootstrap_server(), partitions=3)
        created = ensure_topics(settings)
        assert set(created) == {t.name for t in ALL_TOPICS}
        codec = AvroCodec.for_topic(EVENTS_RAW.name)
        publisher = KafkaPublisher(settings, "tc-producer")
        records = [tracking_event(event_id=f"e{i}", anonymous_id=f"a{i % 7}") for i in range(100)]
        results = asyncio.run(
            publisher.publish_many(
                [(EVENTS_RAW.name, r["anonymous_id"], codec.encode(r)) for r in records]
            )
        )
        publisher.close()
        assert results == [None] * 100
        consumer = Consumer(consumer_config(settings, f"g{uuid.uuid4().hex[:6]}", "tc"))
        consumer.subscribe([EVENTS_RAW.name])
        seen: list[str] = []
        for _ in range(30):
            seen += [
                codec.decode(m.value())["event_id"]
                for m in consumer.consume(200, 1.0)
                if not m.error()
            ]
            if len(seen) >= 100:
                break
        consumer.close()
        assert sorted(seen) == sorted(r["event_id"] for r in records)


def test_clickhouse_server_container_accepts_the_migrations() -> None:
    from pydantic import SecretStr
    from testcontainers.clickhouse import ClickHouseContainer

    from services.common.settings import ClickHouseSettings
    from services.warehouse.migrations import apply_migrations

    with ClickHouseContainer(
        "clickhouse/clickhouse-server:25.8", username="closedloop", password="pw"
    ) as ch:
        settings = ClickHouseSettings(
            host=ch.get_container_host_ip(),
            port=int(ch.get_exposed_port(8123)),
            username="closedloop",
            password=SecretStr("pw"),
        )
        applied = apply_migrations(settings)
        assert applied, "no migration applied on a fresh server"
        assert apply_migrations(settings) == [], "migrations are not idempotent"
