"""Events/s through one stitcher worker against a bare consumer of the same topic, on local Kafka."""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, Producer, TopicPartition

from bench.results import write_section
from schemas.topics import EVENTS_RAW
from services.broker.local import LocalKafka
from services.common.avro import AvroCodec
from services.common.kafka import ensure_topics, producer_config
from services.common.settings import PROJECT_ROOT, IdentitySettings, KafkaSettings
from services.stitcher.channels import ChannelRules
from services.stitcher.identity import (
    StitchConfig,
    apply_event,
    decode_state,
    encode_state,
    observe,
)

SITE = "https://www.example.com"
TAGS: list[dict[str, Any]] = [
    {"url": f"{SITE}/?utm_source=google&utm_medium=cpc&utm_campaign=brand&gclid=abc"},
    {"url": f"{SITE}/blog", "referrer": "https://www.linkedin.com/"},
    {"url": f"{SITE}/?utm_source=newsletter&utm_medium=email&utm_campaign=nov"},
    {"url": f"{SITE}/pricing", "referrer": "https://www.google.com/"},
    {"url": f"{SITE}/docs"},
]


def events(count: int, seed: int = 7) -> list[dict[str, Any]]:
    """Visitors browsing in sessions (pageviews, campaign changes, identifications), time-ordered."""
    rng = random.Random(seed)
    now = int(time.time() * 1000) - 10 * 24 * 3600 * 1000
    out: list[dict[str, Any]] = []
    visitor = 0
    while len(out) < count:
        anonymous_id = f"anon-{visitor}"
        at = now + rng.randint(0, 5 * 24 * 3600 * 1000)
        for index in range(rng.randint(2, 12)):
            at += rng.choice([20_000, 60_000, 300_000, 3 * 3600 * 1000])
            record: dict[str, Any] = {
                "event_id": f"{anonymous_id}-{index}",
                "type": "pageview",
                "site_id": "dev",
                "anonymous_id": anonymous_id,
                "occurred_at": at,
                "received_at": at,
                **rng.choice(TAGS),
            }
            if index > 2 and rng.random() < 0.1:
                record.update(type="form_submit", email=f"visitor{visitor}@example.com")
            out.append(record)
        visitor += 1
    return out[:count]


def produce(kafka: KafkaSettings, records: list[dict[str, Any]]) -> float:
    """Publish every record (keyed by anonymous ID, murmur2); returns seconds taken."""
    codec = AvroCodec.for_topic(EVENTS_RAW.name)
    producer = Producer(producer_config(kafka, "bench-producer"))
    topic = kafka.topic(EVENTS_RAW.name)
    started = time.perf_counter()
    for record in records:
        while True:
            try:
                producer.produce(topic, key=record["anonymous_id"], value=codec.encode(record))
                break
            except BufferError:
                producer.poll(0.05)
    assert producer.flush(60) == 0, "undelivered events"
    return time.perf_counter() - started


def end_offsets(kafka: KafkaSettings, group: str) -> list[TopicPartition]:
    consumer = Consumer({**kafka.client_config(), "group.id": group})
    topic = kafka.topic(EVENTS_RAW.name)
    partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    ends = []
    for partition in partitions:
        _, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
        ends.append(TopicPartition(topic, partition, high))
    consumer.close()
    return ends


def consumer_only_rate(kafka: KafkaSettings, total: int) -> float:
    """Messages/s of a bare confluent-kafka consumer reading the topic from the start."""
    consumer = Consumer(
        {
            **kafka.client_config(),
            "group.id": f"bench-bare-{uuid.uuid4().hex[:6]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([kafka.topic(EVENTS_RAW.name)])
    seen = 0
    started: float | None = None
    while seen < total:
        batch = consumer.consume(1000, timeout=1.0)
        if batch and started is None:
            started = time.perf_counter()
        seen += sum(1 for message in batch if message.error() is None)
    elapsed = time.perf_counter() - (started or time.perf_counter())
    consumer.close()
    return total / elapsed


def committed_total(kafka: KafkaSettings, group: str, ends: list[TopicPartition]) -> int:
    consumer = Consumer({**kafka.client_config(), "group.id": group})
    committed = consumer.committed([TopicPartition(tp.topic, tp.partition) for tp in ends], 10)
    consumer.close()
    return sum(max(tp.offset, 0) for tp in committed)


def stitcher_rate(
    kafka: KafkaSettings, work: Path, guarantee: str, total: int
) -> tuple[float, float]:
    """(events/s, seconds to ready) of one ``python -m services.stitcher`` over the topic."""
    log_path = work / f"stitcher-{guarantee}.log"
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
        "KAFKA_TOPIC_PREFIX": kafka.topic_prefix,
        "KAFKA_PARTITIONS": str(kafka.partitions),
        "STITCHER_CONSUMER_GROUP": f"bench-stitcher-{guarantee}",
        "STITCHER_LOG_LEVEL": "WARNING",
    }
    group = kafka.topic(f"bench-stitcher-{guarantee}")
    ends = end_offsets(kafka, group)
    with log_path.open("wb") as log:
        launched = time.perf_counter()
        process = subprocess.Popen(
            [sys.executable, "-m", "services.stitcher"],
            env={**env, "STITCHER_LOG_LEVEL": "INFO"},
            cwd=PROJECT_ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        while '"stitcher ready"' not in log_path.read_text(errors="replace"):
            if process.poll() is not None:
                raise RuntimeError(f"stitcher exited:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.05)
        ready = time.perf_counter()
        done = 0
        last_report = ready
        while done < total:
            time.sleep(0.25)
            done = committed_total(kafka, group, ends)
            if time.perf_counter() - last_report > 5:
                last_report = time.perf_counter()
                print(f"  {guarantee}: {done}/{total} committed", flush=True)
            if time.perf_counter() - ready > 600:
                raise RuntimeError(f"stitcher too slow: {done}/{total} after 600 s")
        return total / (time.perf_counter() - ready), ready - launched
    finally:
        process.terminate()
        process.wait(30)


def core_rate(records: list[dict[str, Any]]) -> float:
    """Events/s of the pure core in-process: Avro decode, classify, stitch, state encode."""
    codec = AvroCodec.for_topic(EVENTS_RAW.name)
    touchpoints = AvroCodec.for_topic("touchpoints.stitched")
    encoded = [codec.encode(record) for record in records]
    rules, identity, config = ChannelRules.default(), IdentitySettings(), StitchConfig()
    states: dict[bytes, bytes] = {}
    started = time.perf_counter()
    for raw in encoded:
        record = codec.decode(raw)
        observation = observe(record, rules, identity)
        key = record["anonymous_id"].encode()
        step = apply_event(
            decode_state(states.get(key)),
            record["anonymous_id"],
            observation.hit,
            observation.identification,
            config,
        )
        states[key] = encode_state(step.state)
        for emission in step.touchpoints:
            touchpoints.encode(emission.to_record())
    return len(records) / (time.perf_counter() - started)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and write its section of bench/RESULTS.md."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=30_000)
    parser.add_argument("--partitions", type=int, default=6)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-stitcher-") as tmp:
        work = Path(tmp)
        broker = LocalKafka(data_dir=work / "kafka")
        print("starting Apache Kafka ...", flush=True)
        broker.start()
        try:
            kafka = KafkaSettings(
                bootstrap_servers=broker.bootstrap_servers,
                topic_prefix=f"bench{uuid.uuid4().hex[:6]}.",
                partitions=args.partitions,
            )
            ensure_topics(kafka)
            records = events(args.events)
            print(f"producing {len(records)} events ...", flush=True)
            produce_seconds = produce(kafka, records)
            print("bare consumer ...", flush=True)
            bare = consumer_only_rate(kafka, len(records))
            print(f"  {bare:,.0f} msg/s", flush=True)
            print("pure core in-process ...", flush=True)
            core = core_rate(records)
            print(f"  {core:,.0f} events/s", flush=True)
            results = {}
            print("stitcher (transactions) ...", flush=True)
            results["exactly_once"] = stitcher_rate(kafka, work, "exactly_once", len(records))
            print(f"  {results['exactly_once'][0]:,.0f} events/s", flush=True)
            version = broker.version
        finally:
            broker.stop()
    eos, eos_start = results["exactly_once"]
    markdown = f"""## Stitcher throughput (one worker)

`.venv/bin/python -m bench.bench_stitcher --events {args.events} --partitions {args.partitions}`

{args.events:,} TrackingEvents (pageviews in sessions, campaign changes, 10% form fills with an
e-mail) pre-loaded into `events.raw` ({args.partitions} partitions, lz4) on a local Apache Kafka
{version}; produced in {produce_seconds:.1f} s. The stitcher is timed from "stitcher ready" until
its committed offsets reach the end of the topic (one Kafka transaction per batch of up to
1,000 events: outputs, state changelog and offsets commit together).

| reader | events/s | vs. bare consumer |
|---|---:|---:|
| bare confluent-kafka consumer (ceiling, no decoding) | {bare:,.0f} | 1.00 |
| stitcher, exactly-once (transactions) | {eos:,.0f} | {eos / bare:.3f} |
| pure core in-process, no Kafka (decode, classify, stitch, encode) | {core:,.0f} | {core / bare:.3f} |

The worker reaches {eos / core:.0%} of its own pure core; the rest is consuming, producing
the outputs and state records, and committing the transactions.

Start to ready (empty state): {eos_start:.1f} s.
Scale by partitions and workers: one worker is one Python process on one core.
On a shared machine repeated runs spread by up to 2x; compare ratios from one run.
"""
    write_section("stitcher", markdown)
    print(markdown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
