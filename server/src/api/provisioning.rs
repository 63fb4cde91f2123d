//! Device linking: provisioning channels, linking codes, and device removal.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use crate::cluster::ProvisionOutcome;
use axum::extract::connect_info::Connected;
use axum::extract::{ConnectInfo, FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::serve::IncomingStream;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use rand::RngCore as _;
use serde::Deserialize;
use sotto_wire::{
    LinkDeviceRequest, LinkingCode, LoginResponse, ProvisioningChannel, ProvisioningMessage,
};

use crate::auth::{self, hash_token, Auth};
use crate::error::{Json, Path, Query};
use crate::provisioning::ChannelError;
use crate::ratelimit::{Limit, RateKey};
use crate::store::groups::LinkOutcome;
use crate::{now_ms, AppError, AppState};

/// How long a linking code works.
pub const LINK_CODE_TTL_MS: i64 = 10 * 60 * 1000;

/// Longest long poll.
pub const MAX_WAIT_SECS: u64 = 30;

/// The client address of a connection (the TCP peer, or the address a trusted proxy forwarded):
/// what [`ClientAddr`] reads.
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub SocketAddr);

impl Connected<IncomingStream<'_, tokio::net::TcpListener>> for PeerAddr {
    fn connect_info(stream: IncomingStream<'_, tokio::net::TcpListener>) -> Self {
        Self(*stream.remote_addr())
    }
}

/// The client's address, for per-address rate limits. Requests that did not come through a socket
/// (in-process tests) count as one unspecified address.
#[derive(Debug, Clone, Copy)]
pub struct ClientAddr(pub IpAddr);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddr {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, AppError> {
        Ok(Self(
            parts
                .extensions
                .get::<ConnectInfo<PeerAddr>>()
                .map(|ConnectInfo(PeerAddr(addr))| addr.ip())
                .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED)),
        ))
    }
}

/// Whether `address` has the shape of one [`crate::provisioning::Channels::open`] hands out (anything else is unknown
/// everywhere, and is not asked about on the bus).
fn valid_address(address: &str) -> bool {
    (16..=64).contains(&address.len())
        && address
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn unknown_address() -> AppError {
    AppError::not_found(
        "unknown_address",
        "no such provisioning address (never opened, expired or already used)",
    )
}

fn channel_error(e: ChannelError) -> AppError {
    match e {
        ChannelError::Unknown => unknown_address(),
        ChannelError::AlreadyDelivered => AppError::conflict(
            "already_delivered",
            "this address already received its message",
        ),
        ChannelError::Full => AppError::client(
            StatusCode::SERVICE_UNAVAILABLE,
            "too_many_channels",
            "too many provisioning channels are open; retry later",
        ),
    }
}

fn ms_after(now: i64, d: Duration) -> u64 {
    u64::try_from(now.saturating_add(i64::try_from(d.as_millis()).unwrap_or(i64::MAX))).unwrap_or(0)
}

/// `POST /api/provisioning`: opens a channel (no authentication).
#[utoipa::path(
    post, path = "/api/provisioning", tag = "linking", summary = "Open a provisioning channel (no authentication)",
    responses(
        (status = 201, description = "opened", body = sotto_wire::ProvisioningChannel),
        (status = 429, description = "`rate_limited`: provisioning per address"),
        (status = 503, description = "`too_many_channels`"),
    )
)]
pub async fn open(
    State(state): State<AppState>,
    ClientAddr(addr): ClientAddr,
) -> Result<(StatusCode, Json<ProvisioningChannel>), AppError> {
    state
        .limiter()
        .check(Limit::Provisioning, RateKey::Address(addr), 1)
        .await?;
    let channels = state.services().provisioning();
    let address = channels.open(Instant::now()).map_err(channel_error)?;
    Ok((
        StatusCode::CREATED,
        Json(ProvisioningChannel {
            address,
            expires_at: ms_after(now_ms(), channels.ttl()),
        }),
    ))
}

/// `PUT /api/provisioning/{address}`: an existing device delivers the encrypted message.
#[utoipa::path(
    put, path = "/api/provisioning/{address}", tag = "linking", summary = "Deliver the encrypted provisioning message", security(("bearer" = [])),
    responses(
        (status = 204, description = "delivered"),
        (status = 400, description = "`invalid_message`"),
        (status = 404, description = "`unknown_address`"),
        (status = 409, description = "`already_delivered`"),
    )
)]
pub async fn deliver(
    State(state): State<AppState>,
    Auth(_caller): Auth,
    Path(address): Path<String>,
    Json(req): Json<ProvisioningMessage>,
) -> Result<StatusCode, AppError> {
    let len = req.message.as_bytes().len();
    let max = state.config().max_envelope_bytes;
    if len == 0 || len > max {
        return Err(AppError::bad_request(
            "invalid_message",
            format!("message must be 1-{max} bytes"),
        ));
    }
    let channels = state.services().provisioning();
    match channels.deliver(&address, req.message.0.clone(), Instant::now()) {
        // The channel may be held by another relay process (the new device opened it there).
        Err(ChannelError::Unknown) if valid_address(&address) => {
            let Some(cluster) = state.hub().cluster() else {
                return Err(channel_error(ChannelError::Unknown));
            };
            match cluster.provision(&address, req.message).await {
                Some(ProvisionOutcome::Delivered) => {}
                Some(ProvisionOutcome::AlreadyDelivered) => {
                    return Err(channel_error(ChannelError::AlreadyDelivered))
                }
                None => return Err(channel_error(ChannelError::Unknown)),
            }
        }
        r => r.map_err(channel_error)?,
    }
    Ok(StatusCode::NO_CONTENT)
}

/// Query of the long poll.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct WaitQuery {
    /// Seconds to wait for the message (0-30, default 0).
    #[serde(default)]
    pub wait_secs: Option<u64>,
}

/// `GET /api/provisioning/{address}?waitSecs=n`: the new device picks up its message.
#[utoipa::path(
    get, path = "/api/provisioning/{address}", tag = "linking", params(WaitQuery), summary = "Long-poll for the provisioning message (no authentication)",
    responses(
        (status = 200, description = "the message", body = sotto_wire::ProvisioningMessage),
        (status = 204, description = "nothing yet within waitSecs"),
        (status = 404, description = "`unknown_address`"),
    )
)]
pub async fn receive(
    State(state): State<AppState>,
    Path(address): Path<String>,
    Query(q): Query<WaitQuery>,
) -> Result<axum::response::Response, AppError> {
    use axum::response::IntoResponse as _;
    let wait = Duration::from_secs(q.wait_secs.unwrap_or(0).min(MAX_WAIT_SECS));
    let deadline = tokio::time::Instant::now() + wait;
    let channels = state.services().provisioning();
    loop {
        match channels
            .take(&address, Instant::now())
            .map_err(channel_error)?
        {
            Ok(message) => {
                return Ok(Json(ProvisioningMessage {
                    message: message.into(),
                })
                .into_response())
            }
            Err(notify) => {
                if tokio::time::timeout_at(deadline, notify.notified())
                    .await
                    .is_err()
                {
                    return Ok(StatusCode::NO_CONTENT.into_response());
                }
            }
        }
    }
}

/// `POST /api/devices/linking-codes`: a one-time code for linking a new device to this account.
#[utoipa::path(
    post, path = "/api/devices/linking-codes", tag = "linking", summary = "A one-time code for linking a new device", security(("bearer" = [])),
    responses(
        (status = 201, description = "created", body = sotto_wire::LinkingCode),
        (status = 429, description = "`rate_limited`: linking codes per account"),
    )
)]
pub async fn create_code(
    State(state): State<AppState>,
    Auth(device): Auth,
) -> Result<(StatusCode, Json<LinkingCode>), AppError> {
    state
        .limiter()
        .check(Limit::LinkingCodes, RateKey::Account(&device.user_id), 1)
        .await?;
    let mut raw = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut raw);
    let code = URL_SAFE_NO_PAD.encode(raw);
    let now = now_ms();
    let expires_at = now.saturating_add(LINK_CODE_TTL_MS);
    state
        .store()
        .create_link_code(&device.user_id, &hash_token(&code), now, expires_at)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(LinkingCode {
            code,
            expires_at: u64::try_from(expires_at).unwrap_or(0),
        }),
    ))
}

/// `POST /api/devices/link`: the new device registers with its code (no authentication).
#[utoipa::path(
    post, path = "/api/devices/link", tag = "linking", summary = "Register a linked device with its code (no authentication)",
    responses(
        (status = 201, description = "linked", body = sotto_wire::LoginResponse),
        (status = 400, description = "`invalid_registration_id`"),
        (status = 403, description = "`invalid_linking_code`"),
        (status = 409, description = "`too_many_devices`"),
        (status = 429, description = "`rate_limited`: provisioning per address"),
    )
)]
pub async fn link(
    State(state): State<AppState>,
    ClientAddr(addr): ClientAddr,
    Json(req): Json<LinkDeviceRequest>,
) -> Result<(StatusCode, Json<LoginResponse>), AppError> {
    state
        .limiter()
        .check(Limit::Provisioning, RateKey::Address(addr), 1)
        .await?;
    if req.registration_id == 0 {
        return Err(AppError::bad_request(
            "invalid_registration_id",
            "registrationId must be non-zero",
        ));
    }
    let invalid = || {
        AppError::client(
            StatusCode::FORBIDDEN,
            "invalid_linking_code",
            "the linking code is unknown, used or expired",
        )
    };
    if req.code.len() != 43 {
        return Err(invalid());
    }
    let (token, token_hash) = auth::generate_token();
    let outcome = state
        .store()
        .link_device(
            &hash_token(&req.code),
            req.registration_id,
            &token_hash,
            now_ms(),
            state.config().max_devices,
        )
        .await?;
    match outcome {
        LinkOutcome::Linked { user_id, device_id } => {
            tracing::info!(%user_id, device_id, "device linked");
            Ok((
                StatusCode::CREATED,
                Json(LoginResponse {
                    user_id,
                    device_id,
                    token,
                }),
            ))
        }
        LinkOutcome::InvalidCode => Err(invalid()),
        LinkOutcome::TooManyDevices => Err(AppError::conflict(
            "too_many_devices",
            format!(
                "an account has at most {} devices; remove one first",
                state.config().max_devices
            ),
        )),
    }
}

/// `DELETE /api/devices/{deviceId}`: removes one of the caller's devices (token, keys, mailbox).
///
/// Policy (Signal's): any device may remove itself; only the primary device removes others. The
/// primary is the account's lowest-numbered device: device 1, or, once it is gone, the oldest
/// device left, so an account never holds devices nobody may remove.
#[utoipa::path(
    delete, path = "/api/devices/{device_id}", tag = "linking", summary = "Remove one of the caller's devices (itself, or any as the primary device)", security(("bearer" = [])),
    responses(
        (status = 204, description = "removed"),
        (status = 403, description = "`not_primary_device`"),
        (status = 404, description = "`unknown_device`"),
    )
)]
pub async fn remove_device(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(device_id): Path<u32>,
) -> Result<StatusCode, AppError> {
    let devices = state.store().devices(&caller.user_id).await?;
    let target = devices
        .iter()
        .find(|d| d.device_id == device_id)
        .ok_or_else(|| AppError::not_found("unknown_device", "no such device on this account"))?;
    let primary = devices.iter().map(|d| d.device_id).min();
    if device_id != caller.device_id && primary != Some(caller.device_id) {
        return Err(AppError::client(
            StatusCode::FORBIDDEN,
            "not_primary_device",
            "only the primary device removes other devices; a device may remove itself",
        ));
    }
    state.store().remove_device(target.pk).await?;
    state.hub().revoke(target.pk);
    tracing::info!(user_id = %caller.user_id, device_id, "device removed");
    Ok(StatusCode::NO_CONTENT)
}
