-- Inbound media kept by Switchboard (db::media): each blob once, by the SHA-256 of its
-- bytes, in the object store; which tenant's message (BSP, wamid) refers to which blob.
-- A tenant may read a blob only through a reference of its own.
CREATE TABLE IF NOT EXISTS media_blobs (
    sha256     text        PRIMARY KEY,
    size       bigint      NOT NULL,
    mime_type  text        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS media_refs (
    tenant_id  text        NOT NULL,
    bsp        text        NOT NULL,
    wamid      text        NOT NULL,
    sha256     text        NOT NULL REFERENCES media_blobs (sha256),
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, bsp, wamid)
);
CREATE INDEX IF NOT EXISTS media_refs_blob ON media_refs (tenant_id, sha256);
