//! Bearer tokens and passwords.
//!
//! A token is 32 random bytes (base64url, 43 characters) shown to the client once; the relay stores
//! only its SHA-256 and finds the device by looking that hash up, so a database leak yields no
//! usable token and no comparison leaks timing about a stored secret. Passwords are hashed with
//! argon2id on the blocking pool.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use rand::RngCore as _;
use sha2::{Digest, Sha256};

use crate::store::DeviceAuth;
use crate::{AppError, AppState, Config};

/// Length of the encoded token.
const TOKEN_LEN: usize = 43;

/// A fresh token and its hash.
pub fn generate_token() -> (String, [u8; 32]) {
    let mut raw = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut raw);
    let token = URL_SAFE_NO_PAD.encode(raw);
    let hash = hash_token(&token);
    (token, hash)
}

/// SHA-256 of the token string.
pub fn hash_token(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

fn argon2(config: &Config) -> Result<Argon2<'static>, AppError> {
    let params = Params::new(config.argon2_memory_kib, config.argon2_iterations, 1, None)
        .map_err(|e| AppError::Internal(format!("argon2 params: {e}")))?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

/// Hashes a password (PHC string) on the blocking pool.
pub async fn hash_password(config: &Config, password: String) -> Result<String, AppError> {
    let argon = argon2(config)?;
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::generate(&mut rand::rngs::OsRng);
        argon
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| AppError::Internal(format!("argon2 hash: {e}")))
    })
    .await
    .map_err(|e| AppError::Internal(format!("hash task: {e}")))?
}

/// Checks a password against a PHC string (or burns the same time when there is none, so timing
/// does not reveal which usernames exist).
pub async fn verify_password(
    config: &Config,
    password: String,
    phc: Option<String>,
) -> Result<bool, AppError> {
    let argon = argon2(config)?;
    tokio::task::spawn_blocking(move || match phc {
        Some(phc) => {
            let parsed = PasswordHash::new(&phc)
                .map_err(|e| AppError::Internal(format!("stored hash: {e}")))?;
            Ok(argon.verify_password(password.as_bytes(), &parsed).is_ok())
        }
        None => {
            let salt = SaltString::generate(&mut rand::rngs::OsRng);
            let _ = argon.hash_password(password.as_bytes(), &salt);
            Ok(false)
        }
    })
    .await
    .map_err(|e| AppError::Internal(format!("verify task: {e}")))?
}

/// Resolves a token to its device.
pub async fn authenticate(state: &AppState, token: &str) -> Result<DeviceAuth, AppError> {
    if token.len() != TOKEN_LEN {
        return Err(AppError::unauthorized());
    }
    state
        .store()
        .device_by_token(&hash_token(token))
        .await?
        .ok_or_else(AppError::unauthorized)
}

/// The bearer token of a request's `Authorization` header.
pub fn bearer(headers: &axum::http::HeaderMap) -> Option<&str> {
    let value = headers.get(axum::http::header::AUTHORIZATION)?;
    let value = value.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// The authenticated device of a request (`Authorization: Bearer <token>`).
#[derive(Debug, Clone)]
pub struct Auth(pub DeviceAuth);

impl FromRequestParts<AppState> for Auth {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AppError> {
        let token = bearer(&parts.headers).ok_or_else(AppError::unauthorized)?;
        authenticate(state, token).await.map(Auth)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_unique_and_hash_matches() {
        let (a, ha) = generate_token();
        let (b, _) = generate_token();
        assert_ne!(a, b);
        assert_eq!(a.len(), TOKEN_LEN);
        assert_eq!(hash_token(&a), ha);
    }

    #[tokio::test]
    async fn password_round_trip() {
        let config = Config::for_tests("sqlite://unused");
        let phc = hash_password(&config, "correct horse".into())
            .await
            .unwrap();
        assert!(phc.starts_with("$argon2id$"));
        assert!(
            verify_password(&config, "correct horse".into(), Some(phc.clone()))
                .await
                .unwrap()
        );
        assert!(!verify_password(&config, "wrong".into(), Some(phc))
            .await
            .unwrap());
        assert!(!verify_password(&config, "x".into(), None).await.unwrap());
    }
}
