-- Messages sent through the send API: Switchboard's message id and the sender's
-- metadata, from `send accepted` / `send failed` events. Status webhooks join the same
-- row by (bsp, wamid).
ALTER TABLE messages ADD COLUMN IF NOT EXISTS message_id text;
ALTER TABLE messages ADD COLUMN IF NOT EXISTS metadata jsonb;
CREATE INDEX IF NOT EXISTS messages_message_id ON messages (message_id) WHERE message_id IS NOT NULL;
