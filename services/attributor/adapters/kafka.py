"""Kafka input of the attributor: the lead-keyed group consumer and the global identity reader."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

from schemas.topics import CRM_DEAL_STAGES, IDENTITY_LINKS, TOUCHPOINTS_STITCHED
from services.attributor.journeys import IdentityLinkFact, StageEvent, Touch
from services.common.avro import AvroCodec
from services.common.errors import UnavailableError
from services.common.kafka import consumer_config
from services.common.settings import KafkaSettings

log = logging.getLogger(__name__)


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _utc(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def touch_from_record(record: Mapping[str, Any], partition: int, offset: int) -> Touch:
    """A Touchpoint Avro record as a Touch."""
    return Touch(
        touchpoint_id=record["touchpoint_id"],
        lead_id=record["lead_id"],
        anonymous_id=record["anonymous_id"],
        site_id=record["site_id"],
        occurred_at=_utc(record["occurred_at"]),
        channel=record["channel"],
        source=_text(record.get("source")),
        medium=_text(record.get("medium")),
        campaign=_text(record.get("campaign")),
        term=_text(record.get("term")),
        content=_text(record.get("content")),
        click_ids=dict(record.get("click_ids") or {}),
        referrer_host=_text(record.get("referrer_host")),
        landing_page=_text(record.get("landing_page")),
        is_offline=bool(record.get("is_offline")),
        retracted=bool(record.get("retracted")),
        partition=partition,
        offset=offset,
    )


def stage_event_from_record(record: Mapping[str, Any], partition: int, offset: int) -> StageEvent:
    """A DealStageChanged Avro record as a StageEvent."""
    amount = record.get("amount")
    return StageEvent(
        event_id=record["event_id"],
        deal_id=record["deal_id"],
        lead_id=record["lead_id"],
        crm=record["crm"],
        pipeline=record.get("pipeline") or "default",
        stage=record["stage"],
        stage_order=int(record["stage_order"]),
        crm_stage=record["crm_stage"],
        amount=None if amount is None else Decimal(amount).quantize(Decimal("0.01")),
        currency=_text(record.get("currency")).upper(),
        is_won=bool(record.get("is_won")),
        is_lost=bool(record.get("is_lost")),
        occurred_at=_utc(record["occurred_at"]),
        received_at=_utc(record["received_at"]),
        deal_name=_text(record.get("deal_name")),
        partition=partition,
        offset=offset,
    )


def link_from_record(record: Mapping[str, Any]) -> IdentityLinkFact:
    """An IdentityLink Avro record as an IdentityLinkFact."""
    return IdentityLinkFact(
        anonymous_id=record["anonymous_id"],
        lead_id=record["lead_id"],
        valid_from=_utc(record["valid_from"]),
        identified_by=record["identified_by"],
        link_count=int(record.get("link_count") or 1),
        shared=bool(record.get("shared")),
        site_id=_text(record.get("site_id")),
    )


Decoded = Touch | StageEvent


class LeadInput:
    """The group consumer of touchpoints.stitched and crm.deal_stages.

    Range assignment (not the cooperative-sticky default of ``consumer_config``) gives
    one consumer the same partition numbers of both topics, which is what co-partitioning
    by lead_id needs. Offsets are stored only by ``commit()``, after the sink flushed.
    """

    def __init__(
        self,
        settings: KafkaSettings,
        group_id: str,
        client_id: str,
        session_timeout_ms: int = 45000,
    ) -> None:
        config = {
            **consumer_config(settings, group_id, client_id),
            "partition.assignment.strategy": "range",
            "enable.auto.commit": False,
            "session.timeout.ms": session_timeout_ms,
            "heartbeat.interval.ms": max(session_timeout_ms // 5, 500),
        }
        self._consumer = Consumer(config)
        self._touchpoints = settings.topic(TOUCHPOINTS_STITCHED.name)
        self._deal_stages = settings.topic(CRM_DEAL_STAGES.name)
        self._touch_codec = AvroCodec.for_topic(TOUCHPOINTS_STITCHED.name)
        self._stage_codec = AvroCodec.for_topic(CRM_DEAL_STAGES.name)
        self._pending: dict[tuple[str, int], int] = {}

    def subscribe(
        self, on_assign: Callable[[set[int]], None], on_revoke: Callable[[set[int]], None]
    ) -> None:
        """Subscribe; the callbacks get the lead partition numbers gained or lost."""

        def assigned(_consumer: Consumer, partitions: list[TopicPartition]) -> None:
            on_assign({p.partition for p in partitions if p.topic == self._touchpoints})

        def revoked(_consumer: Consumer, partitions: list[TopicPartition]) -> None:
            on_revoke({p.partition for p in partitions if p.topic == self._touchpoints})

        self._consumer.subscribe(
            [self._touchpoints, self._deal_stages], on_assign=assigned, on_revoke=revoked
        )

    def poll(self, max_messages: int, timeout: float) -> list[Decoded]:
        """Up to ``max_messages`` decoded records; undecodable ones are logged and skipped."""
        messages = self._consumer.consume(max_messages, timeout)
        out: list[Decoded] = []
        for message in messages:
            error = message.error()
            if error is not None:
                if error.code() != KafkaError._PARTITION_EOF:
                    log.warning("consumer error", extra={"error": error.str()})
                continue
            topic, partition, offset = message.topic(), message.partition(), message.offset()
            assert topic is not None and partition is not None and offset is not None
            self._pending[(topic, partition)] = offset
            value = message.value()
            if value is None:
                continue
            try:
                if topic == self._touchpoints:
                    out.append(
                        touch_from_record(self._touch_codec.decode(value), partition, offset)
                    )
                else:
                    out.append(
                        stage_event_from_record(self._stage_codec.decode(value), partition, offset)
                    )
            except (KeyError, TypeError, ValueError, ArithmeticError) as exc:
                # A poison record must never stop the lead's partition: log and move on.
                log.error(
                    "undecodable record skipped",
                    extra={
                        "topic": topic,
                        "partition": partition,
                        "offset": offset,
                        "error": str(exc),
                    },
                )
        return out

    @property
    def pending(self) -> int:
        """Partitions with processed but uncommitted offsets."""
        return len(self._pending)

    def commit(self) -> None:
        """Commit the offsets after every message processed so far (call only after a flush)."""
        if not self._pending:
            return
        offsets = [TopicPartition(t, p, o + 1) for (t, p), o in self._pending.items()]
        try:
            self._consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            # A rebalance took the partition: the next owner reprocesses, idempotently.
            log.warning("offset commit failed", extra={"error": str(exc)})
        self._pending.clear()

    def forget(self, partitions: set[int]) -> None:
        """Drop uncommitted positions of partitions given away (after a failed flush)."""
        self._pending = {k: v for k, v in self._pending.items() if k[1] not in partitions}

    def close(self) -> None:
        """Leave the group."""
        self._consumer.close()


class IdentityReader:
    """Reads every partition of the compacted identity.links from the start (a global table).

    identity.links is keyed by anonymous_id, not lead_id, so a lead's links land on any
    partition; every attributor instance reads all of them, like a GlobalKTable.
    """

    def __init__(self, settings: KafkaSettings, client_id: str) -> None:
        config = {
            **consumer_config(settings, f"{client_id}-identity-{uuid.uuid4().hex[:8]}", client_id),
            "enable.auto.commit": False,
            "enable.partition.eof": True,
        }
        self._consumer = Consumer(config)
        self._topic = settings.topic(IDENTITY_LINKS.name)
        self._codec = AvroCodec.for_topic(IDENTITY_LINKS.name)
        metadata = self._consumer.list_topics(self._topic, timeout=30)
        topic = metadata.topics.get(self._topic)
        if topic is None or topic.error is not None or not topic.partitions:
            raise UnavailableError(f"topic {self._topic} not found")
        self._partitions = sorted(topic.partitions)
        self._consumer.assign(
            [TopicPartition(self._topic, p, OFFSET_BEGINNING) for p in self._partitions]
        )

    def poll(self, max_messages: int, timeout: float) -> tuple[list[IdentityLinkFact], int]:
        """Decoded links, and how many partitions reported reaching their end."""
        links: list[IdentityLinkFact] = []
        eofs = 0
        for message in self._consumer.consume(max_messages, timeout):
            error = message.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    eofs += 1
                else:
                    log.warning("identity reader error", extra={"error": error.str()})
                continue
            value = message.value()
            if value is None:
                continue
            try:
                links.append(link_from_record(self._codec.decode(value)))
            except (KeyError, TypeError, ValueError) as exc:
                log.error("undecodable identity link skipped", extra={"error": str(exc)})
        return links, eofs

    def catch_up(
        self, apply: Callable[[list[IdentityLinkFact]], None], timeout: float = 120
    ) -> int:
        """Read until every partition reached its end; returns the number of links read."""
        done: set[int] = set()
        count = 0
        deadline = time.monotonic() + timeout
        while True:
            for p in self._partitions:
                if p in done:
                    continue
                low, high = self._consumer.get_watermark_offsets(
                    TopicPartition(self._topic, p), timeout=10, cached=False
                )
                (position,) = self._consumer.position([TopicPartition(self._topic, p)])
                at = position.offset if position.offset >= 0 else low
                if at >= high:
                    done.add(p)
            if len(done) == len(self._partitions):
                return count
            if time.monotonic() > deadline:
                raise UnavailableError("identity.links did not catch up in time")
            links, _ = self.poll(5000, 0.5)
            count += len(links)
            apply(links)

    def close(self) -> None:
        """Close the reader."""
        self._consumer.close()
