-- Compact keys: an event id is `evt_` and 32 hex digits; the store keeps the 16 bytes
-- they stand for, so its primary key, probed and extended for every event, is half the
-- size. `first_seen` gets a BRIN index: ids arrive in time order and pruning reads the
-- oldest range, and a BRIN costs next to nothing per insert where the btree was a second
-- index to update for every event. Existing ids are carried over once.
CREATE TABLE IF NOT EXISTS dedupe_ids (
    id         bytea       PRIMARY KEY,
    first_seen timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS dedupe_ids_first_seen ON dedupe_ids USING brin (first_seen);
INSERT INTO dedupe_ids (id, first_seen)
SELECT decode(substr(event_id, 5), 'hex'), first_seen
FROM dedupe_events
WHERE event_id ~ '^evt_[0-9a-f]{32}$'
ORDER BY first_seen
ON CONFLICT DO NOTHING;
DROP TABLE IF EXISTS dedupe_events;
