"""A broker killed mid-run keeps every acknowledged event after it starts again."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

from confluent_kafka import Consumer

from schemas.topics import EVENTS_RAW
from services.broker.local import LocalKafka, java_available
from services.common.avro import AvroCodec
from services.common.kafka import KafkaPublisher, consumer_config, ensure_topics
from services.common.settings import KafkaSettings
from tests.samples import tracking_event


def _read_all(settings: KafkaSettings, topic: str, expected: int) -> list[str]:
    codec = AvroCodec.for_topic(EVENTS_RAW.name)
    consumer = Consumer(consumer_config(settings, f"g-{uuid.uuid4().hex[:8]}", "reader"))
    consumer.subscribe([topic])
    ids: list[str] = []
    try:
        idle = 0
        while len(ids) < expected and idle < 20:
            batch = consumer.consume(1000, timeout=1.0)
            idle = 0 if batch else idle + 1
            ids.extend(codec.decode(m.value())["event_id"] for m in batch if not m.error())
    finally:
        consumer.close()
    return ids


def test_acknowledged_events_survive_kill_and_restart(tmp_path: Path) -> None:
    assert java_available(), "this test needs the Apache Kafka broker (Java 17+)"
    broker = LocalKafka(data_dir=tmp_path / "kafka")
    broker.start()
    try:
        settings = KafkaSettings(bootstrap_servers=broker.bootstrap_servers, partitions=3)
        ensure_topics(settings, [EVENTS_RAW])
        topic = settings.topic(EVENTS_RAW.name)
        codec = AvroCodec.for_topic(EVENTS_RAW.name)
        publisher = KafkaPublisher(settings, "before-kill")
        records = [tracking_event(event_id=f"e{i}", anonymous_id=f"a{i % 50}") for i in range(2000)]
        results = asyncio.run(
            publisher.publish_many([(topic, r["anonymous_id"], codec.encode(r)) for r in records])
        )
        assert results == [None] * len(records)
        publisher.close()

        broker.kill()
        broker.start()

        ids = _read_all(settings, topic, len(records))
        assert sorted(ids) == sorted(r["event_id"] for r in records)
    finally:
        broker.stop()
