-- Report views. Everything reads attribution_credits_current, so a credit that a later
-- computation of its deal (or lead creation) superseded is never counted.

CREATE OR REPLACE VIEW attribution_credits_current AS
SELECT
    lead_id, deal_id, stage, stage_order, converted_at, model, touchpoint_id, touchpoint_at,
    channel, source, medium, campaign, term, content, landing_page, credit,
    attributed_amount, currency, deal_status, computed_version, computed_at
FROM attribution_credits FINAL
WHERE (lead_id, deal_id, computed_version) IN (
    SELECT lead_id, deal_id, max(computed_version)
    FROM attribution_runs
    GROUP BY lead_id, deal_id
);

CREATE OR REPLACE VIEW touchpoints_current AS
SELECT
    lead_id, touchpoint_id, anonymous_id, site_id, occurred_at, channel, source, medium,
    campaign, term, content, click_ids, referrer_host, landing_page, is_offline
FROM touchpoints FINAL
WHERE NOT retracted;

CREATE OR REPLACE VIEW report_pipeline AS
SELECT
    model, stage, stage_order, channel, source, medium, campaign, currency,
    sum(credit) AS deals,
    sum(attributed_amount) AS amount,
    sumIf(attributed_amount, deal_status = 'open') AS open_amount,
    sumIf(attributed_amount, deal_status = 'won') AS won_amount,
    sumIf(attributed_amount, deal_status = 'lost') AS lost_amount
FROM attribution_credits_current
WHERE deal_id != ''
GROUP BY model, stage, stage_order, channel, source, medium, campaign, currency;

CREATE OR REPLACE VIEW report_revenue AS
SELECT
    model, channel, source, medium, campaign, currency,
    sum(credit) AS deals_won,
    sum(attributed_amount) AS revenue
FROM attribution_credits_current
WHERE deal_id != '' AND stage = 'closed_won'
GROUP BY model, channel, source, medium, campaign, currency;

CREATE OR REPLACE VIEW report_leads_by_channel AS
SELECT model, channel, source, medium, campaign, sum(credit) AS leads
FROM attribution_credits_current
WHERE deal_id = '' AND stage = 'lead_created'
GROUP BY model, channel, source, medium, campaign;

CREATE OR REPLACE VIEW report_lead_journey AS
SELECT
    lead_id, occurred_at, CAST('touchpoint' AS String) AS event, touchpoint_id,
    CAST(channel AS String) AS channel, source, medium, campaign, term, content, landing_page,
    CAST('' AS String) AS deal_id, CAST('' AS String) AS stage,
    CAST(NULL AS Nullable(Decimal(18, 2))) AS amount, CAST('' AS String) AS currency
FROM touchpoints_current
UNION ALL
SELECT
    lead_id, assumeNotNull(created_at), 'lead_created', '', CAST(channel AS String), source,
    medium, campaign, '', '', landing_page, '', '', CAST(NULL AS Nullable(Decimal(18, 2))), ''
FROM leads FINAL
WHERE created_at IS NOT NULL
UNION ALL
SELECT
    lead_id, occurred_at, 'deal_stage', '', '', '', '', '', '', '', '', deal_id,
    CAST(stage AS String), amount, CAST(currency AS String)
FROM deal_stage_history FINAL;

CREATE OR REPLACE VIEW report_landing_pages AS
SELECT
    model, stage, landing_page, currency,
    uniqExact(lead_id, deal_id) AS influenced_deals,
    sum(credit) AS deals,
    sum(attributed_amount) AS amount
FROM attribution_credits_current
GROUP BY model, stage, landing_page, currency;

CREATE OR REPLACE VIEW report_roi_by_channel AS
SELECT
    models.model AS model, spend.channel AS channel, spend.currency AS currency,
    spend.spend AS spend,
    coalesce(revenue.revenue, toDecimal128(0, 2)) AS revenue,
    coalesce(revenue.deals_won, toDecimal128(0, 12)) AS deals_won,
    if(spend.spend > 0, round(toFloat64(revenue) / toFloat64(spend.spend), 4), NULL) AS roas,
    if(spend.spend > 0, round((toFloat64(revenue) - toFloat64(spend.spend)) / toFloat64(spend.spend), 4), NULL) AS roi
FROM
(
    SELECT channel, currency, sum(spend) AS spend
    FROM ad_spend FINAL
    GROUP BY channel, currency
) AS spend
CROSS JOIN
(
    SELECT arrayJoin(['first_touch', 'last_touch', 'last_non_direct', 'linear', 'time_decay',
        'position_based', 'w_shaped', 'full_path', 'data_driven']) AS model
) AS models
LEFT JOIN
(
    SELECT model, channel, currency, sum(credit) AS deals_won, sum(attributed_amount) AS revenue
    FROM attribution_credits_current
    WHERE deal_id != '' AND stage = 'closed_won'
    GROUP BY model, channel, currency
) AS revenue
ON revenue.model = models.model AND revenue.channel = spend.channel
    AND revenue.currency = spend.currency
SETTINGS join_use_nulls = 1;

CREATE OR REPLACE VIEW report_roi_by_campaign AS
SELECT
    models.model AS model, spend.channel AS channel, spend.source AS source,
    spend.campaign AS campaign, spend.currency AS currency, spend.spend AS spend,
    coalesce(revenue.revenue, toDecimal128(0, 2)) AS revenue,
    coalesce(revenue.deals_won, toDecimal128(0, 12)) AS deals_won,
    if(spend.spend > 0, round(toFloat64(revenue) / toFloat64(spend.spend), 4), NULL) AS roas,
    if(spend.spend > 0, round((toFloat64(revenue) - toFloat64(spend.spend)) / toFloat64(spend.spend), 4), NULL) AS roi
FROM
(
    SELECT channel, source, campaign, currency, sum(spend) AS spend
    FROM ad_spend FINAL
    GROUP BY channel, source, campaign, currency
) AS spend
CROSS JOIN
(
    SELECT arrayJoin(['first_touch', 'last_touch', 'last_non_direct', 'linear', 'time_decay',
        'position_based', 'w_shaped', 'full_path', 'data_driven']) AS model
) AS models
LEFT JOIN
(
    SELECT model, channel, source, campaign, currency, sum(credit) AS deals_won,
        sum(attributed_amount) AS revenue
    FROM attribution_credits_current
    WHERE deal_id != '' AND stage = 'closed_won'
    GROUP BY model, channel, source, campaign, currency
) AS revenue
ON revenue.model = models.model AND revenue.channel = spend.channel
    AND revenue.source = spend.source AND revenue.campaign = spend.campaign
    AND revenue.currency = spend.currency
SETTINGS join_use_nulls = 1;
