-- The configuration plane (source of truth; published to wa.config) and the send path's
-- per-message state machine. Owned by the gateway; the router runs the same migrations.

CREATE TABLE IF NOT EXISTS tenants (
    id               text        PRIMARY KEY,
    name             text        NOT NULL,
    default_number   text,
    api_rate_per_sec integer     NOT NULL DEFAULT 100 CHECK (api_rate_per_sec > 0),
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT clock_timestamp()
);

-- Keys are shown once; only their SHA-256 is kept.
CREATE TABLE IF NOT EXISTS api_keys (
    id         text        PRIMARY KEY,
    tenant_id  text        NOT NULL REFERENCES tenants (id),
    hash       text        NOT NULL UNIQUE,
    prefix     text        NOT NULL,
    name       text        NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz,
    updated_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX IF NOT EXISTS api_keys_tenant ON api_keys (tenant_id);

-- One WhatsApp number belongs to one tenant.
CREATE TABLE IF NOT EXISTS business_numbers (
    number              text        PRIMARY KEY,
    tenant_id           text        NOT NULL REFERENCES tenants (id),
    bsp                 text        NOT NULL,
    bsp_account_id      text        NOT NULL,
    tier_mps            integer     NOT NULL CHECK (tier_mps > 0),
    failover_bsp        text,
    failover_account_id text,
    updated_at          timestamptz NOT NULL DEFAULT clock_timestamp(),
    UNIQUE (bsp, bsp_account_id)
);
CREATE INDEX IF NOT EXISTS business_numbers_tenant ON business_numbers (tenant_id);

-- AES-256-GCM, key id kept so a keyring rotation can find what to re-encrypt.
CREATE TABLE IF NOT EXISTS bsp_credentials (
    tenant_id  text        NOT NULL REFERENCES tenants (id),
    bsp        text        NOT NULL,
    key_id     text        NOT NULL,
    ciphertext text        NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (tenant_id, bsp)
);

-- One row per message sent through the API. `state` is the send state machine:
--   queued | scheduled | retrying  (waiting; scheduled/retrying until due_at)
--   sending                        (intent recorded: a BSP call may be in flight)
--   accepted | failed | unknown | cancelled   (final)
-- The router moves queued -> sending atomically before calling a BSP, so a request
-- redelivered by Kafka (or published twice) can never be sent twice.
CREATE TABLE IF NOT EXISTS outbound_messages (
    message_id       text        PRIMARY KEY,
    tenant_id        text        NOT NULL,
    idempotency_key  text,
    request_hash     text        NOT NULL,
    response         jsonb       NOT NULL,
    from_number      text        NOT NULL,
    to_id            text        NOT NULL,
    message_type     text        NOT NULL,
    message          jsonb       NOT NULL,
    metadata         jsonb,
    request_id       text        NOT NULL,
    state            text        NOT NULL CHECK (state IN ('queued', 'scheduled', 'retrying', 'sending', 'accepted', 'failed', 'unknown', 'cancelled')),
    published        boolean     NOT NULL DEFAULT false,
    scheduled_at     timestamptz,
    due_at           timestamptz,
    attempts         integer     NOT NULL DEFAULT 0,
    first_attempt_at timestamptz,
    bsp              text,
    wamid            text,
    error_code       text,
    error_detail     text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, idempotency_key)
);
CREATE INDEX IF NOT EXISTS outbound_messages_due ON outbound_messages (due_at) WHERE state IN ('scheduled', 'retrying');
CREATE INDEX IF NOT EXISTS outbound_messages_unpublished ON outbound_messages (created_at) WHERE NOT published;
CREATE INDEX IF NOT EXISTS outbound_messages_tenant_time ON outbound_messages (tenant_id, created_at DESC, message_id DESC);
