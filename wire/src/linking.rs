//! Linking a new device to an account, from one of its existing devices.
//!
//! ```text
//!  new device                         relay                          existing device
//!  POST /api/provisioning ──────────▶ address (ephemeral, 10 min)
//!  shows address + its ephemeral public key as a QR code ─────────────▶ scans it
//!                                     ◀── POST /api/devices/linking-codes  (code, one use)
//!                                     ◀── PUT /api/provisioning/{address}  { message }
//!                                         message = E2EE(identity key pair, code, …)
//!  GET /api/provisioning/{address} ─▶ { message } (long poll)
//!  POST /api/devices/link { code } ─▶ { userId, deviceId, token }
//! ```
//!
//! The relay cannot read the provisioning message. At most 6 devices per account by default (409
//! `too_many_devices`). `DELETE /api/devices/{deviceId}` removes one of the caller's devices: its
//! token stops working, its mailbox is deleted, and senders get 409 for it on their next send.

use serde::{Deserialize, Serialize};

use crate::Base64;

/// Answer of `POST /api/provisioning` (no authentication).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct ProvisioningChannel {
    /// Ephemeral address (43 URL-safe base64 characters).
    pub address: String,
    /// When the address stops working (ms since the epoch).
    pub expires_at: u64,
}

/// `PUT /api/provisioning/{address}` (authenticated, from an existing device), and the answer of
/// `GET /api/provisioning/{address}?waitSecs=n` (200 with the message, 204 if none arrived within
/// the wait, 404 `unknown_address` for an unknown or expired address). One message per address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProvisioningMessage {
    /// Ciphertext for the new device (≤ 64 KiB).
    pub message: Base64,
}

/// Answer of `POST /api/devices/linking-codes`: a one-time code, valid for 10 minutes, that the
/// existing device puts inside the provisioning message.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct LinkingCode {
    /// The code (43 URL-safe base64 characters).
    pub code: String,
    /// When it stops working (ms since the epoch).
    pub expires_at: u64,
}

impl std::fmt::Debug for LinkingCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Self {
            code: _,
            expires_at,
        } = self;
        f.debug_struct("LinkingCode")
            .field("expires_at", expires_at)
            .finish_non_exhaustive()
    }
}

/// `POST /api/devices/link` (no authentication): registers the new device with a linking code.
/// Answer: 201 [`LoginResponse`](crate::LoginResponse); 403 `invalid_linking_code`; 409
/// `too_many_devices`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LinkDeviceRequest {
    /// The code from the provisioning message.
    pub code: String,
    /// The new device's registration id (non-zero).
    pub registration_id: u32,
}

impl std::fmt::Debug for LinkDeviceRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Self {
            code: _,
            registration_id,
        } = self;
        f.debug_struct("LinkDeviceRequest")
            .field("registration_id", registration_id)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_not_in_debug() {
        let code = LinkingCode {
            code: "one-time-code".into(),
            expires_at: 1,
        };
        assert!(!format!("{code:?}").contains("one-time-code"));
        let req: LinkDeviceRequest =
            serde_json::from_str(r#"{"code":"one-time-code","registrationId":7}"#).unwrap();
        assert!(!format!("{req:?}").contains("one-time-code"));
        assert!(serde_json::from_str::<LinkDeviceRequest>(r#"{"code":"c"}"#).is_err());
    }
}
