-- Current state of every message, one row per (bsp, wamid).
-- `status` is a monotonic merge by `status_rank`
-- (accepted 1 < sent 2 < failed 3 < delivered 4 < read 5 < played 6 < deleted 7):
-- it only ever moves up, so out-of-order and repeated webhooks converge.
CREATE TABLE IF NOT EXISTS messages (
    bsp                   text        NOT NULL,
    wamid                 text        NOT NULL,
    tenant_id             text,
    business_number       text        NOT NULL,
    business_account_id   text,
    customer_id           text        NOT NULL,
    direction             text        NOT NULL CHECK (direction IN ('outbound', 'inbound')),
    status                text,
    status_rank           smallint    NOT NULL DEFAULT 0,
    status_at             timestamptz,
    message_type          text,
    content               jsonb,
    context_wamid         text,
    error_code            text,
    error_title           text,
    error_detail          text,
    conversation_id       text,
    conversation_category text,
    pricing_category      text,
    billable              boolean,
    first_event_at        timestamptz NOT NULL,
    updated_at            timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (bsp, wamid)
);
CREATE INDEX IF NOT EXISTS messages_business_time ON messages (business_number, first_event_at);
CREATE INDEX IF NOT EXISTS messages_customer ON messages (customer_id);
CREATE INDEX IF NOT EXISTS messages_wamid ON messages (wamid);

-- Every distinct status event. Partitioned by month of `occurred_at` with no default
-- partition: the sink creates each month's partition before writing into it, and old
-- months are dropped whole. The primary key must contain the partition column; an
-- event id always comes with the same BSP timestamp (it is the same BSP fact), so
-- (event_id, occurred_at) is as unique as event_id.
CREATE TABLE IF NOT EXISTS message_status_history (
    event_id     text        NOT NULL,
    bsp          text        NOT NULL,
    wamid        text        NOT NULL,
    status       text        NOT NULL,
    occurred_at  timestamptz NOT NULL,
    received_at  timestamptz NOT NULL,
    error_code   text,
    error_title  text,
    -- When the sink committed it; accept → stored latency is stored_at - received_at.
    stored_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (event_id, occurred_at)
) PARTITION BY RANGE (occurred_at);
CREATE INDEX IF NOT EXISTS message_status_history_message ON message_status_history (bsp, wamid, occurred_at);
