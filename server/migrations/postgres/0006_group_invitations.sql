-- Being added to a group by someone you never wrote to (or while accepting invitations only) is
-- a pending invitation, not membership: no messages, events or presence until accepted.
ALTER TABLE users ADD COLUMN invites_only BIGINT NOT NULL DEFAULT 0;

CREATE TABLE group_invitations (
    group_id   TEXT NOT NULL REFERENCES chat_groups(id) ON DELETE CASCADE,
    user_id    TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    inviter    TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (group_id, user_id)
);
CREATE INDEX group_invitations_user ON group_invitations (user_id, created_at);
