"""The stitcher's faust app: events.raw in, touchpoints.stitched and identity.links out."""

from __future__ import annotations

import asyncio
import logging
import shutil
import ssl
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from functools import partial
from pathlib import Path
from typing import Any, cast

import faust
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]  # stubs miss the re-export
from faust.transport.drivers import aiokafka as aiokafka_driver
from faust.types import TP, EventT
from faust.types.stores import StoreT

from schemas.topics import EVENTS_RAW, IDENTITY_LINKS, TOUCHPOINTS_STITCHED
from services.common.avro import AvroCodec
from services.common.errors import CodecError, ConfigurationError, UnavailableError
from services.stitcher.channels import ChannelRules
from services.stitcher.identity import apply_event, decode_state, encode_state, observe
from services.stitcher.settings import StitcherSettings

log = logging.getLogger("services.stitcher")

STATE_TABLE = "anonymous-state"
CLEAN_SHUTDOWN_MARKER = "clean-shutdown"


def _credentials(settings: StitcherSettings) -> Any:
    kafka = settings.kafka
    if kafka.security_protocol == "PLAINTEXT":
        return None
    if kafka.security_protocol == "SSL":
        return faust.SSLCredentials(ssl.create_default_context())
    password = kafka.sasl_password.get_secret_value() if kafka.sasl_password else None
    return faust.SASLCredentials(
        username=kafka.sasl_username,
        password=password,
        mechanism=kafka.sasl_mechanism or "PLAIN",
        ssl_context=ssl.create_default_context() if kafka.security_protocol == "SASL_SSL" else None,
    )


Send = Callable[[str, bytes, bytes, int | None], Awaitable["asyncio.Future[Any]"]]


def _output_sender(app: faust.App, event: EventT[Any]) -> Send:
    """How to publish what ``event`` produced so that it commits with the event's offset.

    Under exactly_once faust keeps one transactional producer per *input* partition and
    commits the input offsets in that partition's transaction. ``Topic.send`` picks the
    transaction by the *output* partition (and for a topic the worker does not consume
    uses no transaction at all), and table writes reach the changelog through a buffer
    that a commit can overtake; either way a crash could commit an offset whose
    touchpoints or state were lost. So the outputs and the state's changelog record go
    through the input partition's transactional producer, in that order, before the
    event is acknowledged. With no explicit partition aiokafka partitions by murmur2 of
    the key, like the Java client and our confluent-kafka producers. Under
    at_least_once the plain producer is flushed before every offset commit.
    """
    producer = app.producer
    transactional_id: str | None = None
    if app.in_transaction:
        message = event.message
        group = app.assignor.group_for_topic(message.topic)
        transactional_id = f"{app.conf.id}-{group}-{message.partition}"

    async def send(
        topic: str, key: bytes, value: bytes, partition: int | None = None
    ) -> asyncio.Future[Any]:
        future = await producer.send(
            topic, key, value, partition, None, None, transactional_id=transactional_id
        )
        return cast("asyncio.Future[Any]", future)

    return send


class _ConsumerThread(aiokafka_driver.AIOKafkaConsumerThread):
    """faust's consumer thread, with highwaters that are right under exactly_once."""

    async def _highwaters(self, partitions: list[TP]) -> Mapping[TP, int]:
        # faust asks aiokafka for the last stable offset seen in *fetch responses*, which
        # is unknown (so -1) for a partition this worker has not fetched yet: recovery of a
        # freshly assigned changelog partition is then skipped, or fails with
        # ConsistencyError when a standby had read it. A ListOffsets request under
        # read_committed (end_offsets) returns the last stable offset from the broker.
        consumer = self._ensure_consumer()
        return cast(Mapping[TP, int], await consumer.end_offsets(partitions))


class _Consumer(aiokafka_driver.Consumer):
    def _new_consumer_thread(self) -> aiokafka_driver.AIOKafkaConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)


def create_app(settings: StitcherSettings) -> faust.App:
    """The faust app with its table and agent; nothing connects until a worker starts it."""
    kafka = settings.kafka
    app = faust.App(
        kafka.topic(settings.consumer_group),
        broker=[f"kafka://{host.strip()}" for host in kafka.bootstrap_servers.split(",")],
        broker_credentials=_credentials(settings),
        store=settings.store,
        processing_guarantee=settings.processing_guarantee,
        topic_partitions=kafka.partitions,
        topic_replication_factor=kafka.replication_factor,
        datadir=str(settings.data_dir),
        web_enabled=False,
        broker_commit_interval=settings.commit_interval_seconds,
        broker_session_timeout=settings.group_session_timeout_seconds,
        broker_heartbeat_interval=settings.group_heartbeat_seconds,
        broker_rebalance_timeout=settings.group_rebalance_timeout_seconds,
        table_standby_replicas=settings.standby_replicas,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        producer_compression_type=None
        if kafka.compression_type == "none"
        else kafka.compression_type,
        key_serializer="raw",
        value_serializer="raw",
        # ensure_internal_topics creates faust's topics before the worker starts; faust's
        # own creation path fails at random on a fresh connection (NodeNotReadyError).
        topic_allow_declare=False,
    )
    # Only this app's transport uses the corrected consumer.
    app.transport.Consumer = _Consumer  # type: ignore[misc]  # per-app override of a ClassVar, on purpose
    events_topic_name = kafka.topic(EVENTS_RAW.name)
    events_topic = app.topic(events_topic_name, key_type=bytes, value_type=bytes)
    touchpoints_topic = kafka.topic(TOUCHPOINTS_STITCHED.name)
    links_topic = kafka.topic(IDENTITY_LINKS.name)
    # Keyed by anonymous ID like events.raw, so each ID's state lives on its event's partition.
    # bytes keys and values make faust use the raw codec; its default, json, cannot read
    # the MessagePack state back from the changelog when a worker recovers.
    states = app.Table(
        STATE_TABLE,
        partitions=kafka.partitions,
        key_type=bytes,
        value_type=bytes,
    )

    store = cast(StoreT[bytes, bytes], states.data)
    changelog_topic = states.changelog_topic.get_topic_name()
    events_codec = AvroCodec.for_topic(EVENTS_RAW.name)
    touchpoint_codec = AvroCodec.for_topic(TOUCHPOINTS_STITCHED.name)
    link_codec = AvroCodec.for_topic(IDENTITY_LINKS.name)
    rules = ChannelRules.default(settings.own_domain_list())
    config = settings.stitch_config()
    counters: Counter[str] = Counter()

    async def process(event: EventT[Any]) -> None:
        raw = event.value
        try:
            record = events_codec.decode(raw if isinstance(raw, bytes) else bytes(raw))
        except CodecError as exc:
            counters["undecodable"] += 1
            log.warning(
                "undecodable event skipped",
                extra={"problem": exc.problem, "offset": event.message.offset},
            )
            return
        counters["events"] += 1
        observation = observe(record, rules, settings.identity)
        if observation.invalid_email:
            counters["invalid_email"] += 1
        if observation.hit is None and observation.identification is None:
            return
        anonymous_id = str(record["anonymous_id"])
        key = anonymous_id.encode()
        state = decode_state(states.get(key))
        step = apply_event(state, anonymous_id, observation.hit, observation.identification, config)
        if step.too_late:
            counters["too_late"] += 1
        if step.state is state:
            return
        send = _output_sender(app, event)
        for emission in step.touchpoints:
            counters["retracted" if emission.retracted else "touchpoints"] += 1
            await send(
                touchpoints_topic,
                emission.key.encode(),
                touchpoint_codec.encode(emission.to_record()),
                None,
            )
        if step.link is not None:
            counters["links"] += 1
            await send(links_topic, key, link_codec.encode(step.link.to_record()), None)
        # The state last: a committed state then always comes with its outputs.
        encoded = encode_state(step.state)
        changelog = TP(changelog_topic, event.message.partition)
        sent = await send(changelog.topic, key, encoded, changelog.partition)
        store[key] = encoded  # the local store only; the changelog record is sent above
        sent.add_done_callback(partial(persist_offset, changelog))

    def persist_offset(changelog: TP, sent: asyncio.Future[Any]) -> None:
        # What faust does for its own changelog writes: RocksDB remembers how far the
        # changelog is applied, so a restart replays only the rest.
        if sent.cancelled() or sent.exception() is not None:
            return
        offset = sent.result().offset
        if app.in_transaction:
            app.tables.persist_offset_on_commit(store, changelog, offset)
        else:
            store.set_persisted_offset(changelog, offset)

    @app.agent(events_topic, name="stitch")
    async def stitch(stream: faust.StreamT[Any]) -> AsyncIterator[None]:
        async for event in stream.events():
            await process(event)
            yield None

    @app.timer(30.0)  # type: ignore[untyped-decorator]  # faust's decorators are untyped
    async def report() -> None:
        if counters:
            log.info("stitcher progress", extra=dict(counters))

    started = time.monotonic()

    @app.on_rebalance_complete.connect
    async def on_ready(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        assigned = sorted(
            tp.partition for tp in app.assignor.assigned_actives() if tp.topic == events_topic_name
        )
        log.info(
            "stitcher ready",
            extra={
                "partitions": assigned,
                "table_keys": len(states),
                "seconds_since_start": round(time.monotonic() - started, 2),
            },
        )

    return app


def build_worker(app: faust.App, settings: StitcherSettings) -> faust.Worker:
    """A worker that runs the app until SIGTERM/SIGINT; logging stays ours (JSON lines)."""
    return faust.Worker(
        app,
        loglevel=settings.log_level.lower(),
        quiet=True,
        override_logging=False,
        redirect_stdouts=False,
    )


def _marker(settings: StitcherSettings) -> Path:
    return settings.data_dir / CLEAN_SHUTDOWN_MARKER


def prepare_local_state(app: faust.App, settings: StitcherSettings) -> bool:
    """Wipe local RocksDB tables left by a crash under exactly_once; True when wiped.

    faust writes table changes to RocksDB at once, but under exactly_once their
    changelog records only count once the transaction commits. After a crash the local
    store can hold changes of an aborted transaction whose outputs were discarded; the
    replayed events would then look like duplicates and their touchpoints be lost. Like
    Kafka Streams under EOS, a store without a clean-shutdown marker is rebuilt from
    the changelog. The marker is removed while the worker runs.
    """
    marker = _marker(settings)
    tables = Path(app.conf.tabledir)
    wiped = False
    unclean = tables.exists() and not marker.exists()
    local_store = not settings.store.startswith("memory:")
    if unclean and local_store and settings.processing_guarantee == "exactly_once":
        shutil.rmtree(tables)
        wiped = True
        log.warning(
            "local table store wiped after an unclean shutdown; rebuilding from the changelog",
            extra={"path": str(tables)},
        )
    marker.unlink(missing_ok=True)
    return wiped


def mark_clean_shutdown(settings: StitcherSettings) -> None:
    """Record that the worker stopped gracefully (its committed state matches the store)."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    _marker(settings).write_text("stopped cleanly\n")


def ensure_internal_topics(
    app: faust.App, settings: StitcherSettings, timeout: float = 30.0
) -> None:
    """Create faust's leader topic and the state table's compacted changelog if missing."""
    kafka = settings.kafka
    changelog = app.tables[STATE_TABLE].changelog_topic.get_topic_name()
    wanted = {
        f"{app.conf.id}-__assignor-__leader": NewTopic(
            f"{app.conf.id}-__assignor-__leader",
            num_partitions=1,
            replication_factor=kafka.replication_factor,
        ),
        changelog: NewTopic(
            changelog,
            num_partitions=kafka.partitions,
            replication_factor=kafka.replication_factor,
            config={"cleanup.policy": "compact"},
        ),
    }
    admin = AdminClient(kafka.client_config())
    try:
        existing = admin.list_topics(timeout=timeout).topics
    except KafkaException as exc:
        raise UnavailableError(f"broker {kafka.bootstrap_servers} unreachable: {exc}") from exc
    missing = [topic for name, topic in wanted.items() if name not in existing]
    if missing:
        for name, future in admin.create_topics(missing, operation_timeout=timeout).items():
            try:
                future.result(timeout=timeout)
                log.info("created topic", extra={"topic": name})
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise UnavailableError(f"could not create topic {name}: {exc}") from exc
    partitions = len(
        admin.list_topics(topic=changelog, timeout=timeout).topics[changelog].partitions
    )
    if partitions != kafka.partitions:
        raise ConfigurationError(
            f"{changelog} has {partitions} partitions, events.raw needs {kafka.partitions}"
        )
