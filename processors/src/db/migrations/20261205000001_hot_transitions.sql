-- The send path's transitions as HOT updates. PostgreSQL updates a row in place (no new
-- entry in any index) only when no indexed column changes, and a column named in a
-- partial index's predicate counts as indexed. The due index named `state`, so every
-- claim (queued -> sending) and every accept (sending -> accepted) wrote an entry into
-- all five indexes, about 65 us per row each (loadtest/REPORT.md, "Send path
-- re-measured"). Now `due_at` is set only while a send waits (scheduled, retrying) and
-- cleared when it leaves those states (db::outbox), the due index covers the rows that
-- have one, and the table leaves room on each page for the new versions.
UPDATE outbound_messages SET due_at = NULL
 WHERE due_at IS NOT NULL AND state NOT IN ('scheduled', 'retrying');
CREATE INDEX IF NOT EXISTS outbound_messages_due_at ON outbound_messages (due_at)
    WHERE due_at IS NOT NULL;
DROP INDEX IF EXISTS outbound_messages_due;
ALTER TABLE outbound_messages SET (fillfactor = 80);
