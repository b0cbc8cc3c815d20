"""The collector's Kafka producer: KafkaPublisher with a short ack timeout and quiet error logs."""

from __future__ import annotations

import logging
import os
import time

from confluent_kafka import KafkaError

from services.collector.settings import CollectorSettings
from services.common.kafka import KafkaPublisher

log = logging.getLogger(__name__)


def build_publisher(settings: CollectorSettings) -> KafkaPublisher:
    """One idempotent acks=all producer for this process.

    Outages are detected by deliveries that time out, not by librdkafka's error
    callback: "all brokers down" also fires when a broker closes an idle connection.
    """
    last_logged = [0.0]

    def on_error(error: KafkaError) -> None:
        # librdkafka repeats connection errors on every retry; one line per 30 s is enough.
        now = time.monotonic()
        if now - last_logged[0] > 30:
            last_logged[0] = now
            log.warning("kafka: %s", error.str())

    timeout = settings.publish_timeout_ms
    return KafkaPublisher(
        settings.kafka,
        f"collector-{os.getpid()}",
        **{
            "message.timeout.ms": timeout,
            "delivery.timeout.ms": timeout,
            "error_cb": on_error,
            "log_level": 3,
        },
    )
