//! The plaintext inside every 1:1 ciphertext (and every Sender-Key ciphertext): JSON, versioned.
//!
//! Everything a person wrote, every receipt, typing event and group change travels only in here,
//! so the relay sees none of it. The format is in `docs/sdk.md` ("Encrypted content").

use serde::{Deserialize, Serialize};

use crate::model::AttachmentPointer;

/// Current content version.
pub const VERSION: u8 = 1;
/// Most characters of a text message.
pub const MAX_TEXT_CHARS: usize = 1000;
/// Largest plaintext the core decodes (the relay's envelope limit is 64 KiB of ciphertext).
pub const MAX_PAYLOAD_BYTES: usize = 60 * 1024;
/// Most message ids in one read receipt.
pub const MAX_READ_IDS: usize = 500;

/// One encrypted content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Payload {
    /// [`VERSION`].
    pub v: u8,
    /// The sender's id for this content (dedup key, 32 hex digits).
    pub id: String,
    /// The sender's clock, ms.
    pub ts: u64,
    /// For a copy sent to the sender's own other devices: the 1:1 peer it was sent to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync_to: Option<String>,
    /// For group content: the group id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// What it is.
    pub body: Body,
}

/// The kinds of content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "type", deny_unknown_fields)]
pub enum Body {
    /// A text message.
    Text {
        /// 1-1000 characters.
        text: String,
    },
    /// An attachment message.
    Attachment {
        /// Where the blob is and what opens it.
        attachment: AttachmentPointer,
        /// Optional caption.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        caption: Option<String>,
    },
    /// Read receipt: these messages (of the conversation) were read.
    Read {
        /// The messages' ids (each a pair sender user id, message id).
        ids: Vec<(String, String)>,
    },
    /// To this account's other devices: a contact's identity was marked verified (or not).
    Verified {
        /// The contact.
        user_id: String,
        /// The identity key that was compared, hex.
        identity: String,
        /// Verified or no longer.
        verified: bool,
    },
    /// Typing started or stopped (sent as an ephemeral envelope, never stored).
    Typing {
        /// Started (true) or stopped.
        typing: bool,
    },
    /// A sender key for a group, from its sender's device (1:1 only).
    SenderKey {
        /// The group.
        group_id: String,
        /// `SenderKeyDistributionMessage` bytes, hex.
        distribution: String,
    },
    /// A device that got a group message it cannot open asks its sender's device for the
    /// sender's current chain (1:1 only; see `groups`).
    SenderKeyRequest {
        /// The group.
        group_id: String,
    },
    /// A group change signed by an admin (1:1 only; see `groups`).
    GroupChange {
        /// The signed change, as `groups::SignedChange` JSON.
        change: String,
    },
}

/// Why content was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PayloadError {
    /// Not our JSON.
    #[error("content is not well-formed")]
    Malformed,
    /// A version this build does not know.
    #[error("content version {0} is unknown")]
    UnknownVersion(u8),
    /// Too big, or a field out of its limits.
    #[error("content exceeds a limit")]
    Limits,
}

impl Payload {
    /// Encodes for encryption.
    pub fn encode(&self) -> Vec<u8> {
        // Serializing these plain structs cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Decodes and checks limits.
    pub fn decode(bytes: &[u8]) -> Result<Self, PayloadError> {
        if bytes.len() > MAX_PAYLOAD_BYTES {
            return Err(PayloadError::Limits);
        }
        let p: Payload = serde_json::from_slice(bytes).map_err(|_| PayloadError::Malformed)?;
        if p.v != VERSION {
            return Err(PayloadError::UnknownVersion(p.v));
        }
        if p.id.is_empty() || p.id.len() > 64 {
            return Err(PayloadError::Limits);
        }
        match &p.body {
            Body::Text { text } => check_text(text)?,
            Body::Read { ids } if ids.len() > MAX_READ_IDS => return Err(PayloadError::Limits),
            Body::Attachment {
                caption: Some(c), ..
            } => check_text(c)?,
            _ => {}
        }
        Ok(p)
    }
}

/// Checks a text's length: 1-1000 characters.
pub fn check_text(text: &str) -> Result<(), PayloadError> {
    let n = text.chars().count();
    if n == 0 || n > MAX_TEXT_CHARS {
        return Err(PayloadError::Limits);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sender_key_request_wire_form() {
        let body = Body::SenderKeyRequest {
            group_id: "g1".into(),
        };
        let json = serde_json::to_string(&body).unwrap();
        assert_eq!(json, r#"{"type":"senderKeyRequest","group_id":"g1"}"#);
        let back: Body = serde_json::from_str(&json).unwrap();
        assert_eq!(back, body);
    }

    #[test]
    fn round_trip_and_limits() {
        let p = Payload {
            v: VERSION,
            id: "ab".into(),
            ts: 5,
            sync_to: None,
            group: None,
            body: Body::Text { text: "hi".into() },
        };
        assert_eq!(Payload::decode(&p.encode()).unwrap(), p);
        let mut long = p.clone();
        long.body = Body::Text {
            text: "x".repeat(1001),
        };
        assert_eq!(Payload::decode(&long.encode()), Err(PayloadError::Limits));
        let mut empty = p.clone();
        empty.body = Body::Text { text: "".into() };
        assert_eq!(Payload::decode(&empty.encode()), Err(PayloadError::Limits));
        let mut v2 = p;
        v2.v = 2;
        assert_eq!(
            Payload::decode(&v2.encode()),
            Err(PayloadError::UnknownVersion(2))
        );
        assert_eq!(Payload::decode(b"\xff"), Err(PayloadError::Malformed));
        assert_eq!(
            Payload::decode(br#"{"v":1,"id":"a","ts":1,"body":{"type":"text","text":"a"},"x":1}"#),
            Err(PayloadError::Malformed)
        );
    }
}
