"""Avro events through a real broker: ordering by key, consumer groups, exactly-once reading."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections import defaultdict
from typing import Any

from confluent_kafka import Consumer, KafkaError

from schemas.topics import EVENTS_RAW
from services.common.avro import AvroCodec
from services.common.kafka import KafkaPublisher, consumer_config
from services.common.settings import KafkaSettings
from tests.samples import tracking_event


def _publish(settings: KafkaSettings, records: list[dict[str, Any]]) -> None:
    codec = AvroCodec.for_topic(EVENTS_RAW.name)
    publisher = KafkaPublisher(settings, "test-producer")
    topic = settings.topic(EVENTS_RAW.name)
    try:
        results = asyncio.run(
            publisher.publish_many([(topic, r["anonymous_id"], codec.encode(r)) for r in records])
        )
    finally:
        publisher.close()
    assert results == [None] * len(records)


def test_10000_events_1000_keys_6_partitions_two_consumers(kafka_settings: KafkaSettings) -> None:
    records = [
        tracking_event(event_id=f"evt-{i}", anonymous_id=f"anon-{i % 1000}") for i in range(10_000)
    ]
    codec = AvroCodec.for_topic(EVENTS_RAW.name)
    topic = kafka_settings.topic(EVENTS_RAW.name)
    group = f"g-{uuid.uuid4().hex[:8]}"
    seen: dict[str, list[tuple[int, dict[str, Any]]]] = defaultdict(list)
    per_consumer: dict[int, int] = defaultdict(int)
    lock = threading.Lock()
    stop = threading.Event()
    assigned: dict[int, set[int]] = defaultdict(set)

    def consume(consumer_index: int) -> None:
        consumer = Consumer(consumer_config(kafka_settings, group, f"c{consumer_index}"))

        def on_assign(_consumer: Consumer, partitions: list[Any]) -> None:
            with lock:
                assigned[consumer_index] |= {p.partition for p in partitions}

        def on_revoke(_consumer: Consumer, partitions: list[Any]) -> None:
            with lock:
                assigned[consumer_index] -= {p.partition for p in partitions}

        consumer.subscribe([topic], on_assign=on_assign, on_revoke=on_revoke)
        try:
            while not stop.is_set():
                for message in consumer.consume(500, timeout=0.5):
                    if message.error():
                        assert message.error().code() == KafkaError._PARTITION_EOF
                        continue
                    record = codec.decode(message.value())
                    with lock:
                        seen[record["event_id"]].append((message.partition(), record))
                        per_consumer[consumer_index] += 1
                    consumer.store_offsets(message)
        finally:
            consumer.close()

    threads = [threading.Thread(target=consume, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    # Publish only once the group has settled with both members, so each must get a share.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with lock:
            if all(assigned[i] for i in range(2)) and len(assigned[0] | assigned[1]) == 6:
                break
        time.sleep(0.1)
    _publish(kafka_settings, records)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        with lock:
            if len(seen) >= 10_000:
                break
        time.sleep(0.2)
    time.sleep(1.0)  # any duplicate still in flight arrives now
    stop.set()
    for thread in threads:
        thread.join()

    assert sorted(seen) == sorted(r["event_id"] for r in records)
    assert all(len(copies) == 1 for copies in seen.values()), "an event was read twice"
    partitions_by_key: dict[str, set[int]] = defaultdict(set)
    for copies in seen.values():
        partition, record = copies[0]
        partitions_by_key[record["anonymous_id"]].add(partition)
    assert len(partitions_by_key) == 1000
    assert all(len(p) == 1 for p in partitions_by_key.values()), "a key spread over partitions"
    assert len({p for ps in partitions_by_key.values() for p in ps}) == 6
    assert all(per_consumer[i] > 0 for i in range(2)), f"one consumer got nothing: {per_consumer}"
    by_id = {r["event_id"]: r for r in records}
    assert all(copies[0][1] == by_id[event_id] for event_id, copies in seen.items())


def test_topics_are_created_idempotently_and_copartitioned(kafka_settings: KafkaSettings) -> None:
    from services.common.kafka import ensure_topics

    again = ensure_topics(kafka_settings)
    assert (
        again[kafka_settings.topic("events.raw")]
        == again[kafka_settings.topic("identity.links")]
        == 6
    )
    assert (
        again[kafka_settings.topic("touchpoints.stitched")]
        == again[kafka_settings.topic("crm.deal_stages")]
    )
