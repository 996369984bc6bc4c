-- Campaigns (db::campaigns): one template to an audience, released by the routers at
-- the numbers' pace. Each recipient becomes one send through the send path, under the
-- idempotency key `campaign:<id>:<recipient>`, so no crash or restart sends it twice.
CREATE TABLE IF NOT EXISTS campaigns (
    id                text        PRIMARY KEY,
    tenant_id         text        NOT NULL,
    name              text        NOT NULL,
    state             text        NOT NULL CHECK (state IN ('draft', 'scheduled', 'running', 'paused', 'cancelled', 'completed')),
    template_name     text        NOT NULL,
    template_language text        NOT NULL,
    from_numbers      text[]      NOT NULL,
    metadata          jsonb,
    scheduled_at      timestamptz,
    time_zone         text,
    -- Sends per second the campaign releases across its numbers (under their tiers).
    rate_per_sec      integer     NOT NULL CHECK (rate_per_sec > 0),
    total             integer     NOT NULL,
    invalid           integer     NOT NULL,
    duplicates        integer     NOT NULL,
    suppressed        integer     NOT NULL,
    -- Why the campaign is waiting, while running (e.g. the daily limit).
    waiting           text,
    created_at        timestamptz NOT NULL DEFAULT now(),
    started_at        timestamptz,
    finished_at       timestamptz,
    updated_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS campaigns_tenant ON campaigns (tenant_id, created_at);
CREATE INDEX IF NOT EXISTS campaigns_active ON campaigns (state) WHERE state IN ('scheduled', 'running');

-- The valid, distinct recipients in audience order; invalid and duplicate entries are
-- only counted. `pending` until released as a send (`released`, with its message id),
-- or `skipped` (suppressed, cancelled).
CREATE TABLE IF NOT EXISTS campaign_recipients (
    campaign_id text        NOT NULL,
    position    integer     NOT NULL,
    recipient   text        NOT NULL,
    parameters  jsonb,
    state       text        NOT NULL CHECK (state IN ('pending', 'released', 'skipped')),
    skip_reason text,
    message_id  text,
    released_at timestamptz,
    PRIMARY KEY (campaign_id, position),
    UNIQUE (campaign_id, recipient)
);
CREATE INDEX IF NOT EXISTS campaign_recipients_pending
    ON campaign_recipients (campaign_id, position) WHERE state = 'pending';
CREATE INDEX IF NOT EXISTS campaign_recipients_released_day
    ON campaign_recipients (released_at) WHERE state = 'released';

-- The business portfolio's daily limit of unique customers reached by templates
-- (Meta: 250, 2,000, 10,000, 100,000 or unlimited); campaigns spread over days to keep
-- under it. NULL: unlimited.
ALTER TABLE tenants ADD COLUMN IF NOT EXISTS daily_unique_limit integer CHECK (daily_unique_limit > 0);
