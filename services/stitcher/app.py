"""The stitcher's faust app: events.raw in, touchpoints.stitched and identity.links out."""

from __future__ import annotations

import logging
import shutil
import ssl
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import faust
from faust.types import EventT

from schemas.topics import EVENTS_RAW, IDENTITY_LINKS, TOUCHPOINTS_STITCHED
from services.common.avro import AvroCodec
from services.common.errors import CodecError
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
    )
    events_topic_name = kafka.topic(EVENTS_RAW.name)
    events_topic = app.topic(events_topic_name, key_type=bytes, value_type=bytes)
    touchpoints_topic = app.topic(
        kafka.topic(TOUCHPOINTS_STITCHED.name), key_type=bytes, value_type=bytes
    )
    links_topic = app.topic(kafka.topic(IDENTITY_LINKS.name), key_type=bytes, value_type=bytes)
    # Keyed by anonymous ID like events.raw, so each ID's state lives on its event's partition.
    states = app.Table(STATE_TABLE, partitions=kafka.partitions)

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
        states[key] = encode_state(step.state)
        for emission in step.touchpoints:
            counters["retracted" if emission.retracted else "touchpoints"] += 1
            await touchpoints_topic.send(
                key=emission.key.encode(), value=touchpoint_codec.encode(emission.to_record())
            )
        if step.link is not None:
            counters["links"] += 1
            await links_topic.send(key=key, value=link_codec.encode(step.link.to_record()))

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
    if unclean and settings.processing_guarantee == "exactly_once":
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
