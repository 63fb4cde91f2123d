//! Configuration: command-line flags, `SOTTO_*` environment variables and an optional TOML file.
//!
//! Precedence: flag > environment > file > built-in default. Every setting has all three spellings:
//! `--max-envelope-bytes`, `SOTTO_MAX_ENVELOPE_BYTES`, `max-envelope-bytes = …` in the file.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use serde::Deserialize;

use crate::ratelimit::RateLimitConfig;

/// Default listening address: loopback only.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7700";
/// Default database: an SQLite file in the working directory.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://sotto.sqlite";

/// The Sotto relay: stores and forwards end-to-end encrypted envelopes and public prekey bundles.
///
/// With no options it listens on 127.0.0.1:7700 (plain HTTP) with an SQLite database `./sotto.sqlite`
/// (created if missing). Every option can also be set by the environment variable shown and by the same
/// name (without `--`) in a TOML file given with `--config`.
#[derive(Debug, Default, Clone, Parser, Deserialize)]
#[command(name = "sotto-server", version, about, long_about)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct Cli {
    /// TOML configuration file (keys are the long option names, e.g. `database-url = "…"`).
    #[arg(long, env = "SOTTO_CONFIG")]
    #[serde(skip)]
    pub config: Option<PathBuf>,

    /// Address to listen on [default: 127.0.0.1:7700]. Plain HTTP is refused on a non-loopback address
    /// unless TLS is configured or --allow-insecure-http is given.
    #[arg(long, env = "SOTTO_LISTEN")]
    pub listen: Option<SocketAddr>,

    /// Database: `sqlite://path/to/file.sqlite` or `postgres://user@host/db` [default: sqlite://sotto.sqlite].
    #[arg(long, env = "SOTTO_DATABASE_URL")]
    pub database_url: Option<String>,

    /// Maximum database connections in the pool [default: 8].
    #[arg(long, env = "SOTTO_DB_MAX_CONNECTIONS")]
    pub db_max_connections: Option<u32>,

    /// SQLite durability: `full` (fsync every commit; commits are grouped) or `normal` (WAL, may lose
    /// the last commits on power loss, never corrupts) [default: full].
    #[arg(long, env = "SOTTO_SQLITE_SYNCHRONOUS")]
    pub sqlite_synchronous: Option<SqliteSync>,

    /// PEM certificate chain: serve HTTPS with rustls (needs --tls-key).
    #[arg(long, env = "SOTTO_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key for --tls-cert.
    #[arg(long, env = "SOTTO_TLS_KEY")]
    pub tls_key: Option<PathBuf>,

    /// Allow plain HTTP on a non-loopback address (e.g. behind a TLS-terminating proxy).
    #[arg(long, env = "SOTTO_ALLOW_INSECURE_HTTP", action = clap::ArgAction::SetTrue)]
    pub allow_insecure_http: bool,

    /// Maximum ciphertext bytes per device envelope [default: 65536].
    #[arg(long, env = "SOTTO_MAX_ENVELOPE_BYTES")]
    pub max_envelope_bytes: Option<usize>,

    /// Maximum request body bytes [default: 1048576].
    #[arg(long, env = "SOTTO_MAX_REQUEST_BYTES")]
    pub max_request_bytes: Option<usize>,

    /// Seconds an undelivered envelope is kept [default: 2592000 = 30 days].
    #[arg(long, env = "SOTTO_ENVELOPE_TTL_SECS")]
    pub envelope_ttl_secs: Option<u64>,

    /// Seconds between expiry sweeps [default: 60].
    #[arg(long, env = "SOTTO_EXPIRY_INTERVAL_SECS")]
    pub expiry_interval_secs: Option<u64>,

    /// Seconds between WebSocket pings [default: 30].
    #[arg(long, env = "SOTTO_WS_PING_SECS")]
    pub ws_ping_secs: Option<u64>,

    /// Seconds of client silence after which a WebSocket is closed [default: 90].
    #[arg(long, env = "SOTTO_WS_IDLE_TIMEOUT_SECS")]
    pub ws_idle_timeout_secs: Option<u64>,

    /// Envelopes pushed but not yet acked per connection before pushing pauses [default: 256].
    #[arg(long, env = "SOTTO_WS_MAX_UNACKED")]
    pub ws_max_unacked: Option<u32>,

    /// Seconds a connection may stall (socket not writable, or unacked window full) before it is
    /// closed as a slow consumer [default: 20].
    #[arg(long, env = "SOTTO_WS_SLOW_CONSUMER_SECS")]
    pub ws_slow_consumer_secs: Option<u64>,

    /// Seconds a client may take to send a request head, from the connection's accept or its first
    /// byte [default: 10].
    #[arg(long, env = "SOTTO_HTTP_HEADER_TIMEOUT_SECS")]
    pub http_header_timeout_secs: Option<u64>,

    /// Longest silence in seconds while a request body is being read; the request then answers
    /// 408 and the connection closes [default: 30].
    #[arg(long, env = "SOTTO_HTTP_BODY_TIMEOUT_SECS")]
    pub http_body_timeout_secs: Option<u64>,

    /// Seconds a keep-alive connection may idle between requests [default: 60].
    #[arg(long, env = "SOTTO_HTTP_IDLE_TIMEOUT_SECS")]
    pub http_idle_timeout_secs: Option<u64>,

    /// Most open connections (HTTP and WebSocket) per client address; 0 for no cap. Trusted
    /// proxies are not capped [default: 256].
    #[arg(long, env = "SOTTO_MAX_CONNECTIONS_PER_ADDRESS")]
    pub max_connections_per_address: Option<u32>,

    /// Address of a reverse proxy whose `Forwarded` / `X-Forwarded-For` headers name the client
    /// (per-address limits then count the client, not the proxy). Repeatable; comma-separated
    /// in the environment. Headers from any other peer are ignored.
    #[arg(
        long = "trusted-proxy",
        env = "SOTTO_TRUSTED_PROXIES",
        value_name = "IP",
        value_delimiter = ','
    )]
    #[serde(default)]
    pub trusted_proxy: Vec<std::net::IpAddr>,

    /// Argon2id memory cost in KiB [default: 19456].
    #[arg(long, env = "SOTTO_ARGON2_MEMORY_KIB")]
    pub argon2_memory_kib: Option<u32>,

    /// Argon2id iterations [default: 2].
    #[arg(long, env = "SOTTO_ARGON2_ITERATIONS")]
    pub argon2_iterations: Option<u32>,

    /// Seconds to let open connections finish after SIGINT/SIGTERM [default: 10].
    #[arg(long, env = "SOTTO_SHUTDOWN_GRACE_SECS")]
    pub shutdown_grace_secs: Option<u64>,

    /// Log format: `text` or `json` [default: text]. Filter with RUST_LOG (default `info`).
    #[arg(long, env = "SOTTO_LOG_FORMAT")]
    pub log_format: Option<LogFormat>,

    /// Largest attachment upload in bytes [default: 52428800 = 50 MiB].
    #[arg(long, env = "SOTTO_MAX_ATTACHMENT_BYTES")]
    pub max_attachment_bytes: Option<u64>,

    /// Most attachment bytes one account may have stored at once (uploads within the envelope
    /// time to live); 0 for no quota [default: 4294967296 = 4 GiB].
    #[arg(long, env = "SOTTO_MAX_ATTACHMENT_STORAGE_BYTES")]
    pub max_attachment_storage_bytes: Option<u64>,

    /// Directory for attachment blobs [default: `blobs` beside the SQLite file, else `./blobs`].
    #[arg(long, env = "SOTTO_BLOB_DIR")]
    pub blob_dir: Option<PathBuf>,

    /// Store attachment blobs in this S3-compatible bucket instead of a directory. Credentials come
    /// from `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` (or the instance metadata on AWS).
    #[arg(long, env = "SOTTO_BLOB_S3_BUCKET")]
    pub blob_s3_bucket: Option<String>,

    /// Endpoint of a non-AWS S3 store, e.g. `http://127.0.0.1:9000` (plain HTTP is allowed).
    #[arg(long, env = "SOTTO_BLOB_S3_ENDPOINT")]
    pub blob_s3_endpoint: Option<String>,

    /// S3 region [default: the `AWS_REGION` environment, else us-east-1].
    #[arg(long, env = "SOTTO_BLOB_S3_REGION")]
    pub blob_s3_region: Option<String>,

    /// Most members per group [default: 1000].
    #[arg(long, env = "SOTTO_MAX_GROUP_SIZE")]
    pub max_group_size: Option<u32>,

    /// Let anyone add anyone to a group at once, without a pending invitation, even users who
    /// never wrote to the adder: for closed deployments where every account trusts every other.
    #[arg(long, env = "SOTTO_OPEN_GROUP_ADDS", action = clap::ArgAction::SetTrue)]
    pub open_group_adds: bool,

    /// Seconds a pending group invitation waits for its answer before it expires [default:
    /// 604800 = 7 days].
    #[arg(long, env = "SOTTO_GROUP_INVITATION_TTL_SECS")]
    pub group_invitation_ttl_secs: Option<u64>,

    /// Most devices per account [default: 6].
    #[arg(long, env = "SOTTO_MAX_DEVICES")]
    pub max_devices: Option<u32>,

    /// Serve the bundled web chat page (the folder `scripts/build-web.sh` writes,
    /// `target/web/site`) at `/` [default: off].
    #[arg(long, env = "SOTTO_WEB_DIR")]
    pub web_dir: Option<PathBuf>,

    /// NATS server that relay processes share for real-time events (wake-ups, presence, typing,
    /// provisioning), e.g. `nats://127.0.0.1:4222`, instead of PostgreSQL LISTEN/NOTIFY on the
    /// database. Needs a PostgreSQL database [default: off].
    #[arg(long, env = "SOTTO_NATS_URL")]
    pub nats_url: Option<String>,

    /// NATS subject for --nats-url; relays of one deployment share it [default: sotto.cluster].
    #[arg(long, env = "SOTTO_NATS_SUBJECT")]
    pub nats_subject: Option<String>,

    /// How many relay processes share the database. Rate limits are counted per process; each
    /// applies 1/N of every limit, so a client spreading requests over all of them gets the
    /// configured quota in total [default: 1].
    #[arg(long, env = "SOTTO_RELAY_PROCESSES")]
    pub relay_processes: Option<u32>,

    /// Rate limits in the TOML file, as a `[rate-limits]` table (`messages = "100/minute"`,
    /// `bundle-fetch = "1000/hour"`, `login = "off"`, …). Defaults: see `docs/operator.md`.
    #[arg(skip)]
    pub rate_limits: Option<RateLimitConfig>,

    /// One rate limit, over the file's `[rate-limits]` table: `messages=100/minute`,
    /// `login=off`, `bundle-fetch=1000/hour burst 50`. Repeatable; comma-separated in the
    /// environment. Limits: messages, login, registration, bundle-fetch, provisioning,
    /// group-changes, ephemeral, linking-codes, invites, failed-logins, attachment-kib,
    /// user-lookups.
    #[arg(
        long = "rate-limit",
        env = "SOTTO_RATE_LIMITS",
        value_name = "LIMIT=QUOTA",
        value_delimiter = ','
    )]
    #[serde(skip)]
    pub rate_limit: Vec<String>,
}

/// SQLite `synchronous` setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SqliteSync {
    /// fsync on every (group) commit.
    #[default]
    Full,
    /// WAL default: durable against process crashes, not against power loss.
    Normal,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LogFormat {
    /// Human readable.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Errors reading the configuration.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML or has unknown keys.
    #[error("invalid config file {path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Why.
        source: toml::de::Error,
    },
    /// A combination of settings is not allowed.
    #[error("{0}")]
    Invalid(String),
}

/// The resolved configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Listening address.
    pub listen: SocketAddr,
    /// Database URL.
    pub database_url: String,
    /// Pool size.
    pub db_max_connections: u32,
    /// SQLite durability.
    pub sqlite_synchronous: SqliteSync,
    /// TLS certificate and key, both or neither.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Plain HTTP on non-loopback allowed.
    pub allow_insecure_http: bool,
    /// Per-envelope ciphertext cap.
    pub max_envelope_bytes: usize,
    /// Request body cap.
    pub max_request_bytes: usize,
    /// Envelope time to live.
    pub envelope_ttl: Duration,
    /// Expiry sweep interval.
    pub expiry_interval: Duration,
    /// WebSocket ping interval.
    pub ws_ping: Duration,
    /// WebSocket idle timeout.
    pub ws_idle_timeout: Duration,
    /// Unacked window per connection.
    pub ws_max_unacked: u32,
    /// Stall allowance before a slow consumer is dropped.
    pub ws_slow_consumer: Duration,
    /// Longest time to receive a request head.
    pub http_header_timeout: Duration,
    /// Longest silence while reading a request body.
    pub http_body_timeout: Duration,
    /// Longest keep-alive idle time.
    pub http_idle_timeout: Duration,
    /// Most open connections per client address (0: no cap).
    pub max_connections_per_address: u32,
    /// Proxies whose forwarding headers are believed.
    pub trusted_proxies: Vec<std::net::IpAddr>,
    /// Argon2id memory cost (KiB).
    pub argon2_memory_kib: u32,
    /// Argon2id iterations.
    pub argon2_iterations: u32,
    /// Shutdown grace period.
    pub shutdown_grace: Duration,
    /// Log format.
    pub log_format: LogFormat,
    /// Rate limits.
    pub rate_limits: RateLimitConfig,
    /// Largest attachment.
    pub max_attachment_bytes: u64,
    /// Per-account stored attachment bytes (0: no quota).
    pub max_attachment_storage_bytes: u64,
    /// Where attachment blobs live.
    pub blobs: crate::blobs::BlobConfig,
    /// Most members per group.
    pub max_group_size: u32,
    /// Most devices per account.
    pub max_devices: u32,
    /// Adding a user who never wrote to the adder (or accepts invitations only) makes a pending
    /// invitation (the default); `false` with `--open-group-adds`.
    pub group_consent: bool,
    /// How long a pending group invitation waits for its answer.
    pub group_invitation_ttl: Duration,
    /// The web chat page's folder, served at `/` when set.
    pub web_dir: Option<PathBuf>,
    /// NATS for the events between relay processes (else PostgreSQL NOTIFY).
    pub nats_url: Option<String>,
    /// The NATS subject.
    pub nats_subject: String,
    /// Relay processes sharing the database (rate limits are divided among them).
    pub relay_processes: u32,
}

impl Config {
    /// Parses flags and environment, then fills gaps from the TOML file, then defaults.
    pub fn load() -> Result<Self, ConfigError> {
        Self::from_cli(Cli::parse())
    }

    /// Resolves an already parsed command line (reads the TOML file it names).
    pub fn from_cli(cli: Cli) -> Result<Self, ConfigError> {
        let file = match &cli.config {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.clone(),
                    source,
                })?;
                toml::from_str::<Cli>(&text).map_err(|source| ConfigError::Parse {
                    path: path.clone(),
                    source,
                })?
            }
            None => Cli::default(),
        };
        Self::resolve(cli, file)
    }

    fn resolve(mut cli: Cli, file: Cli) -> Result<Self, ConfigError> {
        let tls = match (
            cli.tls_cert.clone().or(file.tls_cert.clone()),
            cli.tls_key.clone().or(file.tls_key.clone()),
        ) {
            (Some(c), Some(k)) => Some((c, k)),
            (None, None) => None,
            _ => {
                return Err(ConfigError::Invalid(
                    "--tls-cert and --tls-key must be given together".into(),
                ))
            }
        };
        let overrides = std::mem::take(&mut cli.rate_limit);
        let mut config = Self::build(cli, file, tls);
        for setting in &overrides {
            config
                .rate_limits
                .set_from_flag(setting)
                .map_err(ConfigError::Invalid)?;
        }
        if config.nats_url.is_some() && !config.is_postgres() {
            return Err(ConfigError::Invalid(
                "--nats-url connects several relay processes, which needs a PostgreSQL database"
                    .into(),
            ));
        }
        if config.tls.is_none() && !config.listen.ip().is_loopback() && !config.allow_insecure_http
        {
            return Err(ConfigError::Invalid(format!(
                "refusing plain HTTP on non-loopback address {}: give --tls-cert/--tls-key or --allow-insecure-http",
                config.listen
            )));
        }
        Ok(config)
    }

    fn build(cli: Cli, file: Cli, tls: Option<(PathBuf, PathBuf)>) -> Self {
        macro_rules! pick {
            ($field:ident, $default:expr) => {
                cli.$field.or(file.$field).unwrap_or_else(|| $default)
            };
        }
        let default_listen: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 7700));
        let blobs = blob_config(&cli, &file);
        Config {
            listen: pick!(listen, default_listen),
            database_url: pick!(database_url, DEFAULT_DATABASE_URL.to_owned()),
            db_max_connections: pick!(db_max_connections, 8).max(2),
            sqlite_synchronous: pick!(sqlite_synchronous, SqliteSync::Full),
            tls,
            allow_insecure_http: cli.allow_insecure_http || file.allow_insecure_http,
            max_envelope_bytes: pick!(max_envelope_bytes, 64 * 1024),
            max_request_bytes: pick!(max_request_bytes, 1024 * 1024),
            envelope_ttl: Duration::from_secs(pick!(envelope_ttl_secs, 30 * 24 * 3600)),
            expiry_interval: Duration::from_secs(pick!(expiry_interval_secs, 60).max(1)),
            ws_ping: Duration::from_secs(pick!(ws_ping_secs, 30).max(1)),
            ws_idle_timeout: Duration::from_secs(pick!(ws_idle_timeout_secs, 90).max(1)),
            ws_max_unacked: pick!(ws_max_unacked, 256).max(1),
            ws_slow_consumer: Duration::from_secs(pick!(ws_slow_consumer_secs, 20).max(1)),
            http_header_timeout: Duration::from_secs(pick!(http_header_timeout_secs, 10).max(1)),
            http_body_timeout: Duration::from_secs(pick!(http_body_timeout_secs, 30).max(1)),
            http_idle_timeout: Duration::from_secs(pick!(http_idle_timeout_secs, 60).max(1)),
            max_connections_per_address: pick!(max_connections_per_address, 256),
            trusted_proxies: if cli.trusted_proxy.is_empty() {
                file.trusted_proxy.clone()
            } else {
                cli.trusted_proxy.clone()
            },
            argon2_memory_kib: pick!(argon2_memory_kib, 19 * 1024),
            argon2_iterations: pick!(argon2_iterations, 2).max(1),
            shutdown_grace: Duration::from_secs(pick!(shutdown_grace_secs, 10)),
            log_format: pick!(log_format, LogFormat::Text),
            rate_limits: pick!(rate_limits, RateLimitConfig::default()),
            max_attachment_bytes: pick!(max_attachment_bytes, crate::blobs::DEFAULT_MAX_BLOB_BYTES),
            max_attachment_storage_bytes: pick!(max_attachment_storage_bytes, 4 << 30),
            blobs,
            max_group_size: pick!(max_group_size, 1000).max(1),
            max_devices: pick!(max_devices, 6).max(1),
            group_consent: !(cli.open_group_adds || file.open_group_adds),
            group_invitation_ttl: Duration::from_secs(
                pick!(group_invitation_ttl_secs, 7 * 24 * 3600).max(1),
            ),
            web_dir: cli.web_dir.or(file.web_dir),
            nats_url: cli.nats_url.or(file.nats_url),
            nats_subject: pick!(
                nats_subject,
                crate::cluster::nats::DEFAULT_SUBJECT.to_owned()
            ),
            relay_processes: pick!(relay_processes, 1).max(1),
        }
    }

    /// Whether the database is PostgreSQL (several relay processes may share it).
    pub fn is_postgres(&self) -> bool {
        self.database_url.starts_with("postgres://")
            || self.database_url.starts_with("postgresql://")
    }

    /// The connection layer's limits.
    pub fn conn_limits(&self) -> crate::conn::ConnLimits {
        crate::conn::ConnLimits {
            header_timeout: self.http_header_timeout,
            idle_timeout: self.http_idle_timeout,
            max_per_address: self.max_connections_per_address,
            trusted_proxies: self.trusted_proxies.clone(),
        }
    }

    /// Defaults for the given database, with cheap password hashing and short timers, for tests.
    pub fn for_tests(database_url: &str) -> Self {
        let mut config = Self::build(Cli::default(), Cli::default(), None);
        config.database_url = database_url.to_owned();
        config.listen = SocketAddr::from(([127, 0, 0, 1], 0));
        config.argon2_memory_kib = 64;
        config.argon2_iterations = 1;
        config.db_max_connections = 4;
        config.shutdown_grace = Duration::from_secs(2);
        config.rate_limits = RateLimitConfig::disabled();
        // Like the rate limits, consent is switched on by the tests about it.
        config.group_consent = false;
        config.blobs = test_blob_config(database_url);
        config
    }
}

// Blob settings: where attachment blobs go follows from the database setting.

/// The blob directory that goes with a database URL: `blobs` beside an SQLite file, else
/// `./blobs`.
pub fn default_blob_dir(database_url: &str) -> PathBuf {
    let path = database_url
        .strip_prefix("sqlite://")
        .or_else(|| database_url.strip_prefix("sqlite:"))
        .map(|p| p.split('?').next().unwrap_or(p));
    match path {
        Some(p) if !p.is_empty() && !p.starts_with(':') => {
            let parent = std::path::Path::new(p)
                .parent()
                .map(std::path::Path::to_path_buf)
                .unwrap_or_default();
            parent.join("blobs")
        }
        _ => PathBuf::from("blobs"),
    }
}

/// Blob settings from the command line and the file (flag wins).
pub(crate) fn blob_config(cli: &Cli, file: &Cli) -> crate::blobs::BlobConfig {
    let bucket = cli.blob_s3_bucket.clone().or(file.blob_s3_bucket.clone());
    if let Some(bucket) = bucket {
        let endpoint = cli
            .blob_s3_endpoint
            .clone()
            .or(file.blob_s3_endpoint.clone());
        let allow_http = endpoint
            .as_deref()
            .is_some_and(|e| e.starts_with("http://"));
        return crate::blobs::BlobConfig {
            backend: crate::blobs::BlobBackend::S3(crate::blobs::S3Config {
                bucket,
                region: cli.blob_s3_region.clone().or(file.blob_s3_region.clone()),
                endpoint,
                allow_http,
                ..crate::blobs::S3Config::default()
            }),
            part_size: None,
            fsync: true,
        };
    }
    let dir = cli.blob_dir.clone().or(file.blob_dir.clone());
    let dir = dir.unwrap_or_else(|| {
        let url = cli
            .database_url
            .clone()
            .or(file.database_url.clone())
            .unwrap_or_else(|| DEFAULT_DATABASE_URL.to_owned());
        default_blob_dir(&url)
    });
    crate::blobs::BlobConfig::local(dir)
}

/// Test settings, no fsync: beside an SQLite test database; for a server database, a directory
/// under the system's temporary directory named after the database (created only if used).
pub(crate) fn test_blob_config(database_url: &str) -> crate::blobs::BlobConfig {
    let dir = if database_url.starts_with("sqlite:") {
        default_blob_dir(database_url)
    } else {
        let name: String = database_url
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        std::env::temp_dir().join("sotto-test-blobs").join(name)
    };
    let mut config = crate::blobs::BlobConfig::local(dir);
    config.fsync = false;
    config
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_invitation_ttl_from_flag_file_or_default() {
        let none = Config::resolve(Cli::default(), Cli::default()).unwrap();
        assert_eq!(
            none.group_invitation_ttl,
            Duration::from_secs(7 * 24 * 3600)
        );
        let file: Cli = toml::from_str("group-invitation-ttl-secs = 60\n").unwrap();
        let c = Config::resolve(Cli::default(), file.clone()).unwrap();
        assert_eq!(c.group_invitation_ttl, Duration::from_secs(60));
        let cli =
            Cli::try_parse_from(["sotto-server", "--group-invitation-ttl-secs", "5"]).unwrap();
        let c = Config::resolve(cli, file).unwrap();
        assert_eq!(c.group_invitation_ttl, Duration::from_secs(5));
    }

    #[test]
    fn precedence_flag_over_file_over_default() {
        let file: Cli =
            toml::from_str("max-envelope-bytes = 100\nenvelope-ttl-secs = 5\n").unwrap();
        let cli = Cli::try_parse_from(["sotto-server", "--max-envelope-bytes", "200"]).unwrap();
        let c = Config::resolve(cli, file).unwrap();
        assert_eq!(c.max_envelope_bytes, 200);
        assert_eq!(c.envelope_ttl, Duration::from_secs(5));
        assert_eq!(c.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(c.database_url, DEFAULT_DATABASE_URL);
    }

    #[test]
    fn refuses_public_plain_http_and_unknown_keys() {
        let cli = Cli::try_parse_from(["sotto-server", "--listen", "0.0.0.0:80"]).unwrap();
        assert!(Config::resolve(cli, Cli::default()).is_err());
        assert!(toml::from_str::<Cli>("bogus = 1").is_err());
    }

    #[test]
    fn rate_limits_come_from_the_file() {
        let file: Cli =
            toml::from_str("[rate-limits]\nbundle-fetch = \"5/minute\"\nmessages = \"off\"\n")
                .unwrap();
        let c = Config::resolve(Cli::default(), file).unwrap();
        assert!(c.rate_limits.messages.is_none());
        assert_eq!(c.rate_limits.bundle_fetch.map(|q| q.count()), Some(5));
        let c = Config::resolve(Cli::default(), Cli::default()).unwrap();
        assert!(c.rate_limits.messages.is_some());
    }

    #[test]
    fn rate_limit_flags_override_the_file() {
        let file: Cli =
            toml::from_str("[rate-limits]\nbundle-fetch = \"5/minute\"\nmessages = \"off\"\n")
                .unwrap();
        let cli = Cli::try_parse_from([
            "sotto-server",
            "--rate-limit",
            "messages=7/second",
            "--rate-limit=login=off",
        ])
        .unwrap();
        let c = Config::resolve(cli, file).unwrap();
        assert_eq!(c.rate_limits.messages.map(|q| q.count()), Some(7));
        assert!(c.rate_limits.login.is_none());
        assert_eq!(c.rate_limits.bundle_fetch.map(|q| q.count()), Some(5));
        for bad in [
            "messages",
            "nope=1/minute",
            "messages=lots",
            "login=0/minute",
        ] {
            let cli = Cli::try_parse_from(["sotto-server", "--rate-limit", bad]).unwrap();
            assert!(
                matches!(
                    Config::resolve(cli, Cli::default()),
                    Err(ConfigError::Invalid(_))
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn blob_dirs_follow_the_database() {
        assert_eq!(
            default_blob_dir("sqlite:///var/lib/sotto/relay.sqlite"),
            PathBuf::from("/var/lib/sotto/blobs")
        );
        assert_eq!(
            default_blob_dir("sqlite://sotto.sqlite?mode=rwc"),
            PathBuf::from("blobs")
        );
        assert_eq!(default_blob_dir("postgres://h/db"), PathBuf::from("blobs"));
        let crate::blobs::BlobBackend::Local { dir } =
            test_blob_config("postgres://h/sotto_test_1").backend
        else {
            panic!("local expected");
        };
        assert!(dir.starts_with(std::env::temp_dir()));
        assert!(dir.ends_with("sotto_test_1"));
    }
}
