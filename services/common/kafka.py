"""Kafka plumbing: client configs, idempotent topic creation, and an acknowledging publisher."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import Future
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]  # stubs miss the re-export

from schemas.topics import ALL_TOPICS, Topic
from services.common.errors import ConfigurationError, UnavailableError
from services.common.settings import KafkaSettings

log = logging.getLogger(__name__)

Key = str | bytes | None


def producer_config(settings: KafkaSettings, client_id: str) -> dict[str, Any]:
    """An idempotent, acks=all producer config (librdkafka leaves idempotence off by default)."""
    return {
        **settings.client_config(),
        "client.id": client_id,
        "enable.idempotence": True,
        "acks": "all",
        # The Java client's partitioner (also Kafka Streams' and aiokafka's): topics joined by key
        # stay co-partitioned whichever client wrote them; librdkafka defaults to CRC32.
        "partitioner": "murmur2_random",
        "linger.ms": settings.linger_ms,
        "batch.size": settings.batch_size,
        "compression.type": settings.compression_type,
        "delivery.timeout.ms": settings.delivery_timeout_ms,
        "message.timeout.ms": settings.delivery_timeout_ms,
        "socket.connection.setup.timeout.ms": min(settings.delivery_timeout_ms, 5000),
    }


def consumer_config(settings: KafkaSettings, group_id: str, client_id: str) -> dict[str, Any]:
    """A consumer config that stores offsets only when the caller says its output is durable."""
    return {
        **settings.client_config(),
        "group.id": group_id,
        "client.id": client_id,
        "enable.auto.commit": True,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "isolation.level": "read_committed",
        "partition.assignment.strategy": "cooperative-sticky",
    }


def ensure_topics(
    settings: KafkaSettings,
    topics: Iterable[Topic] = ALL_TOPICS,
    timeout: float = 30.0,
) -> dict[str, int]:
    """Create missing topics (idempotently) and check co-partitioning; returns partitions by name.

    Raises ConfigurationError when an existing topic's partition count differs from the
    one its co-partition group requires, because joins by key would silently miss.
    """
    wanted = list(topics)
    admin = AdminClient(settings.client_config())
    try:
        existing = admin.list_topics(timeout=timeout).topics
    except KafkaException as exc:
        raise UnavailableError(f"broker {settings.bootstrap_servers} unreachable: {exc}") from exc
    to_create = []
    for topic in wanted:
        name = settings.topic(topic.name)
        if name in existing:
            continue
        config = {"cleanup.policy": "compact"} if topic.compacted else {}
        to_create.append(
            NewTopic(
                name,
                num_partitions=settings.partitions,
                replication_factor=settings.replication_factor,
                config=config,
            )
        )
    if to_create:
        for name, future in admin.create_topics(to_create, operation_timeout=timeout).items():
            try:
                future.result(timeout=timeout)
                log.info("created topic", extra={"topic": name, "partitions": settings.partitions})
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise UnavailableError(f"could not create topic {name}: {exc}") from exc
    metadata = _wait_for_metadata(admin, [settings.topic(t.name) for t in wanted], timeout)
    groups: dict[str, set[int]] = {}
    for topic in wanted:
        if topic.copartition_group:
            groups.setdefault(topic.copartition_group, set()).add(
                metadata[settings.topic(topic.name)]
            )
    for group, counts in groups.items():
        if len(counts) > 1:
            raise ConfigurationError(
                f"topics keyed by {group} must have one partition count, found {sorted(counts)}"
            )
    return metadata


def _wait_for_metadata(admin: AdminClient, names: Sequence[str], timeout: float) -> dict[str, int]:
    deadline = time.monotonic() + timeout
    while True:
        topics = admin.list_topics(timeout=timeout).topics
        found = {
            name: len(topics[name].partitions)
            for name in names
            if name in topics and topics[name].error is None and topics[name].partitions
        }
        if len(found) == len(names):
            return found
        if time.monotonic() > deadline:
            missing = sorted(set(names) - set(found))
            raise UnavailableError(f"topics not visible in metadata: {missing}")
        time.sleep(0.1)


def broker_reachable(settings: KafkaSettings, timeout: float = 2.0) -> bool:
    """True when the cluster answers a metadata request within ``timeout`` seconds."""
    # log_level 0: a probe of a broker that is not up yet must not spam "Connection refused".
    admin = AdminClient(
        {**settings.client_config(), "socket.connection.setup.timeout.ms": 1000, "log_level": 0}
    )
    try:
        admin.list_topics(timeout=timeout)
    except KafkaException:
        return False
    return True


class _LoopPoller:
    """Polls the producer from one event loop while messages sent from it await their reports."""

    def __init__(
        self, producer: Producer, loop: asyncio.AbstractEventLoop, interval: float
    ) -> None:
        self.producer = producer
        self.loop = loop
        self.interval = interval
        self.thread_id = threading.get_ident()
        self.pending = 0
        self._handle: asyncio.TimerHandle | None = None

    def sent(self) -> None:
        """One more message of this loop awaits its report; poll until it came."""
        self.pending += 1
        if self._handle is None:
            self._handle = self.loop.call_later(self.interval, self._tick)

    def _tick(self) -> None:
        self._handle = None
        try:
            self.producer.poll(0)
        except RuntimeError:
            # The publisher closed its producer after every report was served; the
            # settle calls still queued on this loop need no more polling.
            self.pending = 0
        finally:
            # Even if a callback raised: requests still waiting must not wait forever.
            if self.pending:
                self._handle = self.loop.call_later(self.interval, self._tick)

    def serving(self) -> bool:
        """True on this loop's thread while the loop can still run callbacks."""
        # Cheaper than asyncio.get_running_loop(), which makes a getpid() system call.
        return threading.get_ident() == self.thread_id and not self.loop.is_closed()

    def call_soon_threadsafe(self, callback: Any, *args: Any) -> None:
        """Run ``callback`` on the loop; a closed loop has nobody left waiting."""
        with contextlib.suppress(RuntimeError):
            self.loop.call_soon_threadsafe(callback, *args)


class KafkaPublisher:
    """An idempotent producer whose sends complete only when the broker acknowledged them.

    ``publish`` and ``publish_many`` are awaitable and raise (or return) UnavailableError
    when the broker did not acknowledge in time. Their delivery reports are served on
    their own event loop, by ``poll(0)`` on a short timer while anything is unacknowledged:
    a report then completes its request with no thread hand-off, where a poll thread
    would take the GIL from the busy loop and wake it through its self-pipe per message.
    A background thread serves the reports of ``produce()`` futures and librdkafka's
    error callbacks, without blocking in ``poll`` while no such future waits, so it does
    not take the loop's reports.
    """

    LOOP_POLL_SECONDS = 0.001
    """How often an event loop polls while its messages await reports (adds half that to latency)."""

    def __init__(self, settings: KafkaSettings, client_id: str, **overrides: Any) -> None:
        self._producer = Producer({**producer_config(settings, client_id), **overrides})
        self._closed = False
        self._loop_poller: _LoopPoller | None = None
        self._futures_waiting = 0
        self._futures_lock = threading.Lock()
        self._wake = threading.Event()
        self._running = True
        self._poller = threading.Thread(
            target=self._serve_delivery_reports, daemon=True, name=f"{client_id}-delivery"
        )
        self._poller.start()

    def _serve_delivery_reports(self) -> None:
        while self._running:
            if self._futures_waiting:
                self._producer.poll(0.05)
            else:
                self._producer.poll(0)
                self._wake.wait(0.05)
                self._wake.clear()

    def _poller_of_running_loop(self) -> _LoopPoller:
        poller = self._loop_poller
        if poller is not None and poller.loop.is_running() and poller.serving():
            return poller
        loop = asyncio.get_running_loop()
        if poller is None or poller.loop is not loop:
            # A poller whose loop is gone keeps nothing alive but its own messages' callbacks.
            poller = self._loop_poller = _LoopPoller(self._producer, loop, self.LOOP_POLL_SECONDS)
        return poller

    def produce(self, topic: str, key: Key, value: bytes) -> Future[None]:
        """Queue one message; the future completes on the broker's acknowledgement."""
        future: Future[None] = Future()

        def on_delivery(error: KafkaError | None, _message: Message) -> None:
            with self._futures_lock:
                self._futures_waiting -= 1
            if error is None:
                future.set_result(None)
            else:
                future.set_exception(UnavailableError(f"broker did not acknowledge: {error.str()}"))

        with self._futures_lock:
            self._futures_waiting += 1
        try:
            self._produce(topic, key, value, on_delivery)
        except UnavailableError:
            with self._futures_lock:
                self._futures_waiting -= 1
            raise
        self._wake.set()
        return future

    def _produce(self, topic: str, key: Key, value: bytes, on_delivery: Any) -> None:
        deadline = None
        while True:
            try:
                self._producer.produce(topic, value=value, key=key, on_delivery=on_delivery)
                return
            except BufferError:
                if deadline is None:
                    deadline = time.monotonic() + 5.0
                elif time.monotonic() > deadline:
                    raise UnavailableError("producer queue full", retry_after_seconds=1) from None
                # Serving reports here frees the queue even when this thread is the only poller.
                self._producer.poll(0.01)
            except KafkaException as exc:
                raise UnavailableError(f"produce failed: {exc}") from exc
            except RuntimeError as exc:  # confluent-kafka's answer once the producer is closed
                raise UnavailableError("publisher is closed") from exc

    async def publish(self, topic: str, key: Key, value: bytes) -> None:
        """Send one message and wait for the broker's acknowledgement."""
        (error,) = await self.publish_many([(topic, key, value)])
        if error is not None:
            raise error

    async def publish_many(
        self, messages: Sequence[tuple[str, Key, bytes]]
    ) -> list[Exception | None]:
        """Send messages and wait for every acknowledgement; one error (or None) per message."""
        if not messages:
            return []
        poller = self._poller_of_running_loop()
        done: asyncio.Future[None] = poller.loop.create_future()
        results: list[Exception | None] = [None] * len(messages)
        remaining = len(messages)

        def settle(index: int, error: KafkaError | None, reported: bool = True) -> None:
            nonlocal remaining
            if reported:
                poller.pending -= 1
            if error is not None:
                results[index] = UnavailableError(f"broker did not acknowledge: {error.str()}")
            remaining -= 1
            if remaining == 0 and not done.done():
                done.set_result(None)

        def callback_for(index: int) -> Any:
            def on_delivery(error: KafkaError | None, _message: Message) -> None:
                # flush() and a full queue's poll may serve this loop's reports on other threads.
                if poller.serving():
                    settle(index, error)
                else:
                    poller.call_soon_threadsafe(settle, index, error)

            return on_delivery

        for index, (topic, key, value) in enumerate(messages):
            try:
                self._produce(topic, key, value, callback_for(index))
            except UnavailableError as exc:
                settle(index, None, reported=False)
                results[index] = exc
                continue
            poller.sent()
        await done
        return results

    def flush(self, timeout: float = 10.0) -> int:
        """Wait for everything in flight; returns how many messages are still undelivered."""
        if self._closed:
            return 0
        remaining: int = self._producer.flush(timeout)
        return remaining

    def close(self, timeout: float = 10.0) -> int:
        """Flush, stop the delivery-report thread and end librdkafka; returns undelivered messages.

        When everything was delivered, librdkafka's threads and connections end here rather
        than whenever the producer is garbage collected. With messages still undelivered the
        producer is left to the garbage collector: closing it would wait for them again, with
        no timeout. Later publishes raise (or return) UnavailableError; closing twice is harmless.
        """
        if self._closed:
            return 0
        remaining = self.flush(timeout)
        self._running = False
        self._wake.set()
        self._poller.join(timeout=2.0)
        if remaining == 0 and not self._poller.is_alive():
            self._closed = True
            self._producer.close()
        return remaining
