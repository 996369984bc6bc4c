-- Client webhook endpoints (published to wa.config). `config` is the whole entity as
-- the processors see it (switchboard_schemas::config::Endpoint), secrets sealed with the
-- credentials keyring; the columns beside it are what the database itself needs.
CREATE TABLE IF NOT EXISTS endpoints (
    id            text        PRIMARY KEY,
    tenant_id     text        NOT NULL REFERENCES tenants (id),
    config        jsonb       NOT NULL,
    -- The first failure since the last success, kept by the fan-out; an endpoint failing
    -- for longer than its disable_after is disabled.
    failing_since timestamptz,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX IF NOT EXISTS endpoints_tenant ON endpoints (tenant_id, created_at);
