//! The relay's error answers: `{"code": …, "message": …}` with a specific 4xx for client mistakes,
//! and a generic 500 whose cause is only logged.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use sotto_wire::{DeviceRef, ErrorBody, MismatchedDevices, StaleDevices};

use crate::store::StoreError;

/// An error answer.
#[derive(Debug)]
#[non_exhaustive]
pub enum AppError {
    /// A client mistake: the status is 4xx.
    Client {
        /// HTTP status.
        status: StatusCode,
        /// Stable code.
        code: &'static str,
        /// Explanation, safe to show.
        message: String,
    },
    /// 409 on send.
    MismatchedDevices {
        /// Devices with no ciphertext.
        missing: Vec<DeviceRef>,
        /// Unknown devices in the request.
        extra: Vec<DeviceRef>,
    },
    /// 410 on send.
    StaleDevices(Vec<DeviceRef>),
    /// 429 with `Retry-After`.
    RateLimited(crate::ratelimit::RateLimited),
    /// Anything else: logged, answered with a generic 500.
    Internal(String),
}

impl AppError {
    /// A 400 with the given code.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::client(StatusCode::BAD_REQUEST, code, message)
    }
    /// A 404.
    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::client(StatusCode::NOT_FOUND, code, message)
    }
    /// A 409.
    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::client(StatusCode::CONFLICT, code, message)
    }
    /// A 401.
    pub fn unauthorized() -> Self {
        Self::client(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing, invalid or revoked bearer token",
        )
    }
    /// A 413.
    pub fn too_large(message: impl Into<String>) -> Self {
        Self::client(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", message)
    }
    /// Any 4xx.
    pub fn client(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self::Client {
            status,
            code,
            message: message.into(),
        }
    }
    /// The HTTP status of this answer.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Client { status, .. } => *status,
            Self::MismatchedDevices { .. } => StatusCode::CONFLICT,
            Self::StaleDevices(_) => StatusCode::GONE,
            Self::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<StoreError> for AppError {
    fn from(e: StoreError) -> Self {
        // Text the database cannot represent (PostgreSQL rejects NUL in `text`) came from the
        // client: whatever field carried it, it names nothing stored. SQLSTATE class 22 "data
        // exception": 22021 character_not_in_repertoire, 22P05 untranslatable_character.
        if let StoreError::Database(sqlx::Error::Database(db)) = &e {
            if matches!(db.code().as_deref(), Some("22021" | "22P05")) {
                return Self::bad_request(
                    "invalid_text",
                    "text contains a character that is not allowed",
                );
            }
        }
        Self::Internal(e.to_string())
    }
}

impl From<crate::ratelimit::RateLimited> for AppError {
    fn from(e: crate::ratelimit::RateLimited) -> Self {
        Self::RateLimited(e)
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let status = self.status();
        match self {
            Self::Client { code, message, .. } => (
                status,
                axum::Json(ErrorBody {
                    code: code.to_owned(),
                    message,
                }),
            )
                .into_response(),
            Self::MismatchedDevices { missing, extra } => (
                status,
                axum::Json(MismatchedDevices {
                    code: "mismatched_devices".into(),
                    message: "the message does not cover exactly the current devices".into(),
                    missing_devices: missing,
                    extra_devices: extra,
                }),
            )
                .into_response(),
            Self::StaleDevices(stale) => (
                status,
                axum::Json(StaleDevices {
                    code: "stale_devices".into(),
                    message: "some devices were re-registered".into(),
                    stale_devices: stale,
                }),
            )
                .into_response(),
            Self::RateLimited(limited) => limited.into_response(),
            Self::Internal(cause) => {
                tracing::error!(%cause, "internal error");
                (
                    status,
                    axum::Json(ErrorBody {
                        code: "internal".into(),
                        message: "internal server error".into(),
                    }),
                )
                    .into_response()
            }
        }
    }
}

/// Whether a body error is the body-read timeout (somewhere in its source chain).
pub(crate) fn is_body_timeout(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if err.is::<tower_http::timeout::TimeoutError>() {
            return true;
        }
        cur = err.source();
    }
    false
}

/// 408 for a body that stopped arriving.
pub(crate) fn body_timeout() -> AppError {
    AppError::client(
        StatusCode::REQUEST_TIMEOUT,
        "body_timeout",
        "the request body stopped arriving",
    )
}

fn from_json_rejection(rejection: JsonRejection) -> AppError {
    if is_body_timeout(&rejection) {
        return body_timeout();
    }
    let status = rejection.status();
    let (status, code, message) = match status {
        StatusCode::PAYLOAD_TOO_LARGE => (
            status,
            "payload_too_large",
            "request body too large".to_owned(),
        ),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => (
            status,
            "unsupported_media_type",
            "expected `Content-Type: application/json`".to_owned(),
        ),
        StatusCode::UNPROCESSABLE_ENTITY => (status, "invalid_fields", rejection.body_text()),
        StatusCode::BAD_REQUEST => (status, "invalid_json", rejection.body_text()),
        _ => (
            StatusCode::BAD_REQUEST,
            "invalid_body",
            "the request body could not be read".to_owned(),
        ),
    };
    AppError::Client {
        status,
        code,
        message,
    }
}

/// `axum::Json` whose rejections are our JSON errors.
#[derive(Debug, Clone, Copy, Default)]
pub struct Json<T>(pub T);

impl<S, T> FromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = AppError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(value)) => Ok(Self(value)),
            Err(rejection) => Err(from_json_rejection(rejection)),
        }
    }
}

impl<T: serde::Serialize> IntoResponse for Json<T> {
    fn into_response(self) -> Response {
        axum::Json(self.0).into_response()
    }
}

/// `axum::extract::Path` whose rejections are our JSON errors (400 `invalid_path`).
#[derive(Debug)]
pub struct Path<T>(pub T);

impl<S, T> FromRequestParts<S> for Path<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(value)) => Ok(Self(value)),
            Err(rejection) => Err(path_rejection(rejection)),
        }
    }
}

fn path_rejection(rejection: PathRejection) -> AppError {
    AppError::bad_request("invalid_path", rejection.body_text())
}

/// `axum::extract::Query` whose rejections are our JSON errors (400 `invalid_query`).
#[derive(Debug)]
pub struct Query<T>(pub T);

impl<S, T> FromRequestParts<S> for Query<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Query::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Query(value)) => Ok(Self(value)),
            Err(rejection) => Err(query_rejection(rejection)),
        }
    }
}

fn query_rejection(rejection: QueryRejection) -> AppError {
    AppError::bad_request("invalid_query", rejection.body_text())
}

/// 404 for unknown routes.
pub async fn not_found() -> AppError {
    AppError::not_found("not_found", "no such route")
}

/// 405 for known routes with the wrong method.
pub async fn method_not_allowed() -> AppError {
    AppError::client(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "method not allowed on this route",
    )
}
