-- One row per business number and customer (phone number or business-scoped user id):
-- the customer-service window and the conversation's latest activity. Written by the
-- normalizer before it publishes the events (db::conversations), so a client that
-- answers a forwarded inbound message always finds the window it opened. Every column
-- is a monotonic merge (latest time wins, ties broken by value), so repeats and any
-- order of events converge on the same row.
CREATE TABLE IF NOT EXISTS conversations (
    business_number    text        NOT NULL,
    customer_id        text        NOT NULL,
    tenant_id          text,
    first_inbound_at   timestamptz,
    last_inbound_at    timestamptz,
    last_inbound_wamid text,
    -- The latest inbound message that came from a Click-to-WhatsApp ad or a Page's call
    -- to action (its `referral`): it opens a 72-hour free entry point window.
    entry_point_at     timestamptz,
    entry_point_source text,
    window_expires_at  timestamptz,
    window_kind        text CHECK (window_kind IN ('service', 'free_entry_point')),
    last_outbound_at   timestamptz,
    pricing_category   text,
    pricing_at         timestamptz,
    last_activity_at   timestamptz NOT NULL,
    updated_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (business_number, customer_id)
);
-- A tenant's conversations, latest activity first (scanned backwards).
CREATE INDEX IF NOT EXISTS conversations_tenant_activity
    ON conversations (tenant_id, last_activity_at, business_number, customer_id);

-- Whether the send API and the router refuse free-form sends outside the window.
ALTER TABLE tenants ADD COLUMN IF NOT EXISTS enforce_service_window boolean NOT NULL DEFAULT true;
