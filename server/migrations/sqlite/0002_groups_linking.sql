-- Groups (membership for routing, encrypted metadata), group messages stored once and referenced
-- from every member device's mailbox, invites, linking codes and last-seen times.

CREATE TABLE chat_groups (
    id         TEXT PRIMARY KEY,
    metadata   BLOB NOT NULL,
    revision   INTEGER NOT NULL,
    created_at INTEGER NOT NULL
);

-- role 0: member; role 1: admin.
CREATE TABLE group_members (
    group_id  TEXT NOT NULL REFERENCES chat_groups(id) ON DELETE CASCADE,
    user_id   TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    role      INTEGER NOT NULL,
    joined_at INTEGER NOT NULL,
    PRIMARY KEY (group_id, user_id)
);
CREATE INDEX group_members_user ON group_members (user_id);

-- Invite tokens, stored as SHA-256 of the token.
CREATE TABLE group_invites (
    token_hash BLOB PRIMARY KEY,
    invite_id  TEXT NOT NULL UNIQUE,
    group_id   TEXT NOT NULL REFERENCES chat_groups(id) ON DELETE CASCADE,
    created_by TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE INDEX group_invites_group ON group_invites (group_id);

-- One row per group send: the shared ciphertext, stored once.
CREATE TABLE group_messages (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    group_id   TEXT NOT NULL,
    content    BLOB NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE INDEX group_messages_expiry ON group_messages (expires_at);

-- kind 2 (group message) mailbox rows carry no content but a reference.
ALTER TABLE envelopes ADD COLUMN group_message_id INTEGER REFERENCES group_messages(id) ON DELETE CASCADE;
CREATE INDEX envelopes_group_message ON envelopes (group_message_id) WHERE group_message_id IS NOT NULL;

-- One-time device linking codes, stored as SHA-256 of the code.
CREATE TABLE link_codes (
    code_hash  BLOB PRIMARY KEY,
    user_id    TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);

CREATE TABLE last_seen (
    user_id TEXT PRIMARY KEY REFERENCES users(id) ON DELETE CASCADE,
    seen_at INTEGER NOT NULL
);
