//! How each [`RelayCall`] maps onto the relay's HTTP API, and how an HTTP answer maps back onto
//! a [`RelayAnswer`] or [`RelayFailure`]. Pure: no I/O. Every runtime (native, web) uses this one
//! mapping, so a call added to the core needs no runtime change.

use crate::{RelayAnswer, RelayCall, RelayFailure};

/// The HTTP method of a relay request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpMethod {
    /// GET.
    Get,
    /// PUT.
    Put,
    /// POST.
    Post,
}

impl HttpMethod {
    /// The method's name as sent on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Get => "GET",
            Self::Put => "PUT",
            Self::Post => "POST",
        }
    }
}

/// What kind of answer body a call expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// Any 2xx; the body is ignored.
    NoContent,
    /// A key count.
    KeyCount,
    /// Prekey bundles.
    Bundles,
    /// A device list.
    Devices,
    /// A send acknowledgement.
    Sent,
}

/// One HTTP request for a relay call. The body, when present, is JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpRequest {
    /// Method.
    pub method: HttpMethod,
    /// Path below the relay's base URL, starting with `/`.
    pub path: String,
    /// JSON body (`application/json`).
    pub body: Option<Vec<u8>>,
    /// How to read the answer.
    pub expect: Expect,
}

/// A path segment: ids are UUIDs and numbers, but never let one smuggle a `/` or `?`.
pub fn segment(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect()
}

/// The HTTP request for `call`; `Err(Malformed)` for a body that does not serialize. Inside this
/// crate the match is exhaustive, so a new [`RelayCall`] variant must be mapped here.
pub fn request(call: &RelayCall) -> Result<HttpRequest, RelayFailure> {
    fn build(
        method: HttpMethod,
        path: String,
        body: Option<&impl serde::Serialize>,
        expect: Expect,
    ) -> Result<HttpRequest, RelayFailure> {
        let body = body
            .map(serde_json::to_vec)
            .transpose()
            .map_err(|_| RelayFailure::Malformed)?;
        Ok(HttpRequest {
            method,
            path,
            body,
            expect,
        })
    }
    const NONE: Option<&()> = None;
    match call {
        RelayCall::UploadKeys(up) => build(
            HttpMethod::Put,
            "/api/keys".into(),
            Some(up),
            Expect::NoContent,
        ),
        RelayCall::KeyCount => build(
            HttpMethod::Get,
            "/api/keys/count".into(),
            NONE,
            Expect::KeyCount,
        ),
        RelayCall::FetchBundles { user_id, device_id } => {
            let path = match device_id {
                Some(d) => format!("/api/keys/{}/{d}", segment(user_id)),
                None => format!("/api/keys/{}", segment(user_id)),
            };
            build(HttpMethod::Get, path, NONE, Expect::Bundles)
        }
        RelayCall::Devices { user_id } => build(
            HttpMethod::Get,
            format!("/api/users/{}/devices", segment(user_id)),
            NONE,
            Expect::Devices,
        ),
        RelayCall::SendMessage(req) => build(
            HttpMethod::Post,
            "/api/messages/send".into(),
            Some(req),
            Expect::Sent,
        ),
        RelayCall::SendGroup { group_id, request } => build(
            HttpMethod::Post,
            format!("/api/groups/{}/messages", segment(group_id)),
            Some(request),
            Expect::Sent,
        ),
        RelayCall::Ephemeral(req) => build(
            HttpMethod::Post,
            "/api/messages/ephemeral".into(),
            Some(req),
            Expect::NoContent,
        ),
    }
}

/// The answer to a request sent for `expect`: a 2xx body decoded as expected, or the relay's
/// rejection with its JSON error body.
pub fn answer(
    expect: Expect,
    status: u16,
    body: &[u8],
    retry_after_secs: Option<u64>,
) -> Result<RelayAnswer, RelayFailure> {
    if !(200..300).contains(&status) {
        let body: serde_json::Value =
            serde_json::from_slice(body).unwrap_or(serde_json::Value::Null);
        let code = body
            .get("code")
            .and_then(|c| c.as_str())
            .unwrap_or_default()
            .to_owned();
        return Err(RelayFailure::Rejected {
            status,
            code,
            body,
            retry_after_secs,
        });
    }
    fn de<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, RelayFailure> {
        serde_json::from_slice(body).map_err(|_| RelayFailure::Malformed)
    }
    match expect {
        Expect::NoContent => Ok(RelayAnswer::NoContent),
        Expect::KeyCount => de(body).map(RelayAnswer::KeyCount),
        Expect::Bundles => de(body).map(RelayAnswer::Bundles),
        Expect::Devices => de(body).map(RelayAnswer::Devices),
        Expect::Sent => de(body).map(RelayAnswer::Sent),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_drop_separators_and_rejections_keep_the_code() {
        let r = request(&RelayCall::Devices {
            user_id: "bo/b?x".into(),
        })
        .unwrap();
        assert_eq!(r.path, "/api/users/bobx/devices");
        assert_eq!(r.method, HttpMethod::Get);
        assert!(r.body.is_none());
        let e = answer(Expect::Devices, 429, br#"{"code":"rate_limited"}"#, Some(3)).unwrap_err();
        assert!(matches!(
            e,
            RelayFailure::Rejected { status: 429, ref code, retry_after_secs: Some(3), .. }
                if code == "rate_limited"
        ));
        assert_eq!(
            answer(Expect::Sent, 200, b"not json", None).unwrap_err(),
            RelayFailure::Malformed
        );
        assert_eq!(
            answer(Expect::NoContent, 204, b"", None).unwrap(),
            RelayAnswer::NoContent
        );
    }
}
