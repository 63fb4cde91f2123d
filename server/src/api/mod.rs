//! REST handlers, one module per area.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use sotto_wire::Health;

use crate::error::{AppError, Json};
use crate::AppState;

pub mod attachments;
pub mod envelopes;
pub mod groups;
pub mod keys;
pub mod messages;
pub mod presence;
pub mod provisioning;
pub mod users;

/// `GET /healthz`: 200 when the database answers, 503 otherwise.
#[utoipa::path(
    get, path = "/healthz", tag = "operations", summary = "Liveness and database check",
    responses(
        (status = 200, description = "serving", body = sotto_wire::Health),
        (status = 503, description = "the database does not answer", body = sotto_wire::Health),
    )
)]
pub async fn health(State(state): State<AppState>) -> impl IntoResponse {
    match state.store().health().await {
        Ok(()) => (
            StatusCode::OK,
            Json(Health {
                status: "ok".into(),
            }),
        ),
        Err(e) => {
            tracing::warn!(error = %e, "health check failed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(Health {
                    status: "unavailable".into(),
                }),
            )
        }
    }
}

/// `GET /metrics`: Prometheus text format.
#[utoipa::path(
    get, path = "/metrics", tag = "operations", summary = "Prometheus metrics",
    responses((status = 200, description = "OpenMetrics text exposition", content_type = "application/openmetrics-text"))
)]
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let queued = state.store().queued_total().await.ok();
    (
        [(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)],
        state.metrics().render(queued),
    )
}

/// Whether a client-supplied id can name a row: 1-64 bytes, no control characters (PostgreSQL
/// text cannot hold NUL).
pub(crate) fn valid_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && !id.chars().any(char::is_control)
}

/// A send's idempotency key obeys the same rules as ids.
pub(crate) fn check_client_message_id(id: &str) -> Result<(), AppError> {
    if valid_id(id) {
        Ok(())
    } else {
        Err(AppError::bad_request(
            "invalid_client_message_id",
            "clientMessageId must be 1-64 bytes without control characters",
        ))
    }
}

/// A digest of what a send stores, kept with its `clientMessageId`: a retry of the same request
/// has the same one; a client that reuses the id for another message does not. Every field is
/// length-prefixed under a label naming the kind of send.
pub(crate) fn send_digest(
    label: &str,
    conversation: &str,
    shared: &[u8],
    targets: &[crate::store::Target],
) -> [u8; 32] {
    use sha2::{Digest as _, Sha256};
    fn field(h: &mut Sha256, bytes: &[u8]) {
        h.update((bytes.len() as u64).to_be_bytes());
        h.update(bytes);
    }
    let mut h = Sha256::new();
    field(&mut h, label.as_bytes());
    field(&mut h, conversation.as_bytes());
    field(&mut h, shared);
    h.update((targets.len() as u64).to_be_bytes());
    for t in targets {
        field(&mut h, t.user_id.as_bytes());
        h.update(t.device_id.to_be_bytes());
        h.update(t.registration_id.to_be_bytes());
        field(&mut h, &t.content);
    }
    h.finalize().into()
}

/// 409 for a `clientMessageId` already used by this device for a different request.
pub(crate) fn client_message_id_reused() -> AppError {
    AppError::conflict(
        "client_message_id_reused",
        "this clientMessageId was already used for a different message; use a fresh one",
    )
}
