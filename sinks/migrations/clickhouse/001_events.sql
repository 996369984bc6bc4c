-- One row per canonical event. ReplacingMergeTree collapses repeats of an event id in
-- the background (query with FINAL for exact raw counts); the sink already skips ids it
-- has written (seen_events), so repeats are rare to begin with.
-- Valid on ClickHouse 18.16 and current releases: no DateTime64, Map, TTL or CODEC.
CREATE TABLE IF NOT EXISTS {db}.events (
    event_id              String,
    event_type            String,
    status                String,
    bsp                   String,
    tenant_id             String,
    business_number       String,
    customer_id           String,
    wamid                 String,
    message_type          String,
    error_code            String,
    conversation_category String,
    pricing_category      String,
    occurred_at           DateTime,
    occurred_at_ms        UInt64,
    received_at           DateTime,
    received_at_ms        UInt64,
    latency_ms            Nullable(UInt32),
    stored_at_ms          UInt64
) ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMM(occurred_at)
ORDER BY (business_number, occurred_at, event_id);
--
-- Event ids already written, ordered for point look-ups by the sink.
CREATE TABLE IF NOT EXISTS {db}.seen_events (
    event_id    String,
    occurred_at DateTime
) ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMM(occurred_at)
ORDER BY event_id;
--
CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.seen_events_mv TO {db}.seen_events AS
SELECT event_id, occurred_at FROM {db}.events;
--
-- When each message was sent, for delivery latency.
CREATE TABLE IF NOT EXISTS {db}.message_sent_at (
    bsp        String,
    wamid      String,
    sent_at_ms UInt64
) ENGINE = ReplacingMergeTree()
ORDER BY (bsp, wamid);
--
CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.message_sent_at_mv TO {db}.message_sent_at AS
SELECT bsp, wamid, occurred_at_ms AS sent_at_ms FROM {db}.events
WHERE event_type = 'message.status' AND status IN ('accepted', 'sent');
--
-- Rollup: per business number and day, events per status.
CREATE TABLE IF NOT EXISTS {db}.daily_status_counts (
    day             Date,
    business_number String,
    bsp             String,
    status          String,
    events          UInt64
) ENGINE = SummingMergeTree()
PARTITION BY toYYYYMM(day)
ORDER BY (business_number, day, bsp, status);
--
CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.daily_status_counts_mv TO {db}.daily_status_counts AS
SELECT toDate(occurred_at) AS day, business_number, bsp, status, count() AS events
FROM {db}.events
WHERE event_type = 'message.status'
GROUP BY day, business_number, bsp, status;
--
-- Rollup: per business number and day, sent → delivered latency quantiles.
CREATE TABLE IF NOT EXISTS {db}.daily_delivery_latency (
    day             Date,
    business_number String,
    latency_quantiles AggregateFunction(quantiles(0.5, 0.9, 0.99), Float64),
    deliveries      AggregateFunction(count)
) ENGINE = AggregatingMergeTree()
PARTITION BY toYYYYMM(day)
ORDER BY (business_number, day);
--
CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.daily_delivery_latency_mv TO {db}.daily_delivery_latency AS
SELECT toDate(occurred_at) AS day, business_number,
       quantilesState(0.5, 0.9, 0.99)(toFloat64(assumeNotNull(latency_ms))) AS latency_quantiles,
       countState() AS deliveries
FROM {db}.events
WHERE event_type = 'message.status' AND status = 'delivered' AND isNotNull(latency_ms)
GROUP BY day, business_number;
--
-- Read side of the rollups, so analysts need not know -Merge combinators:
--   SELECT day, business_number, quantilesMerge(0.5, 0.9, 0.99)(latency_quantiles)
--   FROM switchboard.daily_delivery_latency GROUP BY day, business_number
CREATE VIEW IF NOT EXISTS {db}.daily_summary AS
SELECT day, business_number,
       sumIf(events, status = 'sent') AS sent,
       sumIf(events, status = 'delivered') AS delivered,
       sumIf(events, status = 'read') AS read,
       sumIf(events, status = 'failed') AS failed
FROM {db}.daily_status_counts
GROUP BY day, business_number;
