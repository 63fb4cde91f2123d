//! Finding people: an account by its username, and a user id's username.

use reqwest::Method;
use sotto_wire::UserProfile;

use super::{query_error, SottoClient};
use crate::http::{segment, CallError};
use crate::{QueryError, UserRecord};

/// Whether `name` can be a username (3-20 of `[A-Za-z0-9_]`), checked before asking the relay.
fn valid_username(name: &str) -> bool {
    (3..=20).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

fn lookup_error(e: CallError) -> QueryError {
    match e.status() {
        Some(400) => QueryError::Invalid("usernames are 3-20 of A-Z, a-z, 0-9 and _"),
        Some(429) => QueryError::RateLimited,
        _ => query_error(e),
    }
}

impl SottoClient {
    /// The account a username names (in any case). `Unknown` when nobody has it.
    pub async fn lookup_user(&self, username: &str) -> Result<UserRecord, QueryError> {
        if !valid_username(username) {
            return Err(QueryError::Invalid(
                "usernames are 3-20 of A-Z, a-z, 0-9 and _",
            ));
        }
        self.profile_at(&format!("/api/usernames/{}", segment(username)))
            .await
    }

    /// A user id's username. `Unknown` when the relay knows no such user.
    pub async fn user_profile(&self, user_id: &str) -> Result<UserRecord, QueryError> {
        self.profile_at(&format!("/api/users/{}/profile", segment(user_id)))
            .await
    }

    async fn profile_at(&self, path: &str) -> Result<UserRecord, QueryError> {
        let p: UserProfile = self
            .inner
            .http
            .json(Method::GET, path, None::<&()>)
            .await
            .map_err(lookup_error)?;
        Ok(UserRecord {
            user_id: p.user_id,
            username: p.username,
        })
    }
}
