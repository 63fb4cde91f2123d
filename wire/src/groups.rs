//! Groups: membership kept by the relay for routing, everything a person wrote encrypted.
//!
//! ```text
//!  POST   /api/groups                              create (caller = admin) ──▶ 201 GroupCreated
//!  GET    /api/groups                              the caller's groups     ──▶ GroupList
//!  GET    /api/groups/{groupId}/members            members only            ──▶ GroupMembers
//!  POST   /api/groups/{groupId}/join               admin adds userIds, or the caller joins
//!                                                  with an invite token    ──▶ GroupMembers
//!  DELETE /api/groups/{groupId}/leave              the caller leaves       ──▶ 204
//!  DELETE /api/groups/{groupId}/members/{userId}   admin removes           ──▶ 204
//!  PUT    /api/groups/{groupId}/members/{userId}   admin sets the role     ──▶ 204
//!  POST   /api/groups/{groupId}/invites            admin creates a token   ──▶ 201 GroupInvite
//!  DELETE /api/groups/{groupId}/invites/{inviteId} admin revokes           ──▶ 204
//!  POST   /api/groups/{groupId}/messages           a member sends          ──▶ SendMessageResponse
//! ```
//!
//! A group the caller is not a member of answers 404 `unknown_group`, like one that does not exist,
//! so groups cannot be enumerated. Every membership change is queued for every device of every
//! member (and of the member who left or was removed) as an envelope of kind
//! [`EnvelopeKind::GroupEvent`](crate::EnvelopeKind::GroupEvent) whose `content` is a JSON
//! [`GroupEvent`] (and whose `clientMessageId` is its `serverMessageId`), so clients can rotate
//! their sender keys. Group messages get no delivery receipts. A group message arrives as an envelope
//! of kind [`EnvelopeKind::GroupMessage`](crate::EnvelopeKind::GroupMessage) with `groupId` set:
//! the relay stores its ciphertext once and queues a reference per member device.

use serde::{Deserialize, Serialize};

use crate::Base64;

/// A member's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub enum GroupRole {
    /// Can add and remove members, change roles, create and revoke invites.
    Admin,
    /// Can send and read the membership.
    Member,
}

/// `POST /api/groups`: the caller becomes the first admin; `members` (other user ids) join as
/// members. `metadata` is the end-to-end encrypted name, description and avatar (≤ 16 KiB).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateGroupRequest {
    /// Initial members besides the caller.
    #[serde(default)]
    pub members: Vec<String>,
    /// Encrypted group metadata, opaque to the relay.
    pub metadata: Base64,
}

/// Answer to [`CreateGroupRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct GroupCreated {
    /// The new group's id (a UUID).
    pub group_id: String,
    /// Membership revision (starts at 1, grows with every change).
    pub revision: u64,
    /// Users who got a pending invitation instead of membership (they never wrote to the
    /// creator, or accept invitations only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub invited_user_ids: Vec<String>,
}

/// One member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct GroupMember {
    /// User id.
    pub user_id: String,
    /// Role.
    pub role: GroupRole,
    /// When the user joined (ms since the epoch).
    pub joined_at: u64,
}

/// Answer of `GET /api/groups/{groupId}/members` (and of a join).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct GroupMembers {
    /// Group id.
    pub group_id: String,
    /// Membership revision.
    pub revision: u64,
    /// Encrypted metadata.
    pub metadata: Base64,
    /// Members, admins first, then by join time.
    pub members: Vec<GroupMember>,
    /// Users with a pending invitation (not members: they get nothing until they accept).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub invited_user_ids: Vec<String>,
}

/// One entry of [`GroupList`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct GroupSummary {
    /// Group id.
    pub group_id: String,
    /// The caller's role.
    pub role: GroupRole,
    /// Membership revision.
    pub revision: u64,
    /// Number of members.
    pub member_count: u32,
    /// Encrypted metadata.
    pub metadata: Base64,
}

/// Answer of `GET /api/groups`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct GroupList {
    /// The caller's groups, oldest first (one page).
    pub groups: Vec<GroupSummary>,
    /// Present when more groups follow: pass it as `after` for the next page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// `POST /api/groups/{groupId}/join`: exactly one of the two fields. `userIds`: an admin adds these
/// users. `inviteToken`: the caller joins with a token the group created.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JoinGroupRequest {
    /// Users an admin adds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_ids: Option<Vec<String>>,
    /// An invite token from [`GroupInvite`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invite_token: Option<String>,
}

/// `PUT /api/groups/{groupId}/members/{userId}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SetRoleRequest {
    /// The new role.
    pub role: GroupRole,
}

/// Answer of `POST /api/groups/{groupId}/invites`: the token is shown once (the relay keeps only
/// its hash); revoke it by `inviteId`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct GroupInvite {
    /// Id for revoking.
    pub invite_id: String,
    /// The secret to pass in [`JoinGroupRequest::invite_token`].
    pub token: String,
    /// When the token stops working (ms since the epoch).
    pub expires_at: u64,
}

impl std::fmt::Debug for GroupInvite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Self {
            invite_id,
            token: _,
            expires_at,
        } = self;
        f.debug_struct("GroupInvite")
            .field("invite_id", invite_id)
            .field("expires_at", expires_at)
            .finish_non_exhaustive()
    }
}

/// One sender-key distribution ciphertext (or any pairwise message) for one member device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GroupDeviceMessage {
    /// Member user id (or the sender's own id for its other devices).
    pub user_id: String,
    /// Device id.
    pub device_id: u32,
    /// Registration id the pairwise session was built for.
    pub registration_id: u32,
    /// Opaque ciphertext.
    pub content: Base64,
}

/// `POST /api/groups/{groupId}/messages`: `content` is the one Sender-Key ciphertext every other
/// member device receives (stored once by the relay); `messages` are optional pairwise envelopes
/// queued before it (sender-key distribution to new members). Only members may send.
/// Answer: [`SendMessageResponse`](crate::SendMessageResponse).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GroupSendRequest {
    /// Idempotency key, unique per sending device (1-64 bytes).
    pub client_message_id: String,
    /// The shared ciphertext.
    pub content: Base64,
    /// Pairwise envelopes for some member devices.
    #[serde(default)]
    pub messages: Vec<GroupDeviceMessage>,
}

/// What changed in a [`GroupEvent`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub enum GroupChange {
    /// The group was created with `userIds` as members.
    Created,
    /// `userIds` were added (by an admin, or joined with an invite).
    MembersAdded,
    /// `userIds` (one) left.
    MemberLeft,
    /// `userIds` (one) were removed by an admin.
    MemberRemoved,
    /// `userIds` (one) got the role `role`.
    RoleChanged,
    /// `userIds` (one: the recipient of this event) were invited by `actorUserId`; only they get
    /// this event, and they become members only by accepting.
    Invited,
}

/// The JSON `content` of an envelope of kind `groupEvent`: written by the relay, not encrypted
/// (the relay knows the membership anyway).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct GroupEvent {
    /// Group id.
    pub group_id: String,
    /// Membership revision after the change.
    pub revision: u64,
    /// What happened.
    pub change: GroupChange,
    /// Who did it.
    pub actor_user_id: String,
    /// Whom it concerns.
    pub user_ids: Vec<String>,
    /// The new role, for [`GroupChange::RoleChanged`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<GroupRole>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_event_json_shape() {
        let ev = GroupEvent {
            group_id: "g".into(),
            revision: 3,
            change: GroupChange::MemberRemoved,
            actor_user_id: "a".into(),
            user_ids: vec!["b".into()],
            role: None,
        };
        let json = serde_json::to_string(&ev).unwrap();
        assert_eq!(
            json,
            r#"{"groupId":"g","revision":3,"change":"memberRemoved","actorUserId":"a","userIds":["b"]}"#
        );
        assert_eq!(serde_json::from_str::<GroupEvent>(&json).unwrap(), ev);
    }

    #[test]
    fn join_request_rejects_unknown_fields_and_invite_debug_hides_token() {
        assert!(serde_json::from_str::<JoinGroupRequest>(r#"{"userIds":[],"x":1}"#).is_err());
        let invite = GroupInvite {
            invite_id: "i".into(),
            token: "secret-token".into(),
            expires_at: 1,
        };
        assert!(!format!("{invite:?}").contains("secret-token"));
    }
}

/// A pending invitation to a group, as `GET /api/groups/invitations` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct GroupInvitation {
    /// The group.
    pub group_id: String,
    /// The admin who added the caller.
    pub inviter_user_id: String,
    /// When (ms).
    pub invited_at: u64,
    /// When it expires unanswered (ms).
    #[serde(default)]
    pub expires_at: u64,
    /// The group's encrypted metadata.
    pub metadata: Base64,
}

/// Answer of `GET /api/groups/invitations`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct GroupInvitations {
    /// Pending invitations of the caller, oldest first.
    pub invitations: Vec<GroupInvitation>,
}

/// `GET` / `PUT /api/users/settings`: the caller's account settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AccountSettings {
    /// Every group add is a pending invitation, even from contacts.
    pub invites_only: bool,
}
