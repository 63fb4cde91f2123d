//! Accounts and devices.

use axum::extract::State;
use axum::http::StatusCode;
use sotto_wire::{
    AccountSettings, DeviceInfo, DeviceList, LoginRequest, LoginResponse, RegisterRequest,
    RegisterResponse, UserProfile,
};

use crate::api::provisioning::ClientAddr;
use crate::auth::{self, Auth};
use crate::error::{Json, Path};
use crate::ratelimit::{Limit, RateKey};
use crate::store::NewUser;
use crate::{now_ms, AppError, AppState};

const MAX_PASSWORD: usize = 256;
const MIN_PASSWORD: usize = 8;

fn valid_username(name: &str) -> bool {
    (3..=20).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

fn valid_email(email: &str) -> bool {
    if email.len() > 254 || email.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return false;
    }
    match email.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && !domain.contains('@')
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
        }
        None => false,
    }
}

/// `POST /api/users/register`.
#[utoipa::path(
    post, path = "/api/users/register", tag = "accounts", summary = "Create an account",
    responses(
        (status = 201, description = "created", body = sotto_wire::RegisterResponse),
        (status = 400, description = "`invalid_username`, `invalid_email`, `invalid_password`"),
        (status = 409, description = "`username_taken` (names are compared ignoring case)"),
        (status = 429, description = "`rate_limited`: registrations per client address"),
    )
)]
pub async fn register(
    State(state): State<AppState>,
    ClientAddr(addr): ClientAddr,
    Json(req): Json<RegisterRequest>,
) -> Result<(StatusCode, Json<RegisterResponse>), AppError> {
    if !valid_username(&req.username) {
        return Err(AppError::bad_request(
            "invalid_username",
            "username must be 3-20 characters of A-Z, a-z, 0-9 and _",
        ));
    }
    if !valid_email(&req.email) {
        return Err(AppError::bad_request(
            "invalid_email",
            "invalid e-mail address",
        ));
    }
    if !(MIN_PASSWORD..=MAX_PASSWORD).contains(&req.password.len()) {
        return Err(AppError::bad_request(
            "invalid_password",
            "password must be 8-256 bytes",
        ));
    }
    // Counted once the request is well-formed.
    state
        .limiter()
        .check(Limit::Registration, RateKey::Address(addr), 1)
        .await?;
    if state
        .store()
        .user_credentials(&req.username)
        .await?
        .is_some()
    {
        return Err(AppError::conflict(
            "username_taken",
            "username already registered",
        ));
    }
    let password_hash = auth::hash_password(state.config(), req.password).await?;
    let user = NewUser {
        id: uuid::Uuid::new_v4().to_string(),
        username: req.username,
        email: req.email,
        password_hash,
        created_at: now_ms(),
    };
    if !state.store().create_user(&user).await? {
        return Err(AppError::conflict(
            "username_taken",
            "username already registered",
        ));
    }
    tracing::info!(user_id = %user.id, "account registered");
    Ok((
        StatusCode::CREATED,
        Json(RegisterResponse { user_id: user.id }),
    ))
}

/// `POST /api/users/login`: creates the account's first device.
#[utoipa::path(
    post, path = "/api/users/login", tag = "accounts", summary = "Create the account's first device and its bearer token",
    responses(
        (status = 200, description = "logged in", body = sotto_wire::LoginResponse),
        (status = 400, description = "`invalid_registration_id`"),
        (status = 401, description = "`invalid_credentials`"),
        (status = 409, description = "`device_exists`: the account already has its first device (link more)"),
        (status = 429, description = "`rate_limited`: logins per address, failed logins per account"),
    )
)]
pub async fn login(
    State(state): State<AppState>,
    ClientAddr(addr): ClientAddr,
    Json(req): Json<LoginRequest>,
) -> Result<Json<LoginResponse>, AppError> {
    if req.registration_id == 0 {
        return Err(AppError::bad_request(
            "invalid_registration_id",
            "registrationId must be non-zero",
        ));
    }
    if req.password.len() > MAX_PASSWORD
        || req.username.len() > 20
        || req.username.chars().any(char::is_control)
    {
        return Err(AppError::client(
            StatusCode::UNAUTHORIZED,
            "invalid_credentials",
            "wrong username or password",
        ));
    }
    state
        .limiter()
        .check(Limit::Login, RateKey::Address(addr), 1)
        .await?;
    let creds = state.store().user_credentials(&req.username).await?;
    let (user_id, phc) = match creds {
        Some(c) => (Some(c.id.clone()), Some(c.password_hash.clone())),
        None => (None, None),
    };
    // An account whose failed-login allowance is spent answers 429 before the password is
    // checked, whatever the password: guesses stop telling anything until it refills.
    if let Some(id) = &user_id {
        state
            .limiter()
            .peek(Limit::FailedLogins, RateKey::Account(id), 1)
            .await?;
    }
    let ok = auth::verify_password(state.config(), req.password, phc).await?;
    let account = user_id.clone();
    let Some(user_id) = user_id.filter(|_| ok) else {
        if let Some(id) = account {
            state
                .charge(Limit::FailedLogins, RateKey::Account(&id), 1)
                .await;
        }
        return Err(AppError::client(
            StatusCode::UNAUTHORIZED,
            "invalid_credentials",
            "wrong username or password",
        ));
    };
    let (token, token_hash) = auth::generate_token();
    let device_id = state
        .store()
        .create_first_device(&user_id, req.registration_id, &token_hash, now_ms())
        .await?
        .ok_or_else(|| {
            AppError::conflict(
                "device_exists",
                "this account already has a device; link new devices from it",
            )
        })?;
    tracing::info!(%user_id, device_id, "device created");
    Ok(Json(LoginResponse {
        user_id,
        device_id,
        token,
    }))
}

/// `POST /api/users/logout`: removes the device, its token, keys and mailbox.
#[utoipa::path(
    post, path = "/api/users/logout", tag = "accounts", summary = "Remove this device (token, keys, mailbox)", security(("bearer" = [])),
    responses((status = 204, description = "removed"))
)]
pub async fn logout(
    State(state): State<AppState>,
    Auth(device): Auth,
) -> Result<StatusCode, AppError> {
    state.store().remove_device(device.pk).await?;
    state.hub().revoke(device.pk);
    tracing::info!(user_id = %device.user_id, device_id = device.device_id, "device logged out");
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /api/users/settings`: the caller's account settings.
#[utoipa::path(
    get, path = "/api/users/settings", tag = "accounts", summary = "The caller's account settings", security(("bearer" = [])),
    responses((status = 200, description = "settings", body = sotto_wire::AccountSettings))
)]
pub async fn settings(
    State(state): State<AppState>,
    Auth(device): Auth,
) -> Result<Json<AccountSettings>, AppError> {
    Ok(Json(AccountSettings {
        invites_only: state.store().invites_only(&device.user_id).await?,
    }))
}

/// `PUT /api/users/settings`: changes the caller's account settings.
#[utoipa::path(
    put, path = "/api/users/settings", tag = "accounts", summary = "Change the caller's account settings (invitesOnly)", security(("bearer" = [])),
    responses((status = 204, description = "stored"))
)]
pub async fn set_settings(
    State(state): State<AppState>,
    Auth(device): Auth,
    Json(req): Json<AccountSettings>,
) -> Result<StatusCode, AppError> {
    state
        .store()
        .set_invites_only(&device.user_id, req.invites_only)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /api/users/{userId}/devices`.
#[utoipa::path(
    get, path = "/api/users/{user_id}/devices", tag = "accounts", summary = "A user's devices", security(("bearer" = [])),
    responses(
        (status = 200, description = "the devices", body = sotto_wire::DeviceList),
        (status = 404, description = "`unknown_user`"),
    )
)]
pub async fn devices(
    State(state): State<AppState>,
    Auth(_caller): Auth,
    Path(user_id): Path<String>,
) -> Result<Json<DeviceList>, AppError> {
    if !crate::api::valid_id(&user_id) || !state.store().user_exists(&user_id).await? {
        return Err(AppError::not_found("unknown_user", "no such user"));
    }
    let devices = state.store().devices(&user_id).await?;
    Ok(Json(DeviceList {
        user_id,
        devices: devices
            .into_iter()
            .map(|d| DeviceInfo {
                device_id: d.device_id,
                registration_id: d.registration_id,
                created_at: u64::try_from(d.created_at).unwrap_or(0),
            })
            .collect(),
    }))
}

/// `GET /api/usernames/{username}`: the account a username names (in any case).
#[utoipa::path(
    get, path = "/api/usernames/{username}", tag = "accounts", summary = "Look up an account by username", security(("bearer" = [])),
    responses(
        (status = 200, description = "the account", body = sotto_wire::UserProfile),
        (status = 400, description = "`invalid_username`"),
        (status = 404, description = "`unknown_user`"),
        (status = 429, description = "`rate_limited`: lookups per account"),
    )
)]
pub async fn lookup(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(username): Path<String>,
) -> Result<Json<UserProfile>, AppError> {
    if !valid_username(&username) {
        return Err(AppError::bad_request(
            "invalid_username",
            "usernames are 3-20 of [A-Za-z0-9_]",
        ));
    }
    state
        .limiter()
        .check(Limit::UserLookups, RateKey::Account(&caller.user_id), 1)
        .await?;
    match state.store().user_by_username(&username).await? {
        Some((user_id, username)) => Ok(Json(UserProfile { user_id, username })),
        None => Err(AppError::not_found("unknown_user", "no such user")),
    }
}

/// `GET /api/users/{userId}/profile`: a user's username.
#[utoipa::path(
    get, path = "/api/users/{user_id}/profile", tag = "accounts", summary = "A user's username", security(("bearer" = [])),
    responses(
        (status = 200, description = "the account", body = sotto_wire::UserProfile),
        (status = 404, description = "`unknown_user`"),
    )
)]
pub async fn profile(
    State(state): State<AppState>,
    Auth(_caller): Auth,
    Path(user_id): Path<String>,
) -> Result<Json<UserProfile>, AppError> {
    let username = if crate::api::valid_id(&user_id) {
        state.store().username(&user_id).await?
    } else {
        None
    };
    match username {
        Some(username) => Ok(Json(UserProfile { user_id, username })),
        None => Err(AppError::not_found("unknown_user", "no such user")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn username_and_email_rules() {
        assert!(valid_username("abc_123"));
        assert!(!valid_username("ab"));
        assert!(!valid_username("a-b-c"));
        assert!(!valid_username("ünï"));
        assert!(!valid_username(&"a".repeat(21)));
        assert!(valid_email("a@b.co"));
        assert!(!valid_email("a@b"));
        assert!(!valid_email("@b.co"));
        assert!(!valid_email("a b@c.de"));
        assert!(!valid_email("a@b@c.de"));
    }
}
