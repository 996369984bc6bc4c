-- A conversation's messages, newest first (GET /v1/conversations/{number}/{customer}).
-- It also serves every look-up by customer alone, which the index it replaces served.
CREATE INDEX IF NOT EXISTS messages_conversation ON messages (customer_id, business_number, first_event_at);
DROP INDEX IF EXISTS messages_customer;
