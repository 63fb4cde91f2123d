//! OpenAPI entries for groups, presence, ephemeral envelopes, device linking and attachments,
//! merged into the document of [`crate::openapi`].

use serde_json::{json, Map, Value};

fn err() -> Value {
    json!({"description": "error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}})
}

fn schema_ref(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

fn ok(status: &str, schema: Option<&str>) -> (String, Value) {
    let v = match schema {
        Some(s) => {
            json!({"description": "ok", "content": {"application/json": {"schema": schema_ref(s)}}})
        }
        None => json!({"description": "ok"}),
    };
    (status.to_owned(), v)
}

/// One operation: summary, bearer auth or not, request schema, success answer, error statuses.
fn op(
    summary: &str,
    auth: bool,
    request: Option<&str>,
    success: (String, Value),
    errors: &[&str],
) -> Value {
    let mut responses = Map::new();
    responses.insert(success.0, success.1);
    for e in errors {
        responses.insert((*e).to_owned(), err());
    }
    let mut o = json!({"summary": summary, "responses": responses});
    if let Some(obj) = o.as_object_mut() {
        if auth {
            obj.insert("security".into(), json!([{"bearer": []}]));
        }
        if let Some(r) = request {
            obj.insert(
                "requestBody".into(),
                json!({"required": true, "content": {"application/json": {"schema": schema_ref(r)}}}),
            );
        }
    }
    o
}

fn obj(props: &[&str]) -> Value {
    let mut p = Map::new();
    for name in props {
        p.insert((*name).to_owned(), json!({}));
    }
    json!({"type": "object", "properties": p})
}

/// Adds the paths and schemas to `doc` (an OpenAPI 3.1 document).
pub fn extend(mut doc: Value) -> Value {
    let paths = json!({
        "/api/attachments": {"post": with_raw_body(op("Upload an encrypted attachment (raw body, streamed)", true, None, ok("201", Some("AttachmentUploaded")), &["400", "401", "408", "413", "429"]))},
        "/api/attachments/{attachmentId}": {"get": op("Download an attachment (application/octet-stream)", true, None, ("200".into(), json!({"description": "the blob", "content": {"application/octet-stream": {}}})), &["401", "404"])},
        "/api/groups": {
            "post": op("Create a group (caller is admin)", true, Some("CreateGroupRequest"), ok("201", Some("GroupCreated")), &["400", "401", "404", "409", "413", "422", "429"]),
            "get": op("The caller's groups, one page (?after=&limit=1-100)", true, None, ok("200", Some("GroupList")), &["400", "401"])
        },
        "/api/groups/invitations": {"get": op("The caller's pending group invitations", true, None, ok("200", Some("GroupInvitations")), &["401"])},
        "/api/groups/{groupId}/invitation": {
            "post": op("Accept the caller's pending invitation", true, None, ok("200", Some("GroupMembers")), &["401", "404", "409", "429"]),
            "delete": op("Decline the caller's pending invitation", true, None, ok("204", None), &["401", "404"])
        },
        "/api/users/settings": {
            "get": op("The caller's account settings", true, None, ok("200", Some("AccountSettings")), &["401"]),
            "put": op("Change the caller's account settings (invitesOnly)", true, Some("AccountSettings"), ok("204", None), &["401"])
        },
        "/api/groups/{groupId}/members": {"get": op("Members (members only)", true, None, ok("200", Some("GroupMembers")), &["401", "404"])},
        "/api/groups/{groupId}/join": {"post": op("Admin adds users, or the caller joins with an invite token", true, Some("JoinGroupRequest"), ok("200", Some("GroupMembers")), &["400", "401", "403", "404", "409", "422", "429"])},
        "/api/groups/{groupId}/leave": {"delete": op("Leave", true, None, ok("204", None), &["401", "404"])},
        "/api/groups/{groupId}/members/{userId}": {
            "delete": op("Admin removes a member", true, None, ok("204", None), &["400", "401", "403", "404", "429"]),
            "put": op("Admin sets a member's role", true, Some("SetRoleRequest"), ok("204", None), &["400", "401", "403", "404", "409", "422", "429"])
        },
        "/api/groups/{groupId}/invites": {"post": op("Admin creates an invite token", true, None, ok("201", Some("GroupInvite")), &["401", "403", "404", "429"])},
        "/api/groups/{groupId}/invites/{inviteId}": {"delete": op("Admin revokes an invite", true, None, ok("204", None), &["401", "403", "404"])},
        "/api/groups/{groupId}/messages": {"post": op("Send one Sender-Key ciphertext to every member device (stored once)", true, Some("GroupSendRequest"), ok("200", Some("SendMessageResponse")), &["400", "401", "404", "409", "410", "413", "422", "429"])},
        "/api/users/{userId}/status": {"get": op("Presence: online, away or offline with lastSeen", true, None, ok("200", Some("UserStatus")), &["401", "404"])},
        "/api/presence": {"put": op("Set the calling (connected) device online or away", true, Some("SetPresenceRequest"), ok("204", None), &["400", "401", "409"])},
        "/api/presence/subscriptions": {"put": op("Replace the connected device's presence subscriptions", true, Some("PresenceSubscriptions"), ok("200", Some("PresenceSnapshot")), &["400", "401", "409"])},
        "/api/messages/ephemeral": {"post": op("Relay an ephemeral envelope (typing) to connected devices only", true, Some("EphemeralRequest"), ok("204", None), &["400", "401", "404", "422", "429"])},
        "/api/provisioning": {"post": op("Open a provisioning channel (no authentication)", false, None, ok("201", Some("ProvisioningChannel")), &["429", "503"])},
        "/api/provisioning/{address}": {
            "put": op("Deliver the encrypted provisioning message", true, Some("ProvisioningMessage"), ok("204", None), &["400", "401", "404", "409"]),
            "get": op("Long-poll for the provisioning message (?waitSecs=0-30)", false, None, ok("200", Some("ProvisioningMessage")), &["404"])
        },
        "/api/devices/linking-codes": {"post": op("A one-time code for linking a new device", true, None, ok("201", Some("LinkingCode")), &["401", "429"])},
        "/api/devices/link": {"post": op("Register a linked device with its code (no authentication)", false, Some("LinkDeviceRequest"), ok("201", Some("LoginResponse")), &["400", "403", "409", "429"])},
        "/api/devices/{deviceId}": {"delete": op("Remove one of the caller's devices (itself, or any as the primary device)", true, None, ok("204", None), &["401", "403", "404"])}
    });
    let schemas = json!({
        "AttachmentUploaded": obj(&["attachmentId", "size", "expiresAt"]),
        "CreateGroupRequest": obj(&["members", "metadata"]),
        "GroupCreated": obj(&["groupId", "revision", "invitedUserIds"]),
        "GroupList": obj(&["groups", "nextCursor"]),
        "GroupInvitations": obj(&["invitations"]),
        "AccountSettings": obj(&["invitesOnly"]),
        "GroupMembers": obj(&["groupId", "revision", "metadata", "members", "invitedUserIds"]),
        "JoinGroupRequest": obj(&["userIds", "inviteToken"]),
        "SetRoleRequest": obj(&["role"]),
        "GroupInvite": obj(&["inviteId", "token", "expiresAt"]),
        "GroupSendRequest": obj(&["clientMessageId", "content", "messages"]),
        "UserStatus": obj(&["userId", "status", "lastSeen"]),
        "SetPresenceRequest": obj(&["status"]),
        "PresenceSubscriptions": obj(&["userIds"]),
        "PresenceSnapshot": obj(&["statuses"]),
        "EphemeralRequest": obj(&["recipientId", "groupId", "timestamp", "messages", "content"]),
        "ProvisioningChannel": obj(&["address", "expiresAt"]),
        "ProvisioningMessage": obj(&["message"]),
        "LinkingCode": obj(&["code", "expiresAt"]),
        "LinkDeviceRequest": obj(&["code", "registrationId"])
    });
    merge(&mut doc, "paths", paths);
    if let Some(components) = doc.get_mut("components") {
        merge(components, "schemas", schemas);
    }
    doc
}

fn with_raw_body(mut op: Value) -> Value {
    if let Some(o) = op.as_object_mut() {
        o.insert(
            "requestBody".into(),
            json!({"required": true, "content": {"application/octet-stream": {}}}),
        );
    }
    op
}

fn merge(doc: &mut Value, key: &str, extra: Value) {
    let (Some(target), Value::Object(extra)) =
        (doc.get_mut(key).and_then(Value::as_object_mut), extra)
    else {
        return;
    };
    for (k, v) in extra {
        target.entry(k).or_insert(v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_paths_and_schemas() {
        let doc = extend(json!({"paths": {"/a": {}}, "components": {"schemas": {"Error": {}}}}));
        assert!(doc["paths"]["/a"].is_object());
        assert!(doc["paths"]["/api/groups/{groupId}/messages"]["post"].is_object());
        assert!(doc["components"]["schemas"]["GroupSendRequest"].is_object());
        assert!(doc["components"]["schemas"]["Error"].is_object());
    }
}
