"""Every Kafka topic of the pipeline: name, key, value schema, producers and consumers."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Topic:
    """One topic of the pipeline.

    ``copartition_group`` names topics that are joined by key: topics in one group
    must have the same partition count and the same key, so that a key lands on the
    same partition number in each of them.
    """

    name: str
    key: str
    value_schema: str
    producers: tuple[str, ...]
    consumers: tuple[str, ...]
    copartition_group: str | None = None
    compacted: bool = False

    def qualified(self, prefix: str = "") -> str:
        """The topic's name on the broker, with the deployment's topic prefix."""
        return f"{prefix}{self.name}"


EVENTS_RAW = Topic(
    name="events.raw",
    key="anonymous_id",
    value_schema="closedloop.TrackingEvent",
    producers=("collector",),
    consumers=("stitcher",),
    copartition_group="anonymous_id",
)
EVENTS_INVALID = Topic(
    name="events.invalid",
    key="anonymous_id or none",
    value_schema="closedloop.RejectedEvent",
    producers=("collector",),
    consumers=(),
)
IDENTITY_LINKS = Topic(
    name="identity.links",
    key="anonymous_id",
    value_schema="closedloop.IdentityLink",
    producers=("stitcher",),
    consumers=("attributor",),
    copartition_group="anonymous_id",
    compacted=True,
)
TOUCHPOINTS_STITCHED = Topic(
    name="touchpoints.stitched",
    key="lead_id",
    value_schema="closedloop.Touchpoint",
    producers=("stitcher",),
    consumers=("attributor",),
    copartition_group="lead_id",
)
CRM_DEAL_STAGES = Topic(
    name="crm.deal_stages",
    key="lead_id",
    value_schema="closedloop.DealStageChanged",
    producers=("crm_ingest",),
    consumers=("attributor",),
    copartition_group="lead_id",
)
CRM_INVALID = Topic(
    name="crm.invalid",
    key="none",
    value_schema="closedloop.RejectedWebhook",
    producers=("crm_ingest",),
    consumers=(),
)

# The stitcher's own state changelog: MessagePack AnonymousState per anonymous ID, written
# in the partition of the event it came from (so co-partitioned with events.raw), inside
# the same transaction as the stitcher's outputs. Internal: not Avro, not in ALL_TOPICS.
STITCHER_STATE = Topic(
    name="stitcher.state",
    key="anonymous_id",
    value_schema="closedloop.internal.AnonymousState (MessagePack)",
    producers=("stitcher",),
    consumers=("stitcher",),
    copartition_group="anonymous_id",
    compacted=True,
)

ALL_TOPICS: tuple[Topic, ...] = (
    EVENTS_RAW,
    EVENTS_INVALID,
    IDENTITY_LINKS,
    TOUCHPOINTS_STITCHED,
    CRM_DEAL_STAGES,
    CRM_INVALID,
)

TOPICS_BY_NAME: dict[str, Topic] = {topic.name: topic for topic in ALL_TOPICS}
