"""The stitcher as a real worker process on the real broker: devices, crashes, rebalances."""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

from schemas.topics import CRM_DEAL_STAGES, EVENTS_RAW, IDENTITY_LINKS, TOUCHPOINTS_STITCHED
from services.common.avro import AvroCodec
from services.common.kafka import KafkaPublisher, producer_config
from services.common.leads import lead_id_for_email
from services.common.settings import IdentitySettings, KafkaSettings
from services.stitcher.channels import ChannelRules
from services.stitcher.identity import observe, stitch

if TYPE_CHECKING:
    from tests.fixtures.processes import ServiceProcess

pytestmark = pytest.mark.timeout(150)

MINUTE = 60_000
HOUR = 60 * MINUTE
DAY = 24 * HOUR
T0 = int(time.time() * 1000) - 20 * DAY
SITE = "https://www.example.com"
EVENTS = AvroCodec.for_topic(EVENTS_RAW.name)
TOUCHPOINTS = AvroCodec.for_topic(TOUCHPOINTS_STITCHED.name)
LINKS = AvroCodec.for_topic(IDENTITY_LINKS.name)
RULES = ChannelRules.default()
IDENTITY = IdentitySettings()

Key = tuple[str, str]  # (touchpoint ID, lead ID)


def event(anonymous_id: str, event_id: str, at: int, **fields: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "event_id": event_id,
        "type": "pageview",
        "site_id": "dev",
        "anonymous_id": anonymous_id,
        "occurred_at": at,
        "received_at": at,
        "url": f"{SITE}/page",
    }
    record.update(fields)
    return record


def produce(kafka: KafkaSettings, records: Iterable[dict[str, Any]]) -> None:
    """Publish TrackingEvents keyed by anonymous ID and wait for every acknowledgement."""
    publisher = KafkaPublisher(kafka, "stitcher-test")
    topic = kafka.topic(EVENTS_RAW.name)
    messages = [(topic, r["anonymous_id"], EVENTS.encode(r)) for r in records]
    errors = asyncio.run(publisher.publish_many(messages))
    publisher.close()
    assert not any(errors), errors


class Outputs:
    """Reads touchpoints.stitched and identity.links from the beginning (committed data only)."""

    def __init__(self, kafka: KafkaSettings) -> None:
        self.touchpoints: list[tuple[int, bytes, dict[str, Any]]] = []
        self.links: list[tuple[int, bytes, dict[str, Any]]] = []
        self._topics = {
            kafka.topic(TOUCHPOINTS_STITCHED.name): (TOUCHPOINTS, self.touchpoints),
            kafka.topic(IDENTITY_LINKS.name): (LINKS, self.links),
        }
        self._consumer = Consumer(
            {
                **kafka.client_config(),
                "group.id": "stitcher-test-reader",
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
            }
        )
        self._consumer.assign(
            [
                TopicPartition(name, partition, OFFSET_BEGINNING)
                for name in self._topics
                for partition in range(kafka.partitions)
            ]
        )

    def poll(self, seconds: float = 0.5) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            for message in self._consumer.consume(500, timeout=0.1):
                if message.error() is not None:
                    continue
                codec, into = self._topics[message.topic()]
                into.append((message.partition(), message.key(), codec.decode(message.value())))

    def net(self) -> dict[Key, dict[str, Any]]:
        """The touchpoints a consumer holds after applying every emission and retraction."""
        held: dict[Key, dict[str, Any]] = {}
        for _, _, record in self.touchpoints:
            key = (record["touchpoint_id"], record["lead_id"])
            if record["retracted"]:
                held.pop(key, None)
            else:
                held[key] = record
        return held

    def wait_for(self, condition: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            assert time.monotonic() < deadline, f"timed out waiting for {what}"
            self.poll()

    def close(self) -> None:
        self._consumer.close()


def expected_touchpoints(records: Iterable[dict[str, Any]]) -> dict[Key, str]:
    """The pure core's answer for the whole set of events: (touchpoint, lead) -> channel."""
    by_id: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        by_id[record["anonymous_id"]].append(record)
    expected: dict[Key, str] = {}
    for anonymous_id, own in by_id.items():
        observations = [observe(r, RULES, IDENTITY) for r in own]
        result = stitch(
            anonymous_id,
            [o.hit for o in observations if o.hit is not None],
            [o.identification for o in observations if o.identification is not None],
        )
        for tid, touchpoint in result.items():
            expected[(tid, touchpoint.lead_id)] = touchpoint.hit.channel
    return expected


def channels_of(net: dict[Key, dict[str, Any]]) -> dict[Key, str]:
    return {key: record["channel"] for key, record in net.items()}


def assert_duplicates_identical(outputs: Outputs) -> None:
    """A touchpoint emitted more than once is the same record every time."""
    seen: dict[tuple[str, str, bool], dict[str, Any]] = {}
    for _, _, record in outputs.touchpoints:
        key = (record["touchpoint_id"], record["lead_id"], record["retracted"])
        assert seen.setdefault(key, record) == record


def stitcher_env(kafka: KafkaSettings, **extra: str) -> dict[str, str]:
    """The worker's environment; group timings tuned down so crashes and rebalances are quick."""
    return {
        "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
        "KAFKA_TOPIC_PREFIX": kafka.topic_prefix,
        "KAFKA_PARTITIONS": str(kafka.partitions),
        "STITCHER_COMMIT_INTERVAL_SECONDS": "0.3",
        "STITCHER_GROUP_SESSION_TIMEOUT_SECONDS": "6",
        "STITCHER_GROUP_HEARTBEAT_SECONDS": "0.5",
        "STITCHER_GROUP_REBALANCE_TIMEOUT_SECONDS": "10",
        **extra,
    }


def ready_count(proc: ServiceProcess) -> int:
    if not proc.log_path.exists():
        return 0
    return proc.log_path.read_text(errors="replace").count('"stitcher ready"')


def start_worker(
    service_processes: Callable[..., ServiceProcess],
    kafka: KafkaSettings,
    name: str,
    **extra: str,
) -> ServiceProcess:
    proc: ServiceProcess = service_processes(
        "services.stitcher", stitcher_env(kafka, **extra), name=name
    )
    before = ready_count(proc)
    return proc.start(ready=lambda: ready_count(proc) > before, timeout=60)


def visitors(count: int, seed: int) -> list[dict[str, Any]]:
    """Journeys of ``count`` visitors: 1-2 devices, 1-4 sessions each, most identify, some bots."""
    rng = random.Random(seed)
    tags = [
        {"url": f"{SITE}/?utm_source=google&utm_medium=cpc&utm_campaign=brand"},
        {"url": f"{SITE}/blog", "referrer": "https://www.linkedin.com/"},
        {"url": f"{SITE}/?utm_source=newsletter&utm_medium=email"},
        {"url": f"{SITE}/?gclid=abc"},
        {"url": f"{SITE}/pricing"},
    ]
    records: list[dict[str, Any]] = []
    for visitor in range(count):
        email = f"visitor{visitor}@example.com"
        for device in range(rng.randint(1, 2)):
            anonymous_id = f"v{seed}-{visitor}-{device}"
            at = T0 + rng.randint(0, 5 * DAY)
            for session in range(rng.randint(1, 4)):
                records.append(
                    event(anonymous_id, f"{anonymous_id}-s{session}", at, **rng.choice(tags))
                )
                records.append(event(anonymous_id, f"{anonymous_id}-s{session}b", at + 5 * MINUTE))
                at += rng.randint(1, 48) * HOUR
            if rng.random() < 0.7:
                records.append(
                    event(
                        anonymous_id,
                        f"{anonymous_id}-id",
                        at,
                        type="identify",
                        url=None,
                        email=email,
                    )
                )
            records.append(
                event(anonymous_id, f"{anonymous_id}-late", at + HOUR, **rng.choice(tags))
            )
        if rng.random() < 0.1:
            bot = f"bot{seed}-{visitor}"
            records.append(event(bot, f"{bot}-1", T0, is_bot=True, email=email))
    # Out of order within each anonymous ID, as late beacons and retries arrive.
    rng.shuffle(records)
    return records


def test_three_sessions_on_two_devices_become_one_leads_journey(
    kafka_settings: KafkaSettings,
    service_processes: Callable[..., ServiceProcess],
    tmp_path: Path,
) -> None:
    """Laptop: a Google ad, then LinkedIn; phone: the newsletter and the form. The laptop's
    visitor logs in later. All three sessions end up as the one lead's touchpoints."""
    lead = lead_id_for_email("jane.doe@example.com", IDENTITY)
    records = [
        event("laptop", "l1", T0, url=f"{SITE}/?gclid=Cj0KCQ&utm_campaign=brand"),
        event("laptop", "l2", T0 + 3 * MINUTE, url=f"{SITE}/pricing"),
        event("laptop", "l3", T0 + DAY, url=f"{SITE}/blog", referrer="https://www.linkedin.com/"),
        event("phone", "p1", T0 + 2 * DAY, url=f"{SITE}/?utm_source=newsletter&utm_medium=email"),
        event(
            "phone", "p2", T0 + 2 * DAY + MINUTE, type="form_submit", email="Jane.Doe@Example.com"
        ),
        event("stranger", "s1", T0, url=f"{SITE}/?utm_source=google&utm_medium=cpc"),
    ]
    outputs = Outputs(kafka_settings)
    try:
        start_worker(service_processes, kafka_settings, "worker")
        produce(kafka_settings, records)
        outputs.wait_for(lambda: len(outputs.net()) == 1, 60, "the phone's touchpoint")
        assert channels_of(outputs.net()) == {(next(iter(outputs.net()))[0], lead): "EMAIL"}
        # The laptop identifies (a login) on the third day: its history follows retroactively.
        produce(
            kafka_settings,
            [
                event(
                    "laptop",
                    "l4",
                    T0 + 3 * DAY,
                    type="identify",
                    url=None,
                    email="jane.doe@example.com",
                )
            ],
        )
        outputs.wait_for(lambda: len(outputs.net()) == 3, 60, "all three touchpoints")
        outputs.poll(1.0)
        net = outputs.net()
        assert {key[1] for key in net} == {lead}
        assert sorted(record["channel"] for record in net.values()) == [
            "EMAIL",
            "ORGANIC_SOCIAL",
            "PAID_SEARCH",
        ]
        by_anonymous = {r["anonymous_id"]: r for r in net.values() if r["channel"] == "PAID_SEARCH"}
        assert by_anonymous["laptop"]["click_ids"] == {"gclid": "Cj0KCQ"}
        assert by_anonymous["laptop"]["landing_page"] == f"{SITE}/"
        links = {key.decode(): record for _, key, record in outputs.links}
        assert {a: r["lead_id"] for a, r in links.items()} == {"laptop": lead, "phone": lead}
        assert_copartitioned(kafka_settings, outputs)
    finally:
        outputs.close()


def assert_copartitioned(kafka: KafkaSettings, outputs: Outputs) -> None:
    """The stitcher's writes land where crm_ingest's (murmur2_random) put the same key."""
    producer = Producer(producer_config(kafka, "partition-probe"))
    placed: dict[tuple[str, bytes], int] = {}

    def on_delivery(error: Any, message: Any) -> None:
        assert error is None
        placed[(message.topic(), message.key())] = message.partition()

    deals = kafka.topic(CRM_DEAL_STAGES.name)
    events = kafka.topic(EVENTS_RAW.name)
    # The same keys written by confluent-kafka to the co-partitioned topics (a bot event on
    # events.raw, which the stitcher ignores).
    for _, key, _ in outputs.touchpoints:
        producer.produce(deals, key=key, value=b"probe", on_delivery=on_delivery)
    for _, key, _ in outputs.links:
        bot = event(key.decode(), f"probe-{key.decode()}", T0, is_bot=True)
        producer.produce(events, key=key, value=EVENTS.encode(bot), on_delivery=on_delivery)
    assert producer.flush(10) == 0
    assert outputs.touchpoints and outputs.links
    for partition, key, _ in outputs.touchpoints:
        assert placed[(deals, key)] == partition
    for partition, key, _ in outputs.links:
        assert placed[(events, key)] == partition


def assert_converged(outputs: Outputs, expected: dict[Key, str], timeout: float) -> None:
    """Wait until the net output is exactly ``expected``; then check duplicates are identical."""
    try:
        outputs.wait_for(lambda: channels_of(outputs.net()) == expected, timeout, "convergence")
    except AssertionError:
        net = channels_of(outputs.net())
        missing = sorted(set(expected) - set(net))
        extra = sorted(set(net) - set(expected))
        raise AssertionError(
            f"net {len(net)} vs expected {len(expected)}; {len(missing)} missing, e.g. "
            f"{missing[:3]}; {len(extra)} extra, e.g. {extra[:3]}; "
            f"touchpoints by partition {dict(sorted(Counter(p for p, _, _ in outputs.touchpoints).items()))}"
        ) from None
    outputs.poll(1.0)
    assert channels_of(outputs.net()) == expected
    assert_duplicates_identical(outputs)


def test_kill_9_mid_stream_and_restart_lose_no_touchpoint(
    kafka_settings: KafkaSettings,
    service_processes: Callable[..., ServiceProcess],
    tmp_path: Path,
) -> None:
    records = visitors(150, seed=1)
    expected = expected_touchpoints(records)
    assert len(expected) > 100
    outputs = Outputs(kafka_settings)
    try:
        worker = start_worker(service_processes, kafka_settings, "w")
        third = len(records) // 3
        produce(kafka_settings, records[:third])
        outputs.wait_for(lambda: len(outputs.touchpoints) > 0, 60, "first touchpoints")
        produce(kafka_settings, records[third : 2 * third])
        worker.kill()  # SIGKILL while the second third is being stitched
        produce(kafka_settings, records[2 * third :])
        start_worker(service_processes, kafka_settings, "w")
        assert_converged(outputs, expected, 90)
    finally:
        outputs.close()


def test_two_workers_with_a_rebalance_mid_stream_give_the_same_output_as_one(
    kafka_settings: KafkaSettings,
    service_processes: Callable[..., ServiceProcess],
    tmp_path: Path,
) -> None:
    records = visitors(150, seed=2)
    expected = expected_touchpoints(records)
    outputs = Outputs(kafka_settings)
    try:
        first = start_worker(service_processes, kafka_settings, "w1")
        third = len(records) // 3
        produce(kafka_settings, records[:third])
        outputs.wait_for(lambda: len(outputs.touchpoints) > 0, 60, "first touchpoints")
        # A second worker joins mid-stream: the group rebalances, partitions and state move.
        second = start_worker(service_processes, kafka_settings, "w2")
        produce(kafka_settings, records[third : 2 * third])
        outputs.wait_for(lambda: ready_count(first) >= 2, 60, "the first worker's rebalance")
        # Then the first one leaves gracefully: everything moves to the second.
        first.stop()
        produce(kafka_settings, records[2 * third :])
        assert_converged(outputs, expected, 90)
        assert second.running
    finally:
        outputs.close()
