-- Dedupe store of the normalizer: event ids already written to wa.events.
-- Kept (by default) 14 days, longer than BSPs retry webhooks (Meta: up to 7 days).
CREATE TABLE IF NOT EXISTS dedupe_events (
    event_id   text        PRIMARY KEY,
    first_seen timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS dedupe_events_first_seen ON dedupe_events (first_seen);
