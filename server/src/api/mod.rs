//! REST handlers, one module per area.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use sotto_wire::Health;

use crate::error::{AppError, Json};
use crate::AppState;

pub mod attachments;
pub mod groups;
pub mod keys;
pub mod messages;
pub mod presence;
pub mod provisioning;
pub mod users;

/// `GET /healthz`: 200 when the database answers, 503 otherwise.
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
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let queued = state.store().queued_total().await.ok();
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
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
