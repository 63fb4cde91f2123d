//! Prekey upload, count and bundle claims. Key bytes are opaque to the relay except for the
//! checks `sotto_crypto::keys` offers: well-formed keys and valid identity signatures, so the relay
//! never hands out a key the account did not sign.

use std::collections::HashSet;

use axum::extract::State;
use axum::http::StatusCode;
use sotto_crypto::keys::{validate_one_time_prekey, IdentityKey};
use sotto_wire::{Base64, DeviceBundle, KeyCount, KeysUpload, PreKey, PreKeyBundles, SignedPreKey};

use crate::auth::Auth;
use crate::error::{Json, Path};
use crate::ratelimit::{Limit, RateKey};
use crate::store::{ClaimedBundle, DeviceAuth, KeyUpdate, SetKeysOutcome, StoredKey};
use crate::{AppError, AppState};

/// Most one-time keys of one type per upload.
pub const MAX_ONE_TIME_KEYS: usize = 100;

fn invalid_key(what: &str) -> AppError {
    AppError::bad_request(
        "invalid_key",
        format!("{what} is malformed or badly signed"),
    )
}

fn check_unique(ids: impl Iterator<Item = u32>, what: &str) -> Result<(), AppError> {
    let mut seen = HashSet::new();
    for id in ids {
        if !seen.insert(id) {
            return Err(AppError::bad_request(
                "duplicate_key_id",
                format!("duplicate keyId {id} in {what}"),
            ));
        }
    }
    Ok(())
}

fn signed(key: &SignedPreKey) -> StoredKey {
    StoredKey {
        key_id: key.key_id,
        public_key: key.public_key.as_bytes().to_vec(),
        signature: key.signature.as_bytes().to_vec(),
    }
}

/// Checks every key of an upload against the identity key; runs on the blocking pool (ML-KEM and
/// Ed25519 checks of up to a hundred keys).
fn verify_upload(identity: &[u8], upload: &KeysUpload) -> Result<KeyUpdate, AppError> {
    let id = IdentityKey::from_bytes(identity).map_err(|_| invalid_key("identityKey"))?;
    let mut update = KeyUpdate {
        identity_key: identity.to_vec(),
        ..KeyUpdate::default()
    };
    if let Some(k) = &upload.signed_pre_key {
        id.verify_signed_prekey(k.key_id, k.public_key.as_bytes(), k.signature.as_bytes())
            .map_err(|_| invalid_key("signedPreKey"))?;
        update.signed_pre_key = Some(signed(k));
    }
    if let Some(k) = &upload.kem_last_resort_key {
        id.verify_kem_prekey(k.key_id, k.public_key.as_bytes(), k.signature.as_bytes())
            .map_err(|_| invalid_key("kemLastResortKey"))?;
        update.kem_last_resort = Some(signed(k));
    }
    if let Some(list) = &upload.pre_keys {
        check_unique(list.iter().map(|k| k.key_id), "preKeys")?;
        let mut keys = Vec::with_capacity(list.len());
        for k in list {
            validate_one_time_prekey(k.public_key.as_bytes())
                .map_err(|_| invalid_key("preKeys"))?;
            keys.push(StoredKey {
                key_id: k.key_id,
                public_key: k.public_key.as_bytes().to_vec(),
                signature: Vec::new(),
            });
        }
        update.pre_keys = Some(keys);
    }
    if let Some(list) = &upload.kem_pre_keys {
        check_unique(list.iter().map(|k| k.key_id), "kemPreKeys")?;
        let mut keys = Vec::with_capacity(list.len());
        for k in list {
            id.verify_kem_prekey(k.key_id, k.public_key.as_bytes(), k.signature.as_bytes())
                .map_err(|_| invalid_key("kemPreKeys"))?;
            keys.push(signed(k));
        }
        update.kem_pre_keys = Some(keys);
    }
    Ok(update)
}

/// `PUT /api/keys`.
#[utoipa::path(
    put, path = "/api/keys", operation_id = "upload_keys", tag = "keys", summary = "Upload keys for this device (present fields replace stored keys of their type)", security(("bearer" = [])),
    responses(
        (status = 204, description = "stored"),
        (status = 400, description = "`invalid_key`, `duplicate_key_id`, `empty_upload`, `missing_identity_key`"),
        (status = 409, description = "`identity_key_mismatch`"),
        (status = 413, description = "`payload_too_large`: more than 100 one-time keys of a kind"),
    )
)]
pub async fn upload(
    State(state): State<AppState>,
    Auth(device): Auth,
    Json(upload): Json<KeysUpload>,
) -> Result<StatusCode, AppError> {
    let too_many = |l: Option<usize>| l.is_some_and(|n| n > MAX_ONE_TIME_KEYS);
    if too_many(upload.pre_keys.as_ref().map(Vec::len))
        || too_many(upload.kem_pre_keys.as_ref().map(Vec::len))
    {
        return Err(AppError::too_large(format!(
            "at most {MAX_ONE_TIME_KEYS} one-time keys of each type per upload"
        )));
    }
    if upload == KeysUpload::default() {
        return Err(AppError::bad_request(
            "empty_upload",
            "no keys in the upload",
        ));
    }
    let identity = match &upload.identity_key {
        Some(k) => k.as_bytes().to_vec(),
        None => state
            .store()
            .identity_key(&device.user_id)
            .await?
            .ok_or_else(|| {
                AppError::bad_request("missing_identity_key", "upload the identity key first")
            })?,
    };
    let update = tokio::task::spawn_blocking(move || verify_upload(&identity, &upload))
        .await
        .map_err(|e| AppError::Internal(format!("verify task: {e}")))??;
    match state.store().set_keys(&device, &update).await? {
        SetKeysOutcome::Stored => Ok(StatusCode::NO_CONTENT),
        SetKeysOutcome::IdentityMismatch => Err(AppError::conflict(
            "identity_key_mismatch",
            "the account has a different identity key and other devices",
        )),
    }
}

/// `GET /api/keys/count`.
#[utoipa::path(
    get, path = "/api/keys/count", tag = "keys", summary = "One-time keys left for this device", security(("bearer" = [])),
    responses((status = 200, description = "counts", body = sotto_wire::KeyCount))
)]
pub async fn count(
    State(state): State<AppState>,
    Auth(device): Auth,
) -> Result<Json<KeyCount>, AppError> {
    let (count, kem_count) = state.store().key_counts(device.pk).await?;
    Ok(Json(KeyCount { count, kem_count }))
}

fn wire_signed(k: StoredKey) -> SignedPreKey {
    SignedPreKey {
        key_id: k.key_id,
        public_key: Base64(k.public_key),
        signature: Base64(k.signature),
    }
}

fn wire_bundle(b: ClaimedBundle) -> DeviceBundle {
    DeviceBundle {
        device_id: b.device_id,
        registration_id: b.registration_id,
        signed_pre_key: wire_signed(b.signed_pre_key),
        pre_key: b.pre_key.map(|k| PreKey {
            key_id: k.key_id,
            public_key: Base64(k.public_key),
        }),
        kem_pre_key: b.kem_pre_key.map(wire_signed),
    }
}

async fn claim(
    state: &AppState,
    caller: &DeviceAuth,
    user_id: String,
    device_id: Option<u32>,
) -> Result<Json<PreKeyBundles>, AppError> {
    // Each fetch may consume one-time keys of someone else: limited per fetching account.
    state
        .limiter()
        .check(Limit::BundleFetch, RateKey::Account(&caller.user_id), 1)
        .await?;
    if !crate::api::valid_id(&user_id) {
        return Err(AppError::not_found("unknown_user", "no such user"));
    }
    let claimed = state.store().claim_bundles(&user_id, device_id).await?;
    match claimed {
        Some((identity, bundles)) if !bundles.is_empty() => Ok(Json(PreKeyBundles {
            user_id,
            identity_key: Base64(identity),
            devices: bundles.into_iter().map(wire_bundle).collect(),
        })),
        _ => Err(AppError::not_found(
            "no_keys",
            "no such user or device, or no keys uploaded",
        )),
    }
}

/// `GET /api/keys/{userId}`: one bundle per device of the user.
#[utoipa::path(
    get, path = "/api/keys/{user_id}", tag = "keys", summary = "Claim a bundle for every device of a user", security(("bearer" = [])),
    responses(
        (status = 200, description = "one bundle per device", body = sotto_wire::PreKeyBundles),
        (status = 404, description = "`unknown_user`, `no_keys`"),
        (status = 429, description = "`rate_limited`: bundle fetches per account"),
    )
)]
pub async fn bundles(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path(user_id): Path<String>,
) -> Result<Json<PreKeyBundles>, AppError> {
    claim(&state, &caller, user_id, None).await
}

/// `GET /api/keys/{userId}/{deviceId}`.
#[utoipa::path(
    get, path = "/api/keys/{user_id}/{device_id}", tag = "keys", summary = "Claim the bundle of one device", security(("bearer" = [])),
    responses(
        (status = 200, description = "the bundle", body = sotto_wire::PreKeyBundles),
        (status = 404, description = "`unknown_user`, `no_keys`"),
        (status = 429, description = "`rate_limited`: bundle fetches per account"),
    )
)]
pub async fn device_bundle(
    State(state): State<AppState>,
    Auth(caller): Auth,
    Path((user_id, device_id)): Path<(String, u32)>,
) -> Result<Json<PreKeyBundles>, AppError> {
    claim(&state, &caller, user_id, Some(device_id)).await
}
