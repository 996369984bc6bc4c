-- The delivery log: one row per delivery attempt (made or skipped) from
-- wa.deliveries.attempts. Daily partitions so retention drops whole days
-- (ALTER TABLE ... DROP PARTITION; TTL needs ClickHouse 19.6+, and 18.16 is what Debian
-- ships). status_code 0 = no HTTP answer. Valid on 18.16 and current releases.
CREATE TABLE IF NOT EXISTS {db}.delivery_attempts (
    attempt_id       String,
    endpoint_id      String,
    tenant_id        String,
    event_id         String,
    event_type       String,
    attempt          UInt16,
    trigger          String,
    outcome          String,
    status_code      UInt16,
    latency_ms       UInt32,
    error            String,
    response_snippet String,
    attempted_at     DateTime,
    attempted_at_ms  UInt64,
    is_final         UInt8,
    body             String
) ENGINE = ReplacingMergeTree()
PARTITION BY toYYYYMMDD(attempted_at)
ORDER BY (endpoint_id, attempted_at, attempt_id);
--
-- Rollup: per endpoint and hour, HTTP attempts made, how many delivered, and latency.
-- Skipped attempts (breaker open, disabled, blocked address) are in the log, not here.
CREATE TABLE IF NOT EXISTS {db}.delivery_stats_hourly (
    hour              DateTime,
    endpoint_id       String,
    tenant_id         String,
    attempts          AggregateFunction(count),
    delivered         AggregateFunction(sum, UInt64),
    latency_quantiles AggregateFunction(quantiles(0.5, 0.9, 0.99), Float64)
) ENGINE = AggregatingMergeTree()
PARTITION BY toYYYYMM(hour)
ORDER BY (endpoint_id, hour, tenant_id);
--
CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.delivery_stats_hourly_mv TO {db}.delivery_stats_hourly AS
SELECT toStartOfHour(attempted_at) AS hour, endpoint_id, tenant_id,
       countState() AS attempts,
       sumState(toUInt64(outcome = 'delivered')) AS delivered,
       quantilesState(0.5, 0.9, 0.99)(toFloat64(latency_ms)) AS latency_quantiles
FROM {db}.delivery_attempts
WHERE outcome IN ('delivered', 'failed', 'aborted')
GROUP BY hour, endpoint_id, tenant_id;
