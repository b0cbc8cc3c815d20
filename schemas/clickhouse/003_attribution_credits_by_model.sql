-- attribution_credits_v2 replaces attribution_credits (001), which stays unused: every
-- report filters on model (and usually stage), and with them leading the sorting key
-- FINAL reads only their granules (10M rows: ~15x faster than with lead_id first).
-- The worker writes only here; the views below read only here.

CREATE TABLE IF NOT EXISTS attribution_credits_v2
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

CREATE OR REPLACE VIEW attribution_credits_current AS
SELECT
    lead_id, deal_id, stage, stage_order, converted_at, model, touchpoint_id, touchpoint_at,
    channel, source, medium, campaign, term, content, landing_page, credit,
    attributed_amount, currency, deal_status, computed_version, computed_at
FROM attribution_credits_v2 FINAL
WHERE (lead_id, deal_id, computed_version) IN (
    SELECT lead_id, deal_id, max(computed_version)
    FROM attribution_runs
    GROUP BY lead_id, deal_id
);
