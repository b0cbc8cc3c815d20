"""The collector's Kafka producer: KafkaPublisher with a short ack timeout and a broker-down signal."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable

from confluent_kafka import KafkaError

from services.collector.settings import CollectorSettings
from services.common.kafka import KafkaPublisher

log = logging.getLogger(__name__)

_DOWN_CODES = {KafkaError._ALL_BROKERS_DOWN, KafkaError._TRANSPORT}


def build_publisher(
    settings: CollectorSettings, on_broker_down: Callable[[], None]
) -> KafkaPublisher:
    """One idempotent acks=all producer for this process; ``on_broker_down`` hears outages early."""

    last_logged = [0.0]

    def on_error(error: KafkaError) -> None:
        if error.code() in _DOWN_CODES:
            on_broker_down()
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
