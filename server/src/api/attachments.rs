//! Attachment upload and download: opaque encrypted blobs, streamed both ways.

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use sotto_wire::AttachmentUploaded;

use crate::auth::{hash_token, Auth};
use crate::blobs::{BlobError, BlobId};
use crate::error::{Json, Path};
use crate::ratelimit::{Limit, RateKey};
use crate::{now_ms, AppError, AppState};

fn unknown() -> AppError {
    AppError::not_found("unknown_attachment", "no such attachment")
}

fn blob_error(e: BlobError) -> AppError {
    match e {
        BlobError::TooLarge { max_len } => {
            AppError::too_large(format!("attachments are limited to {max_len} bytes"))
        }
        BlobError::NotFound => unknown(),
        BlobError::Body(e) if crate::error::is_body_timeout(e.as_ref()) => {
            crate::error::body_timeout()
        }
        BlobError::Body(_) => AppError::bad_request("upload_failed", "the upload broke off"),
        other => AppError::Internal(other.to_string()),
    }
}

/// KiB, rounded up, as the upload-volume limit counts them.
fn kib(bytes: u64) -> u32 {
    u32::try_from(bytes.div_ceil(1024)).unwrap_or(u32::MAX)
}

fn ttl_ms(state: &AppState) -> i64 {
    i64::try_from(state.config().envelope_ttl.as_millis()).unwrap_or(i64::MAX)
}

fn quota_exceeded(quota: u64) -> AppError {
    AppError::client(
        StatusCode::PAYLOAD_TOO_LARGE,
        "attachment_quota_exceeded",
        format!(
            "an account may keep at most {quota} bytes of attachments; older ones expire with the \
             envelope time to live"
        ),
    )
}

/// `POST /api/attachments`: the raw body is the ciphertext.
#[utoipa::path(
    post, path = "/api/attachments", operation_id = "upload_attachment", tag = "attachments", summary = "Upload an encrypted attachment (raw body, streamed)", security(("bearer" = [])),
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "the attachment's ciphertext"),
    responses(
        (status = 201, description = "stored", body = sotto_wire::AttachmentUploaded),
        (status = 400, description = "`upload_failed`: the upload broke off"),
        (status = 413, description = "`payload_too_large`, `attachment_quota_exceeded`"),
        (status = 429, description = "`rate_limited`: upload bytes per account per day"),
    )
)]
pub async fn upload(
    State(state): State<AppState>,
    Auth(device): Auth,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<AttachmentUploaded>), AppError> {
    let max = state.config().max_attachment_bytes;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > max) {
        return Err(blob_error(BlobError::TooLarge { max_len: max }));
    }
    // The per-account stored-bytes quota: what is left of it caps this upload.
    let quota = state.config().max_attachment_storage_bytes;
    let user = RateKey::Account(&device.user_id);
    let stored = if quota > 0 {
        let since = now_ms().saturating_sub(ttl_ms(&state));
        state
            .store()
            .attachment_bytes(&device.user_id, since)
            .await?
    } else {
        0
    };
    let room = if quota > 0 {
        quota.saturating_sub(stored)
    } else {
        u64::MAX
    };
    if declared.is_some_and(|len| len > room) || room == 0 {
        return Err(quota_exceeded(quota));
    }
    // The daily upload volume: a declared size is checked before reading, the real size is
    // charged once stored.
    if let Some(len) = declared {
        state.peek(Limit::AttachmentKib, user, kib(len)).await?;
    }
    let blobs = state.services().blobs().await.map_err(blob_error)?;
    let mut size = 0u64;
    let counted = futures_util::StreamExt::inspect(body.into_data_stream(), |chunk| {
        if let Ok(chunk) = chunk {
            size = size.saturating_add(chunk.len() as u64);
        }
    });
    let id = match blobs.put_stream(counted, max.min(room)).await {
        Ok(id) => id,
        Err(BlobError::TooLarge { .. }) if room < max => return Err(quota_exceeded(quota)),
        Err(e) => return Err(blob_error(e)),
    };
    if let Err(limited) = state
        .limiter()
        .check(Limit::AttachmentKib, user, kib(size))
        .await
    {
        // Undeclared (chunked) upload over the day's volume: not kept.
        let _ = blobs.delete(&id).await;
        return Err(limited.into());
    }
    let now = now_ms();
    let recorded = state
        .store()
        .record_attachment(
            &hex::encode(hash_token(&id.to_string())),
            &device.user_id,
            size,
            now,
        )
        .await;
    if let Err(e) = recorded {
        let _ = blobs.delete(&id).await;
        return Err(e.into());
    }
    tracing::debug!(user_id = %device.user_id, size, "attachment stored");
    Ok((
        StatusCode::CREATED,
        Json(AttachmentUploaded {
            attachment_id: id.to_string(),
            size,
            expires_at: u64::try_from(state.expires_at(now)).unwrap_or(0),
        }),
    ))
}

/// `GET /api/attachments/{attachmentId}`.
#[utoipa::path(
    get, path = "/api/attachments/{attachment_id}", tag = "attachments", summary = "Download an attachment (application/octet-stream)", security(("bearer" = [])),
    responses(
        (status = 200, description = "the blob", content_type = "application/octet-stream"),
        (status = 404, description = "`unknown_attachment`"),
    )
)]
pub async fn download(
    State(state): State<AppState>,
    Auth(_caller): Auth,
    Path(attachment_id): Path<String>,
) -> Result<Response, AppError> {
    // A malformed id is answered exactly like an unknown one.
    let id: BlobId = attachment_id.parse().map_err(|_| unknown())?;
    let blobs = state.services().blobs().await.map_err(blob_error)?;
    let (len, stream) = blobs.get_stream(&id).await.map_err(blob_error)?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_owned()),
            (header::CONTENT_LENGTH, len.to_string()),
            (header::CACHE_CONTROL, "no-store".to_owned()),
        ],
        Body::from_stream(stream),
    )
        .into_response())
}
