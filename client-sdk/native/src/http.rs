//! The relay's REST API over HTTP(S): the calls the core asks for, plus account calls.

use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use reqwest::Method;
use serde::de::DeserializeOwned;
use serde::Serialize;
use sotto_client_core::{relay_http, RelayAnswer, RelayCall, RelayFailure};

/// Most bytes read from one JSON answer.
const MAX_ANSWER_BYTES: usize = 4 << 20;
/// How long an attachment upload or download may take in all (50 MB at ~60 KB/s).
const TRANSFER_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// A raw answer.
#[derive(Debug)]
pub(crate) struct Answer {
    pub status: u16,
    pub body: Vec<u8>,
    pub retry_after: Option<u64>,
}

/// Why a call failed, before the caller decides what it means.
#[derive(Debug)]
pub(crate) enum CallError {
    /// Connection refused, reset, timed out.
    Unreachable,
    /// A 4xx/5xx answer.
    Status(Answer),
    /// A 2xx answer that is not the expected JSON.
    Malformed,
}

impl CallError {
    /// The relay's error code, if it sent one.
    pub fn code(&self) -> Option<String> {
        match self {
            Self::Status(a) => serde_json::from_slice::<sotto_wire::ErrorBody>(&a.body)
                .ok()
                .map(|e| e.code),
            _ => None,
        }
    }

    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Status(a) => Some(a.status),
            _ => None,
        }
    }
}

impl From<CallError> for RelayFailure {
    fn from(e: CallError) -> Self {
        match e {
            CallError::Unreachable => RelayFailure::Unreachable,
            CallError::Malformed => RelayFailure::Malformed,
            CallError::Status(a) => {
                let body: serde_json::Value =
                    serde_json::from_slice(&a.body).unwrap_or(serde_json::Value::Null);
                let code = body
                    .get("code")
                    .and_then(|c| c.as_str())
                    .unwrap_or_default()
                    .to_owned();
                RelayFailure::Rejected {
                    status: a.status,
                    code,
                    body,
                    retry_after_secs: a.retry_after,
                }
            }
        }
    }
}

/// One relay, optionally with a device's token. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Http {
    client: reqwest::Client,
    base: Arc<str>,
    token: Option<Arc<str>>,
}

impl std::fmt::Debug for Http {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Http")
            .field("base", &self.base)
            .field("token", &self.token.is_some())
            .finish_non_exhaustive()
    }
}

/// The base URL is not `http://host[:port]` or `https://…`.
#[derive(Debug)]
pub(crate) struct BadUrl;

impl Http {
    pub fn new(base: &str) -> Result<Self, BadUrl> {
        let base = base.trim_end_matches('/');
        if !(base.starts_with("http://") || base.starts_with("https://")) || base.len() < 10 {
            return Err(BadUrl);
        }
        // rustls with the same ring provider the relay uses; installing twice is harmless.
        let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(64)
            .build()
            .map_err(|_| BadUrl)?;
        Ok(Self {
            client,
            base: base.into(),
            token: None,
        })
    }

    pub fn with_token(&self, token: &str) -> Self {
        Self {
            token: Some(token.into()),
            ..self.clone()
        }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// `ws://…/ws` or `wss://…/ws`.
    pub fn ws_url(&self) -> String {
        let rest = self
            .base
            .strip_prefix("https://")
            .map(|r| format!("wss://{r}"))
            .or_else(|| {
                self.base
                    .strip_prefix("http://")
                    .map(|r| format!("ws://{r}"))
            })
            .unwrap_or_default();
        format!("{rest}/ws")
    }

    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        body: Option<(Vec<u8>, &'static str)>,
    ) -> Result<Answer, CallError> {
        let mut req = self
            .client
            .request(method, format!("{}{}", self.base, path));
        if let Some(t) = &self.token {
            req = req.header(AUTHORIZATION, format!("Bearer {t}"));
        }
        if let Some((bytes, content_type)) = body {
            req = req.header(CONTENT_TYPE, content_type).body(bytes);
        }
        let resp = req.send().await.map_err(|_| CallError::Unreachable)?;
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse().ok());
        let body = resp.bytes().await.map_err(|_| CallError::Unreachable)?;
        if body.len() > MAX_ANSWER_BYTES {
            return Err(CallError::Malformed);
        }
        let answer = Answer {
            status,
            body: body.to_vec(),
            retry_after,
        };
        if (200..300).contains(&status) {
            Ok(answer)
        } else {
            Err(CallError::Status(answer))
        }
    }

    /// A POST of a streamed body of `len` bytes (declared, so the relay can refuse one over its
    /// limits before reading it); the answer's status and body, whatever the status.
    pub async fn post_stream(
        &self,
        path: &str,
        body: reqwest::Body,
        len: u64,
    ) -> Result<Answer, CallError> {
        let mut req = self
            .client
            .post(format!("{}{}", self.base, path))
            .timeout(TRANSFER_TIMEOUT)
            .header(CONTENT_TYPE, "application/octet-stream")
            .header(reqwest::header::CONTENT_LENGTH, len)
            .body(body);
        if let Some(t) = &self.token {
            req = req.header(AUTHORIZATION, format!("Bearer {t}"));
        }
        let resp = req.send().await.map_err(|_| CallError::Unreachable)?;
        let status = resp.status().as_u16();
        let body = resp.bytes().await.map_err(|_| CallError::Unreachable)?;
        if body.len() > MAX_ANSWER_BYTES {
            return Err(CallError::Malformed);
        }
        Ok(Answer {
            status,
            body: body.to_vec(),
            retry_after: None,
        })
    }

    /// A GET whose body the caller reads chunk by chunk; `Err(status)` (0: unreachable).
    pub async fn get_stream(&self, path: &str) -> Result<reqwest::Response, u16> {
        let mut req = self
            .client
            .get(format!("{}{}", self.base, path))
            .timeout(TRANSFER_TIMEOUT);
        if let Some(t) = &self.token {
            req = req.header(AUTHORIZATION, format!("Bearer {t}"));
        }
        let resp = req.send().await.map_err(|_| 0u16)?;
        if resp.status().is_success() {
            Ok(resp)
        } else {
            Err(resp.status().as_u16())
        }
    }

    pub async fn json<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<T, CallError> {
        let body = body
            .map(|b| serde_json::to_vec(b).map(|v| (v, "application/json")))
            .transpose()
            .map_err(|_| CallError::Malformed)?;
        let answer = self.raw(method, path, body).await?;
        serde_json::from_slice(&answer.body).map_err(|_| CallError::Malformed)
    }

    pub async fn empty(
        &self,
        method: Method,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<(), CallError> {
        let body = body
            .map(|b| serde_json::to_vec(b).map(|v| (v, "application/json")))
            .transpose()
            .map_err(|_| CallError::Malformed)?;
        self.raw(method, path, body).await.map(|_| ())
    }

    /// Performs one call the core asked for.
    pub async fn perform(&self, call: &RelayCall) -> Result<RelayAnswer, RelayFailure> {
        let req = relay_http::request(call)?;
        let method = match req.method {
            relay_http::HttpMethod::Get => Method::GET,
            relay_http::HttpMethod::Put => Method::PUT,
            relay_http::HttpMethod::Post => Method::POST,
        };
        let body = req.body.map(|b| (b, "application/json"));
        let a = match self.raw(method, &req.path, body).await {
            Ok(a) | Err(CallError::Status(a)) => a,
            Err(e) => return Err(e.into()),
        };
        relay_http::answer(req.expect, a.status, &a.body, a.retry_after)
    }
}

/// A path segment: ids are UUIDs and numbers, but never let one smuggle a `/` or `?`.
pub(crate) fn segment(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect()
}
