//! The app's event stream as plain JS objects, `{ type: "...", ... }` with camelCase fields
//! (declared in the package's `.d.ts` as `SottoEvent`).

use serde::Serialize;
use serde_json::{json, Value};
use sotto_client_core::Event;
use wasm_bindgen::JsValue;

/// A serialisable record as a plain JS object.
pub(crate) fn to_js(value: &impl Serialize) -> JsValue {
    serde_json::to_string(value)
        .ok()
        .and_then(|s| js_sys::JSON::parse(&s).ok())
        .unwrap_or(JsValue::NULL)
}

/// The connection's state.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Connection {
    Connecting,
    Connected,
    CaughtUp,
    Disconnected,
    Closed,
}

pub(crate) fn connection(state: Connection) -> JsValue {
    let state = match state {
        Connection::Connecting => "connecting",
        Connection::Connected => "connected",
        Connection::CaughtUp => "caughtUp",
        Connection::Disconnected => "disconnected",
        Connection::Closed => "closed",
    };
    to_js(&json!({"type": "connection", "state": state}))
}

pub(crate) fn store_failed(reason: &str) -> JsValue {
    to_js(&json!({"type": "storeFailed", "reason": reason}))
}

/// One core event.
pub(crate) fn event(e: &Event) -> JsValue {
    to_js(&event_json(e))
}

pub(crate) fn event_json(e: &Event) -> Value {
    match e {
        Event::Message(m) => json!({"type": "message", "message": message(m)}),
        Event::MessageSent {
            conversation,
            message_id,
            server_timestamp,
        } => json!({
            "type": "messageSent", "conversation": conversation, "messageId": message_id,
            "serverTimestamp": server_timestamp,
        }),
        Event::SendFailed {
            conversation,
            message_id,
            reason,
        } => json!({
            "type": "sendFailed", "conversation": conversation, "messageId": message_id,
            "reason": reason,
        }),
        Event::Delivered {
            message_id,
            user_id,
            device_id,
        } => json!({
            "type": "delivered", "messageId": message_id, "userId": user_id, "deviceId": device_id,
        }),
        Event::Read {
            conversation,
            message_ids,
            user_id,
        } => json!({
            "type": "read", "conversation": conversation, "messageIds": message_ids,
            "userId": user_id,
        }),
        Event::ConversationUpdated(c) => {
            json!({"type": "conversationUpdated", "conversation": conversation(c)})
        }
        Event::IdentityChanged {
            user_id,
            was_verified,
            needs_approval,
        } => json!({
            "type": "identityChanged", "userId": user_id, "wasVerified": was_verified,
            "needsApproval": needs_approval,
        }),
        Event::UntrustedDevice { user_id, device_id } => {
            json!({"type": "untrustedDevice", "userId": user_id, "deviceId": device_id})
        }
        Event::DecryptionFailed {
            user_id,
            device_id,
            reason,
        } => json!({
            "type": "decryptionFailed", "userId": user_id, "deviceId": device_id,
            "reason": reason,
        }),
        Event::Typing {
            conversation,
            user_id,
            typing,
        } => json!({
            "type": "typing", "conversation": conversation, "userId": user_id, "typing": typing,
        }),
        Event::Presence {
            user_id,
            status,
            last_seen,
        } => json!({
            "type": "presence", "userId": user_id, "status": status, "lastSeen": last_seen,
        }),
        Event::GroupChanged { group_id } => json!({"type": "groupChanged", "groupId": group_id}),
        Event::UnverifiedGroupMember { group_id, user_id } => {
            json!({"type": "unverifiedGroupMember", "groupId": group_id, "userId": user_id})
        }
        Event::GroupInvitation {
            group_id,
            from_user_id,
            name,
        } => json!({
            "type": "groupInvitation", "groupId": group_id, "fromUserId": from_user_id,
            "name": name,
        }),
        Event::DeviceLinked { device_id } => json!({"type": "deviceLinked", "deviceId": device_id}),
        _ => json!({"type": "unknown"}),
    }
}

/// A conversation for the app: without the bookkeeping of unread message ids.
pub(crate) fn conversation(c: &sotto_client_core::Conversation) -> Value {
    json!({
        "id": c.id, "name": c.name, "lastMessage": c.last_message,
        "unreadCount": c.unread_count, "lastSort": c.last_sort.to_string(),
    })
}

/// A message for the app. Its `sort` (the history cursor) is a decimal string: it uses all 64
/// bits, more than a JS number holds exactly.
pub(crate) fn message(m: &sotto_client_core::Message) -> Value {
    let mut v = serde_json::to_value(m).unwrap_or(Value::Null);
    if let Some(o) = v.as_object_mut() {
        o.insert("sort".into(), Value::String(m.sort.to_string()));
    }
    v
}
