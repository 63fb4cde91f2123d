//! A small client for the relay's REST API and WebSocket, on plain loopback HTTP/1.1.

use std::net::{IpAddr, SocketAddr};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use rand::rngs::OsRng;
use rand::Rng;
use serde::de::DeserializeOwned;
use serde::Serialize;
use sotto_crypto::keys::{IdentityKeyPair, KemPreKey, OneTimePreKey, SignedPreKey};
use sotto_wire::{
    Base64, KeysUpload, LoginRequest, LoginResponse, PreKey, RegisterRequest, RegisterResponse,
};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::WebSocketStream;

use crate::Result;

/// One keep-alive HTTP/1.1 connection to the relay; reconnects when the relay closed it.
#[derive(Debug)]
pub struct Http {
    addr: SocketAddr,
    host: HeaderValue,
    sender: SendRequest<Full<Bytes>>,
}

impl Http {
    /// Opens a connection.
    pub async fn connect(addr: SocketAddr) -> Result<Self> {
        let sender = handshake(addr).await?;
        Ok(Http {
            addr,
            host: HeaderValue::from_str(&addr.to_string())?,
            sender,
        })
    }

    /// Sends one request and reads the whole answer.
    pub async fn request(
        &mut self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Vec<u8>>,
    ) -> Result<(StatusCode, Bytes)> {
        if self.sender.is_closed() || self.sender.ready().await.is_err() {
            self.sender = handshake(self.addr).await?;
        }
        let mut builder = Request::builder()
            .method(method)
            .uri(path)
            .header(HOST, self.host.clone());
        if let Some(token) = token {
            builder = builder.header(AUTHORIZATION, format!("Bearer {token}"));
        }
        let request = match body {
            Some(body) => builder
                .header(CONTENT_TYPE, "application/json")
                .body(Full::new(Bytes::from(body)))?,
            None => builder.body(Full::new(Bytes::new()))?,
        };
        let response = self.sender.send_request(request).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        Ok((status, body))
    }

    /// `GET` without a body.
    pub async fn get(&mut self, path: &str, token: Option<&str>) -> Result<(StatusCode, Bytes)> {
        self.request(Method::GET, path, token, None).await
    }

    /// A JSON request that must succeed; its JSON answer.
    pub async fn json<B: Serialize, R: DeserializeOwned>(
        &mut self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: &B,
    ) -> Result<R> {
        let (status, answer) = self
            .request(method, path, token, Some(serde_json::to_vec(body)?))
            .await?;
        if !status.is_success() {
            return Err(unexpected(path, status, &answer).into());
        }
        Ok(serde_json::from_slice(&answer)?)
    }
}

async fn handshake(addr: SocketAddr) -> Result<SendRequest<Full<Bytes>>> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(sender)
}

/// A readable error for an unexpected answer, with hints for the usual causes.
pub fn unexpected(path: &str, status: StatusCode, body: &[u8]) -> String {
    let hint = if status == StatusCode::TOO_MANY_REQUESTS {
        " (the relay's rate limits are on: start it with them off, see --relay-arg)"
    } else {
        ""
    };
    format!(
        "{path}: {status}: {}{hint}",
        String::from_utf8_lossy(body.get(..300).unwrap_or(body))
    )
}

/// A registered account with its one device logged in.
#[derive(Clone)]
pub struct Account {
    /// Account id.
    pub user_id: String,
    /// The device's id.
    pub device_id: u32,
    /// The device's registration id.
    pub registration_id: u32,
    /// Bearer token of the device.
    pub token: String,
}

impl std::fmt::Debug for Account {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Account {
            user_id,
            device_id,
            registration_id,
            token: _,
        } = self;
        f.debug_struct("Account")
            .field("user_id", user_id)
            .field("device_id", device_id)
            .field("registration_id", registration_id)
            .finish_non_exhaustive()
    }
}

/// Registers `username`, logs its first device in and, with `keys`, uploads real prekeys (an
/// identity key, a signed prekey, `one_time` one-time prekeys and a last-resort ML-KEM prekey).
pub async fn create_account(
    http: &mut Http,
    username: &str,
    keys: bool,
    one_time: u32,
) -> Result<Account> {
    let password = format!("pw-{username}-load");
    let _: RegisterResponse = http
        .json(
            Method::POST,
            "/api/users/register",
            None,
            &RegisterRequest {
                username: username.to_owned(),
                email: format!("{username}@example.com"),
                password: password.clone(),
            },
        )
        .await?;
    let registration_id = OsRng.gen_range(1..=16380);
    let login: LoginResponse = http
        .json(
            Method::POST,
            "/api/users/login",
            None,
            &LoginRequest {
                username: username.to_owned(),
                password,
                registration_id,
            },
        )
        .await?;
    if keys {
        let upload = key_upload(one_time);
        let (status, body) = http
            .request(
                Method::PUT,
                "/api/keys",
                Some(&login.token),
                Some(serde_json::to_vec(&upload)?),
            )
            .await?;
        if !status.is_success() {
            return Err(unexpected("/api/keys", status, &body).into());
        }
    }
    Ok(Account {
        user_id: login.user_id,
        device_id: login.device_id,
        registration_id,
        token: login.token,
    })
}

/// Real keys, generated with the project's crypto crate; the secrets are dropped (zeroized) at once,
/// since the load never decrypts anything.
fn key_upload(one_time: u32) -> KeysUpload {
    let identity = IdentityKeyPair::generate(&mut OsRng);
    let signed = SignedPreKey::generate(1, &identity, &mut OsRng).public();
    let last_resort = KemPreKey::generate_last_resort(1, &identity, &mut OsRng).public();
    let pre_keys = (1..=one_time)
        .map(|id| {
            let key = OneTimePreKey::generate(id, &mut OsRng).public();
            PreKey {
                key_id: key.key_id(),
                public_key: Base64(key.public_key().to_vec()),
            }
        })
        .collect();
    KeysUpload {
        identity_key: Some(Base64(identity.public().to_bytes())),
        signed_pre_key: Some(sotto_wire::SignedPreKey {
            key_id: signed.key_id(),
            public_key: Base64(signed.public_key().to_vec()),
            signature: Base64(signed.signature().to_vec()),
        }),
        pre_keys: Some(pre_keys),
        kem_pre_keys: None,
        kem_last_resort_key: Some(sotto_wire::SignedPreKey {
            key_id: last_resort.key_id(),
            public_key: Base64(last_resort.public_key().to_vec()),
            signature: Base64(last_resort.signature().to_vec()),
        }),
    }
}

/// A client WebSocket over plain TCP.
pub type Ws = WebSocketStream<TcpStream>;

/// Opens the device's authenticated WebSocket, from `source` when given (a 127.0.0.x address).
pub async fn open_ws(
    addr: SocketAddr,
    token: &str,
    source: Option<IpAddr>,
    read_buffer: usize,
) -> Result<Ws> {
    tokio::time::timeout(
        WS_OPEN_TIMEOUT,
        open_ws_inner(addr, token, source, read_buffer),
    )
    .await
    .map_err(|_| format!("no WebSocket handshake within {WS_OPEN_TIMEOUT:?}"))?
}

/// How long a WebSocket may take to open (a relay out of file descriptors never answers).
const WS_OPEN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);

async fn open_ws_inner(
    addr: SocketAddr,
    token: &str,
    source: Option<IpAddr>,
    read_buffer: usize,
) -> Result<Ws> {
    let stream = match source {
        Some(ip) => {
            let socket = TcpSocket::new_v4()?;
            socket.bind(SocketAddr::new(ip, 0))?;
            socket.connect(addr).await?
        }
        None => TcpStream::connect(addr).await?,
    };
    stream.set_nodelay(true)?;
    let mut request = format!("ws://{addr}/ws").into_client_request()?;
    request.headers_mut().insert(
        AUTHORIZATION,
        HeaderValue::from_str(&format!("Bearer {token}"))?,
    );
    let config = WebSocketConfig::default()
        .read_buffer_size(read_buffer)
        .write_buffer_size(0);
    let (ws, _) =
        tokio_tungstenite::client_async_with_config(request, stream, Some(config)).await?;
    Ok(ws)
}

/// Creates `count` accounts named `<prefix>_<i>` over `concurrency` connections.
pub async fn create_accounts(
    addr: SocketAddr,
    prefix: &str,
    count: usize,
    concurrency: usize,
    keys: bool,
) -> Result<Vec<Account>> {
    let concurrency = concurrency.clamp(1, count.max(1));
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let next = std::sync::Arc::clone(&next);
        let prefix = prefix.to_owned();
        workers.spawn(async move {
            let mut http = Http::connect(addr).await?;
            let mut made = Vec::new();
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= count {
                    return Ok::<_, crate::Error>(made);
                }
                let account = create_account(&mut http, &format!("{prefix}_{i}"), keys, 10).await?;
                made.push((i, account));
            }
        });
    }
    let mut all = Vec::with_capacity(count);
    while let Some(done) = workers.join_next().await {
        all.extend(done??);
    }
    all.sort_by_key(|(i, _)| *i);
    Ok(all.into_iter().map(|(_, account)| account).collect())
}
