//! Attachments: opaque encrypted blobs.
//!
//! `POST /api/attachments` with the ciphertext as the raw request body (any content type, streamed;
//! at most 50 MiB by default, 413 `payload_too_large` beyond) answers 201 [`AttachmentUploaded`].
//! `GET /api/attachments/{attachmentId}` streams the bytes back (`application/octet-stream`); an
//! unknown, expired or malformed id is 404 `unknown_attachment`. Both need a bearer token. The key
//! and digest that make the blob readable travel inside the end-to-end encrypted message, never
//! through the relay.

use serde::{Deserialize, Serialize};

/// Answer to an upload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct AttachmentUploaded {
    /// Unguessable id (43 URL-safe base64 characters); put it in the message.
    pub attachment_id: String,
    /// Bytes stored.
    pub size: u64,
    /// When the relay deletes the blob (ms since the epoch): the envelope time to live.
    pub expires_at: u64,
}
