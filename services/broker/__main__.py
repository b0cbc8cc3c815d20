"""`python -m services.broker [run|fetch|topics]`: the local broker for `make run`."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading

from services.broker.local import LocalKafka, TansuBroker, fetch_kafka_jars, java_available
from services.broker.settings import get_settings
from services.common.errors import ClosedloopError
from services.common.kafka import ensure_topics
from services.common.logging import configure_logging
from services.common.settings import KafkaSettings


def _wait_for_signal() -> None:
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    stop.wait()


def run() -> None:
    """Start the local broker (unless KAFKA_BOOTSTRAP_SERVERS names one), create topics, wait."""
    settings = get_settings()
    if "KAFKA_BOOTSTRAP_SERVERS" in os.environ:
        print(f"Using the broker at {settings.kafka.bootstrap_servers}; starting none.", flush=True)
        ensure_topics(settings.kafka)
        _wait_for_signal()
        return
    broker: LocalKafka | TansuBroker
    if java_available():
        broker = LocalKafka(
            data_dir=settings.data_dir,
            version=settings.version,
            port=settings.port,
            controller_port=settings.controller_port,
            heap=settings.heap,
        )
        name = f"Apache Kafka {settings.version} (KRaft), data in {settings.data_dir}"
    else:
        broker = TansuBroker(port=settings.port)
        name = "Tansu (memory only)"
    broker.start()
    try:
        kafka = KafkaSettings(bootstrap_servers=broker.bootstrap_servers)
        partitions = ensure_topics(
            kafka.model_copy(
                update={
                    "partitions": settings.kafka.partitions,
                    "topic_prefix": settings.kafka.topic_prefix,
                }
            )
        )
        print(f"{name} listening on {broker.bootstrap_servers}", flush=True)
        print(
            f"topics: {', '.join(f'{t} ({n})' for t, n in sorted(partitions.items()))}", flush=True
        )
        _wait_for_signal()
    finally:
        broker.stop()
        print("broker stopped", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.broker", description=__doc__)
    parser.add_argument(
        "command",
        nargs="?",
        default="run",
        choices=["run", "fetch", "topics"],
        help="run the broker (default), fetch its jars only, or create topics only",
    )
    args = parser.parse_args(argv)
    configure_logging("WARNING")
    try:
        if args.command == "fetch":
            if java_available():
                print(fetch_kafka_jars(get_settings().version))
            else:
                print(
                    "No Java 17+: skipping the Apache Kafka jars (the Tansu fallback will be used)."
                )
        elif args.command == "topics":
            for topic, partitions in sorted(ensure_topics(get_settings().kafka).items()):
                print(f"{topic}\t{partitions}")
        else:
            run()
    except ClosedloopError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
