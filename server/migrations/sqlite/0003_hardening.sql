-- A digest of each send stored with its idempotency key, so a reused clientMessageId with another
-- body is refused instead of answered as a duplicate. NULL for sends stored before this migration.
ALTER TABLE sent_messages ADD COLUMN digest BLOB;

-- Usernames are unique case-insensitively (spelling kept). Not a unique index: accounts that
-- differ only by case may predate this rule; registration checks under the single writer.
CREATE INDEX users_username_folded ON users (lower(username));
