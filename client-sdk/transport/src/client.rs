//! [`RelayClient`]: one typed call per relay route of `docs/api.md`.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{Stream, StreamExt as _};
use reqwest::header::{CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER};
use reqwest::{Method, Response, StatusCode};
use serde::de::DeserializeOwned;
use serde::Serialize;
use sotto_wire as wire;
use tokio::io::{AsyncRead, AsyncReadExt as _};
use tokio_rustls::rustls::ClientConfig;
use zeroize::Zeroizing;

use crate::error::{RelayErrorDetails, TransportError};

/// Most bytes read from one JSON answer (a full page of 100 envelopes of 64 KiB, base64, is
/// about 8.7 MiB; the relay's request limit keeps real pages far smaller).
pub const MAX_JSON_ANSWER: usize = 16 << 20;
/// Most bytes read from an error body.
const MAX_ERROR_BODY: usize = 64 << 10;
/// Chunk size when streaming an upload from an `AsyncRead`.
const UPLOAD_CHUNK: usize = 64 << 10;

struct Inner {
    http: reqwest::Client,
    /// `http(s)://host[:port]`, no trailing slash.
    base: String,
    tls: Arc<ClientConfig>,
}

/// The relay's REST API. Cheap to clone (clones share the connection pool).
#[derive(Clone)]
pub struct RelayClient {
    inner: Arc<Inner>,
    token: Option<Arc<Zeroizing<String>>>,
}

impl std::fmt::Debug for RelayClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Self { inner, token } = self;
        f.debug_struct("RelayClient")
            .field("base_url", &inner.base)
            .field("authenticated", &token.is_some())
            .finish_non_exhaustive()
    }
}

/// Options for [`RelayClient`]; [`RelayClient::new`] uses the defaults.
#[derive(Debug, Clone)]
pub struct RelayClientBuilder {
    base_url: String,
    extra_ca_pem: Option<Vec<u8>>,
    webpki_roots: bool,
    connect_timeout: Duration,
    read_timeout: Duration,
}

impl RelayClientBuilder {
    /// Trust this PEM CA (one or more certificates) in addition to the web roots, e.g. a relay
    /// operator's own CA.
    pub fn extra_ca_pem(mut self, pem: &[u8]) -> Self {
        self.extra_ca_pem = Some(pem.to_vec());
        self
    }

    /// Trust only the extra CA, not Mozilla's roots (a private deployment, or tests).
    pub fn only_extra_ca(mut self) -> Self {
        self.webpki_roots = false;
        self
    }

    /// How long opening a TCP + TLS connection may take (default 10 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Longest silence while reading an answer (default 45 s, above the provisioning long
    /// poll's 30 s). There is no total timeout, so a 50 MB attachment is not cut off.
    pub fn read_timeout(mut self, timeout: Duration) -> Self {
        self.read_timeout = timeout;
        self
    }

    /// Builds the client.
    pub fn build(self) -> Result<RelayClient, TransportError> {
        let base = self.base_url.trim_end_matches('/').to_owned();
        let rest = base
            .strip_prefix("https://")
            .or_else(|| base.strip_prefix("http://"))
            .ok_or_else(|| {
                TransportError::Config("the relay URL must start with http:// or https://".into())
            })?;
        if rest.is_empty() || rest.contains(['/', '?', '#', '@']) {
            return Err(TransportError::Config(
                "the relay URL must be scheme://host[:port], without path, query or credentials"
                    .into(),
            ));
        }
        let tls = crate::tls::client_config(self.extra_ca_pem.as_deref(), self.webpki_roots)?;
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured((*tls).clone())
            .connect_timeout(self.connect_timeout)
            .read_timeout(self.read_timeout)
            .tcp_nodelay(true)
            .no_proxy()
            .http1_only()
            .build()
            .map_err(|e| TransportError::Config(format!("HTTP client: {e}")))?;
        Ok(RelayClient {
            inner: Arc::new(Inner { http, base, tls }),
            token: None,
        })
    }
}

trait JsonBody: Sized {
    fn json_body<B: Serialize + ?Sized>(self, body: &B) -> Result<Self, TransportError>;
}

impl JsonBody for reqwest::RequestBuilder {
    fn json_body<B: Serialize + ?Sized>(self, body: &B) -> Result<Self, TransportError> {
        let bytes =
            serde_json::to_vec(body).map_err(|e| TransportError::Malformed(e.to_string()))?;
        Ok(self.header(CONTENT_TYPE, "application/json").body(bytes))
    }
}

/// A path segment from a caller's value, percent-encoded. Dot-only segments would be resolved
/// away by URL normalization and so reach another route: they are refused.
fn seg(value: &str, what: &'static str) -> Result<String, TransportError> {
    if value.is_empty() || value.bytes().all(|b| b == b'.') {
        return Err(TransportError::InvalidArgument(what));
    }
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    Ok(out)
}

async fn read_limited(mut response: Response, limit: usize) -> Result<Vec<u8>, TransportError> {
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|_| TransportError::Unreachable)?
    {
        if body.len() + chunk.len() > limit {
            return Err(TransportError::Malformed(format!(
                "answer larger than {limit} bytes"
            )));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Turns a non-2xx answer into [`TransportError::Relay`].
async fn relay_error(response: Response) -> TransportError {
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let body = match read_limited(response, MAX_ERROR_BODY).await {
        Ok(body) => body,
        Err(TransportError::Unreachable) => return TransportError::Unreachable,
        Err(_) => Vec::new(),
    };
    let value: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let text = |field: &str| value.get(field).and_then(|v| v.as_str()).map(str::to_owned);
    let (code, message) = match (text("code"), text("message")) {
        (Some(code), message) => (code, message.unwrap_or_default()),
        (None, _) => (
            "unexpected_status".to_owned(),
            StatusCode::from_u16(status)
                .ok()
                .and_then(|s| s.canonical_reason())
                .unwrap_or("unexpected status")
                .to_owned(),
        ),
    };
    let details = match code.as_str() {
        "mismatched_devices" => serde_json::from_value::<wire::MismatchedDevices>(value)
            .ok()
            .map(|m| RelayErrorDetails::MismatchedDevices {
                missing: m.missing_devices,
                extra: m.extra_devices,
            }),
        "stale_devices" => serde_json::from_value::<wire::StaleDevices>(value)
            .ok()
            .map(|s| RelayErrorDetails::StaleDevices {
                stale: s.stale_devices,
            }),
        _ => None,
    };
    TransportError::Relay {
        status,
        code,
        message,
        retry_after,
        details,
    }
}

async fn success(response: Response) -> Result<Response, TransportError> {
    if response.status().is_success() {
        Ok(response)
    } else {
        Err(relay_error(response).await)
    }
}

async fn json<R: DeserializeOwned>(response: Response) -> Result<R, TransportError> {
    let body = read_limited(success(response).await?, MAX_JSON_ANSWER).await?;
    serde_json::from_slice(&body).map_err(|e| TransportError::Malformed(e.to_string()))
}

async fn empty(response: Response) -> Result<(), TransportError> {
    // The body of a 2xx without content is drained so the connection can be reused.
    let _ = read_limited(success(response).await?, MAX_ERROR_BODY).await?;
    Ok(())
}

impl RelayClient {
    /// A client for the relay at `base_url` (`http://` or `https://`, host and port only), trusting
    /// Mozilla's roots. Use [`RelayClient::builder`] for an extra CA or other timeouts.
    pub fn new(base_url: &str) -> Result<Self, TransportError> {
        Self::builder(base_url).build()
    }

    /// Options for a client of the relay at `base_url`.
    pub fn builder(base_url: &str) -> RelayClientBuilder {
        RelayClientBuilder {
            base_url: base_url.to_owned(),
            extra_ca_pem: None,
            webpki_roots: true,
            connect_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(45),
        }
    }

    /// The same client, sending `Authorization: Bearer <token>` (also used by [`crate::Connection`]).
    pub fn with_token(&self, token: &str) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
            token: Some(Arc::new(Zeroizing::new(token.to_owned()))),
        }
    }

    /// The relay's base URL.
    pub fn base_url(&self) -> &str {
        &self.inner.base
    }

    pub(crate) fn token(&self) -> Option<&str> {
        self.token.as_deref().map(|t| t.as_str())
    }

    pub(crate) fn tls(&self) -> Arc<ClientConfig> {
        Arc::clone(&self.inner.tls)
    }

    /// `ws(s)://…/ws`.
    pub(crate) fn ws_url(&self) -> String {
        let base = &self.inner.base;
        match base.strip_prefix("https://") {
            Some(rest) => format!("wss://{rest}/ws"),
            None => format!("ws://{}/ws", base.trim_start_matches("http://")),
        }
    }

    fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        let mut rb = self
            .inner
            .http
            .request(method, format!("{}{path}", self.inner.base));
        if let Some(token) = self.token() {
            // `bearer_auth` marks the header sensitive (kept out of reqwest's Debug output).
            rb = rb.bearer_auth(token);
        }
        rb
    }

    async fn send(rb: reqwest::RequestBuilder) -> Result<Response, TransportError> {
        rb.send().await.map_err(|e| {
            if e.is_body() {
                TransportError::Body(std::io::Error::other(e))
            } else {
                TransportError::Unreachable
            }
        })
    }

    async fn get<R: DeserializeOwned>(&self, path: &str) -> Result<R, TransportError> {
        json(Self::send(self.request(Method::GET, path)).await?).await
    }

    async fn with_body<B: Serialize + ?Sized, R: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: &B,
    ) -> Result<R, TransportError> {
        json(Self::send(self.request(method, path).json_body(body)?).await?).await
    }

    async fn with_body_empty<B: Serialize + ?Sized>(
        &self,
        method: Method,
        path: &str,
        body: &B,
    ) -> Result<(), TransportError> {
        empty(Self::send(self.request(method, path).json_body(body)?).await?).await
    }

    async fn no_body(&self, method: Method, path: &str) -> Result<(), TransportError> {
        empty(Self::send(self.request(method, path)).await?).await
    }

    async fn no_body_json<R: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
    ) -> Result<R, TransportError> {
        json(Self::send(self.request(method, path)).await?).await
    }

    // ---- health ----------------------------------------------------------------------------

    /// `GET /healthz`.
    pub async fn health(&self) -> Result<wire::Health, TransportError> {
        self.get("/healthz").await
    }

    // ---- accounts and devices --------------------------------------------------------------

    /// `POST /api/users/register` → 201.
    pub async fn register(
        &self,
        request: &wire::RegisterRequest,
    ) -> Result<wire::RegisterResponse, TransportError> {
        self.with_body(Method::POST, "/api/users/register", request)
            .await
    }

    /// `POST /api/users/login`: creates the account's first device and its token.
    pub async fn login(
        &self,
        request: &wire::LoginRequest,
    ) -> Result<wire::LoginResponse, TransportError> {
        self.with_body(Method::POST, "/api/users/login", request)
            .await
    }

    /// `POST /api/users/logout`: removes this device (token, keys, mailbox).
    pub async fn logout(&self) -> Result<(), TransportError> {
        self.no_body(Method::POST, "/api/users/logout").await
    }

    /// `GET /api/users/{userId}/devices`.
    pub async fn devices(&self, user_id: &str) -> Result<wire::DeviceList, TransportError> {
        self.get(&format!("/api/users/{}/devices", seg(user_id, "user id")?))
            .await
    }

    /// `GET /api/usernames/{username}`: the account a username names (any case).
    pub async fn lookup_username(
        &self,
        username: &str,
    ) -> Result<wire::UserProfile, TransportError> {
        self.get(&format!("/api/usernames/{}", seg(username, "username")?))
            .await
    }

    /// `GET /api/users/{userId}/profile`: a user's username.
    pub async fn profile(&self, user_id: &str) -> Result<wire::UserProfile, TransportError> {
        self.get(&format!("/api/users/{}/profile", seg(user_id, "user id")?))
            .await
    }

    /// `DELETE /api/devices/{deviceId}`: removes one of the caller's devices.
    pub async fn remove_device(&self, device_id: u32) -> Result<(), TransportError> {
        self.no_body(Method::DELETE, &format!("/api/devices/{device_id}"))
            .await
    }

    // ---- keys ------------------------------------------------------------------------------

    /// `PUT /api/keys` → 204.
    pub async fn upload_keys(&self, upload: &wire::KeysUpload) -> Result<(), TransportError> {
        self.with_body_empty(Method::PUT, "/api/keys", upload).await
    }

    /// `GET /api/keys/count`: one-time keys left for this device.
    pub async fn key_counts(&self) -> Result<wire::KeyCount, TransportError> {
        self.get("/api/keys/count").await
    }

    /// `GET /api/keys/{userId}`: claims a bundle of every device of the user.
    pub async fn fetch_bundles(
        &self,
        user_id: &str,
    ) -> Result<wire::PreKeyBundles, TransportError> {
        self.get(&format!("/api/keys/{}", seg(user_id, "user id")?))
            .await
    }

    /// `GET /api/keys/{userId}/{deviceId}`: claims a bundle of one device.
    pub async fn fetch_bundle(
        &self,
        user_id: &str,
        device_id: u32,
    ) -> Result<wire::PreKeyBundles, TransportError> {
        self.get(&format!(
            "/api/keys/{}/{device_id}",
            seg(user_id, "user id")?
        ))
        .await
    }

    // ---- messages and mailbox --------------------------------------------------------------

    /// `POST /api/messages/send`. 409 and 410 come back as [`TransportError::Relay`] with
    /// [`RelayErrorDetails`].
    pub async fn send_message(
        &self,
        request: &wire::SendMessageRequest,
    ) -> Result<wire::SendMessageResponse, TransportError> {
        self.with_body(Method::POST, "/api/messages/send", request)
            .await
    }

    /// `GET /api/messages/unread`: envelopes queued for this device.
    pub async fn unread(&self) -> Result<wire::UnreadCount, TransportError> {
        self.get("/api/messages/unread").await
    }

    /// `GET /api/messages?after=&limit=`: a page of queued envelopes, oldest first.
    pub async fn fetch_envelopes(
        &self,
        after: Option<u64>,
        limit: Option<u32>,
    ) -> Result<wire::EnvelopePage, TransportError> {
        let mut path = String::from("/api/messages");
        let mut sep = '?';
        if let Some(after) = after {
            path.push_str(&format!("{sep}after={after}"));
            sep = '&';
        }
        if let Some(limit) = limit {
            path.push_str(&format!("{sep}limit={limit}"));
        }
        self.get(&path).await
    }

    /// `DELETE /api/messages/{seq}`: acks one envelope over REST (the WebSocket acks in batches).
    pub async fn ack(&self, seq: u64) -> Result<(), TransportError> {
        self.no_body(Method::DELETE, &format!("/api/messages/{seq}"))
            .await
    }

    /// `POST /api/messages/ephemeral` (typing): to connected devices only, never stored.
    pub async fn ephemeral(&self, request: &wire::EphemeralRequest) -> Result<(), TransportError> {
        self.with_body_empty(Method::POST, "/api/messages/ephemeral", request)
            .await
    }

    // ---- groups ----------------------------------------------------------------------------

    /// `POST /api/groups` → 201; the caller is admin.
    pub async fn create_group(
        &self,
        request: &wire::CreateGroupRequest,
    ) -> Result<wire::GroupCreated, TransportError> {
        self.with_body(Method::POST, "/api/groups", request).await
    }

    /// `GET /api/groups`: the caller's groups.
    pub async fn groups(&self) -> Result<wire::GroupList, TransportError> {
        self.get("/api/groups").await
    }

    /// `GET /api/groups/{groupId}/members`.
    pub async fn group_members(
        &self,
        group_id: &str,
    ) -> Result<wire::GroupMembers, TransportError> {
        self.get(&format!(
            "/api/groups/{}/members",
            seg(group_id, "group id")?
        ))
        .await
    }

    /// `POST /api/groups/{groupId}/join`: an admin adds `userIds`, or the caller joins with an
    /// invite token.
    pub async fn join_group(
        &self,
        group_id: &str,
        request: &wire::JoinGroupRequest,
    ) -> Result<wire::GroupMembers, TransportError> {
        self.with_body(
            Method::POST,
            &format!("/api/groups/{}/join", seg(group_id, "group id")?),
            request,
        )
        .await
    }

    /// `DELETE /api/groups/{groupId}/leave`.
    pub async fn leave_group(&self, group_id: &str) -> Result<(), TransportError> {
        self.no_body(
            Method::DELETE,
            &format!("/api/groups/{}/leave", seg(group_id, "group id")?),
        )
        .await
    }

    /// `DELETE /api/groups/{groupId}/members/{userId}` (admin).
    pub async fn remove_group_member(
        &self,
        group_id: &str,
        user_id: &str,
    ) -> Result<(), TransportError> {
        self.no_body(
            Method::DELETE,
            &format!(
                "/api/groups/{}/members/{}",
                seg(group_id, "group id")?,
                seg(user_id, "user id")?
            ),
        )
        .await
    }

    /// `PUT /api/groups/{groupId}/members/{userId}` (admin sets a role).
    pub async fn set_group_role(
        &self,
        group_id: &str,
        user_id: &str,
        request: &wire::SetRoleRequest,
    ) -> Result<(), TransportError> {
        self.with_body_empty(
            Method::PUT,
            &format!(
                "/api/groups/{}/members/{}",
                seg(group_id, "group id")?,
                seg(user_id, "user id")?
            ),
            request,
        )
        .await
    }

    /// `POST /api/groups/{groupId}/invites` → 201 (admin).
    pub async fn create_group_invite(
        &self,
        group_id: &str,
    ) -> Result<wire::GroupInvite, TransportError> {
        self.no_body_json(
            Method::POST,
            &format!("/api/groups/{}/invites", seg(group_id, "group id")?),
        )
        .await
    }

    /// `DELETE /api/groups/{groupId}/invites/{inviteId}` (admin).
    pub async fn revoke_group_invite(
        &self,
        group_id: &str,
        invite_id: &str,
    ) -> Result<(), TransportError> {
        self.no_body(
            Method::DELETE,
            &format!(
                "/api/groups/{}/invites/{}",
                seg(group_id, "group id")?,
                seg(invite_id, "invite id")?
            ),
        )
        .await
    }

    /// `POST /api/groups/{groupId}/messages`: one Sender-Key ciphertext, fanned out by the relay.
    pub async fn send_group(
        &self,
        group_id: &str,
        request: &wire::GroupSendRequest,
    ) -> Result<wire::SendMessageResponse, TransportError> {
        self.with_body(
            Method::POST,
            &format!("/api/groups/{}/messages", seg(group_id, "group id")?),
            request,
        )
        .await
    }

    // ---- presence --------------------------------------------------------------------------

    /// `GET /api/users/{userId}/status`.
    pub async fn status(&self, user_id: &str) -> Result<wire::UserStatus, TransportError> {
        self.get(&format!("/api/users/{}/status", seg(user_id, "user id")?))
            .await
    }

    /// `PUT /api/presence`: online or away, for this device's open WebSocket.
    pub async fn set_presence(
        &self,
        request: &wire::SetPresenceRequest,
    ) -> Result<(), TransportError> {
        self.with_body_empty(Method::PUT, "/api/presence", request)
            .await
    }

    /// `PUT /api/presence/subscriptions`: presence pushes for these users while the WebSocket lasts.
    pub async fn subscribe_presence(
        &self,
        request: &wire::PresenceSubscriptions,
    ) -> Result<wire::PresenceSnapshot, TransportError> {
        self.with_body(Method::PUT, "/api/presence/subscriptions", request)
            .await
    }

    // ---- linking a device ------------------------------------------------------------------

    /// `POST /api/provisioning` → 201: a channel for a new device (no token needed).
    pub async fn create_provisioning(&self) -> Result<wire::ProvisioningChannel, TransportError> {
        self.no_body_json(Method::POST, "/api/provisioning").await
    }

    /// `PUT /api/provisioning/{address}`: the existing device leaves its encrypted message.
    pub async fn put_provisioning(
        &self,
        address: &str,
        message: &wire::ProvisioningMessage,
    ) -> Result<(), TransportError> {
        self.with_body_empty(
            Method::PUT,
            &format!("/api/provisioning/{}", seg(address, "address")?),
            message,
        )
        .await
    }

    /// `GET /api/provisioning/{address}?waitSecs=`: the message once it is there (`None` on 204).
    pub async fn get_provisioning(
        &self,
        address: &str,
        wait_secs: u32,
    ) -> Result<Option<wire::ProvisioningMessage>, TransportError> {
        let path = format!(
            "/api/provisioning/{}?waitSecs={}",
            seg(address, "address")?,
            wait_secs.min(30)
        );
        let response = success(Self::send(self.request(Method::GET, &path)).await?).await?;
        if response.status() == StatusCode::NO_CONTENT {
            return Ok(None);
        }
        let body = read_limited(response, MAX_JSON_ANSWER).await?;
        serde_json::from_slice(&body)
            .map(Some)
            .map_err(|e| TransportError::Malformed(e.to_string()))
    }

    /// `POST /api/devices/linking-codes` → 201: a one-use code for linking a new device.
    pub async fn create_linking_code(&self) -> Result<wire::LinkingCode, TransportError> {
        self.no_body_json(Method::POST, "/api/devices/linking-codes")
            .await
    }

    /// `POST /api/devices/link` → 201 (no token): the new device's id and token.
    pub async fn link_device(
        &self,
        request: &wire::LinkDeviceRequest,
    ) -> Result<wire::LoginResponse, TransportError> {
        self.with_body(Method::POST, "/api/devices/link", request)
            .await
    }

    // ---- attachments -----------------------------------------------------------------------

    /// `POST /api/attachments` → 201, the body streamed from `body` as it yields chunks (the
    /// whole blob is never in memory). Give `size` when known: the relay then refuses an
    /// oversized blob before reading it.
    pub async fn upload_attachment<S, B, E>(
        &self,
        body: S,
        size: Option<u64>,
    ) -> Result<wire::AttachmentUploaded, TransportError>
    where
        S: Stream<Item = Result<B, E>> + Send + 'static,
        Bytes: From<B>,
        E: Into<Box<dyn std::error::Error + Send + Sync>> + 'static,
    {
        // A connection of its own: the relay may answer 413 before reading the whole body and
        // then close it, which must not hit the next request through the pool.
        let mut rb = self
            .request(Method::POST, "/api/attachments")
            .header(CONTENT_TYPE, "application/octet-stream")
            .header(CONNECTION, "close")
            .body(reqwest::Body::wrap_stream(body));
        if let Some(size) = size {
            rb = rb.header(CONTENT_LENGTH, size);
        }
        json(Self::send(rb).await?).await
    }

    /// [`upload_attachment`](Self::upload_attachment) from an `AsyncRead` (e.g. an encrypted
    /// file), in 64 KiB chunks.
    pub async fn upload_attachment_reader<R>(
        &self,
        reader: R,
        size: Option<u64>,
    ) -> Result<wire::AttachmentUploaded, TransportError>
    where
        R: AsyncRead + Send + Unpin + 'static,
    {
        let stream = futures_util::stream::try_unfold(reader, |mut reader| async move {
            let mut buf = vec![0u8; UPLOAD_CHUNK];
            let n = reader.read(&mut buf).await?;
            if n == 0 {
                return Ok::<_, std::io::Error>(None);
            }
            buf.truncate(n);
            Ok(Some((Bytes::from(buf), reader)))
        });
        self.upload_attachment(stream, size).await
    }

    /// `GET /api/attachments/{attachmentId}`: the blob as a stream of chunks.
    pub async fn download_attachment(
        &self,
        attachment_id: &str,
    ) -> Result<AttachmentDownload, TransportError> {
        let path = format!("/api/attachments/{}", seg(attachment_id, "attachment id")?);
        let response = success(Self::send(self.request(Method::GET, &path)).await?).await?;
        Ok(AttachmentDownload {
            size: response.content_length(),
            response,
            limit: None,
            read: 0,
        })
    }
}

/// A blob being downloaded: read it chunk by chunk.
pub struct AttachmentDownload {
    response: Response,
    size: Option<u64>,
    limit: Option<u64>,
    read: u64,
}

impl std::fmt::Debug for AttachmentDownload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Self {
            response: _,
            size,
            limit,
            read,
        } = self;
        f.debug_struct("AttachmentDownload")
            .field("size", size)
            .field("limit", limit)
            .field("read", read)
            .finish_non_exhaustive()
    }
}

impl AttachmentDownload {
    /// The length the relay announced, if any.
    pub fn size(&self) -> Option<u64> {
        self.size
    }

    /// Fail with [`TransportError::Malformed`] once more than `max` bytes arrive (the size the
    /// message said the attachment has).
    pub fn limit(mut self, max: u64) -> Self {
        self.limit = Some(max);
        self
    }

    /// The next chunk, `None` at the end.
    pub async fn chunk(&mut self) -> Result<Option<Bytes>, TransportError> {
        let chunk = self
            .response
            .chunk()
            .await
            .map_err(|_| TransportError::Unreachable)?;
        if let Some(c) = &chunk {
            self.read += c.len() as u64;
            if self.limit.is_some_and(|max| self.read > max) {
                return Err(TransportError::Malformed(
                    "attachment larger than expected".into(),
                ));
            }
        }
        Ok(chunk)
    }

    /// The rest of the blob as a stream of chunks.
    pub fn into_stream(self) -> impl Stream<Item = Result<Bytes, TransportError>> + Send {
        futures_util::stream::try_unfold(self, |mut download| async move {
            Ok(download.chunk().await?.map(|c| (c, download)))
        })
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_segments_are_encoded_and_dots_refused() {
        assert_eq!(seg("abc-1_2.3~", "x").unwrap(), "abc-1_2.3~");
        assert_eq!(seg("a/b?c#d", "x").unwrap(), "a%2Fb%3Fc%23d");
        assert_eq!(seg("é", "x").unwrap(), "%C3%A9");
        assert!(seg("", "x").is_err());
        assert!(seg(".", "x").is_err());
        assert!(seg("..", "x").is_err());
        assert_eq!(seg("..a", "x").unwrap(), "..a");
    }

    #[test]
    fn base_urls_are_checked() {
        assert!(RelayClient::new("http://127.0.0.1:7700").is_ok());
        assert!(RelayClient::new("https://relay.example/").is_ok());
        assert!(matches!(
            RelayClient::new("ftp://x"),
            Err(TransportError::Config(_))
        ));
        assert!(RelayClient::new("http://").is_err());
        assert!(RelayClient::new("http://h/path").is_err());
        assert!(RelayClient::new("http://user:pw@h").is_err());
        let c = RelayClient::new("https://relay.example:8443").unwrap();
        assert_eq!(c.ws_url(), "wss://relay.example:8443/ws");
        let c = RelayClient::new("http://127.0.0.1:1").unwrap();
        assert_eq!(c.ws_url(), "ws://127.0.0.1:1/ws");
    }

    #[test]
    fn debug_hides_the_token() {
        let c = RelayClient::new("http://127.0.0.1:1")
            .unwrap()
            .with_token("secret-token");
        let shown = format!("{c:?}");
        assert!(!shown.contains("secret-token"));
        assert!(shown.contains("authenticated: true"));
    }

    #[test]
    fn bad_extra_ca_is_a_config_error() {
        assert!(matches!(
            RelayClient::builder("https://h")
                .extra_ca_pem(b"not pem")
                .build(),
            Err(TransportError::Config(_))
        ));
    }
}
