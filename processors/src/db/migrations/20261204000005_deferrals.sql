-- Times a send was put back because Meta would not deliver more marketing messages to its
-- customer for now (per-user marketing limit, error 131049): db::outbox::defer_capped.
ALTER TABLE outbound_messages ADD COLUMN IF NOT EXISTS deferrals integer NOT NULL DEFAULT 0;
