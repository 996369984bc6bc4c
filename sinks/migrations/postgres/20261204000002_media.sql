-- Where Switchboard keeps an inbound message's media (from `message.media_stored`):
-- the blob's SHA-256 (GET /v1/media/{sha256}), size and MIME type.
ALTER TABLE messages ADD COLUMN IF NOT EXISTS media_sha256 text;
ALTER TABLE messages ADD COLUMN IF NOT EXISTS media_size bigint;
ALTER TABLE messages ADD COLUMN IF NOT EXISTS media_mime_type text;
