//! Storage for groups, group fan-out, device linking and last-seen times.
//!
//! ```text
//!  chat_groups ──< group_members (role)          group_invites (token hash, expiry)
//!  group_messages: one row per group send, holding the shared ciphertext once
//!  envelopes.group_message_id ──▶ group_messages  one reference row per member device
//! ```
//!
//! A group send writes one `group_messages` row and, with two set-based statements whatever the
//! member count, bumps every member device's mailbox sequence and inserts one reference envelope
//! per device; mailbox reads join the ciphertext back in. Membership changes queue a relay-written
//! [`GroupEvent`](sotto_wire::GroupEvent) envelope for every member device in the same transaction. A group message row
//! lives until no mailbox references it (or it expires).
//!
//! Both backends run the same statements (SQLite accepts `$n` placeholders); `group_queries!`
//! expands them for a connection type. PostgreSQL additionally locks the group row for membership
//! changes and the device rows, in `pk` order like every other writer, before bumping sequences.
//! Each operation checks everything before it writes, so a refusal leaves nothing behind.

use async_trait::async_trait;

use super::{DeviceAuth, DeviceMismatch, StoreError, Target};

/// Roles in `group_members.role`.
pub const ROLE_MEMBER: i64 = 0;
/// Admin role.
pub const ROLE_ADMIN: i64 = 1;

/// Envelope kind of a group message reference.
pub const ENVELOPE_GROUP_MESSAGE: i64 = 2;
/// Envelope kind of a relay-written group event.
pub const ENVELOPE_GROUP_EVENT: i64 = 3;

/// A new group.
#[derive(Debug, Clone)]
pub struct NewGroup {
    /// Group id (UUID).
    pub id: String,
    /// The creating device (becomes admin).
    pub creator: DeviceAuth,
    /// Other initial members (distinct, without the creator).
    pub members: Vec<String>,
    /// Encrypted metadata.
    pub metadata: Vec<u8>,
    /// Now (ms).
    pub now: i64,
    /// Expiry of the event envelopes.
    pub expires_at: i64,
    /// Whether users who never wrote to the creator (or accept invitations only) get a pending
    /// invitation instead of membership.
    pub consent: bool,
    /// When the pending invitations this write makes expire (ms).
    pub invitation_expires_at: i64,
}

/// A membership operation by `actor`.
#[derive(Debug, Clone)]
pub enum MemberOp {
    /// An admin adds users.
    Add(Vec<String>),
    /// The actor joins with an invite token (its hash).
    JoinWithInvite([u8; 32]),
    /// The actor leaves.
    Leave,
    /// An admin removes a member.
    Remove(String),
    /// An admin sets a member's role.
    SetRole(String, i64),
    /// The actor accepts their pending invitation.
    AcceptInvitation,
    /// The actor declines their pending invitation.
    DeclineInvitation,
    /// The inviter or an admin cancels the pending invitation of this user.
    CancelInvitation(String),
}

/// A membership change request.
#[derive(Debug, Clone)]
pub struct MemberChange {
    /// Group id.
    pub group_id: String,
    /// Who asks.
    pub actor: DeviceAuth,
    /// What.
    pub op: MemberOp,
    /// Group size limit.
    pub max_size: u32,
    /// Now (ms).
    pub now: i64,
    /// Expiry of the event envelopes.
    pub expires_at: i64,
    /// See [`NewGroup::consent`].
    pub consent: bool,
    /// See [`NewGroup::invitation_expires_at`].
    pub invitation_expires_at: i64,
}

/// Outcome of a group write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupWrite {
    /// Applied (or nothing to do); wake these mailboxes.
    Done {
        /// Revision after the change.
        revision: i64,
        /// Mailboxes that received an event.
        notify: Vec<i64>,
    },
    /// No such group, or the actor is not a member.
    NotMember,
    /// The actor is a member but not an admin.
    NotAdmin,
    /// These users do not exist.
    UnknownUsers(Vec<String>),
    /// The target user is not a member.
    UnknownMember,
    /// No such invite in this group.
    UnknownInvite,
    /// The last admin cannot step down.
    LastAdmin,
    /// The change would exceed the size limit.
    GroupFull,
    /// The invite token is unknown, expired, revoked or for another group.
    InvalidInvite,
    /// No pending invitation (of the actor, or of the user named) to this group.
    NoInvitation,
    /// The actor's invitation to this group expired.
    InvitationExpired,
    /// Only the inviter or an admin can cancel an invitation.
    NotInviter,
}

/// A group as listed for a member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupSummaryRow {
    /// Group id.
    pub group_id: String,
    /// The member's role.
    pub role: i64,
    /// Revision.
    pub revision: i64,
    /// Members.
    pub member_count: i64,
    /// Encrypted metadata.
    pub metadata: Vec<u8>,
    /// Creation time (ms): with the id, the paging key.
    pub created_at: i64,
}

/// One member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberRow {
    /// User id.
    pub user_id: String,
    /// Role.
    pub role: i64,
    /// Join time (ms).
    pub joined_at: i64,
}

/// A group with its members.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupView {
    /// Group id.
    pub group_id: String,
    /// Revision.
    pub revision: i64,
    /// Encrypted metadata.
    pub metadata: Vec<u8>,
    /// Members, admins first.
    pub members: Vec<MemberRow>,
    /// Users with a pending invitation.
    pub invited: Vec<String>,
}

/// A pending invitation of a user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvitationRow {
    /// Group id.
    pub group_id: String,
    /// Who added the user.
    pub inviter: String,
    /// When (ms).
    pub created_at: i64,
    /// The group's encrypted metadata.
    pub metadata: Vec<u8>,
    /// When it expires (ms).
    pub expires_at: i64,
}

/// A group send, validated for shape and size.
#[derive(Debug, Clone)]
pub struct GroupSendBatch {
    /// Group id.
    pub group_id: String,
    /// Sending device.
    pub sender: DeviceAuth,
    /// Idempotency key.
    pub client_message_id: String,
    /// Fresh id, used if the send is new.
    pub server_message_id: String,
    /// Now (ms).
    pub now: i64,
    /// Expiry (ms).
    pub expires_at: i64,
    /// The shared ciphertext.
    pub content: Vec<u8>,
    /// Pairwise envelopes queued before the shared one.
    pub targets: Vec<Target>,
    /// Digest of the request, stored with the idempotency key.
    pub digest: [u8; 32],
}

/// Outcome of [`GroupStore::group_send`].
#[derive(Debug, Clone)]
pub enum GroupSendOutcome {
    /// Stored.
    Accepted {
        /// Server message id.
        server_message_id: String,
        /// Acceptance time.
        server_timestamp: i64,
        /// Mailboxes that received a pairwise envelope: wake them to read it.
        notify: Vec<i64>,
        /// `(device row, sequence)` of every reference queued, for handing the shared message to
        /// connected devices without a read.
        references: Vec<(i64, i64)>,
    },
    /// Stored earlier under the same client message id.
    Duplicate {
        /// The first answer's id.
        server_message_id: String,
        /// The first answer's time.
        server_timestamp: i64,
    },
    /// The client message id was used before for a different request.
    Reused,
    /// The sending device was removed while the send was in flight.
    SenderRemoved,
    /// No such group, or the sender is not a member.
    NotMember,
    /// Pairwise targets that are not member devices (`extra`) or re-registered (`stale`).
    Mismatch(DeviceMismatch),
}

/// Outcome of [`LinkStore::link_device`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkOutcome {
    /// The device exists now.
    Linked {
        /// Account.
        user_id: String,
        /// New device id.
        device_id: u32,
    },
    /// Unknown, used or expired code.
    InvalidCode,
    /// The account is at its device limit.
    TooManyDevices,
}

/// Groups and group fan-out.
#[async_trait]
pub trait GroupStore: Send + Sync {
    /// Creates a group (creator admin, others members) and queues the `created` event.
    async fn create_group(&self, group: NewGroup) -> Result<GroupWrite, StoreError>;
    /// The groups a user belongs to.
    async fn groups_of(
        &self,
        user_id: &str,
        after: Option<(i64, String)>,
        limit: u32,
    ) -> Result<Vec<GroupSummaryRow>, StoreError>;
    /// A group and its members, if `asker` is a member.
    async fn group_view(
        &self,
        group_id: &str,
        asker: &str,
        now: i64,
    ) -> Result<Option<GroupView>, StoreError>;
    /// Applies a membership change and queues its event.
    async fn change_members(&self, change: MemberChange) -> Result<GroupWrite, StoreError>;
    /// Stores an invite (admins only).
    async fn create_invite(
        &self,
        group_id: &str,
        actor: &str,
        invite_id: &str,
        token_hash: &[u8; 32],
        now: i64,
        expires_at: i64,
    ) -> Result<GroupWrite, StoreError>;
    /// Revokes an invite (admins only).
    async fn revoke_invite(
        &self,
        group_id: &str,
        actor: &str,
        invite_id: &str,
    ) -> Result<GroupWrite, StoreError>;
    /// Stores a group message once and a reference for every other member device.
    async fn group_send(&self, batch: GroupSendBatch) -> Result<GroupSendOutcome, StoreError>;
    /// Device rows of the group's members (with their user), if `user_id` is a member.
    async fn group_devices(
        &self,
        group_id: &str,
        user_id: &str,
    ) -> Result<Option<Vec<(String, i64)>>, StoreError>;
    /// Group and shared ciphertext of the reference envelopes of a device with `first <= seq <=
    /// last`, by sequence.
    async fn group_references(
        &self,
        device_pk: i64,
        first: i64,
        last: i64,
    ) -> Result<Vec<(i64, String, Vec<u8>)>, StoreError>;
    /// Deletes acked envelopes that need nothing but their deletion (every kind but
    /// [`ENVELOPE_MESSAGE`](super::ENVELOPE_MESSAGE), whose ack queues receipts), for many devices
    /// in one operation, given as `(device row, sequence)`; returns the pairs deleted.
    async fn delete_acked(&self, acks: Vec<(i64, i64)>) -> Result<Vec<(i64, i64)>, StoreError>;
    /// Users sharing at least one group with `user_id`.
    async fn co_members(&self, user_id: &str) -> Result<Vec<String>, StoreError>;
    /// Pending invitations of a user that have not expired by `now`, oldest first.
    async fn invitations_of(
        &self,
        user_id: &str,
        now: i64,
    ) -> Result<Vec<InvitationRow>, StoreError>;
    /// Whether the user accepts invitations only.
    async fn invites_only(&self, user_id: &str) -> Result<bool, StoreError>;
    /// Sets whether the user accepts invitations only.
    async fn set_invites_only(&self, user_id: &str, on: bool) -> Result<(), StoreError>;
    /// Deletes unreferenced or expired group messages, expired invites, pending invitations
    /// and linking codes;
    /// returns group messages deleted.
    async fn sweep_groups(&self, now: i64) -> Result<u64, StoreError>;
}

/// Device linking and last-seen times.
#[async_trait]
pub trait LinkStore: Send + Sync {
    /// Stores a one-time linking code (its hash) for an account.
    async fn create_link_code(
        &self,
        user_id: &str,
        code_hash: &[u8; 32],
        now: i64,
        expires_at: i64,
    ) -> Result<(), StoreError>;
    /// Consumes a linking code and creates the next device of its account with a token.
    async fn link_device(
        &self,
        code_hash: &[u8; 32],
        registration_id: u32,
        token_hash: &[u8; 32],
        now: i64,
        max_devices: u32,
    ) -> Result<LinkOutcome, StoreError>;
    /// Records when a user was last connected.
    async fn set_last_seen(&self, user_id: &str, at: i64) -> Result<(), StoreError>;
    /// When a user was last connected.
    async fn last_seen(&self, user_id: &str) -> Result<Option<i64>, StoreError>;
}

/// Expands the shared statements for a connection type (`$conn`) and a row-lock suffix (`$lock`:
/// `"FOR NO KEY UPDATE"` on PostgreSQL, `""` on SQLite, whose single writer serialises everything).
macro_rules! group_queries {
    ($conn:ty, $lock:literal) => {
        use sqlx::Row as _;
        use $crate::store::groups::*;
        use $crate::store::{to_u32, DeviceAuth, StoreError};

        const LOCKS: bool = !$lock.is_empty();

        async fn member_role(
            conn: &mut $conn,
            group_id: &str,
            user_id: &str,
        ) -> Result<Option<i64>, StoreError> {
            Ok(sqlx::query_scalar(
                "SELECT role FROM group_members WHERE group_id = $1 AND user_id = $2",
            )
            .bind(group_id)
            .bind(user_id)
            .fetch_optional(&mut *conn)
            .await?)
        }

        async fn lock_group(conn: &mut $conn, group_id: &str) -> Result<Option<i64>, StoreError> {
            Ok(
                sqlx::query_scalar(concat!("SELECT revision FROM chat_groups WHERE id = $1 ", $lock))
                    .bind(group_id)
                    .fetch_optional(&mut *conn)
                    .await?,
            )
        }

        async fn bump_revision(conn: &mut $conn, group_id: &str) -> Result<i64, StoreError> {
            Ok(sqlx::query_scalar(
                "UPDATE chat_groups SET revision = revision + 1 WHERE id = $1 RETURNING revision",
            )
            .bind(group_id)
            .fetch_one(&mut *conn)
            .await?)
        }

        async fn member_count(conn: &mut $conn, group_id: &str) -> Result<i64, StoreError> {
            Ok(
                sqlx::query_scalar("SELECT COUNT(*) FROM group_members WHERE group_id = $1")
                    .bind(group_id)
                    .fetch_one(&mut *conn)
                    .await?,
            )
        }

        async fn unknown_users(
            conn: &mut $conn,
            users: &[String],
        ) -> Result<Vec<String>, StoreError> {
            let mut unknown = Vec::new();
            for user in users {
                let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users WHERE id = $1")
                    .bind(user)
                    .fetch_one(&mut *conn)
                    .await?;
                if n == 0 {
                    unknown.push(user.clone());
                }
            }
            Ok(unknown)
        }

        async fn add_member(
            conn: &mut $conn,
            group_id: &str,
            user_id: &str,
            role: i64,
            now: i64,
        ) -> Result<(), StoreError> {
            sqlx::query(
                "INSERT INTO group_members (group_id, user_id, role, joined_at) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (group_id, user_id) DO NOTHING",
            )
            .bind(group_id)
            .bind(user_id)
            .bind(role)
            .bind(now)
            .execute(&mut *conn)
            .await?;
            // A member has no pending invitation.
            sqlx::query("DELETE FROM group_invitations WHERE group_id = $1 AND user_id = $2")
                .bind(group_id)
                .bind(user_id)
                .execute(&mut *conn)
                .await?;
            Ok(())
        }

        /// Whether adding `invitee` on `adder`'s word needs the invitee's consent: they never
        /// wrote to the adder, or accept invitations only.
        async fn needs_consent(conn: &mut $conn, invitee: &str, adder: &str) -> Result<bool, StoreError> {
            let wrote: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM contacts WHERE user_id = $1 AND contact_id = $2",
            )
            .bind(invitee)
            .bind(adder)
            .fetch_one(&mut *conn)
            .await?;
            let only: Option<i64> = sqlx::query_scalar("SELECT invites_only FROM users WHERE id = $1")
                .bind(invitee)
                .fetch_optional(&mut *conn)
                .await?;
            Ok(wrote == 0 || only.unwrap_or(0) != 0)
        }

        /// Splits users into those added at once and those who get a pending invitation.
        async fn split_by_consent(
            conn: &mut $conn,
            users: Vec<String>,
            adder: &str,
            consent: bool,
        ) -> Result<(Vec<String>, Vec<String>), StoreError> {
            if !consent {
                return Ok((users, Vec::new()));
            }
            let (mut direct, mut invited) = (Vec::new(), Vec::new());
            for user in users {
                if needs_consent(conn, &user, adder).await? {
                    invited.push(user);
                } else {
                    direct.push(user);
                }
            }
            Ok((direct, invited))
        }

        /// Records pending invitations and queues an `invited` event for each invitee's devices
        /// only. `until` is when the event envelopes and when the invitations expire. Returns
        /// the mailboxes to wake.
        async fn invite(
            conn: &mut $conn,
            group_id: &str,
            revision: i64,
            actor: &DeviceAuth,
            users: &[String],
            now: i64,
            until: (i64, i64),
        ) -> Result<Vec<i64>, StoreError> {
            let (expires_at, invitation_expires_at) = until;
            let mut notify = Vec::new();
            for user in users {
                // A pending invitation stays as it is; an expired one is made anew.
                let done = sqlx::query(
                    "INSERT INTO group_invitations (group_id, user_id, inviter, created_at, expires_at) \
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (group_id, user_id) DO UPDATE SET \
                     inviter = excluded.inviter, created_at = excluded.created_at, \
                     expires_at = excluded.expires_at WHERE group_invitations.expires_at <= $4",
                )
                .bind(group_id)
                .bind(user)
                .bind(&actor.user_id)
                .bind(now)
                .bind(invitation_expires_at)
                .execute(&mut *conn)
                .await?;
                if done.rows_affected() == 0 {
                    continue;
                }
                let ev = event(group_id, revision, sotto_wire::GroupChange::Invited, actor, vec![user.clone()], None);
                let content = serde_json::to_vec(&ev)
                    .map_err(|_| StoreError::Corrupt("group event not serialisable"))?;
                if LOCKS {
                    sqlx::query(concat!("SELECT pk FROM devices WHERE user_id = $1 ORDER BY pk ", $lock))
                        .bind(user)
                        .fetch_all(&mut *conn)
                        .await?;
                }
                let bumped: Vec<(i64, i64)> = sqlx::query_as(
                    "UPDATE devices SET last_seq = last_seq + 1 WHERE user_id = $1 RETURNING pk, last_seq",
                )
                .bind(user)
                .fetch_all(&mut *conn)
                .await?;
                let message_id = uuid::Uuid::new_v4().to_string();
                for (pk, seq) in bumped {
                    sqlx::query(
                        "INSERT INTO envelopes (device_pk, seq, kind, source_user, source_device, server_message_id, \
                         client_message_id, server_ts, expires_at, content) VALUES ($1, $2, $3, $4, $5, $6, $6, $7, $8, $9)",
                    )
                    .bind(pk)
                    .bind(seq)
                    .bind(ENVELOPE_GROUP_EVENT)
                    .bind(&actor.user_id)
                    .bind(i64::from(actor.device_id))
                    .bind(&message_id)
                    .bind(now)
                    .bind(expires_at)
                    .bind(&content)
                    .execute(&mut *conn)
                    .await?;
                    notify.push(pk);
                }
            }
            Ok(notify)
        }

        /// Accepting or declining the actor's own pending invitation.
        async fn answer_invitation_tx(
            conn: &mut $conn,
            c: &MemberChange,
            accept: bool,
        ) -> Result<GroupWrite, StoreError> {
            let gid = c.group_id.as_str();
            let Some(current) = lock_group(conn, gid).await? else {
                return Ok(GroupWrite::NoInvitation);
            };
            let expiry: Option<i64> = sqlx::query_scalar(
                "SELECT expires_at FROM group_invitations WHERE group_id = $1 AND user_id = $2",
            )
            .bind(gid)
            .bind(&c.actor.user_id)
            .fetch_optional(&mut *conn)
            .await?;
            match expiry {
                None => return Ok(GroupWrite::NoInvitation),
                Some(at) if accept && at <= c.now => return Ok(GroupWrite::InvitationExpired),
                Some(_) => {}
            }
            if accept && member_count(conn, gid).await? >= i64::from(c.max_size) {
                return Ok(GroupWrite::GroupFull);
            }
            sqlx::query("DELETE FROM group_invitations WHERE group_id = $1 AND user_id = $2")
                .bind(gid)
                .bind(&c.actor.user_id)
                .execute(&mut *conn)
                .await?;
            if !accept {
                return Ok(GroupWrite::Done { revision: current, notify: Vec::new() });
            }
            add_member(conn, gid, &c.actor.user_id, ROLE_MEMBER, c.now).await?;
            let revision = bump_revision(conn, gid).await?;
            let ev = event(
                gid,
                revision,
                sotto_wire::GroupChange::MembersAdded,
                &c.actor,
                vec![c.actor.user_id.clone()],
                None,
            );
            let notify = fan_out_event(conn, &c.actor, "", &ev, c.now, c.expires_at).await?;
            Ok(GroupWrite::Done { revision, notify })
        }

        async fn invitations_of_tx(conn: &mut $conn, user_id: &str, now: i64) -> Result<Vec<InvitationRow>, StoreError> {
            let rows = sqlx::query(
                "SELECT i.group_id, i.inviter, i.created_at, i.expires_at, g.metadata FROM group_invitations i \
                 JOIN chat_groups g ON g.id = i.group_id WHERE i.user_id = $1 AND i.expires_at > $2 \
                 ORDER BY i.created_at, i.group_id",
            )
            .bind(user_id)
            .bind(now)
            .fetch_all(&mut *conn)
            .await?;
            rows.iter()
                .map(|r| {
                    Ok(InvitationRow {
                        group_id: r.try_get("group_id")?,
                        inviter: r.try_get("inviter")?,
                        created_at: r.try_get("created_at")?,
                        expires_at: r.try_get("expires_at")?,
                        metadata: r.try_get("metadata")?,
                    })
                })
                .collect()
        }

        async fn invites_only_tx(conn: &mut $conn, user_id: &str) -> Result<bool, StoreError> {
            let only: Option<i64> = sqlx::query_scalar("SELECT invites_only FROM users WHERE id = $1")
                .bind(user_id)
                .fetch_optional(&mut *conn)
                .await?;
            Ok(only.unwrap_or(0) != 0)
        }

        async fn set_invites_only_tx(conn: &mut $conn, user_id: String, on: bool) -> Result<(), StoreError> {
            sqlx::query("UPDATE users SET invites_only = $2 WHERE id = $1")
                .bind(&user_id)
                .bind(i64::from(on))
                .execute(&mut *conn)
                .await?;
            Ok(())
        }

        /// Queues `event` for every device of every member and of `extra_user` ("" for none).
        async fn fan_out_event(
            conn: &mut $conn,
            actor: &DeviceAuth,
            extra_user: &str,
            event: &sotto_wire::GroupEvent,
            now: i64,
            expires_at: i64,
        ) -> Result<Vec<i64>, StoreError> {
            let content = serde_json::to_vec(event)
                .map_err(|_| StoreError::Corrupt("group event not serialisable"))?;
            if LOCKS {
                sqlx::query(concat!(
                    "SELECT pk FROM devices WHERE user_id IN \
                     (SELECT user_id FROM group_members WHERE group_id = $1) OR user_id = $2 ORDER BY pk ",
                    $lock
                ))
                .bind(&event.group_id)
                .bind(extra_user)
                .fetch_all(&mut *conn)
                .await?;
            }
            // PostgreSQL: one statement, so the devices bumped are exactly the devices written
            // even if a device or member commits meanwhile. SQLite: two statements under its
            // single writer.
            let sql = if LOCKS {
                "WITH bumped AS (UPDATE devices SET last_seq = last_seq + 1 WHERE user_id IN \
                 (SELECT user_id FROM group_members WHERE group_id = $1) OR user_id = $2 \
                 RETURNING pk, last_seq) \
                 INSERT INTO envelopes (device_pk, seq, kind, source_user, source_device, server_message_id, \
                 client_message_id, server_ts, expires_at, content) \
                 SELECT pk, last_seq, $3, $4, $5, $6, $6, $7, $8, $9 FROM bumped RETURNING device_pk"
            } else {
                sqlx::query(
                    "UPDATE devices SET last_seq = last_seq + 1 WHERE user_id IN \
                     (SELECT user_id FROM group_members WHERE group_id = $1) OR user_id = $2",
                )
                .bind(&event.group_id)
                .bind(extra_user)
                .execute(&mut *conn)
                .await?;
                "INSERT INTO envelopes (device_pk, seq, kind, source_user, source_device, server_message_id, \
                 client_message_id, server_ts, expires_at, content) \
                 SELECT pk, last_seq, $3, $4, $5, $6, $6, $7, $8, $9 FROM devices WHERE user_id IN \
                 (SELECT user_id FROM group_members WHERE group_id = $1) OR user_id = $2 \
                 RETURNING device_pk"
            };
            let notify: Vec<i64> = sqlx::query_scalar(sql)
            .bind(&event.group_id)
            .bind(extra_user)
            .bind(ENVELOPE_GROUP_EVENT)
            .bind(&actor.user_id)
            .bind(i64::from(actor.device_id))
            .bind(uuid::Uuid::new_v4().to_string())
            .bind(now)
            .bind(expires_at)
            .bind(content)
            .fetch_all(&mut *conn)
            .await?;
            Ok(notify)
        }

        fn event(
            group_id: &str,
            revision: i64,
            change: sotto_wire::GroupChange,
            actor: &DeviceAuth,
            user_ids: Vec<String>,
            role: Option<i64>,
        ) -> sotto_wire::GroupEvent {
            sotto_wire::GroupEvent {
                group_id: group_id.to_owned(),
                revision: u64::try_from(revision).unwrap_or(0),
                change,
                actor_user_id: actor.user_id.clone(),
                user_ids,
                role: role.map(wire_role),
            }
        }

        async fn create_group_tx(
            conn: &mut $conn,
            g: NewGroup,
        ) -> Result<GroupWrite, StoreError> {
            let unknown = unknown_users(conn, &g.members).await?;
            if !unknown.is_empty() {
                return Ok(GroupWrite::UnknownUsers(unknown));
            }
            sqlx::query(
                "INSERT INTO chat_groups (id, metadata, revision, created_at) VALUES ($1, $2, 1, $3)",
            )
            .bind(&g.id)
            .bind(&g.metadata)
            .bind(g.now)
            .execute(&mut *conn)
            .await?;
            let (direct, invited) =
                split_by_consent(conn, g.members.clone(), &g.creator.user_id, g.consent).await?;
            add_member(conn, &g.id, &g.creator.user_id, ROLE_ADMIN, g.now).await?;
            for user in &direct {
                add_member(conn, &g.id, user, ROLE_MEMBER, g.now).await?;
            }
            let mut everyone = vec![g.creator.user_id.clone()];
            everyone.extend(direct.iter().cloned());
            let ev = event(&g.id, 1, sotto_wire::GroupChange::Created, &g.creator, everyone, None);
            let mut notify = fan_out_event(conn, &g.creator, "", &ev, g.now, g.expires_at).await?;
            notify.extend(
                invite(conn, &g.id, 1, &g.creator, &invited, g.now, (g.expires_at, g.invitation_expires_at)).await?,
            );
            Ok(GroupWrite::Done { revision: 1, notify })
        }

        async fn groups_of_tx(
            conn: &mut $conn,
            user_id: &str,
            after: Option<(i64, String)>,
            limit: u32,
        ) -> Result<Vec<GroupSummaryRow>, StoreError> {
            let (after_ts, after_id) = after.unwrap_or((i64::MIN, String::new()));
            let rows = sqlx::query(
                "SELECT g.id, g.metadata, g.revision, g.created_at, m.role, \
                 (SELECT COUNT(*) FROM group_members c WHERE c.group_id = g.id) AS member_count \
                 FROM group_members m JOIN chat_groups g ON g.id = m.group_id \
                 WHERE m.user_id = $1 AND (g.created_at > $2 OR (g.created_at = $2 AND g.id > $3)) \
                 ORDER BY g.created_at, g.id LIMIT $4",
            )
            .bind(user_id)
            .bind(after_ts)
            .bind(after_id)
            .bind(i64::from(limit))
            .fetch_all(&mut *conn)
            .await?;
            rows.iter()
                .map(|r| {
                    Ok(GroupSummaryRow {
                        group_id: r.try_get("id")?,
                        role: r.try_get("role")?,
                        revision: r.try_get("revision")?,
                        member_count: r.try_get("member_count")?,
                        metadata: r.try_get("metadata")?,
                        created_at: r.try_get("created_at")?,
                    })
                })
                .collect()
        }

        async fn group_view_tx(
            conn: &mut $conn,
            group_id: &str,
            asker: &str,
            now: i64,
        ) -> Result<Option<GroupView>, StoreError> {
            if member_role(conn, group_id, asker).await?.is_none() {
                return Ok(None);
            }
            let Some(row) = sqlx::query("SELECT metadata, revision FROM chat_groups WHERE id = $1")
                .bind(group_id)
                .fetch_optional(&mut *conn)
                .await?
            else {
                return Ok(None);
            };
            let members = sqlx::query(
                "SELECT user_id, role, joined_at FROM group_members WHERE group_id = $1 \
                 ORDER BY role DESC, joined_at, user_id",
            )
            .bind(group_id)
            .fetch_all(&mut *conn)
            .await?
            .iter()
            .map(|r| {
                Ok(MemberRow {
                    user_id: r.try_get("user_id")?,
                    role: r.try_get("role")?,
                    joined_at: r.try_get("joined_at")?,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
            let invited: Vec<String> = sqlx::query_scalar(
                "SELECT user_id FROM group_invitations WHERE group_id = $1 AND expires_at > $2 \
                 ORDER BY created_at, user_id",
            )
            .bind(group_id)
            .bind(now)
            .fetch_all(&mut *conn)
            .await?;
            Ok(Some(GroupView {
                group_id: group_id.to_owned(),
                revision: row.try_get("revision")?,
                metadata: row.try_get("metadata")?,
                members,
                invited,
            }))
        }

        async fn change_members_tx(
            conn: &mut $conn,
            c: MemberChange,
        ) -> Result<GroupWrite, StoreError> {
            use sotto_wire::GroupChange;
            let gid = c.group_id.as_str();
            match c.op {
                MemberOp::AcceptInvitation => return answer_invitation_tx(conn, &c, true).await,
                MemberOp::DeclineInvitation => return answer_invitation_tx(conn, &c, false).await,
                _ => {}
            }
            if let MemberOp::JoinWithInvite(hash) = &c.op {
                let invited: Option<String> = sqlx::query_scalar(
                    "SELECT group_id FROM group_invites WHERE token_hash = $1 AND expires_at > $2",
                )
                .bind(&hash[..])
                .bind(c.now)
                .fetch_optional(&mut *conn)
                .await?;
                if invited.as_deref() != Some(gid) {
                    return Ok(GroupWrite::InvalidInvite);
                }
            }
            let Some(current) = lock_group(conn, gid).await? else {
                return Ok(GroupWrite::NotMember);
            };
            let actor_role = member_role(conn, gid, &c.actor.user_id).await?;
            let admin = match (&c.op, actor_role) {
                (MemberOp::JoinWithInvite(_), Some(_)) => {
                    return Ok(GroupWrite::Done { revision: current, notify: Vec::new() })
                }
                (MemberOp::JoinWithInvite(_), None) => false,
                (_, None) => return Ok(GroupWrite::NotMember),
                (_, Some(role)) => role == ROLE_ADMIN,
            };
            let needs_admin = matches!(c.op, MemberOp::Add(_) | MemberOp::Remove(_) | MemberOp::SetRole(..));
            if needs_admin && !admin {
                return Ok(GroupWrite::NotAdmin);
            }
            if let MemberOp::CancelInvitation(user) = &c.op {
                let inviter: Option<String> = sqlx::query_scalar(
                    "SELECT inviter FROM group_invitations WHERE group_id = $1 AND user_id = $2",
                )
                .bind(gid)
                .bind(user)
                .fetch_optional(&mut *conn)
                .await?;
                let Some(inviter) = inviter else {
                    return Ok(GroupWrite::NoInvitation);
                };
                if !admin && inviter != c.actor.user_id {
                    return Ok(GroupWrite::NotInviter);
                }
                sqlx::query("DELETE FROM group_invitations WHERE group_id = $1 AND user_id = $2")
                    .bind(gid)
                    .bind(user)
                    .execute(&mut *conn)
                    .await?;
                return Ok(GroupWrite::Done { revision: current, notify: Vec::new() });
            }
            let max = i64::from(c.max_size);
            match c.op.clone() {
                MemberOp::Add(users) => {
                    let unknown = unknown_users(conn, &users).await?;
                    if !unknown.is_empty() {
                        return Ok(GroupWrite::UnknownUsers(unknown));
                    }
                    let mut new = Vec::new();
                    for user in users {
                        if member_role(conn, gid, &user).await?.is_none() && !new.contains(&user) {
                            new.push(user);
                        }
                    }
                    let (new, invited) = split_by_consent(conn, new, &c.actor.user_id, c.consent).await?;
                    if new.is_empty() && invited.is_empty() {
                        return Ok(GroupWrite::Done { revision: current, notify: Vec::new() });
                    }
                    let count = member_count(conn, gid).await?;
                    if count.saturating_add(i64::try_from(new.len()).unwrap_or(i64::MAX)) > max {
                        return Ok(GroupWrite::GroupFull);
                    }
                    for user in &new {
                        add_member(conn, gid, user, ROLE_MEMBER, c.now).await?;
                    }
                    let (revision, mut notify) = if new.is_empty() {
                        (current, Vec::new())
                    } else {
                        let revision = bump_revision(conn, gid).await?;
                        let ev = event(gid, revision, GroupChange::MembersAdded, &c.actor, new, None);
                        (revision, fan_out_event(conn, &c.actor, "", &ev, c.now, c.expires_at).await?)
                    };
                    notify.extend(
                        invite(conn, gid, revision, &c.actor, &invited, c.now, (c.expires_at, c.invitation_expires_at))
                            .await?,
                    );
                    Ok(GroupWrite::Done { revision, notify })
                }
                MemberOp::JoinWithInvite(_) => {
                    if member_count(conn, gid).await? >= max {
                        return Ok(GroupWrite::GroupFull);
                    }
                    add_member(conn, gid, &c.actor.user_id, ROLE_MEMBER, c.now).await?;
                    let revision = bump_revision(conn, gid).await?;
                    let ev = event(
                        gid,
                        revision,
                        GroupChange::MembersAdded,
                        &c.actor,
                        vec![c.actor.user_id.clone()],
                        None,
                    );
                    let notify = fan_out_event(conn, &c.actor, "", &ev, c.now, c.expires_at).await?;
                    Ok(GroupWrite::Done { revision, notify })
                }
                MemberOp::Leave => {
                    remove_tx(conn, &c, &c.actor.user_id, GroupChange::MemberLeft).await
                }
                MemberOp::Remove(user) => {
                    if member_role(conn, gid, &user).await?.is_none() {
                        return Ok(GroupWrite::UnknownMember);
                    }
                    remove_tx(conn, &c, &user, GroupChange::MemberRemoved).await
                }
                MemberOp::SetRole(user, role) => {
                    let Some(old) = member_role(conn, gid, &user).await? else {
                        return Ok(GroupWrite::UnknownMember);
                    };
                    if old == role {
                        return Ok(GroupWrite::Done { revision: current, notify: Vec::new() });
                    }
                    if old == ROLE_ADMIN {
                        let admins: i64 = sqlx::query_scalar(
                            "SELECT COUNT(*) FROM group_members WHERE group_id = $1 AND role = $2",
                        )
                        .bind(gid)
                        .bind(ROLE_ADMIN)
                        .fetch_one(&mut *conn)
                        .await?;
                        if admins <= 1 {
                            // The group would be unmanageable.
                            return Ok(GroupWrite::LastAdmin);
                        }
                    }
                    sqlx::query("UPDATE group_members SET role = $3 WHERE group_id = $1 AND user_id = $2")
                        .bind(gid)
                        .bind(&user)
                        .bind(role)
                        .execute(&mut *conn)
                        .await?;
                    let revision = bump_revision(conn, gid).await?;
                    let ev = event(gid, revision, GroupChange::RoleChanged, &c.actor, vec![user], Some(role));
                    let notify = fan_out_event(conn, &c.actor, "", &ev, c.now, c.expires_at).await?;
                    Ok(GroupWrite::Done { revision, notify })
                }
                // Answered above.
                MemberOp::AcceptInvitation | MemberOp::DeclineInvitation | MemberOp::CancelInvitation(_) => {
                    Ok(GroupWrite::NoInvitation)
                }
            }
        }

        /// Removes `user` (who is a member), tells everyone including `user`, keeps an admin, and
        /// deletes the group when nobody is left.
        async fn remove_tx(
            conn: &mut $conn,
            c: &MemberChange,
            user: &str,
            change: sotto_wire::GroupChange,
        ) -> Result<GroupWrite, StoreError> {
            let gid = c.group_id.as_str();
            sqlx::query("DELETE FROM group_members WHERE group_id = $1 AND user_id = $2")
                .bind(gid)
                .bind(user)
                .execute(&mut *conn)
                .await?;
            let revision = bump_revision(conn, gid).await?;
            let ev = event(gid, revision, change, &c.actor, vec![user.to_owned()], None);
            let mut notify = fan_out_event(conn, &c.actor, user, &ev, c.now, c.expires_at).await?;
            let mut revision = revision;
            let admins: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM group_members WHERE group_id = $1 AND role = $2",
            )
            .bind(gid)
            .bind(ROLE_ADMIN)
            .fetch_one(&mut *conn)
            .await?;
            if admins == 0 {
                let heir: Option<String> = sqlx::query_scalar(
                    "SELECT user_id FROM group_members WHERE group_id = $1 ORDER BY joined_at, user_id LIMIT 1",
                )
                .bind(gid)
                .fetch_optional(&mut *conn)
                .await?;
                match heir {
                    Some(heir) => {
                        sqlx::query("UPDATE group_members SET role = $3 WHERE group_id = $1 AND user_id = $2")
                            .bind(gid)
                            .bind(&heir)
                            .bind(ROLE_ADMIN)
                            .execute(&mut *conn)
                            .await?;
                        revision = bump_revision(conn, gid).await?;
                        let ev = event(
                            gid,
                            revision,
                            sotto_wire::GroupChange::RoleChanged,
                            &c.actor,
                            vec![heir],
                            Some(ROLE_ADMIN),
                        );
                        for pk in fan_out_event(conn, &c.actor, "", &ev, c.now, c.expires_at).await? {
                            if !notify.contains(&pk) {
                                notify.push(pk);
                            }
                        }
                    }
                    None => {
                        sqlx::query("DELETE FROM chat_groups WHERE id = $1")
                            .bind(gid)
                            .execute(&mut *conn)
                            .await?;
                    }
                }
            }
            Ok(GroupWrite::Done { revision, notify })
        }

        async fn admin_check(
            conn: &mut $conn,
            group_id: &str,
            actor: &str,
        ) -> Result<Option<GroupWrite>, StoreError> {
            Ok(match member_role(conn, group_id, actor).await? {
                None => Some(GroupWrite::NotMember),
                Some(role) if role != ROLE_ADMIN => Some(GroupWrite::NotAdmin),
                Some(_) => None,
            })
        }

        async fn create_invite_tx(
            conn: &mut $conn,
            group_id: String,
            actor: String,
            invite_id: String,
            token_hash: [u8; 32],
            now: i64,
            expires_at: i64,
        ) -> Result<GroupWrite, StoreError> {
            if let Some(refused) = admin_check(conn, &group_id, &actor).await? {
                return Ok(refused);
            }
            sqlx::query(
                "INSERT INTO group_invites (token_hash, invite_id, group_id, created_by, created_at, expires_at) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(&token_hash[..])
            .bind(&invite_id)
            .bind(&group_id)
            .bind(&actor)
            .bind(now)
            .bind(expires_at)
            .execute(&mut *conn)
            .await?;
            let revision = lock_group(conn, &group_id).await?.unwrap_or(0);
            Ok(GroupWrite::Done { revision, notify: Vec::new() })
        }

        async fn revoke_invite_tx(
            conn: &mut $conn,
            group_id: String,
            actor: String,
            invite_id: String,
        ) -> Result<GroupWrite, StoreError> {
            if let Some(refused) = admin_check(conn, &group_id, &actor).await? {
                return Ok(refused);
            }
            let done = sqlx::query("DELETE FROM group_invites WHERE invite_id = $1 AND group_id = $2")
                .bind(&invite_id)
                .bind(&group_id)
                .execute(&mut *conn)
                .await?;
            if done.rows_affected() == 0 {
                return Ok(GroupWrite::UnknownInvite);
            }
            let revision = lock_group(conn, &group_id).await?.unwrap_or(0);
            Ok(GroupWrite::Done { revision, notify: Vec::new() })
        }

        async fn group_devices_tx(
            conn: &mut $conn,
            group_id: &str,
            user_id: &str,
        ) -> Result<Option<Vec<(String, i64)>>, StoreError> {
            if member_role(conn, group_id, user_id).await?.is_none() {
                return Ok(None);
            }
            let rows = sqlx::query(
                "SELECT d.user_id, d.pk FROM devices d JOIN group_members m ON m.user_id = d.user_id \
                 WHERE m.group_id = $1",
            )
            .bind(group_id)
            .fetch_all(&mut *conn)
            .await?;
            rows.iter()
                .map(|r| Ok((r.try_get("user_id")?, r.try_get("pk")?)))
                .collect::<Result<Vec<_>, StoreError>>()
                .map(Some)
        }

        async fn group_references_tx(
            conn: &mut $conn,
            device_pk: i64,
            first: i64,
            last: i64,
        ) -> Result<Vec<(i64, String, Vec<u8>)>, StoreError> {
            let rows = sqlx::query(
                "SELECT e.seq, g.group_id, g.content FROM envelopes e \
                 JOIN group_messages g ON g.id = e.group_message_id \
                 WHERE e.device_pk = $1 AND e.seq >= $2 AND e.seq <= $3",
            )
            .bind(device_pk)
            .bind(first)
            .bind(last)
            .fetch_all(&mut *conn)
            .await?;
            rows.iter()
                .map(|r| Ok((r.try_get("seq")?, r.try_get("group_id")?, r.try_get("content")?)))
                .collect()
        }

        async fn co_members_tx(conn: &mut $conn, user_id: &str) -> Result<Vec<String>, StoreError> {
            Ok(sqlx::query_scalar(
                "SELECT DISTINCT b.user_id FROM group_members a JOIN group_members b ON b.group_id = a.group_id \
                 WHERE a.user_id = $1 AND b.user_id <> $1",
            )
            .bind(user_id)
            .fetch_all(&mut *conn)
            .await?)
        }

        async fn sweep_groups_tx(conn: &mut $conn, now: i64) -> Result<u64, StoreError> {
            let done = sqlx::query(
                "DELETE FROM group_messages WHERE expires_at <= $1 OR NOT EXISTS \
                 (SELECT 1 FROM envelopes e WHERE e.group_message_id = group_messages.id)",
            )
            .bind(now)
            .execute(&mut *conn)
            .await?;
            sqlx::query("DELETE FROM group_invites WHERE expires_at <= $1")
                .bind(now)
                .execute(&mut *conn)
                .await?;
            sqlx::query("DELETE FROM group_invitations WHERE expires_at <= $1")
                .bind(now)
                .execute(&mut *conn)
                .await?;
            sqlx::query("DELETE FROM link_codes WHERE expires_at <= $1")
                .bind(now)
                .execute(&mut *conn)
                .await?;
            Ok(done.rows_affected())
        }

        async fn create_link_code_tx(
            conn: &mut $conn,
            user_id: String,
            code_hash: [u8; 32],
            now: i64,
            expires_at: i64,
        ) -> Result<(), StoreError> {
            sqlx::query(
                "INSERT INTO link_codes (code_hash, user_id, created_at, expires_at) VALUES ($1, $2, $3, $4)",
            )
            .bind(&code_hash[..])
            .bind(&user_id)
            .bind(now)
            .bind(expires_at)
            .execute(&mut *conn)
            .await?;
            Ok(())
        }

        async fn link_device_tx(
            conn: &mut $conn,
            code_hash: [u8; 32],
            registration_id: u32,
            token_hash: [u8; 32],
            now: i64,
            max_devices: u32,
        ) -> Result<LinkOutcome, StoreError> {
            let user: Option<String> = sqlx::query_scalar(concat!(
                "SELECT user_id FROM link_codes WHERE code_hash = $1 AND expires_at > $2 ",
                $lock
            ))
            .bind(&code_hash[..])
            .bind(now)
            .fetch_optional(&mut *conn)
            .await?;
            let Some(user_id) = user else {
                return Ok(LinkOutcome::InvalidCode);
            };
            if LOCKS {
                // Serialises device creation per account (count and id allocation).
                sqlx::query(concat!("SELECT id FROM users WHERE id = $1 ", $lock))
                    .bind(&user_id)
                    .fetch_all(&mut *conn)
                    .await?;
            }
            let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM devices WHERE user_id = $1")
                .bind(&user_id)
                .fetch_one(&mut *conn)
                .await?;
            if count >= i64::from(max_devices) {
                return Ok(LinkOutcome::TooManyDevices);
            }
            sqlx::query("DELETE FROM link_codes WHERE code_hash = $1")
                .bind(&code_hash[..])
                .execute(&mut *conn)
                .await?;
            let next: i64 = sqlx::query_scalar(
                "SELECT COALESCE(MAX(device_id), 0) + 1 FROM devices WHERE user_id = $1",
            )
            .bind(&user_id)
            .fetch_one(&mut *conn)
            .await?;
            let pk: i64 = sqlx::query_scalar(
                "INSERT INTO devices (user_id, device_id, registration_id, created_at) VALUES ($1, $2, $3, $4) RETURNING pk",
            )
            .bind(&user_id)
            .bind(next)
            .bind(i64::from(registration_id))
            .bind(now)
            .fetch_one(&mut *conn)
            .await?;
            sqlx::query("INSERT INTO tokens (token_hash, device_pk, created_at) VALUES ($1, $2, $3)")
                .bind(&token_hash[..])
                .bind(pk)
                .bind(now)
                .execute(&mut *conn)
                .await?;
            Ok(LinkOutcome::Linked {
                user_id,
                device_id: to_u32(next, "device_id")?,
            })
        }

        async fn set_last_seen_tx(conn: &mut $conn, user_id: String, at: i64) -> Result<(), StoreError> {
            sqlx::query(
                "INSERT INTO last_seen (user_id, seen_at) SELECT id, $2 FROM users WHERE id = $1 \
                 ON CONFLICT (user_id) DO UPDATE SET seen_at = excluded.seen_at",
            )
            .bind(&user_id)
            .bind(at)
            .execute(&mut *conn)
            .await?;
            Ok(())
        }

        async fn last_seen_tx(conn: &mut $conn, user_id: &str) -> Result<Option<i64>, StoreError> {
            Ok(sqlx::query_scalar("SELECT seen_at FROM last_seen WHERE user_id = $1")
                .bind(user_id)
                .fetch_optional(&mut *conn)
                .await?)
        }
    };
}
pub(crate) use group_queries;

/// The wire role of a stored role.
pub fn wire_role(role: i64) -> sotto_wire::GroupRole {
    if role == ROLE_ADMIN {
        sotto_wire::GroupRole::Admin
    } else {
        sotto_wire::GroupRole::Member
    }
}
