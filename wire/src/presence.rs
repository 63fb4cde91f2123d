//! Presence and ephemeral envelopes (typing indicators).
//!
//! A user is `online` while any of its devices has a WebSocket open and not every open device set
//! itself `away` (`PUT /api/presence`); `offline` otherwise, with `lastSeen`. Changes are pushed as
//! [`ServerFrame::Presence`](crate::ServerFrame::Presence) to the connected devices of users who
//! share a group with the user, and of devices that subscribed (`PUT /api/presence/subscriptions`,
//! for the lifetime of their connection) — nobody else.
//!
//! Ephemeral envelopes (`POST /api/messages/ephemeral`) are relayed only to devices connected at
//! that moment, as [`ServerFrame::Ephemeral`](crate::ServerFrame::Ephemeral); they are never
//! stored, never delivered later, and dropped when older than 10 seconds.

use serde::{Deserialize, Serialize};

use crate::Base64;

/// Presence of a user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub enum PresenceStatus {
    /// At least one device connected and not away.
    Online,
    /// Connected, but every connected device said it is away.
    Away,
    /// No device connected.
    Offline,
}

/// Answer of `GET /api/users/{userId}/status`, and the payload of presence pushes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct UserStatus {
    /// The user.
    pub user_id: String,
    /// Current status.
    pub status: PresenceStatus,
    /// Last time a device of the user was connected (ms since the epoch); absent if never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<u64>,
}

/// `PUT /api/presence`: the calling device's own state while connected (`online` or `away`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SetPresenceRequest {
    /// `online` or `away` (`offline` is not settable: it means "no connection").
    pub status: PresenceStatus,
}

/// `PUT /api/presence/subscriptions`: replaces the calling device's subscriptions (at most 1,000
/// users). The device must be connected; the subscriptions end with its connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PresenceSubscriptions {
    /// Users whose presence changes to push.
    pub user_ids: Vec<String>,
}

/// Answer to [`PresenceSubscriptions`]: the current status of each subscribed user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct PresenceSnapshot {
    /// One entry per existing subscribed user.
    pub statuses: Vec<UserStatus>,
}

/// One ephemeral ciphertext for one device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EphemeralMessage {
    /// Destination device id.
    pub device_id: u32,
    /// Opaque ciphertext.
    pub content: Base64,
}

/// `POST /api/messages/ephemeral`: either `recipientId` with one ciphertext per device in
/// `messages` (1:1), or `groupId` with one Sender-Key ciphertext in `content` (members only).
/// `timestamp` is the sender's clock (ms); older than 10 s means dropped. Answer: 204, whether or
/// not anyone was online.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct EphemeralRequest {
    /// 1:1 recipient.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recipient_id: Option<String>,
    /// Group recipient.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_id: Option<String>,
    /// When the sender created it (ms since the epoch).
    pub timestamp: u64,
    /// One ciphertext per device of the recipient (1:1).
    #[serde(default)]
    pub messages: Vec<EphemeralMessage>,
    /// The group ciphertext.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<Base64>,
}

/// An ephemeral envelope as pushed over the WebSocket (never acked, never stored).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct EphemeralEnvelope {
    /// Sending user.
    pub source_user_id: String,
    /// Sending device.
    pub source_device_id: u32,
    /// Set for group ephemerals.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_id: Option<String>,
    /// The sender's timestamp.
    pub timestamp: u64,
    /// Opaque ciphertext.
    pub content: Base64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ServerFrame;

    #[test]
    fn presence_and_ephemeral_frames() {
        let f = ServerFrame::Presence(UserStatus {
            user_id: "u".into(),
            status: PresenceStatus::Offline,
            last_seen: Some(5),
        });
        assert_eq!(
            serde_json::to_string(&f).unwrap(),
            r#"{"type":"presence","data":{"userId":"u","status":"offline","lastSeen":5}}"#
        );
        let e: ServerFrame = serde_json::from_str(
            r#"{"type":"ephemeral","data":{"sourceUserId":"a","sourceDeviceId":1,"timestamp":2,"content":"AQ=="}}"#,
        )
        .unwrap();
        assert!(matches!(e, ServerFrame::Ephemeral(ref x) if x.content.as_bytes() == [1]));
    }
}
