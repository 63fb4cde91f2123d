//! Attachment upload and download: opaque encrypted blobs, streamed both ways.

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use sotto_wire::AttachmentUploaded;

use crate::auth::Auth;
use crate::blobs::{BlobError, BlobId};
use crate::error::{Json, Path};
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

/// `POST /api/attachments`: the raw body is the ciphertext.
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
    let blobs = state.features().blobs().await.map_err(blob_error)?;
    let mut size = 0u64;
    let counted = futures_util::StreamExt::inspect(body.into_data_stream(), |chunk| {
        if let Ok(chunk) = chunk {
            size = size.saturating_add(chunk.len() as u64);
        }
    });
    let id = blobs.put_stream(counted, max).await.map_err(blob_error)?;
    let now = now_ms();
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
pub async fn download(
    State(state): State<AppState>,
    Auth(_): Auth,
    Path(id): Path<String>,
) -> Result<Response, AppError> {
    // A malformed id is answered exactly like an unknown one.
    let id: BlobId = id.parse().map_err(|_| unknown())?;
    let blobs = state.features().blobs().await.map_err(blob_error)?;
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
