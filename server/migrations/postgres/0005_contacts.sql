-- `user_id` has sent `contact_id` a 1:1 message: `contact_id` may see `user_id`'s presence
-- (besides co-members of a group), and `user_id` reached out, so `contact_id` adding `user_id`
-- to a group is not a stranger's add.
CREATE TABLE contacts (
    user_id    TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    contact_id TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    PRIMARY KEY (user_id, contact_id)
);
