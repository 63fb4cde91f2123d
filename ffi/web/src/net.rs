//! The relay's REST API over the browser's `fetch`, and timers over `setTimeout`.

use js_sys::{Promise, Uint8Array};
use serde::de::DeserializeOwned;
use serde::Serialize;
use sotto_client_core::{relay_http, RelayAnswer, RelayCall, RelayFailure};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;
use web_sys::{Headers, Request, RequestInit, Response};

/// Most bytes read from one JSON answer.
const MAX_ANSWER_BYTES: usize = 4 << 20;

#[wasm_bindgen]
extern "C" {
    #[wasm_bindgen(js_name = fetch)]
    fn global_fetch(request: &Request) -> Promise;
    #[wasm_bindgen(js_name = setTimeout)]
    fn set_timeout(handler: &js_sys::Function, ms: i32) -> JsValue;
}

/// Resolves after `ms` milliseconds (the event loop runs meanwhile).
pub(crate) async fn sleep(ms: u32) {
    let ms = i32::try_from(ms).unwrap_or(i32::MAX);
    let p = Promise::new(&mut |resolve, _| {
        set_timeout(&resolve, ms);
    });
    let _ = JsFuture::from(p).await;
}

/// Milliseconds since the epoch.
pub(crate) fn now_ms() -> u64 {
    js_sys::Date::now() as u64
}

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
    /// The network failed (refused, reset, CORS, offline).
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

    /// "message (code)" from the relay's error body, for `rejected` errors.
    pub fn describe(&self) -> String {
        match self {
            Self::Status(a) => serde_json::from_slice::<sotto_wire::ErrorBody>(&a.body)
                .map(|b| format!("{} ({})", b.message, b.code))
                .unwrap_or_else(|_| format!("HTTP {}", a.status)),
            Self::Unreachable => "the relay cannot be reached".into(),
            Self::Malformed => "the relay's answer is malformed".into(),
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

/// One relay, optionally with a device's token.
#[derive(Clone)]
pub(crate) struct Http {
    base: String,
    token: Option<String>,
}

impl std::fmt::Debug for Http {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Http")
            .field("base", &self.base)
            .field("token", &self.token.is_some())
            .finish()
    }
}

impl Http {
    /// `None` unless `base` is `http(s)://host[:port][/prefix]`.
    pub fn new(base: &str) -> Option<Self> {
        let base = base.trim_end_matches('/');
        let rest = base
            .strip_prefix("https://")
            .or_else(|| base.strip_prefix("http://"))?;
        if rest.is_empty() || rest.contains(['?', '#', ' ']) {
            return None;
        }
        Some(Self {
            base: base.to_owned(),
            token: None,
        })
    }

    pub fn with_token(&self, token: &str) -> Self {
        Self {
            token: Some(token.to_owned()),
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
        method: &str,
        path: &str,
        body: Option<(&[u8], &str)>,
    ) -> Result<Answer, CallError> {
        let init = RequestInit::new();
        init.set_method(method);
        let headers = Headers::new().map_err(|_| CallError::Unreachable)?;
        if let Some(t) = &self.token {
            headers
                .set("authorization", &format!("Bearer {t}"))
                .map_err(|_| CallError::Unreachable)?;
        }
        if let Some((bytes, content_type)) = body {
            headers
                .set("content-type", content_type)
                .map_err(|_| CallError::Unreachable)?;
            init.set_body(&Uint8Array::from(bytes));
        }
        init.set_headers(&headers);
        let url = format!("{}{}", self.base, path);
        let request =
            Request::new_with_str_and_init(&url, &init).map_err(|_| CallError::Unreachable)?;
        let resp: Response = JsFuture::from(global_fetch(&request))
            .await
            .map_err(|_| CallError::Unreachable)?
            .unchecked_into();
        let status = resp.status();
        let retry_after = resp
            .headers()
            .get("retry-after")
            .ok()
            .flatten()
            .and_then(|v| v.trim().parse().ok());
        let buf = JsFuture::from(resp.array_buffer().map_err(|_| CallError::Unreachable)?)
            .await
            .map_err(|_| CallError::Unreachable)?;
        let array = Uint8Array::new(&buf);
        if array.length() as usize > MAX_ANSWER_BYTES && !(200..300).contains(&status) {
            return Err(CallError::Malformed);
        }
        let answer = Answer {
            status,
            body: array.to_vec(),
            retry_after,
        };
        if (200..300).contains(&status) {
            Ok(answer)
        } else {
            Err(CallError::Status(answer))
        }
    }

    pub async fn json<T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<T, CallError> {
        let answer = self.send(method, path, body).await?;
        if answer.body.len() > MAX_ANSWER_BYTES {
            return Err(CallError::Malformed);
        }
        serde_json::from_slice(&answer.body).map_err(|_| CallError::Malformed)
    }

    pub async fn empty(
        &self,
        method: &str,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<(), CallError> {
        self.send(method, path, body).await.map(|_| ())
    }

    async fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<Answer, CallError> {
        let body = body
            .map(serde_json::to_vec)
            .transpose()
            .map_err(|_| CallError::Malformed)?;
        self.raw(
            method,
            path,
            body.as_deref().map(|b| (b, "application/json")),
        )
        .await
    }

    /// Performs one call the core asked for.
    pub async fn perform(&self, call: &RelayCall) -> Result<RelayAnswer, RelayFailure> {
        let req = relay_http::request(call)?;
        let method = match req.method {
            relay_http::HttpMethod::Get => "GET",
            relay_http::HttpMethod::Put => "PUT",
            relay_http::HttpMethod::Post => "POST",
        };
        let body = req.body.as_deref().map(|b| (b, "application/json"));
        let a = match self.raw(method, &req.path, body).await {
            Ok(a) | Err(CallError::Status(a)) => a,
            Err(e) => return Err(e.into()),
        };
        if a.body.len() > MAX_ANSWER_BYTES {
            return Err(RelayFailure::Malformed);
        }
        relay_http::answer(req.expect, a.status, &a.body, a.retry_after)
    }
}

/// A path segment: ids are UUIDs and numbers, but never let one smuggle a `/` or `?`.
pub(crate) fn segment(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect()
}
