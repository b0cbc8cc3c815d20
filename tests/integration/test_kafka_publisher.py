"""KafkaPublisher against the real broker: reports served on the awaiting loop, other threads, outages."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import Future
from pathlib import Path

from confluent_kafka import Consumer

from services.broker.local import free_port
from services.common.errors import UnavailableError
from services.common.kafka import KafkaPublisher, consumer_config
from services.common.settings import KafkaSettings


def _count(settings: KafkaSettings, topic: str, expected: int) -> int:
    consumer = Consumer(consumer_config(settings, f"count-{topic}", "counter"))
    consumer.subscribe([topic])
    seen = 0
    try:
        for _ in range(120):
            seen += sum(1 for m in consumer.consume(1000, timeout=0.5) if not m.error())
            if seen >= expected:
                break
    finally:
        consumer.close()
    return seen


def test_sequential_loops_concurrent_requests_and_threaded_futures(
    kafka_settings: KafkaSettings,
) -> None:
    topic = kafka_settings.topic("events.raw")
    publisher = KafkaPublisher(kafka_settings, "publisher-test")
    try:

        async def many_requests(run: int) -> list[list[Exception | None]]:
            return await asyncio.gather(
                *(
                    publisher.publish_many([(topic, f"k{run}-{i}", b"v"), (topic, None, b"w")])
                    for i in range(200)
                )
            )

        # Several event loops one after another (asyncio.run per batch, as the CRM backfill does).
        for run in range(3):
            results = asyncio.run(asyncio.wait_for(many_requests(run), 60))
            assert results == [[None, None]] * 200

        # produce() futures from another thread while an event loop publishes.
        futures: list[Future[None]] = []

        def produce_from_thread() -> None:
            futures.extend(publisher.produce(topic, f"t{i}", b"t") for i in range(300))

        async def both() -> None:
            thread = threading.Thread(target=produce_from_thread)
            thread.start()
            await publisher.publish(topic, "single", b"s")
            await asyncio.to_thread(thread.join)

        asyncio.run(asyncio.wait_for(both(), 60))
        for future in futures:
            assert future.result(timeout=60) is None
    finally:
        assert publisher.close() == 0
    assert _count(kafka_settings, topic, 3 * 400 + 301) == 3 * 400 + 301


def test_unreachable_broker_answers_unavailable_instead_of_hanging() -> None:
    settings = KafkaSettings(bootstrap_servers=f"127.0.0.1:{free_port()}")
    publisher = KafkaPublisher(
        settings,
        "publisher-outage-test",
        **{"message.timeout.ms": 1500, "delivery.timeout.ms": 1500, "log_level": 0},
    )
    try:

        async def publish() -> list[Exception | None]:
            return await asyncio.wait_for(
                publisher.publish_many([("events.raw", "a", b"1"), ("events.raw", "b", b"2")]), 30
            )

        results = asyncio.run(publish())
        assert all(isinstance(error, UnavailableError) for error in results), results

        async def publish_one() -> None:
            await asyncio.wait_for(publisher.publish("events.raw", "c", b"3"), 30)

        try:
            asyncio.run(publish_one())
        except UnavailableError as exc:
            assert "did not acknowledge" in str(exc)
        else:
            raise AssertionError("publish to an unreachable broker succeeded")
    finally:
        publisher.close(timeout=5)


def _librdkafka_threads() -> int:
    """Threads of this process named by librdkafka (rdk:main, rdk:broker..., rdk:bg)."""
    tasks = Path("/proc/self/task")
    return sum(1 for task in tasks.iterdir() if (task / "comm").read_text().startswith("rdk:"))


def test_close_ends_librdkafka_and_later_sends_are_refused(kafka_settings: KafkaSettings) -> None:
    topic = kafka_settings.topic("events.raw")
    before = _librdkafka_threads()
    publisher = KafkaPublisher(kafka_settings, "publisher-close-test")

    async def publish_then_close_then_publish() -> list[Exception | None]:
        assert await publisher.publish_many([(topic, "before-close", b"v")]) == [None]
        assert _librdkafka_threads() > before
        assert await asyncio.to_thread(publisher.close) == 0
        return await publisher.publish_many([(topic, "after-close", b"v")])

    after_close = asyncio.run(asyncio.wait_for(publish_then_close_then_publish(), 60))
    assert len(after_close) == 1 and isinstance(after_close[0], UnavailableError)
    assert _librdkafka_threads() == before  # no garbage collection needed
    assert publisher.close() == 0  # a second close is harmless
    assert publisher.flush() == 0
