-- Payloads between relay processes too large for a NOTIFY (8,000 bytes): the notification names
-- the row instead. Rows live a minute (deleted by the next spill after that).
CREATE TABLE cluster_spill (
    id BIGSERIAL PRIMARY KEY,
    body TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX cluster_spill_created_at ON cluster_spill (created_at);
