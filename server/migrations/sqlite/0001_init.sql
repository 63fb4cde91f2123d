-- Accounts, devices, tokens, prekeys and per-device mailboxes.
-- Times are milliseconds since the Unix epoch; u32 protocol values are stored as INTEGER.

CREATE TABLE users (
    id            TEXT PRIMARY KEY,
    username      TEXT NOT NULL UNIQUE,
    email         TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    identity_key  BLOB,
    created_at    INTEGER NOT NULL
);

CREATE TABLE devices (
    pk              INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id         TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    device_id       INTEGER NOT NULL,
    registration_id INTEGER NOT NULL,
    created_at      INTEGER NOT NULL,
    -- last sequence number handed out in this device's mailbox
    last_seq        INTEGER NOT NULL DEFAULT 0,
    UNIQUE (user_id, device_id)
);

-- Bearer tokens, stored as SHA-256 of the token.
CREATE TABLE tokens (
    token_hash BLOB PRIMARY KEY,
    device_pk  INTEGER NOT NULL REFERENCES devices(pk) ON DELETE CASCADE,
    created_at INTEGER NOT NULL
);
CREATE INDEX tokens_device ON tokens (device_pk);

-- kind 0: signed EC prekey; kind 1: last-resort KEM prekey. One of each per device.
CREATE TABLE signed_prekeys (
    device_pk  INTEGER NOT NULL REFERENCES devices(pk) ON DELETE CASCADE,
    kind       INTEGER NOT NULL,
    key_id     INTEGER NOT NULL,
    public_key BLOB NOT NULL,
    signature  BLOB NOT NULL,
    PRIMARY KEY (device_pk, kind)
);

-- kind 0: one-time EC prekey (no signature); kind 1: one-time KEM prekey (signed).
CREATE TABLE one_time_prekeys (
    device_pk  INTEGER NOT NULL REFERENCES devices(pk) ON DELETE CASCADE,
    kind       INTEGER NOT NULL,
    key_id     INTEGER NOT NULL,
    public_key BLOB NOT NULL,
    signature  BLOB NOT NULL,
    PRIMARY KEY (device_pk, kind, key_id)
);

-- kind 0: message; kind 1: delivery receipt (no content).
CREATE TABLE envelopes (
    device_pk         INTEGER NOT NULL REFERENCES devices(pk) ON DELETE CASCADE,
    seq               INTEGER NOT NULL,
    kind              INTEGER NOT NULL,
    source_user       TEXT NOT NULL,
    source_device     INTEGER NOT NULL,
    server_message_id TEXT NOT NULL,
    client_message_id TEXT NOT NULL,
    server_ts         INTEGER NOT NULL,
    expires_at        INTEGER NOT NULL,
    content           BLOB,
    PRIMARY KEY (device_pk, seq)
);
CREATE INDEX envelopes_expiry ON envelopes (expires_at);

-- Idempotency records: one per accepted send, per sending device.
CREATE TABLE sent_messages (
    device_pk         INTEGER NOT NULL REFERENCES devices(pk) ON DELETE CASCADE,
    client_message_id TEXT NOT NULL,
    server_message_id TEXT NOT NULL,
    server_ts         INTEGER NOT NULL,
    PRIMARY KEY (device_pk, client_message_id)
);
CREATE INDEX sent_messages_ts ON sent_messages (server_ts);
