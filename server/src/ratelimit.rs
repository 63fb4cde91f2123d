//! Rate limits: token buckets per account or client address.
//!
//! ```text
//!  handler ──check(limit, key, cost)──▶ dyn RateLimiter ──▶ Ok(())
//!                                            │          └─▶ Err(RateLimited) ──▶ 429 + Retry-After
//!                                            ▼
//!                              LocalRateLimiter (this process)
//!                              one table per Limit, sharded maps
//!                              key ─▶ "full again at" instant
//! ```
//!
//! Each named [`Limit`] has a [`Quota`] (`count` per `period`, bursts of up to `burst`). A bucket is
//! stored as the single instant at which it will be full again (the GCRA form of a token bucket):
//! spending `cost` tokens pushes that instant `cost × period / count` into the future, and a request
//! is refused when it would push it further than `burst` tokens' worth past now. A bucket whose
//! instant has passed is full, exactly like a key never seen, so idle buckets can be evicted without
//! changing any answer; that is what keeps memory bounded. A hard cap on tracked keys per limit
//! protects against an attacker rotating keys faster than buckets refill: when a shard is full of
//! live buckets, the half closest to full is dropped (those keys get a fresh bucket, the smallest
//! possible forgiveness).
//!
//! [`RateLimiter`] is the seam for a shared store (Redis, PostgreSQL) when several relay processes
//! must share limits: it is object safe and asynchronous. [`LocalRateLimiter`] is the in-process
//! implementation; time comes from a [`Clock`] so tests are deterministic.
//!
//! Why not the `governor` crate (0.10): measured against it (release build, one thread, this
//! relay's 2-core machine), its keyed limiter is faster on a hot key (≈ 48 ns per check against
//! ≈ 157 ns here, both negligible next to a request), but it cannot keep two guarantees the relay
//! relies on. It has no peek (checking without spending), which [`RateLimiter::peek`] needs so
//! that a request is counted only once it succeeded. And its keyed state has no cap: 10⁶ rotating
//! keys under an hourly quota keep 10⁶ entries (+112 MiB) that `retain_recent()` cannot drop,
//! because every one is still live; sweeping with `retain_recent()` whenever a cap is reached
//! costs O(keys) per new key (≈ 231 µs per check at a 100,000-key cap) and still does not hold
//! the cap. This limiter holds 100,000 keys per limit (+13 MiB for the same flood, ≈ 0.6 µs per
//! check) by evicting the buckets closest to full. Both gaps could only be closed with a custom
//! `governor` state store, which would be this module's sharded map again.
//!
//! ```
//! use std::net::{IpAddr, Ipv4Addr};
//! use sotto_server::ratelimit::{Limit, LocalRateLimiter, Quota, RateKey, RateLimitConfig};
//!
//! let config = RateLimitConfig {
//!     login: Some(Quota::per_minute(2)),
//!     ..RateLimitConfig::default()
//! };
//! let limiter = LocalRateLimiter::new(&config);
//! let client = RateKey::Address(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7)));
//! assert!(limiter.check_now(Limit::Login, client, 1).is_ok());
//! assert!(limiter.check_now(Limit::Login, client, 1).is_ok());
//! let refused = limiter.check_now(Limit::Login, client, 1).unwrap_err();
//! assert_eq!(refused.retry_after_secs(), 30);
//! ```

use std::fmt;
use std::future::Future;
use std::hash::{BuildHasher, Hash, Hasher, RandomState};
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use hashbrown::{Equivalent, HashMap};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The named limits the relay enforces.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Limit {
    /// Message sends, keyed by the sending account.
    Messages,
    /// Login attempts, keyed by client address.
    Login,
    /// Registration attempts, keyed by client address.
    Registration,
    /// Prekey-bundle fetches, keyed by the fetching account (one-time prekey draining).
    BundleFetch,
    /// Device-provisioning attempts (channels opened, linking codes tried), keyed by client address.
    Provisioning,
    /// Group creations and membership changes (adds, removals, role changes), keyed by the acting
    /// account: each queues an event in every member's mailbox.
    GroupChanges,
    /// Ephemeral sends (typing indicators and the like), keyed by the sending account.
    Ephemeral,
    /// Linking codes created, keyed by account.
    LinkingCodes,
    /// Group invite links created, keyed by the creating account.
    Invites,
    /// Failed logins, keyed by the account tried (besides `Login` per address): once spent, even
    /// the right password waits, so guessing does not scale with the guesser's addresses.
    FailedLogins,
    /// Attachment upload volume in KiB (rounded up), keyed by the uploading account.
    AttachmentKib,
    /// Username lookups, keyed by the asking account (account enumeration).
    UserLookups,
}

impl Limit {
    /// Every limit, in table order.
    pub const ALL: [Limit; 12] = [
        Limit::Messages,
        Limit::Login,
        Limit::Registration,
        Limit::BundleFetch,
        Limit::Provisioning,
        Limit::GroupChanges,
        Limit::Ephemeral,
        Limit::LinkingCodes,
        Limit::Invites,
        Limit::FailedLogins,
        Limit::AttachmentKib,
        Limit::UserLookups,
    ];

    /// A stable name for logs and metrics labels.
    pub fn name(self) -> &'static str {
        match self {
            Limit::Messages => "messages",
            Limit::Login => "login",
            Limit::Registration => "registration",
            Limit::BundleFetch => "bundle_fetch",
            Limit::Provisioning => "provisioning",
            Limit::GroupChanges => "group_changes",
            Limit::Ephemeral => "ephemeral",
            Limit::LinkingCodes => "linking_codes",
            Limit::Invites => "invites",
            Limit::FailedLogins => "failed_logins",
            Limit::AttachmentKib => "attachment_kib",
            Limit::UserLookups => "user_lookups",
        }
    }

    fn index(self) -> usize {
        match self {
            Limit::Messages => 0,
            Limit::Login => 1,
            Limit::Registration => 2,
            Limit::BundleFetch => 3,
            Limit::Provisioning => 4,
            Limit::GroupChanges => 5,
            Limit::Ephemeral => 6,
            Limit::LinkingCodes => 7,
            Limit::Invites => 8,
            Limit::FailedLogins => 9,
            Limit::AttachmentKib => 10,
            Limit::UserLookups => 11,
        }
    }
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Who a bucket belongs to.
///
/// Addresses are normalised before use: an IPv4-mapped IPv6 address counts as its IPv4 address,
/// and an IPv6 address counts as its /64 prefix, since one subscriber usually holds a whole /64.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RateKey<'a> {
    /// An account id, in whatever text form the relay uses for it.
    Account(&'a str),
    /// A client address.
    Address(IpAddr),
}

/// A normalised borrowed key: what is hashed and compared.
#[derive(Clone, Copy, PartialEq, Eq)]
enum KeyRef<'a> {
    Account(&'a str),
    V4([u8; 4]),
    V6Prefix([u8; 8]),
}

impl<'a> From<RateKey<'a>> for KeyRef<'a> {
    fn from(key: RateKey<'a>) -> Self {
        match key {
            RateKey::Account(id) => KeyRef::Account(id),
            RateKey::Address(IpAddr::V4(v4)) => KeyRef::V4(v4.octets()),
            RateKey::Address(IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
                Some(v4) => KeyRef::V4(v4.octets()),
                None => {
                    let [a, b, c, d, ..] = v6.segments();
                    let mut prefix = [0u8; 8];
                    for (chunk, segment) in prefix.chunks_exact_mut(2).zip([a, b, c, d]) {
                        chunk.copy_from_slice(&segment.to_be_bytes());
                    }
                    KeyRef::V6Prefix(prefix)
                }
            },
        }
    }
}

impl Hash for KeyRef<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        match self {
            KeyRef::Account(id) => {
                state.write_u8(0);
                id.hash(state);
            }
            KeyRef::V4(octets) => {
                state.write_u8(1);
                octets.hash(state);
            }
            KeyRef::V6Prefix(prefix) => {
                state.write_u8(2);
                prefix.hash(state);
            }
        }
    }
}

/// The owned form of [`KeyRef`], stored in the maps. Allocated only when a new bucket is created.
#[derive(PartialEq, Eq)]
enum StoredKey {
    Account(Box<str>),
    V4([u8; 4]),
    V6Prefix([u8; 8]),
}

impl StoredKey {
    fn as_ref(&self) -> KeyRef<'_> {
        match self {
            StoredKey::Account(id) => KeyRef::Account(id),
            StoredKey::V4(octets) => KeyRef::V4(*octets),
            StoredKey::V6Prefix(prefix) => KeyRef::V6Prefix(*prefix),
        }
    }
}

impl From<KeyRef<'_>> for StoredKey {
    fn from(key: KeyRef<'_>) -> Self {
        match key {
            KeyRef::Account(id) => StoredKey::Account(id.into()),
            KeyRef::V4(octets) => StoredKey::V4(octets),
            KeyRef::V6Prefix(prefix) => StoredKey::V6Prefix(prefix),
        }
    }
}

impl Hash for StoredKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_ref().hash(state);
    }
}

impl Equivalent<StoredKey> for KeyRef<'_> {
    fn equivalent(&self, key: &StoredKey) -> bool {
        *self == key.as_ref()
    }
}

/// `count` tokens per `period`, with buckets holding up to `burst` tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quota {
    count: NonZeroU32,
    period: Duration,
    burst: NonZeroU32,
}

impl Quota {
    /// `count` per `period`, burst `count`. A zero `period` is treated as one nanosecond.
    pub fn new(count: NonZeroU32, period: Duration) -> Self {
        Quota {
            count,
            period: period.max(Duration::from_nanos(1)),
            burst: count,
        }
    }

    /// `count` per second (at least one).
    pub fn per_second(count: u32) -> Self {
        Self::new(at_least_one(count), Duration::from_secs(1))
    }

    /// `count` per minute (at least one).
    pub fn per_minute(count: u32) -> Self {
        Self::new(at_least_one(count), Duration::from_secs(60))
    }

    /// `count` per hour (at least one).
    pub fn per_hour(count: u32) -> Self {
        Self::new(at_least_one(count), Duration::from_secs(3600))
    }

    /// The same rate with a different bucket size (at least one).
    pub fn with_burst(self, burst: u32) -> Self {
        Quota {
            burst: at_least_one(burst),
            ..self
        }
    }

    /// The share of one of `n` relay processes: the same count over an `n` times longer period,
    /// and `1/n` of the burst (at least one token).
    pub fn divided(self, n: u32) -> Self {
        let n = n.max(1);
        Quota {
            count: self.count,
            period: self.period.saturating_mul(n),
            burst: at_least_one(self.burst.get().div_ceil(n)),
        }
    }

    /// Tokens granted per period.
    pub fn count(&self) -> u32 {
        self.count.get()
    }

    /// The refill period.
    pub fn period(&self) -> Duration {
        self.period
    }

    /// Bucket size: the most tokens one burst can spend.
    pub fn burst(&self) -> u32 {
        self.burst.get()
    }

    /// Parses a config setting: a quota (see [`Quota`]'s `FromStr`) or `off` for no limit.
    pub fn parse_setting(text: &str) -> Result<Option<Quota>, QuotaParseError> {
        let text = text.trim();
        if text.eq_ignore_ascii_case("off") || text.eq_ignore_ascii_case("none") {
            Ok(None)
        } else {
            text.parse().map(Some)
        }
    }

    /// Nanoseconds per token, at least one.
    fn interval_nanos(&self) -> u64 {
        let nanos = self.period.as_nanos() / u128::from(self.count.get());
        u64::try_from(nanos).unwrap_or(u64::MAX).max(1)
    }
}

fn at_least_one(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN)
}

/// The text form `<count>/<unit>[ burst <n>]`, e.g. `100/minute`, `5/hour`, `10/s burst 20`.
/// Units: `s`/`sec`/`second`, `m`/`min`/`minute`, `h`/`hour`, `d`/`day` (plurals accepted).
impl FromStr for Quota {
    type Err = QuotaParseError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || QuotaParseError(text.to_owned());
        let mut words = text.split_whitespace();
        let rate = words.next().ok_or_else(bad)?;
        let (count, unit) = rate.split_once('/').ok_or_else(bad)?;
        let count = count.parse::<NonZeroU32>().map_err(|_| bad())?;
        let period = match unit.to_ascii_lowercase().trim_end_matches('s') {
            "" | "sec" | "second" => Duration::from_secs(1),
            "m" | "min" | "minute" => Duration::from_secs(60),
            "h" | "hour" => Duration::from_secs(3600),
            "d" | "day" => Duration::from_secs(86_400),
            _ => return Err(bad()),
        };
        let mut quota = Quota::new(count, period);
        match (words.next(), words.next(), words.next()) {
            (None, _, _) => {}
            (Some("burst"), Some(burst), None) => {
                quota.burst = burst.parse::<NonZeroU32>().map_err(|_| bad())?;
            }
            _ => return Err(bad()),
        }
        Ok(quota)
    }
}

impl fmt::Display for Quota {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unit = match self.period.as_secs() {
            1 => "second",
            60 => "minute",
            3600 => "hour",
            86_400 => "day",
            _ => return write!(f, "{}/{:?} burst {}", self.count, self.period, self.burst),
        };
        write!(f, "{}/{unit}", self.count)?;
        if self.burst != self.count {
            write!(f, " burst {}", self.burst)?;
        }
        Ok(())
    }
}

/// A quota setting that is not `<count>/<unit>[ burst <n>]` or `off`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid rate limit {0:?}: expected e.g. \"100/minute\", \"10/second burst 20\" or \"off\""
)]
pub struct QuotaParseError(String);

/// The relay's rate limits. `None` disables a limit (load tests, trusted deployments).
///
/// In TOML each limit is a string (`messages = "100/minute"`, `login = "off"`); keys are kebab-case
/// (`bundle-fetch`, `max-keys-per-limit`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "kebab-case", deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Message sends per account. Default `100/minute`.
    #[serde(with = "setting")]
    pub messages: Option<Quota>,
    /// Login attempts per client address. Default `10/minute`.
    #[serde(with = "setting")]
    pub login: Option<Quota>,
    /// Registration attempts per client address. Default `20/hour`.
    #[serde(with = "setting")]
    pub registration: Option<Quota>,
    /// Prekey-bundle fetches per account. Default `1000/hour`: a first message to a 1,000-member
    /// group fits in one burst, draining other users' one-time prekeys does not.
    #[serde(with = "setting")]
    pub bundle_fetch: Option<Quota>,
    /// Provisioning attempts per client address. Default `10/minute`.
    #[serde(with = "setting")]
    pub provisioning: Option<Quota>,
    /// Group creations and membership changes per account. Default `60/hour`.
    #[serde(with = "setting")]
    pub group_changes: Option<Quota>,
    /// Ephemeral sends per account. Default `300/minute` (typing indicators of busy chats).
    #[serde(with = "setting")]
    pub ephemeral: Option<Quota>,
    /// Linking codes per account. Default `10/hour`.
    #[serde(with = "setting")]
    pub linking_codes: Option<Quota>,
    /// Group invite links per account. Default `30/hour`.
    #[serde(with = "setting")]
    pub invites: Option<Quota>,
    /// Failed logins per account. Default `10/hour`.
    #[serde(with = "setting")]
    pub failed_logins: Option<Quota>,
    /// Attachment upload KiB per account. Default `2097152/day` (2 GiB a day).
    #[serde(with = "setting")]
    pub attachment_kib: Option<Quota>,
    /// Username lookups per account. Default `300/hour`.
    #[serde(with = "setting")]
    pub user_lookups: Option<Quota>,
    /// Most buckets tracked per limit; beyond it the buckets closest to full are forgotten.
    /// Default 100,000 (a few MiB per limit at most).
    pub max_keys_per_limit: usize,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        RateLimitConfig {
            messages: Some(Quota::per_minute(100)),
            login: Some(Quota::per_minute(10)),
            registration: Some(Quota::per_hour(20)),
            bundle_fetch: Some(Quota::per_hour(1000)),
            provisioning: Some(Quota::per_minute(10)),
            group_changes: Some(Quota::per_hour(60)),
            ephemeral: Some(Quota::per_minute(300)),
            linking_codes: Some(Quota::per_hour(10)),
            invites: Some(Quota::per_hour(30)),
            failed_logins: Some(Quota::per_hour(10)),
            attachment_kib: Some(Quota::new(
                at_least_one(2 * 1024 * 1024),
                Duration::from_secs(86_400),
            )),
            user_lookups: Some(Quota::per_hour(300)),
            max_keys_per_limit: 100_000,
        }
    }
}

impl RateLimitConfig {
    /// Every limit off.
    pub fn disabled() -> Self {
        RateLimitConfig {
            messages: None,
            login: None,
            registration: None,
            bundle_fetch: None,
            provisioning: None,
            group_changes: None,
            ephemeral: None,
            linking_codes: None,
            invites: None,
            failed_logins: None,
            attachment_kib: None,
            user_lookups: None,
            ..RateLimitConfig::default()
        }
    }

    /// Applies one `limit=quota` setting (`messages=100/minute`, `login=off`), as the
    /// `--rate-limit` flag gives it.
    pub fn set_from_flag(&mut self, setting: &str) -> Result<(), String> {
        let (name, value) = setting
            .split_once('=')
            .ok_or_else(|| format!("rate limit {setting:?}: expected LIMIT=QUOTA"))?;
        let slot = match name.trim() {
            "messages" => &mut self.messages,
            "login" => &mut self.login,
            "registration" => &mut self.registration,
            "bundle-fetch" => &mut self.bundle_fetch,
            "provisioning" => &mut self.provisioning,
            "group-changes" => &mut self.group_changes,
            "ephemeral" => &mut self.ephemeral,
            "linking-codes" => &mut self.linking_codes,
            "invites" => &mut self.invites,
            "failed-logins" => &mut self.failed_logins,
            "attachment-kib" => &mut self.attachment_kib,
            "user-lookups" => &mut self.user_lookups,
            other => {
                return Err(format!(
                    "unknown rate limit {other:?} (messages, login, registration, bundle-fetch, \
                     provisioning, group-changes, ephemeral, linking-codes, invites, failed-logins, \
                     attachment-kib, user-lookups)"
                ))
            }
        };
        *slot =
            Quota::parse_setting(value.trim()).map_err(|e| format!("rate limit {name}: {e}"))?;
        Ok(())
    }

    /// The quota of one limit.
    /// Every limit divided among `n` relay processes ([`Quota::divided`]): limits are counted per
    /// process, so that a client spreading its requests over all of them gets the quota in total.
    pub fn divided(&self, n: u32) -> Self {
        let d = |q: Option<Quota>| q.map(|q| q.divided(n));
        RateLimitConfig {
            messages: d(self.messages),
            login: d(self.login),
            registration: d(self.registration),
            bundle_fetch: d(self.bundle_fetch),
            provisioning: d(self.provisioning),
            group_changes: d(self.group_changes),
            ephemeral: d(self.ephemeral),
            linking_codes: d(self.linking_codes),
            invites: d(self.invites),
            failed_logins: d(self.failed_logins),
            attachment_kib: d(self.attachment_kib),
            user_lookups: d(self.user_lookups),
            ..self.clone()
        }
    }

    /// The quota of `limit`, if it is on.
    pub fn quota(&self, limit: Limit) -> Option<Quota> {
        match limit {
            Limit::Messages => self.messages,
            Limit::Login => self.login,
            Limit::Registration => self.registration,
            Limit::BundleFetch => self.bundle_fetch,
            Limit::Provisioning => self.provisioning,
            Limit::GroupChanges => self.group_changes,
            Limit::Ephemeral => self.ephemeral,
            Limit::LinkingCodes => self.linking_codes,
            Limit::Invites => self.invites,
            Limit::FailedLogins => self.failed_logins,
            Limit::AttachmentKib => self.attachment_kib,
            Limit::UserLookups => self.user_lookups,
        }
    }
}

/// Serde for `Option<Quota>` as `"100/minute"` or `"off"`.
mod setting {
    use super::*;

    pub(super) fn serialize<S: Serializer>(value: &Option<Quota>, s: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(quota) => s.collect_str(quota),
            None => s.serialize_str("off"),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Quota>, D::Error> {
        let text = String::deserialize(d)?;
        Quota::parse_setting(&text).map_err(serde::de::Error::custom)
    }
}

/// A refused request: the limit it hit and when the bucket will hold enough tokens again.
///
/// As an axum response it is `429 Too Many Requests` with `Retry-After` in whole seconds (rounded
/// up) and the relay's JSON error body.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("rate limit {limit} exceeded, retry after {retry_after:?}")]
pub struct RateLimited {
    /// The limit that refused.
    pub limit: Limit,
    /// How long until the same request would be allowed.
    pub retry_after: Duration,
}

impl RateLimited {
    /// `retry_after` in whole seconds, rounded up, at least 1: the `Retry-After` header value.
    pub fn retry_after_secs(&self) -> u64 {
        let secs = self.retry_after.as_secs();
        let secs = if self.retry_after.subsec_nanos() > 0 {
            secs.saturating_add(1)
        } else {
            secs
        };
        secs.max(1)
    }
}

impl IntoResponse for RateLimited {
    fn into_response(self) -> Response {
        let secs = self.retry_after_secs();
        let body = serde_json::json!({
            "code": "rate_limited",
            "message": format!("too many requests; retry after {secs} s"),
        });
        let mut response = (StatusCode::TOO_MANY_REQUESTS, axum::Json(body)).into_response();
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        response
    }
}

/// The future returned by [`RateLimiter::check`].
pub type CheckFuture<'a> = Pin<Box<dyn Future<Output = Result<(), RateLimited>> + Send + 'a>>;

/// Decides whether a request may spend `cost` tokens of `limit` for `key`.
///
/// Object safe (`Arc<dyn RateLimiter>` in the relay state) and asynchronous, so an implementation
/// backed by a shared store can replace [`LocalRateLimiter`] without touching handlers. A shared
/// implementation should fail open (allow and log) when its store is unreachable: a rate limit
/// outage must not become a relay outage.
pub trait RateLimiter: Send + Sync + fmt::Debug {
    /// Spends `cost` tokens, or refuses and says when to retry. A disabled limit always allows; a
    /// `cost` above the bucket size is charged as a full bucket.
    fn check<'a>(&'a self, limit: Limit, key: RateKey<'a>, cost: u32) -> CheckFuture<'a>;

    /// Whether `cost` tokens could be spent now, spending nothing: for checks that must happen
    /// before work whose cost is known only after it (an upload's size) or that is charged only on
    /// one outcome (a failed login). The default allows, so an implementation that cannot peek
    /// fails open and the charge made afterwards with [`check`](Self::check) still holds.
    fn peek<'a>(&'a self, limit: Limit, key: RateKey<'a>, cost: u32) -> CheckFuture<'a> {
        let _ = (limit, key, cost);
        Box::pin(std::future::ready(Ok(())))
    }

    /// Housekeeping the relay may call now and then (from its expiry loop, say): forget state
    /// that no longer changes any answer. Memory stays bounded without it.
    fn sweep(&self) {}
}

/// A source of monotonic time.
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    /// The current instant.
    fn now(&self) -> Instant;
}

/// The real clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// A clock that moves only when told to, for deterministic tests.
#[derive(Clone, Debug)]
pub struct ManualClock(Arc<Mutex<Instant>>);

impl ManualClock {
    /// A clock standing at the current instant.
    pub fn new() -> Self {
        ManualClock(Arc::new(Mutex::new(Instant::now())))
    }

    /// Moves the clock (and every clone of it) forward.
    pub fn advance(&self, by: Duration) {
        let mut now = lock(&self.0);
        *now += by;
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        *lock(&self.0)
    }
}

/// Locks a mutex; the code under these locks never panics, but a poisoned lock is still usable.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Shards per limit: enough that request threads rarely contend.
const SHARDS: usize = 16;

/// Per-process token buckets for every [`Limit`].
#[derive(Debug)]
pub struct LocalRateLimiter<C: Clock = SystemClock> {
    tables: [Table; Limit::ALL.len()],
    clock: C,
    /// Bucket instants are stored as nanoseconds since this instant.
    epoch: Instant,
}

#[derive(Debug)]
struct Table {
    limit: Limit,
    rule: Option<Rule>,
    select: RandomState,
    shards: Box<[Mutex<Shard>]>,
    cap_per_shard: usize,
}

#[derive(Clone, Copy, Debug)]
struct Rule {
    /// Nanoseconds that one token takes to refill.
    interval: u64,
    /// Bucket size.
    burst: u64,
    /// `interval × burst`: how far past now a bucket's full-again instant may be.
    tolerance: u64,
}

/// Key → nanosecond (since epoch) at which the bucket is full again.
struct Shard {
    buckets: HashMap<StoredKey, u64, RandomState>,
}

impl fmt::Debug for Shard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Shard { buckets } = self;
        f.debug_struct("Shard")
            .field("buckets", &buckets.len())
            .finish_non_exhaustive()
    }
}

impl LocalRateLimiter<SystemClock> {
    /// Limits on the real clock.
    pub fn new(config: &RateLimitConfig) -> Self {
        Self::with_clock(config, SystemClock)
    }
}

impl<C: Clock> LocalRateLimiter<C> {
    /// Limits on the given clock.
    pub fn with_clock(config: &RateLimitConfig, clock: C) -> Self {
        let cap_per_shard = config.max_keys_per_limit.div_ceil(SHARDS).max(1);
        let epoch = clock.now();
        LocalRateLimiter {
            tables: Limit::ALL.map(|limit| Table::new(limit, config.quota(limit), cap_per_shard)),
            clock,
            epoch,
        }
    }

    /// [`RateLimiter::check`] without the future, on this limiter's clock.
    pub fn check_now(&self, limit: Limit, key: RateKey<'_>, cost: u32) -> Result<(), RateLimited> {
        self.check_at(limit, key, cost, self.clock.now())
    }

    /// [`RateLimiter::check`] at an explicit instant (instants before the limiter's creation count
    /// as its creation).
    pub fn check_at(
        &self,
        limit: Limit,
        key: RateKey<'_>,
        cost: u32,
        now: Instant,
    ) -> Result<(), RateLimited> {
        self.table(limit).check(key.into(), cost, self.nanos(now))
    }

    /// Forgets every bucket that has refilled completely. The limiter also does this by itself when
    /// a shard reaches its cap; calling it periodically (every minute, say) just returns memory sooner.
    pub fn sweep(&self) {
        let now = self.nanos(self.clock.now());
        for table in &self.tables {
            for shard in table.shards.iter() {
                lock(shard).buckets.retain(|_, full_at| *full_at > now);
            }
        }
    }

    /// Buckets currently tracked for `limit` (including full ones not yet swept).
    pub fn tracked(&self, limit: Limit) -> usize {
        self.table(limit)
            .shards
            .iter()
            .map(|shard| lock(shard).buckets.len())
            .sum()
    }

    fn table(&self, limit: Limit) -> &Table {
        // `Limit::index` covers exactly the indices of `Limit::ALL`.
        #[allow(clippy::indexing_slicing)]
        &self.tables[limit.index()]
    }

    fn nanos(&self, now: Instant) -> u64 {
        let since = now.saturating_duration_since(self.epoch).as_nanos();
        u64::try_from(since).unwrap_or(u64::MAX)
    }
}

impl<C: Clock> RateLimiter for LocalRateLimiter<C> {
    fn check<'a>(&'a self, limit: Limit, key: RateKey<'a>, cost: u32) -> CheckFuture<'a> {
        let outcome = self.check_now(limit, key, cost);
        Box::pin(std::future::ready(outcome))
    }

    fn peek<'a>(&'a self, limit: Limit, key: RateKey<'a>, cost: u32) -> CheckFuture<'a> {
        let now = self.nanos(self.clock.now());
        let outcome = self
            .table(limit)
            .check_or_peek(key.into(), cost, now, false);
        Box::pin(std::future::ready(outcome))
    }

    fn sweep(&self) {
        LocalRateLimiter::sweep(self);
    }
}

impl Table {
    fn new(limit: Limit, quota: Option<Quota>, cap_per_shard: usize) -> Self {
        let rule = quota.map(|quota| {
            let interval = quota.interval_nanos();
            let burst = u64::from(quota.burst());
            Rule {
                interval,
                burst,
                tolerance: interval.saturating_mul(burst),
            }
        });
        let shards = (0..SHARDS)
            .map(|_| {
                Mutex::new(Shard {
                    buckets: HashMap::with_hasher(RandomState::new()),
                })
            })
            .collect();
        Table {
            limit,
            rule,
            select: RandomState::new(),
            shards,
            cap_per_shard,
        }
    }

    fn check(&self, key: KeyRef<'_>, cost: u32, now: u64) -> Result<(), RateLimited> {
        self.check_or_peek(key, cost, now, true)
    }

    fn check_or_peek(
        &self,
        key: KeyRef<'_>,
        cost: u32,
        now: u64,
        spend: bool,
    ) -> Result<(), RateLimited> {
        let Some(rule) = self.rule else {
            return Ok(());
        };
        if cost == 0 {
            return Ok(());
        }
        let cost = u64::from(cost).min(rule.burst);
        let shard_index = usize::try_from(self.select.hash_one(key) % SHARDS as u64).unwrap_or(0);
        let Some(shard) = self.shards.get(shard_index) else {
            return Ok(());
        };
        let mut shard = lock(shard);

        let full_at = shard.buckets.get(&key).copied().unwrap_or(now).max(now);
        let new_full_at = full_at.saturating_add(cost.saturating_mul(rule.interval));
        let ahead = new_full_at - now;
        if ahead > rule.tolerance {
            return Err(RateLimited {
                limit: self.limit,
                retry_after: Duration::from_nanos(ahead - rule.tolerance),
            });
        }
        if !spend {
            return Ok(());
        }
        if let Some(slot) = shard.buckets.get_mut(&key) {
            *slot = new_full_at;
        } else {
            if shard.buckets.len() >= self.cap_per_shard {
                shard.make_room(now, self.cap_per_shard);
            }
            shard.buckets.insert(key.into(), new_full_at);
        }
        Ok(())
    }
}

impl Shard {
    /// Called when the shard is at its cap: drops full buckets, then, if more than three quarters of
    /// the cap is still live, the buckets closest to full until half the cap remains. Each call
    /// frees at least a quarter of the cap, so the O(n) work is amortised over that many inserts.
    fn make_room(&mut self, now: u64, cap: usize) {
        self.buckets.retain(|_, full_at| *full_at > now);
        if self.buckets.len() <= cap - cap / 4 {
            return;
        }
        let keep = cap / 2;
        let mut instants: Vec<u64> = self.buckets.values().copied().collect();
        let drop_count = instants.len().saturating_sub(keep);
        if drop_count == 0 {
            return;
        }
        let (_, threshold, _) = instants.select_nth_unstable(drop_count - 1);
        let threshold = *threshold;
        self.buckets.retain(|_, full_at| *full_at > threshold);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn limiter(config: RateLimitConfig) -> (LocalRateLimiter<ManualClock>, ManualClock) {
        let clock = ManualClock::new();
        (LocalRateLimiter::with_clock(&config, clock.clone()), clock)
    }

    fn messages(quota: Quota) -> RateLimitConfig {
        RateLimitConfig {
            messages: Some(quota),
            ..RateLimitConfig::disabled()
        }
    }

    const ALICE: RateKey<'static> = RateKey::Account("alice");
    const BOB: RateKey<'static> = RateKey::Account("bob");

    #[test]
    fn peek_spends_nothing_and_agrees_with_check() {
        let (limiter, clock) = limiter(messages(Quota::per_minute(2)));
        let key = RateKey::Account("a");
        let peek = |l: &LocalRateLimiter<ManualClock>| {
            let now = l.nanos(l.clock.now());
            l.table(Limit::Messages)
                .check_or_peek(key.into(), 1, now, false)
        };
        for _ in 0..10 {
            assert!(peek(&limiter).is_ok());
        }
        assert!(limiter.check_now(Limit::Messages, key, 1).is_ok());
        assert!(limiter.check_now(Limit::Messages, key, 1).is_ok());
        let refused = peek(&limiter).unwrap_err();
        assert_eq!(refused.retry_after, Duration::from_secs(30));
        clock.advance(Duration::from_secs(30));
        assert!(peek(&limiter).is_ok());
    }

    #[test]
    fn burst_then_refusal() {
        let (rl, _clock) = limiter(RateLimitConfig::default());
        for i in 0..100 {
            assert!(
                rl.check_now(Limit::Messages, ALICE, 1).is_ok(),
                "message {i}"
            );
        }
        let err = rl.check_now(Limit::Messages, ALICE, 1).unwrap_err();
        assert_eq!(err.limit, Limit::Messages);
        // 100/minute: one token every 600 ms.
        assert_eq!(err.retry_after, Duration::from_millis(600));
        assert_eq!(err.retry_after_secs(), 1);
        // Another account is untouched.
        assert!(rl.check_now(Limit::Messages, BOB, 1).is_ok());
    }

    #[test]
    fn refills_at_the_configured_rate() {
        let (rl, clock) = limiter(messages(Quota::per_minute(60)));
        assert!(rl.check_now(Limit::Messages, ALICE, 60).is_ok());
        assert!(rl.check_now(Limit::Messages, ALICE, 1).is_err());
        clock.advance(Duration::from_millis(999));
        assert!(rl.check_now(Limit::Messages, ALICE, 1).is_err());
        clock.advance(Duration::from_millis(1));
        assert!(rl.check_now(Limit::Messages, ALICE, 1).is_ok());
        assert!(rl.check_now(Limit::Messages, ALICE, 1).is_err());
        // Ten seconds refill ten tokens, no more.
        clock.advance(Duration::from_secs(10));
        assert!(rl.check_now(Limit::Messages, ALICE, 10).is_ok());
        assert!(rl.check_now(Limit::Messages, ALICE, 1).is_err());
        // A long idle period refills to the burst, not beyond.
        clock.advance(Duration::from_secs(3600));
        assert!(rl.check_now(Limit::Messages, ALICE, 60).is_ok());
        assert!(rl.check_now(Limit::Messages, ALICE, 1).is_err());
    }

    #[test]
    fn refused_requests_spend_nothing() {
        let (rl, clock) = limiter(messages(Quota::per_second(10)));
        assert!(rl.check_now(Limit::Messages, ALICE, 10).is_ok());
        for _ in 0..1000 {
            assert!(rl.check_now(Limit::Messages, ALICE, 1).is_err());
        }
        clock.advance(Duration::from_millis(100));
        assert!(rl.check_now(Limit::Messages, ALICE, 1).is_ok());
    }

    #[test]
    fn retry_after_is_exact_and_rounds_up() {
        let (rl, clock) = limiter(RateLimitConfig {
            login: Some(Quota::per_hour(4)),
            ..RateLimitConfig::disabled()
        });
        let ip = RateKey::Address(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 9)));
        assert!(rl.check_now(Limit::Login, ip, 4).is_ok());
        clock.advance(Duration::from_millis(1500));
        let err = rl.check_now(Limit::Login, ip, 1).unwrap_err();
        assert_eq!(err.retry_after, Duration::from_millis(900_000 - 1500));
        assert_eq!(err.retry_after_secs(), 899);
        // A request costing three tokens waits for three.
        let err = rl.check_now(Limit::Login, ip, 3).unwrap_err();
        assert_eq!(err.retry_after_secs(), 3 * 900 - 1);
        // Retrying exactly when told succeeds.
        clock.advance(err.retry_after);
        assert!(rl.check_now(Limit::Login, ip, 3).is_ok());
    }

    #[test]
    fn sub_second_waits_round_up_to_one() {
        let err = RateLimited {
            limit: Limit::Messages,
            retry_after: Duration::from_nanos(1),
        };
        assert_eq!(err.retry_after_secs(), 1);
        let err = RateLimited {
            limit: Limit::Messages,
            retry_after: Duration::from_secs(2),
        };
        assert_eq!(err.retry_after_secs(), 2);
        let err = RateLimited {
            limit: Limit::Messages,
            retry_after: Duration::from_millis(2001),
        };
        assert_eq!(err.retry_after_secs(), 3);
    }

    #[test]
    fn response_is_429_with_retry_after_and_json() {
        let response = RateLimited {
            limit: Limit::Login,
            retry_after: Duration::from_millis(12_300),
        }
        .into_response();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[header::RETRY_AFTER], "13");
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
    }

    #[test]
    fn cost_above_burst_is_charged_as_a_full_bucket() {
        let (rl, clock) = limiter(messages(Quota::per_second(5)));
        assert!(rl.check_now(Limit::Messages, ALICE, 50).is_ok());
        assert!(rl.check_now(Limit::Messages, ALICE, 1).is_err());
        clock.advance(Duration::from_secs(1));
        assert!(rl.check_now(Limit::Messages, ALICE, 5).is_ok());
    }

    #[test]
    fn limits_are_independent_and_disabled_ones_allow_everything() {
        let (rl, _clock) = limiter(RateLimitConfig {
            messages: Some(Quota::per_minute(1)),
            bundle_fetch: Some(Quota::per_minute(1)),
            ..RateLimitConfig::disabled()
        });
        assert!(rl.check_now(Limit::Messages, ALICE, 1).is_ok());
        assert!(rl.check_now(Limit::BundleFetch, ALICE, 1).is_ok());
        assert!(rl.check_now(Limit::Messages, ALICE, 1).is_err());
        assert!(rl.check_now(Limit::BundleFetch, ALICE, 1).is_err());
        for _ in 0..10_000 {
            assert!(rl.check_now(Limit::Login, ALICE, 1).is_ok());
        }
        assert_eq!(rl.tracked(Limit::Login), 0);
    }

    #[test]
    fn addresses_are_normalised() {
        let (rl, _clock) = limiter(RateLimitConfig {
            registration: Some(Quota::per_hour(1)),
            ..RateLimitConfig::disabled()
        });
        let v4 = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1));
        let mapped = IpAddr::V6(Ipv4Addr::new(198, 51, 100, 1).to_ipv6_mapped());
        assert!(rl
            .check_now(Limit::Registration, RateKey::Address(v4), 1)
            .is_ok());
        assert!(rl
            .check_now(Limit::Registration, RateKey::Address(mapped), 1)
            .is_err());

        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse::<Ipv6Addr>().unwrap().into();
        let same_64: IpAddr = "2001:db8:1:2:ffff::9".parse::<Ipv6Addr>().unwrap().into();
        let other_64: IpAddr = "2001:db8:1:3::1".parse::<Ipv6Addr>().unwrap().into();
        assert!(rl
            .check_now(Limit::Registration, RateKey::Address(a), 1)
            .is_ok());
        assert!(rl
            .check_now(Limit::Registration, RateKey::Address(same_64), 1)
            .is_err());
        assert!(rl
            .check_now(Limit::Registration, RateKey::Address(other_64), 1)
            .is_ok());
        // An account named like an address is a different key.
        assert!(rl
            .check_now(Limit::Registration, RateKey::Account("198.51.100.1"), 1)
            .is_ok());
    }

    #[test]
    fn sweep_evicts_only_refilled_buckets() {
        let (rl, clock) = limiter(messages(Quota::per_minute(60)));
        assert!(rl.check_now(Limit::Messages, ALICE, 1).is_ok());
        assert!(rl.check_now(Limit::Messages, BOB, 30).is_ok());
        assert_eq!(rl.tracked(Limit::Messages), 2);
        clock.advance(Duration::from_secs(1));
        rl.sweep();
        // Alice's bucket is full again and forgotten; Bob's still owes 29 s.
        assert_eq!(rl.tracked(Limit::Messages), 1);
        clock.advance(Duration::from_secs(28));
        rl.sweep();
        assert_eq!(rl.tracked(Limit::Messages), 1);
        clock.advance(Duration::from_secs(1));
        rl.sweep();
        assert_eq!(rl.tracked(Limit::Messages), 0);
        // A forgotten bucket answers like a full one.
        assert!(rl.check_now(Limit::Messages, BOB, 60).is_ok());
        assert!(rl.check_now(Limit::Messages, BOB, 1).is_err());
    }

    #[test]
    fn rotating_keys_cannot_grow_memory_past_the_cap() {
        let cap = 1_600;
        let (rl, clock) = limiter(RateLimitConfig {
            login: Some(Quota::per_hour(5)),
            max_keys_per_limit: cap,
            ..RateLimitConfig::disabled()
        });
        // Time barely moves: every bucket stays live, the worst case for eviction.
        for i in 0..100_000u32 {
            clock.advance(Duration::from_micros(1));
            let ip = IpAddr::V4(Ipv4Addr::from(i));
            assert!(rl.check_now(Limit::Login, RateKey::Address(ip), 1).is_ok());
            assert!(rl.tracked(Limit::Login) <= cap, "after {i} keys");
        }
        assert!(rl.tracked(Limit::Login) >= cap / 4);
    }

    #[test]
    fn eviction_at_the_cap_prefers_buckets_closest_to_full() {
        let cap = SHARDS * 8;
        let (rl, _clock) = limiter(RateLimitConfig {
            messages: Some(Quota::per_minute(100)),
            max_keys_per_limit: cap,
            ..RateLimitConfig::disabled()
        });
        // One heavy user who has spent the whole bucket...
        assert!(rl.check_now(Limit::Messages, ALICE, 100).is_ok());
        // ...then many keys that spend a single token each, far more than the cap.
        let names: Vec<String> = (0..cap * 20).map(|i| format!("rotating-{i}")).collect();
        for name in &names {
            assert!(rl
                .check_now(Limit::Messages, RateKey::Account(name), 1)
                .is_ok());
        }
        // The heavy user's bucket survived every eviction and still refuses.
        assert!(rl.check_now(Limit::Messages, ALICE, 1).is_err());
    }

    #[tokio::test]
    async fn usable_through_the_trait_object() {
        let limiter: Arc<dyn RateLimiter> =
            Arc::new(LocalRateLimiter::new(&messages(Quota::per_minute(2))));
        let id = String::from("carol");
        assert!(limiter
            .check(Limit::Messages, RateKey::Account(&id), 2)
            .await
            .is_ok());
        let err = limiter
            .check(Limit::Messages, RateKey::Account(&id), 1)
            .await
            .unwrap_err();
        assert_eq!(err.retry_after_secs(), 30);
        limiter.sweep();
    }

    #[test]
    fn divided_quotas_add_up_to_the_whole() {
        let q = Quota::per_minute(100).with_burst(10).divided(3);
        assert_eq!(q.count(), 100);
        assert_eq!(q.period, Duration::from_secs(180));
        assert_eq!(q.burst.get(), 4);
        assert_eq!(Quota::per_second(1).divided(5).burst.get(), 1);
        assert_eq!(Quota::per_second(7).divided(0), Quota::per_second(7));
        let config = RateLimitConfig::default().divided(2);
        assert_eq!(
            config.messages.map(|q| q.period),
            RateLimitConfig::default()
                .messages
                .map(|q| q.period.saturating_mul(2))
        );
    }

    #[test]
    fn quota_text_round_trips() {
        assert_eq!(
            "100/minute".parse::<Quota>().unwrap(),
            Quota::per_minute(100)
        );
        assert_eq!("100/min".parse::<Quota>().unwrap(), Quota::per_minute(100));
        assert_eq!("5/h".parse::<Quota>().unwrap(), Quota::per_hour(5));
        assert_eq!("7/seconds".parse::<Quota>().unwrap(), Quota::per_second(7));
        assert_eq!(
            "10/s burst 20".parse::<Quota>().unwrap(),
            Quota::per_second(10).with_burst(20)
        );
        assert_eq!(Quota::parse_setting("off").unwrap(), None);
        for bad in [
            "",
            "100",
            "0/minute",
            "-1/minute",
            "10/fortnight",
            "10/s burst",
            "10/s burst 0",
            "10/s x 2",
        ] {
            assert!(bad.parse::<Quota>().is_err(), "{bad:?}");
        }
        for quota in [Quota::per_minute(100), Quota::per_second(10).with_burst(20)] {
            assert_eq!(quota.to_string().parse::<Quota>().unwrap(), quota);
        }
    }

    #[test]
    fn config_deserialises_from_strings() {
        let config: RateLimitConfig =
            serde_json::from_str(r#"{"messages": "off", "login": "3/minute burst 6"}"#).unwrap();
        assert_eq!(config.messages, None);
        assert_eq!(config.login, Some(Quota::per_minute(3).with_burst(6)));
        assert_eq!(config.registration, RateLimitConfig::default().registration);
        let text = serde_json::to_string(&config).unwrap();
        assert_eq!(
            serde_json::from_str::<RateLimitConfig>(&text).unwrap(),
            config
        );
        assert!(serde_json::from_str::<RateLimitConfig>(r#"{"login": "lots"}"#).is_err());
    }
}
