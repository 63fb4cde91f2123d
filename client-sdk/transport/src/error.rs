//! [`TransportError`]: what a relay call or the WebSocket can fail with.

use std::time::Duration;

use sotto_wire::DeviceRef;

/// A failed relay call.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransportError {
    /// The relay answered with an error status and (normally) its JSON error body.
    #[error("relay answered {status} {code}: {message}")]
    Relay {
        /// HTTP status (4xx for the caller's mistakes, 5xx for relay faults).
        status: u16,
        /// The relay's stable error code (`unexpected_status` when the body was not the relay's
        /// JSON error, e.g. from a proxy).
        code: String,
        /// The relay's human-readable message.
        message: String,
        /// `Retry-After` of a 429 (or 503), when given.
        retry_after: Option<Duration>,
        /// Extra fields some errors carry (409 `mismatched_devices`, 410 `stale_devices`).
        details: Option<RelayErrorDetails>,
    },
    /// The relay could not be reached: connection refused or reset, DNS, TLS handshake, timeout.
    #[error("relay unreachable")]
    Unreachable,
    /// The relay answered 2xx with a body that is not what the route returns, or too large.
    #[error("malformed relay answer: {0}")]
    Malformed(String),
    /// The base URL or an extra CA certificate is unusable.
    #[error("invalid transport configuration: {0}")]
    Config(String),
    /// A path argument (user id, group id, …) that cannot be put in a URL: empty, `.` or `..`.
    #[error("invalid argument: {0}")]
    InvalidArgument(&'static str),
    /// Reading the attachment body to upload failed.
    #[error("attachment body: {0}")]
    Body(#[source] std::io::Error),
    /// The WebSocket is not connected (frames are not queued across reconnects).
    #[error("not connected")]
    NotConnected,
}

impl TransportError {
    /// The relay's error code, when this is a relay answer.
    pub fn code(&self) -> Option<&str> {
        match self {
            Self::Relay { code, .. } => Some(code),
            _ => None,
        }
    }

    /// The HTTP status, when this is a relay answer.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Relay { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// Details carried by some relay errors next to `code` and `message`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RelayErrorDetails {
    /// 409 `mismatched_devices` on a send: fetch bundles for `missing`, drop sessions of `extra`.
    MismatchedDevices {
        /// Current devices the request had no ciphertext for.
        missing: Vec<DeviceRef>,
        /// Devices in the request that do not exist (any more).
        extra: Vec<DeviceRef>,
    },
    /// 410 `stale_devices` on a send: these devices re-registered.
    StaleDevices {
        /// Devices whose registration id changed.
        stale: Vec<DeviceRef>,
    },
}
