-- Attributor facts. Every table absorbs replays: ReplacingMergeTree keyed by the fact's
-- identity, and a deduplication window so a retried insert with the same
-- insert_deduplication_token is dropped (non-replicated MergeTree needs the window).

-- touchpoints.stitched as received; the newest copy per (lead, touchpoint) wins by Kafka
-- offset (one lead is always on one partition); retracted copies stay and are filtered.
CREATE TABLE IF NOT EXISTS touchpoints
(
    lead_id String,
    touchpoint_id String,
    anonymous_id String,
    site_id LowCardinality(String),
    occurred_at DateTime64(3, 'UTC'),
    channel LowCardinality(String),
    channel_symbol LowCardinality(String),
    source String,
    medium String,
    campaign String,
    term String,
    content String,
    click_ids Map(String, String),
    referrer_host String,
    landing_page String,
    is_offline Bool,
    retracted Bool,
    kafka_partition UInt32,
    kafka_offset UInt64
)
ENGINE = ReplacingMergeTree(kafka_offset)
ORDER BY (lead_id, touchpoint_id)
SETTINGS non_replicated_deduplication_window = 1000;

-- identity.links: every link ever seen (the topic is compacted, this keeps history).
CREATE TABLE IF NOT EXISTS identity_links
(
    anonymous_id String,
    lead_id String,
    valid_from DateTime64(3, 'UTC'),
    identified_by String,
    link_count UInt32,
    shared Bool,
    site_id String
)
ENGINE = ReplacingMergeTree(link_count)
ORDER BY (lead_id, anonymous_id, valid_from)
SETTINGS non_replicated_deduplication_window = 1000;

-- One row per lead: created at its first identification, with the lead-creation
-- touch (the last touch at or before it) and the first touch.
CREATE TABLE IF NOT EXISTS leads
(
    lead_id String,
    created_at Nullable(DateTime64(3, 'UTC')),
    channel LowCardinality(String),
    source String,
    medium String,
    campaign String,
    landing_page String,
    first_touch_channel LowCardinality(String),
    touchpoints UInt32,
    kafka_partition UInt32,
    version UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY lead_id
SETTINGS non_replicated_deduplication_window = 1000;

-- The latest state of each deal.
CREATE TABLE IF NOT EXISTS deals
(
    lead_id String,
    deal_id String,
    crm LowCardinality(String),
    pipeline String,
    deal_name String,
    stage LowCardinality(String),
    stage_order Int32,
    status LowCardinality(String),
    amount Nullable(Decimal(18, 2)),
    currency LowCardinality(String),
    created_at DateTime64(3, 'UTC'),
    opportunity_created_at Nullable(DateTime64(3, 'UTC')),
    closed_at Nullable(DateTime64(3, 'UTC')),
    updated_at DateTime64(3, 'UTC'),
    kafka_partition UInt32,
    version UInt64
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (lead_id, deal_id)
SETTINGS non_replicated_deduplication_window = 1000;

-- crm.deal_stages as received; a redelivered event (same event_id) collapses.
CREATE TABLE IF NOT EXISTS deal_stage_history
(
    lead_id String,
    deal_id String,
    event_id String,
    crm LowCardinality(String),
    pipeline String,
    stage LowCardinality(String),
    stage_order Int32,
    crm_stage String,
    amount Nullable(Decimal(18, 2)),
    currency LowCardinality(String),
    is_won Bool,
    is_lost Bool,
    occurred_at DateTime64(3, 'UTC'),
    received_at DateTime64(3, 'UTC'),
    deal_name String,
    kafka_partition UInt32,
    kafka_offset UInt64
)
ENGINE = ReplacingMergeTree(kafka_offset)
ORDER BY (lead_id, deal_id, event_id)
SETTINGS non_replicated_deduplication_window = 1000;

-- One row per computation of a conversion subject (a deal, or the lead's creation with
-- deal_id = ''). Written after its credits: the newest run names the credits that count.
CREATE TABLE IF NOT EXISTS attribution_runs
(
    lead_id String,
    deal_id String,
    computed_version UInt64,
    computed_at DateTime64(3, 'UTC'),
    touchpoints UInt32,
    credit_rows UInt32
)
ENGINE = ReplacingMergeTree(computed_version)
ORDER BY (lead_id, deal_id)
SETTINGS non_replicated_deduplication_window = 1000;

-- Credit of one touchpoint for one conversion (deal stage or lead creation) under one model.
-- Every report filters on model (and usually stage), so they lead the sorting key: FINAL
-- then reads only their granules (10M rows: ~15x faster than with lead_id first).
CREATE TABLE IF NOT EXISTS attribution_credits
(
    lead_id String,
    deal_id String,
    stage LowCardinality(String),
    stage_order Int32,
    converted_at DateTime64(3, 'UTC'),
    model LowCardinality(String),
    touchpoint_id String,
    touchpoint_at DateTime64(3, 'UTC'),
    channel LowCardinality(String),
    source String,
    medium String,
    campaign String,
    term String,
    content String,
    landing_page String,
    credit Decimal(18, 12),
    attributed_amount Decimal(18, 2),
    currency LowCardinality(String),
    deal_status LowCardinality(String),
    computed_version UInt64,
    computed_at DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(computed_version)
ORDER BY (model, stage, lead_id, deal_id, touchpoint_id)
SETTINGS non_replicated_deduplication_window = 1000;

-- Ad spend per day, channel, source and campaign (closedloop ad-spend import); a
-- re-import of the same day and campaign replaces the earlier figure.
CREATE TABLE IF NOT EXISTS ad_spend
(
    date Date,
    channel LowCardinality(String),
    source String,
    campaign String,
    currency LowCardinality(String),
    spend Decimal(18, 2),
    imported_version UInt64
)
ENGINE = ReplacingMergeTree(imported_version)
ORDER BY (date, channel, source, campaign, currency)
SETTINGS non_replicated_deduplication_window = 1000;
