"""The stitcher's consume-transform-produce loop: exactly-once through Kafka transactions."""

from __future__ import annotations

import logging
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

from schemas.topics import EVENTS_RAW, IDENTITY_LINKS, STITCHER_STATE, TOUCHPOINTS_STITCHED
from services.common.avro import AvroCodec
from services.common.errors import CodecError, UnavailableError
from services.common.kafka import consumer_config, producer_config
from services.stitcher.channels import ChannelRules
from services.stitcher.identity import (
    AnonymousState,
    apply_event,
    decode_state,
    encode_state,
    observe,
)
from services.stitcher.settings import StitcherSettings

log = logging.getLogger("services.stitcher")

PROGRESS_SECONDS = 30.0


@dataclass
class StitcherWorker:
    """One member of the stitcher's consumer group.

    Each batch of events is one Kafka transaction holding the touchpoints, the identity
    links, the changed per-anonymous-ID state (on the compacted ``stitcher.state`` topic,
    in the partition of the event) and the consumed offsets: after a crash, a rebalance
    or an aborted transaction the group resumes from the last committed batch with the
    state of exactly that batch, so nothing is lost and nothing is emitted twice.
    """

    settings: StitcherSettings
    stop_requested: Callable[[], bool] = lambda: False
    counters: Counter[str] = field(default_factory=Counter)
    _states: dict[int, dict[str, AnonymousState]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        kafka = self.settings.kafka
        self._events_topic = kafka.topic(EVENTS_RAW.name)
        self._touchpoints_topic = kafka.topic(TOUCHPOINTS_STITCHED.name)
        self._links_topic = kafka.topic(IDENTITY_LINKS.name)
        self._state_topic = kafka.topic(STITCHER_STATE.name)
        self._events_codec = AvroCodec.for_topic(EVENTS_RAW.name)
        self._touchpoint_codec = AvroCodec.for_topic(TOUCHPOINTS_STITCHED.name)
        self._link_codec = AvroCodec.for_topic(IDENTITY_LINKS.name)
        self._rules = ChannelRules.default(self.settings.own_domain_list())
        self._config = self.settings.stitch_config()
        self._group = kafka.topic(self.settings.consumer_group)
        instance = self.settings.instance_id or uuid.uuid4().hex[:12]
        self._producer = Producer(
            {
                **producer_config(kafka, f"stitcher-{instance}"),
                "transactional.id": f"{self._group}-{instance}",
                "transaction.timeout.ms": int(self.settings.transaction_timeout_seconds * 1000),
            }
        )
        self._consumer = Consumer(
            {
                **consumer_config(kafka, self._group, f"stitcher-{instance}"),
                "enable.auto.commit": False,
                # Eager rebalances: every member drops and restores all its state at each
                # rebalance, so no partition's state can outlive its ownership.
                "partition.assignment.strategy": "range",
                "session.timeout.ms": int(self.settings.group_session_timeout_seconds * 1000),
                "heartbeat.interval.ms": int(self.settings.group_heartbeat_seconds * 1000),
                "max.poll.interval.ms": int(self.settings.group_rebalance_timeout_seconds * 1000),
            }
        )
        self._started = time.monotonic()

    def run(self) -> None:
        """Stitch until ``stop_requested()``; then leave the group and close cleanly."""
        try:
            self._producer.init_transactions(30)
        except KafkaException as exc:
            raise UnavailableError(f"cannot start transactions: {exc}") from exc
        self._consumer.subscribe(
            [self._events_topic], on_assign=self._on_assign, on_revoke=self._on_revoke
        )
        last_report = time.monotonic()
        try:
            while not self.stop_requested():
                messages = self._consumer.consume(
                    self.settings.batch_max_events, timeout=self.settings.commit_interval_seconds
                )
                events = [m for m in messages if m.error() is None]
                for message in messages:
                    error = message.error()
                    if error is not None and error.code() != KafkaError._PARTITION_EOF:
                        log.warning("consumer error", extra={"error": error.str()})
                if events:
                    self._process_batch(events)
                if time.monotonic() - last_report > PROGRESS_SECONDS:
                    log.info("stitcher progress", extra=dict(self.counters))
                    last_report = time.monotonic()
        finally:
            self._consumer.close()
            self._producer.flush(10)
            log.info("stitcher stopped", extra=dict(self.counters))

    def _process_batch(self, events: list[Message]) -> None:
        self._producer.begin_transaction()
        offsets: dict[int, int] = {}
        try:
            for message in events:
                self._process(message)
                offsets[_partition(message)] = _offset(message) + 1
            self._producer.send_offsets_to_transaction(
                [TopicPartition(self._events_topic, p, o) for p, o in offsets.items()],
                self._consumer.consumer_group_metadata(),
            )
            self._commit()
        except KafkaException as exc:
            error = exc.args[0]
            if not error.txn_requires_abort():
                raise
            log.warning("transaction aborted; rewinding", extra={"error": error.str()})
            self._producer.abort_transaction()
            self._rewind()

    def _commit(self) -> None:
        while True:
            try:
                self._producer.commit_transaction()
                return
            except KafkaException as exc:
                if not exc.args[0].retriable():
                    raise
                time.sleep(0.1)

    def _process(self, message: Message) -> None:
        try:
            record = self._events_codec.decode(message.value() or b"")
        except CodecError as exc:
            self.counters["undecodable"] += 1
            log.warning(
                "undecodable event skipped",
                extra={"problem": exc.problem, "partition": message.partition()},
            )
            return
        self.counters["events"] += 1
        observation = observe(record, self._rules, self.settings.identity)
        if observation.invalid_email:
            self.counters["invalid_email"] += 1
        if observation.hit is None and observation.identification is None:
            return
        anonymous_id = str(record["anonymous_id"])
        states = self._states.setdefault(_partition(message), {})
        state = states.get(anonymous_id, AnonymousState())
        step = apply_event(
            state, anonymous_id, observation.hit, observation.identification, self._config
        )
        if step.too_late:
            self.counters["too_late"] += 1
        if step.state is state:
            return
        for emission in step.touchpoints:
            self.counters["retracted" if emission.retracted else "touchpoints"] += 1
            self._produce(
                self._touchpoints_topic,
                emission.key.encode(),
                self._touchpoint_codec.encode(emission.to_record()),
            )
        if step.link is not None:
            self.counters["links"] += 1
            self._produce(
                self._links_topic,
                anonymous_id.encode(),
                self._link_codec.encode(step.link.to_record()),
            )
        states[anonymous_id] = step.state
        self._produce(
            self._state_topic,
            anonymous_id.encode(),
            encode_state(step.state),
            partition=_partition(message),
        )

    def _produce(self, topic: str, key: bytes, value: bytes, partition: int | None = None) -> None:
        extra: dict[str, Any] = {} if partition is None else {"partition": partition}
        while True:
            try:
                self._producer.produce(topic, value=value, key=key, **extra)
                return
            except BufferError:
                self._producer.poll(0.05)

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        started = time.monotonic()
        for tp in partitions:
            self._states[tp.partition] = self._restore(tp.partition)
        log.info(
            "stitcher ready",
            extra={
                "partitions": sorted(tp.partition for tp in partitions),
                "state_keys": sum(len(s) for s in self._states.values()),
                "restore_seconds": round(time.monotonic() - started, 2),
                "seconds_since_start": round(time.monotonic() - self._started, 2),
            },
        )

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self._states.pop(tp.partition, None)

    def _restore(self, partition: int) -> dict[str, AnonymousState]:
        """The committed state of one partition, read from its changelog partition."""
        reader = Consumer(
            {
                **self.settings.kafka.client_config(),
                "group.id": f"{self._group}-restore",
                "enable.auto.commit": False,
                "enable.partition.eof": True,
                "isolation.level": "read_committed",
            }
        )
        states: dict[str, AnonymousState] = {}
        try:
            reader.assign([TopicPartition(self._state_topic, partition, OFFSET_BEGINNING)])
            while True:
                message = reader.poll(1.0)
                if message is None:
                    continue
                error = message.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        return states
                    raise UnavailableError(f"state restore failed: {error.str()}")
                key = (message.key() or b"").decode()
                value = message.value()
                if value is None:
                    states.pop(key, None)
                else:
                    states[key] = decode_state(value)
        finally:
            reader.close()

    def _rewind(self) -> None:
        """After an abort: back to the committed offsets, and the state that goes with them."""
        assignment = self._consumer.assignment()
        committed = self._consumer.committed(assignment, timeout=30)
        for tp in committed:
            offset = tp.offset if tp.offset >= 0 else OFFSET_BEGINNING
            self._consumer.seek(TopicPartition(tp.topic, tp.partition, offset))
            self._states[tp.partition] = self._restore(tp.partition)


def _partition(message: Message) -> int:
    partition = message.partition()
    if partition is None:  # only messages of errors have none; consumed events always do
        raise ValueError("message without a partition")
    return partition


def _offset(message: Message) -> int:
    offset = message.offset()
    if offset is None:
        raise ValueError("message without an offset")
    return offset
