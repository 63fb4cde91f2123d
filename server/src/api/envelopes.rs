//! The wire form of mailbox envelopes, shared by polling (`api::messages`), group fan-out
//! (`api::groups`) and WebSocket pushes (`ws`): 1:1 messages and receipts as stored, group
//! messages with their shared ciphertext joined in, group events with their group id.

use sotto_wire::{Base64, Envelope, EnvelopeKind};

use crate::store::groups::{ENVELOPE_GROUP_EVENT, ENVELOPE_GROUP_MESSAGE};
use crate::store::{StoreError, StoredEnvelope, ENVELOPE_RECEIPT};
use crate::AppState;

/// A stored envelope's wire form without its group parts (see [`to_wire`]).
pub fn plain_wire(e: StoredEnvelope) -> Envelope {
    Envelope {
        seq: u64::try_from(e.seq).unwrap_or(0),
        kind: if e.kind == ENVELOPE_RECEIPT {
            EnvelopeKind::DeliveryReceipt
        } else {
            EnvelopeKind::Message
        },
        source_user_id: e.source_user,
        source_device_id: e.source_device,
        server_message_id: e.server_message_id,
        client_message_id: e.client_message_id,
        server_timestamp: u64::try_from(e.server_ts).unwrap_or(0),
        content: e.content.map(Base64),
        group_id: None,
    }
}

/// Shared ciphertexts of the group-message references in a page of a device's mailbox.
#[derive(Debug, Default)]
pub struct References(std::collections::HashMap<i64, (String, Vec<u8>)>);

/// Loads the references of a mailbox page (one query, only when the page has any).
pub async fn references(
    state: &AppState,
    device_pk: i64,
    page: &[StoredEnvelope],
) -> Result<References, StoreError> {
    let refs = page.iter().filter(|e| e.kind == ENVELOPE_GROUP_MESSAGE);
    let (Some(first), Some(last)) = (refs.clone().map(|e| e.seq).min(), refs.map(|e| e.seq).max())
    else {
        return Ok(References::default());
    };
    let rows = state
        .store()
        .group_references(device_pk, first, last)
        .await?;
    Ok(References(
        rows.into_iter()
            .map(|(seq, group, content)| (seq, (group, content)))
            .collect(),
    ))
}

/// The wire form of a mailbox envelope, with group messages and events completed.
pub fn to_wire(e: StoredEnvelope, refs: &References) -> Envelope {
    let kind = e.kind;
    let seq = e.seq;
    let mut wire = plain_wire(e);
    if kind == ENVELOPE_GROUP_MESSAGE {
        wire.kind = EnvelopeKind::GroupMessage;
        if let Some((group, content)) = refs.0.get(&seq) {
            wire.group_id = Some(group.clone());
            wire.content = Some(content.clone().into());
        }
    } else if kind == ENVELOPE_GROUP_EVENT {
        wire.kind = EnvelopeKind::GroupEvent;
        wire.group_id = wire
            .content
            .as_ref()
            .and_then(|c| serde_json::from_slice::<sotto_wire::GroupEvent>(c.as_bytes()).ok())
            .map(|e| e.group_id);
    }
    wire
}
