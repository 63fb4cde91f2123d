-- Accounts, devices, tokens, prekeys and per-device mailboxes.
-- Times are milliseconds since the Unix epoch; u32 protocol values are stored as BIGINT.

CREATE TABLE users (
    id            TEXT PRIMARY KEY,
    username      TEXT NOT NULL UNIQUE,
    email         TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    identity_key  BYTEA,
    created_at    BIGINT NOT NULL
);

CREATE TABLE devices (
    pk              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    user_id         TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    device_id       BIGINT NOT NULL,
    registration_id BIGINT NOT NULL,
    created_at      BIGINT NOT NULL,
    -- last sequence number handed out in this device's mailbox
    last_seq        BIGINT NOT NULL DEFAULT 0,
    UNIQUE (user_id, device_id)
);

-- Bearer tokens, stored as SHA-256 of the token.
CREATE TABLE tokens (
    token_hash BYTEA PRIMARY KEY,
    device_pk  BIGINT NOT NULL REFERENCES devices(pk) ON DELETE CASCADE,
    created_at BIGINT NOT NULL
);
CREATE INDEX tokens_device ON tokens (device_pk);

-- kind 0: signed EC prekey; kind 1: last-resort KEM prekey. One of each per device.
CREATE TABLE signed_prekeys (
    device_pk  BIGINT NOT NULL REFERENCES devices(pk) ON DELETE CASCADE,
    kind       BIGINT NOT NULL,
    key_id     BIGINT NOT NULL,
    public_key BYTEA NOT NULL,
    signature  BYTEA NOT NULL,
    PRIMARY KEY (device_pk, kind)
);

-- kind 0: one-time EC prekey (no signature); kind 1: one-time KEM prekey (signed).
CREATE TABLE one_time_prekeys (
    device_pk  BIGINT NOT NULL REFERENCES devices(pk) ON DELETE CASCADE,
    kind       BIGINT NOT NULL,
    key_id     BIGINT NOT NULL,
    public_key BYTEA NOT NULL,
    signature  BYTEA NOT NULL,
    PRIMARY KEY (device_pk, kind, key_id)
);

-- kind 0: message; kind 1: delivery receipt (no content).
CREATE TABLE envelopes (
    device_pk         BIGINT NOT NULL REFERENCES devices(pk) ON DELETE CASCADE,
    seq               BIGINT NOT NULL,
    kind              BIGINT NOT NULL,
    source_user       TEXT NOT NULL,
    source_device     BIGINT NOT NULL,
    server_message_id TEXT NOT NULL,
    client_message_id TEXT NOT NULL,
    server_ts         BIGINT NOT NULL,
    expires_at        BIGINT NOT NULL,
    content           BYTEA,
    PRIMARY KEY (device_pk, seq)
);
CREATE INDEX envelopes_expiry ON envelopes (expires_at);

-- Idempotency records: one per accepted send, per sending device.
CREATE TABLE sent_messages (
    device_pk         BIGINT NOT NULL REFERENCES devices(pk) ON DELETE CASCADE,
    client_message_id TEXT NOT NULL,
    server_message_id TEXT NOT NULL,
    server_ts         BIGINT NOT NULL,
    PRIMARY KEY (device_pk, client_message_id)
);
CREATE INDEX sent_messages_ts ON sent_messages (server_ts);
