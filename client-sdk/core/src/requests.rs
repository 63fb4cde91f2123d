//! What the core asks the runtime to send to the relay, and the answers the runtime reports back.
//!
//! Every request has an id; the runtime performs it (HTTP in `sotto-client`, an in-memory relay in
//! the tests) and calls [`Client::handle_response`](crate::Client::handle_response) with the same
//! id. Nothing in the core waits on a socket.

use sotto_wire::{
    DeviceList, EphemeralRequest, GroupSendRequest, KeyCount, KeysUpload, PreKeyBundles,
    SendMessageRequest, SendMessageResponse,
};

/// Identifies one request until its answer is reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(pub u64);

/// One relay call.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum RelayCall {
    /// `PUT /api/keys` → 204.
    UploadKeys(KeysUpload),
    /// `GET /api/keys/count` → [`RelayAnswer::KeyCount`].
    KeyCount,
    /// `GET /api/keys/{userId}` or `/api/keys/{userId}/{deviceId}` → [`RelayAnswer::Bundles`].
    FetchBundles {
        /// Whose.
        user_id: String,
        /// One device, or all.
        device_id: Option<u32>,
    },
    /// `GET /api/users/{userId}/devices` → [`RelayAnswer::Devices`].
    Devices {
        /// Whose.
        user_id: String,
    },
    /// `POST /api/messages/send` → [`RelayAnswer::Sent`].
    SendMessage(SendMessageRequest),
    /// `POST /api/groups/{groupId}/messages` → [`RelayAnswer::Sent`].
    SendGroup {
        /// The group.
        group_id: String,
        /// The body.
        request: GroupSendRequest,
    },
    /// `POST /api/messages/ephemeral` → 204.
    Ephemeral(EphemeralRequest),
}

/// A successful answer, parsed by the runtime into the type the call expects.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum RelayAnswer {
    /// 204 (or any 2xx without a body the core needs).
    NoContent,
    /// Key counts.
    KeyCount(KeyCount),
    /// Prekey bundles.
    Bundles(PreKeyBundles),
    /// A device list.
    Devices(DeviceList),
    /// A send was accepted.
    Sent(SendMessageResponse),
}

/// A failed call.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum RelayFailure {
    /// A 4xx/5xx answer with the relay's JSON error body (`code`, and the whole body for 409/410).
    Rejected {
        /// HTTP status.
        status: u16,
        /// The relay's error code (empty when the body had none).
        code: String,
        /// The whole JSON body (`Null` when it was not JSON).
        body: serde_json::Value,
        /// `Retry-After` in seconds, for 429.
        retry_after_secs: Option<u64>,
    },
    /// The relay could not be reached (connection refused, reset, timed out).
    Unreachable,
    /// A 2xx answer whose body is not what the call expects.
    Malformed,
}

/// A request for the runtime.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// Report the answer with this id.
    pub id: RequestId,
    /// What to call.
    pub call: RelayCall,
}
