-- The WhatsApp Business Account a number belongs to: where its templates live.
ALTER TABLE business_numbers ADD COLUMN IF NOT EXISTS waba_id text;

-- Message templates as the BSP has them (db::templates), synced by the routers. One row
-- per tenant, WABA, name and language; `needs` is what a send of it must carry.
CREATE TABLE IF NOT EXISTS templates (
    tenant_id  text        NOT NULL,
    waba_id    text        NOT NULL,
    name       text        NOT NULL,
    language   text        NOT NULL,
    status     text        NOT NULL,
    category   text        NOT NULL,
    components jsonb       NOT NULL,
    needs      jsonb       NOT NULL,
    synced_at  timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, waba_id, name, language)
);
CREATE INDEX IF NOT EXISTS templates_name ON templates (tenant_id, name, language);

-- One sync per WABA at a time across routers, and its last outcome.
CREATE TABLE IF NOT EXISTS template_syncs (
    waba_id    text        PRIMARY KEY,
    tenant_id  text        NOT NULL,
    started_at timestamptz NOT NULL,
    synced_at  timestamptz,
    templates  integer,
    error      text
);
