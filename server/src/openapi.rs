//! The OpenAPI 3.1 document of the REST API, served at `/openapi.json`.

use axum::response::IntoResponse;
use serde_json::{json, Value};

fn error_ref() -> Value {
    json!({"description": "error", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}})
}

fn body(schema: &str) -> Value {
    json!({"required": true, "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}}})
}

fn ok(schema: &str) -> Value {
    json!({"description": "ok", "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}}})
}

fn op(summary: &str, auth: bool, responses: Value) -> Value {
    let mut o = json!({"summary": summary, "responses": responses});
    if auth {
        o = with(o, "security", json!([{"bearer": []}]));
    }
    o
}

fn with(mut v: Value, key: &str, value: Value) -> Value {
    if let Some(o) = v.as_object_mut() {
        o.insert(key.to_owned(), value);
    }
    v
}

fn path_param(name: &str, schema: Value) -> Value {
    json!({"name": name, "in": "path", "required": true, "schema": schema})
}

fn b64() -> Value {
    json!({"type": "string", "contentEncoding": "base64"})
}

fn u32s() -> Value {
    json!({"type": "integer", "format": "uint32", "minimum": 0})
}

/// The document.
pub fn spec() -> Value {
    let e = error_ref();
    let mut register = op(
        "Create an account",
        false,
        json!({"201": ok("RegisterResponse"), "400": e, "409": e, "413": e, "415": e, "422": e, "429": e}),
    );
    register = with(register, "requestBody", body("RegisterRequest"));
    let mut login = op(
        "Create the account's first device and its bearer token",
        false,
        json!({"200": ok("LoginResponse"), "400": e, "401": e, "409": e, "422": e, "429": e}),
    );
    login = with(login, "requestBody", body("LoginRequest"));
    let logout = op(
        "Remove this device (token, keys, mailbox)",
        true,
        json!({"204": {"description": "removed"}, "401": e}),
    );
    let mut devices = op(
        "A user's devices",
        true,
        json!({"200": ok("DeviceList"), "401": e, "404": e}),
    );
    devices = with(
        devices,
        "parameters",
        json!([path_param("userId", json!({"type": "string"}))]),
    );
    let mut keys = op(
        "Upload keys for this device (present fields replace stored keys of their type)",
        true,
        json!({"204": {"description": "stored"}, "400": e, "409": e, "413": e}),
    );
    keys = with(keys, "requestBody", body("KeysUpload"));
    let count = op(
        "One-time keys left for this device",
        true,
        json!({"200": ok("KeyCount"), "401": e}),
    );
    let mut bundles = op(
        "Claim a bundle for every device of a user",
        true,
        json!({"200": ok("PreKeyBundles"), "401": e, "404": e}),
    );
    bundles = with(
        bundles,
        "parameters",
        json!([path_param("userId", json!({"type": "string"}))]),
    );
    let mut bundle = op(
        "Claim the bundle of one device",
        true,
        json!({"200": ok("PreKeyBundles"), "401": e, "404": e}),
    );
    bundle = with(
        bundle,
        "parameters",
        json!([
            path_param("userId", json!({"type": "string"})),
            path_param("deviceId", u32s())
        ]),
    );
    let mut send = op(
        "Queue one ciphertext per device",
        true,
        json!({
        "200": ok("SendMessageResponse"), "400": e, "401": e, "404": e, "413": e, "429": e,
        "409": ok("MismatchedDevices"), "410": ok("StaleDevices")}),
    );
    send = with(send, "requestBody", body("SendMessageRequest"));
    let unread = op(
        "Queued envelopes of this device",
        true,
        json!({"200": ok("UnreadCount"), "401": e}),
    );
    let mut fetch = op(
        "Page through queued envelopes (not deleted until acked)",
        true,
        json!({"200": ok("EnvelopePage"), "400": e, "401": e}),
    );
    fetch = with(
        fetch,
        "parameters",
        json!([
        {"name": "after", "in": "query", "schema": {"type": "integer", "minimum": 0}},
        {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 100}}]),
    );
    let mut ack = op(
        "Ack (delete) a queued envelope",
        true,
        json!({"204": {"description": "deleted"}, "401": e, "404": e}),
    );
    ack = with(
        ack,
        "parameters",
        json!([path_param("seq", json!({"type": "integer", "minimum": 0}))]),
    );
    let ws = op(
        "WebSocket: token by header or ?token=; frames are ServerFrame/ClientFrame JSON text",
        true,
        json!({"101": {"description": "switching protocols"}, "401": e, "426": e}),
    );
    let health = op(
        "Liveness and database check",
        false,
        json!({"200": ok("Health"), "503": ok("Health")}),
    );
    let metrics = op(
        "Prometheus metrics",
        false,
        json!({"200": {"description": "text exposition format", "content": {"text/plain": {}}}}),
    );

    let signed = json!({"type": "object", "required": ["keyId", "publicKey", "signature"], "properties": {"keyId": u32s(), "publicKey": b64(), "signature": b64()}});
    let prekey = json!({"type": "object", "required": ["keyId", "publicKey"], "properties": {"keyId": u32s(), "publicKey": b64()}});
    let dref =
        json!({"type": "object", "properties": {"userId": {"type": "string"}, "deviceId": u32s()}});
    let outgoing = json!({"type": "object", "required": ["deviceId", "registrationId", "content"], "properties": {"deviceId": u32s(), "registrationId": u32s(), "content": b64()}});
    json!({
        "openapi": "3.1.0",
        "info": {"title": "Sotto relay", "version": env!("CARGO_PKG_VERSION"),
                 "description": "Stores and forwards opaque end-to-end encrypted envelopes. Binary values are standard base64; times are ms since the Unix epoch. Every error is {code, message}."},
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Error": {"type": "object", "required": ["code", "message"], "properties": {"code": {"type": "string"}, "message": {"type": "string"}}},
                "RegisterRequest": {"type": "object", "required": ["username", "email", "password"], "properties": {
                    "username": {"type": "string", "pattern": "^[A-Za-z0-9_]{3,20}$"}, "email": {"type": "string", "format": "email"},
                    "password": {"type": "string", "minLength": 8, "maxLength": 256}}},
                "RegisterResponse": {"type": "object", "properties": {"userId": {"type": "string", "format": "uuid"}}},
                "LoginRequest": {"type": "object", "required": ["username", "password", "registrationId"], "properties": {
                    "username": {"type": "string"}, "password": {"type": "string"}, "registrationId": u32s()}},
                "LoginResponse": {"type": "object", "properties": {"userId": {"type": "string"}, "deviceId": u32s(), "token": {"type": "string"}}},
                "DeviceList": {"type": "object", "properties": {"userId": {"type": "string"}, "devices": {"type": "array", "items": {
                    "type": "object", "properties": {"deviceId": u32s(), "registrationId": u32s(), "createdAt": {"type": "integer"}}}}}},
                "KeysUpload": {"type": "object", "properties": {"identityKey": b64(), "signedPreKey": signed.clone(),
                    "preKeys": {"type": "array", "maxItems": 100, "items": prekey.clone()},
                    "kemPreKeys": {"type": "array", "maxItems": 100, "items": signed.clone()}, "kemLastResortKey": signed.clone()}},
                "KeyCount": {"type": "object", "properties": {"count": u32s(), "kemCount": u32s()}},
                "PreKeyBundles": {"type": "object", "properties": {"userId": {"type": "string"}, "identityKey": b64(), "devices": {"type": "array", "items": {
                    "type": "object", "required": ["deviceId", "registrationId", "signedPreKey"], "properties": {
                        "deviceId": u32s(), "registrationId": u32s(), "signedPreKey": signed.clone(), "preKey": prekey, "kemPreKey": signed}}}}},
                "SendMessageRequest": {"type": "object", "required": ["recipientId", "clientMessageId", "messages"], "properties": {
                    "recipientId": {"type": "string"}, "clientMessageId": {"type": "string", "minLength": 1, "maxLength": 64},
                    "messages": {"type": "array", "items": outgoing.clone()}, "syncMessages": {"type": "array", "items": outgoing}}},
                "SendMessageResponse": {"type": "object", "properties": {"serverMessageId": {"type": "string"}, "serverTimestamp": {"type": "integer"}, "duplicate": {"type": "boolean"}}},
                "MismatchedDevices": {"type": "object", "properties": {"code": {"const": "mismatched_devices"}, "message": {"type": "string"},
                    "missingDevices": {"type": "array", "items": dref.clone()}, "extraDevices": {"type": "array", "items": dref.clone()}}},
                "StaleDevices": {"type": "object", "properties": {"code": {"const": "stale_devices"}, "message": {"type": "string"}, "staleDevices": {"type": "array", "items": dref}}},
                "UnreadCount": {"type": "object", "properties": {"count": {"type": "integer"}}},
                "Envelope": {"type": "object", "properties": {"seq": {"type": "integer"}, "kind": {"enum": ["message", "deliveryReceipt"]},
                    "sourceUserId": {"type": "string"}, "sourceDeviceId": u32s(), "serverMessageId": {"type": "string"},
                    "clientMessageId": {"type": "string"}, "serverTimestamp": {"type": "integer"}, "content": b64()}},
                "EnvelopePage": {"type": "object", "properties": {"envelopes": {"type": "array", "items": {"$ref": "#/components/schemas/Envelope"}}, "nextCursor": {"type": "integer"}}},
                "Health": {"type": "object", "properties": {"status": {"type": "string"}}}
            }
        },
        "paths": {
            "/api/users/register": {"post": register},
            "/api/users/login": {"post": login},
            "/api/users/logout": {"post": logout},
            "/api/users/{userId}/devices": {"get": devices},
            "/api/keys": {"put": keys},
            "/api/keys/count": {"get": count},
            "/api/keys/{userId}": {"get": bundles},
            "/api/keys/{userId}/{deviceId}": {"get": bundle},
            "/api/messages/send": {"post": send},
            "/api/messages/unread": {"get": unread},
            "/api/messages": {"get": fetch},
            "/api/messages/{seq}": {"delete": ack},
            "/ws": {"get": ws},
            "/healthz": {"get": health},
            "/metrics": {"get": metrics}
        }
    })
}

/// Statuses every operation of a kind can answer, whatever its handler does: the extractors'
/// and the connection layer's. Declared here once so no operation can forget them.
fn declare_common(mut doc: Value) -> Value {
    let e = error_ref();
    let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) else {
        return doc;
    };
    for (path, ops) in paths.iter_mut() {
        let templated = path.contains('{');
        let Some(ops) = ops.as_object_mut() else {
            continue;
        };
        for op in ops.values_mut() {
            let json_body = op
                .pointer("/requestBody/content/application~1json")
                .is_some();
            let raw_body = op.get("requestBody").is_some() && !json_body;
            let authenticated = op.get("security").is_some();
            let Some(responses) = op.get_mut("responses").and_then(Value::as_object_mut) else {
                continue;
            };
            let mut add = |status: &str| {
                responses
                    .entry(status.to_owned())
                    .or_insert_with(|| e.clone());
            };
            if json_body {
                // invalid_json, body_timeout, payload_too_large, unsupported_media_type,
                // invalid_fields.
                for status in ["400", "408", "413", "415", "422"] {
                    add(status);
                }
            }
            if raw_body {
                for status in ["408", "413"] {
                    add(status);
                }
            }
            if authenticated {
                add("401");
            }
            if templated {
                // invalid_path
                add("400");
            }
        }
    }
    doc
}

/// The whole document: the core routes, the feature routes, and the statuses common to all.
pub fn full_spec() -> Value {
    declare_common(crate::openapi_features::extend(spec()))
}

/// `GET /openapi.json`.
pub async fn document() -> impl IntoResponse {
    axum::Json(full_spec())
}
