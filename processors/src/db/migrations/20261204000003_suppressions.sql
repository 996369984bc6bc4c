-- Customers who stopped marketing messages, per tenant (db::suppressions). A row is the
-- latest change: a customer's stop or resume (Meta's user_preferences webhook), a BSP's
-- 131050 refusal, or the tenant's own add or remove through the API. Changes merge by
-- their time (a stop wins a tie), so repeated and reordered webhooks converge.
CREATE TABLE IF NOT EXISTS suppressions (
    tenant_id       text        NOT NULL,
    customer_id     text        NOT NULL,
    suppressed      boolean     NOT NULL,
    source          text        NOT NULL CHECK (source IN ('user_preferences', 'bsp_error', 'api')),
    detail          text,
    business_number text,
    changed_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, customer_id)
);
CREATE INDEX IF NOT EXISTS suppressions_list
    ON suppressions (tenant_id, changed_at, customer_id) WHERE suppressed;
