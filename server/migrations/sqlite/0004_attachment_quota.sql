-- Attachment uploads per account, for the per-account stored-bytes quota. The blob itself lives
-- in the blob store; rows older than the envelope time to live are swept with their blobs.
CREATE TABLE attachment_uploads (
    attachment_id TEXT PRIMARY KEY,
    user_id       TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    size          INTEGER NOT NULL,
    created_at    INTEGER NOT NULL
);
CREATE INDEX attachment_uploads_user ON attachment_uploads (user_id, created_at);
CREATE INDEX attachment_uploads_age ON attachment_uploads (created_at);
