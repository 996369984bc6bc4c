-- Analytics: what each event means for its message, per-message state, and rollups per
-- tenant in 15-minute slots (UTC). 15 minutes, not hours, because every time zone in use
-- is a whole number of quarter hours from UTC (India +5:30, Nepal +5:45): a day or hour
-- in the tenant's zone is an exact union of slots.
--
-- `stages` are the funnel stages an event stands for (1 sent, 2 delivered, 4 read,
-- 8 failed, 16 priced; read implies delivered implies sent); `credits` are the stages
-- its message reaches for the first time with it (sinks/src/ch/credit.rs). Rollups sum
-- credits, so they count messages, once, whatever the order and repeats of statuses.
--
-- Existing databases are upgraded in place: the sink adds a column only if
-- system.columns lacks it (18.16 has no ADD COLUMN IF NOT EXISTS). New columns go at the
-- end, in this order, matching the sink's row type.
ALTER TABLE {db}.events ADD COLUMN pricing_model String DEFAULT '';
ALTER TABLE {db}.events ADD COLUMN pricing_type String DEFAULT '';
ALTER TABLE {db}.events ADD COLUMN billable UInt8 DEFAULT 0;
ALTER TABLE {db}.events ADD COLUMN template_name String DEFAULT '';
ALTER TABLE {db}.events ADD COLUMN template_language String DEFAULT '';
ALTER TABLE {db}.events ADD COLUMN country String DEFAULT '';
ALTER TABLE {db}.events ADD COLUMN error_title String DEFAULT '';
ALTER TABLE {db}.events ADD COLUMN campaign String DEFAULT '';
ALTER TABLE {db}.events ADD COLUMN stages UInt8 DEFAULT 0;
ALTER TABLE {db}.events ADD COLUMN credits UInt8 DEFAULT 0;
ALTER TABLE {db}.events ADD COLUMN sent_at_ms UInt64 DEFAULT 0;
ALTER TABLE {db}.events ADD COLUMN read_latency_ms Nullable(UInt32);
--
-- One row per message once merged (query with GROUP BY and -Merge): what it reached,
-- when it first reached each stage, and what it was. Converges under repeats and any
-- arrival order: every column is a min, an OR or the one non-empty value.
CREATE TABLE IF NOT EXISTS {db}.message_state (
    wamid             String,
    bsp               String,
    tenant_id         AggregateFunction(anyIf, String, UInt8),
    business_number   AggregateFunction(any, String),
    customer_id       AggregateFunction(any, String),
    country           AggregateFunction(any, String),
    reached           AggregateFunction(groupBitOr, UInt8),
    sent_at_ms        AggregateFunction(minIf, UInt64, UInt8),
    delivered_at_ms   AggregateFunction(minIf, UInt64, UInt8),
    read_at_ms        AggregateFunction(minIf, UInt64, UInt8),
    failed_at_ms      AggregateFunction(minIf, UInt64, UInt8),
    template_name     AggregateFunction(anyIf, String, UInt8),
    template_language AggregateFunction(anyIf, String, UInt8),
    campaign          AggregateFunction(anyIf, String, UInt8),
    pricing_category  AggregateFunction(anyIf, String, UInt8),
    pricing_type      AggregateFunction(anyIf, String, UInt8),
    billable          AggregateFunction(max, UInt8),
    error_code        AggregateFunction(anyIf, String, UInt8)
) ENGINE = AggregatingMergeTree()
ORDER BY (wamid, bsp);
--
CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.message_state_mv TO {db}.message_state AS
SELECT wamid, bsp,
       anyIfState(tenant_id, tenant_id != '') AS tenant_id,
       anyState(business_number) AS business_number,
       anyState(customer_id) AS customer_id,
       anyState(country) AS country,
       groupBitOrState(stages) AS reached,
       minIfState(sent_at_ms, sent_at_ms > 0) AS sent_at_ms,
       minIfState(occurred_at_ms, bitAnd(stages, 2) != 0) AS delivered_at_ms,
       minIfState(occurred_at_ms, bitAnd(stages, 4) != 0) AS read_at_ms,
       minIfState(occurred_at_ms, bitAnd(stages, 8) != 0) AS failed_at_ms,
       anyIfState(template_name, template_name != '') AS template_name,
       anyIfState(template_language, template_language != '') AS template_language,
       anyIfState(campaign, campaign != '') AS campaign,
       anyIfState(pricing_category, pricing_category != '') AS pricing_category,
       anyIfState(pricing_type, pricing_type != '') AS pricing_type,
       maxState(billable) AS billable,
       anyIfState(error_code, error_code != '') AS error_code
FROM {db}.events
WHERE stages != 0
GROUP BY wamid, bsp;
--
-- Funnel per template and language, business number, BSP and country: messages that
-- first reached each stage in the slot (a read counts as delivered).
CREATE TABLE IF NOT EXISTS {db}.funnel_slots (
    tenant_id          String,
    slot               DateTime,
    business_number    String,
    bsp                String,
    country            String,
    template_name      String,
    template_language  String,
    sent_messages      UInt64,
    delivered_messages UInt64,
    read_messages      UInt64,
    failed_messages    UInt64
) ENGINE = SummingMergeTree()
PARTITION BY toYYYYMM(slot)
ORDER BY (tenant_id, slot, business_number, bsp, country, template_name, template_language);
--
CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.funnel_slots_mv TO {db}.funnel_slots AS
SELECT tenant_id, toStartOfFifteenMinutes(occurred_at) AS slot, business_number, bsp,
       country, template_name, template_language,
       sum(toUInt64(bitAnd(credits, 1) != 0)) AS sent_messages,
       sum(toUInt64(bitAnd(credits, 2) != 0)) AS delivered_messages,
       sum(toUInt64(bitAnd(credits, 4) != 0)) AS read_messages,
       sum(toUInt64(bitAnd(credits, 8) != 0)) AS failed_messages
FROM {db}.events
WHERE bitAnd(credits, 15) != 0
GROUP BY tenant_id, slot, business_number, bsp, country, template_name, template_language;
--
-- Failed messages by error code (the title is the one of any failure with that code).
CREATE TABLE IF NOT EXISTS {db}.failure_slots (
    tenant_id       String,
    slot            DateTime,
    business_number String,
    bsp             String,
    country         String,
    error_code      String,
    error_title     String,
    failed_messages UInt64
) ENGINE = SummingMergeTree()
PARTITION BY toYYYYMM(slot)
ORDER BY (tenant_id, slot, business_number, bsp, country, error_code);
--
CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.failure_slots_mv TO {db}.failure_slots AS
SELECT tenant_id, toStartOfFifteenMinutes(occurred_at) AS slot, business_number, bsp,
       country, error_code, any(error_title) AS error_title, count() AS failed_messages
FROM {db}.events
WHERE bitAnd(credits, 8) != 0
GROUP BY tenant_id, slot, business_number, bsp, country, error_code;
--
-- Priced messages by the dimensions of Meta's pricing_analytics (phone number, country,
-- pricing category and type), counted once per message when pricing first arrives.
CREATE TABLE IF NOT EXISTS {db}.billing_slots (
    tenant_id         String,
    slot              DateTime,
    business_number   String,
    bsp               String,
    country           String,
    pricing_category  String,
    pricing_type      String,
    pricing_model     String,
    priced_messages   UInt64,
    billable_messages UInt64
) ENGINE = SummingMergeTree()
PARTITION BY toYYYYMM(slot)
ORDER BY (tenant_id, slot, business_number, bsp, country, pricing_category, pricing_type, pricing_model);
--
CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.billing_slots_mv TO {db}.billing_slots AS
SELECT tenant_id, toStartOfFifteenMinutes(occurred_at) AS slot, business_number, bsp,
       country, pricing_category, pricing_type, pricing_model,
       count() AS priced_messages, sum(toUInt64(billable)) AS billable_messages
FROM {db}.events
WHERE bitAnd(credits, 16) != 0
GROUP BY tenant_id, slot, business_number, bsp, country, pricing_category, pricing_type, pricing_model;
--
-- Send → delivered and send → read latency, of messages whose send time is known.
CREATE TABLE IF NOT EXISTS {db}.latency_slots (
    tenant_id        String,
    slot             DateTime,
    business_number  String,
    bsp              String,
    country          String,
    delivered_messages AggregateFunction(countIf, UInt8),
    delivered_ms       AggregateFunction(quantilesIf(0.5, 0.9, 0.99), Float64, UInt8),
    read_messages      AggregateFunction(countIf, UInt8),
    read_ms            AggregateFunction(quantilesIf(0.5, 0.9, 0.99), Float64, UInt8)
) ENGINE = AggregatingMergeTree()
PARTITION BY toYYYYMM(slot)
ORDER BY (tenant_id, slot, business_number, bsp, country);
--
CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.latency_slots_mv TO {db}.latency_slots AS
SELECT tenant_id, toStartOfFifteenMinutes(occurred_at) AS slot, business_number, bsp, country,
       countIfState(isNotNull(latency_ms)) AS delivered_messages,
       quantilesIfState(0.5, 0.9, 0.99)(toFloat64(ifNull(latency_ms, 0)), isNotNull(latency_ms)) AS delivered_ms,
       countIfState(isNotNull(read_latency_ms)) AS read_messages,
       quantilesIfState(0.5, 0.9, 0.99)(toFloat64(ifNull(read_latency_ms, 0)), isNotNull(read_latency_ms)) AS read_ms
FROM {db}.events
WHERE bitAnd(credits, 6) != 0 AND (isNotNull(latency_ms) OR isNotNull(read_latency_ms))
GROUP BY tenant_id, slot, business_number, bsp, country;
--
-- Inbound customer messages by type.
CREATE TABLE IF NOT EXISTS {db}.inbound_slots (
    tenant_id         String,
    slot              DateTime,
    business_number   String,
    bsp               String,
    country           String,
    message_type      String,
    received_messages UInt64
) ENGINE = SummingMergeTree()
PARTITION BY toYYYYMM(slot)
ORDER BY (tenant_id, slot, business_number, bsp, country, message_type);
--
CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.inbound_slots_mv TO {db}.inbound_slots AS
SELECT tenant_id, toStartOfFifteenMinutes(occurred_at) AS slot, business_number, bsp,
       country, message_type, count() AS received_messages
FROM {db}.events
WHERE event_type = 'message.received'
GROUP BY tenant_id, slot, business_number, bsp, country, message_type;
