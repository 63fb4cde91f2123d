-- A pending group invitation expires: it is no longer listed nor accepted after `expires_at`
-- (ms), and the expiry sweep deletes it. Invitations made before this migration get the default
-- time to live (7 days) from when they were made.
ALTER TABLE group_invitations ADD COLUMN expires_at BIGINT NOT NULL DEFAULT 0;
UPDATE group_invitations SET expires_at = created_at + 604800000;
CREATE INDEX group_invitations_expiry ON group_invitations (expires_at);
