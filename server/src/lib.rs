//! The Sotto relay: accounts, devices, public prekey bundles and durable per-device mailboxes of
//! opaque ciphertext, delivered over WebSockets. It never holds a secret key.
//!
//! ```text
//!            HTTP / WebSocket (rustls when configured)
//!                         │
//!   app(state) ── Router ─┼─ api::users     register, login, logout, devices
//!                         ├─ api::keys      upload, count, claim bundles
//!                         ├─ api::messages  send ──▶ Store::send (one commit) ──▶ Hub::notify
//!                         │                 unread, fetch, ack
//!                         └─ ws             per device: cursor + Notify; reads the mailbox from
//!                                           the store, pushes in order, ack ──▶ Store::ack
//!   Store (trait) ── SqliteStore (group commit) | PgStore
//!   cluster ── Bus: PostgreSQL LISTEN/NOTIFY | NATS: wake-ups, presence, typing, provisioning
//!              between relay processes on one PostgreSQL database
//! ```
//!
//! Tests drive [`app`] with `tower::ServiceExt::oneshot`, or bind it to port 0 with [`serve`].
#![forbid(unsafe_code)]

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::DefaultBodyLimit;
use axum::Router;
use tokio::sync::watch;

pub mod acks;
pub mod api;
pub mod auth;
pub mod blobs;
pub mod cluster;
pub mod config;
pub mod conn;
pub mod error;
pub mod hub;
pub mod metrics;
pub mod openapi;
pub mod provisioning;
pub mod ratelimit;
pub mod realtime;
pub mod serve;
pub mod services;
pub mod store;
pub mod web;
pub mod ws;

pub use config::Config;
pub use error::AppError;
pub use store::Store;

/// Shared state of the relay.
#[derive(Debug, Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: Config,
    store: Arc<dyn Store>,
    hub: hub::Hub,
    metrics: metrics::Metrics,
    limiter: Arc<dyn ratelimit::RateLimiter>,
    shutdown: watch::Sender<bool>,
    services: services::Services,
}

impl AppState {
    /// Wraps an opened store.
    pub fn new(config: Config, store: Arc<dyn Store>) -> Self {
        let (shutdown, _) = watch::channel(false);
        // Counted per process: each of N processes applies 1/N of every limit.
        let limiter = Arc::new(ratelimit::LocalRateLimiter::new(
            &config.rate_limits.divided(config.relay_processes),
        ));
        let services = services::Services::new(&config);
        Self {
            inner: Arc::new(Inner {
                services,
                limiter,
                config,
                store,
                hub: hub::Hub::default(),
                metrics: metrics::Metrics::default(),
                shutdown,
            }),
        }
    }

    /// Opens the configured store (running migrations) and wraps it. With PostgreSQL it also
    /// joins the other relay processes on the same database ([`cluster`]): through NATS when
    /// `nats_url` is set, else through LISTEN/NOTIFY on the database.
    pub async fn open(config: Config) -> Result<Self, store::StoreError> {
        let store = store::open(&config).await?;
        let bus: Option<Arc<dyn cluster::Bus>> = match (&config.nats_url, config.is_postgres()) {
            (Some(url), _) => Some(Arc::new(
                cluster::nats::NatsBus::connect(url, &config.nats_subject).await?,
            )),
            (None, true) => Some(Arc::new(
                cluster::postgres::PgBus::connect(&config.database_url).await?,
            )),
            (None, false) => None,
        };
        let state = Self::new(config, store);
        if let Some(bus) = bus {
            let cluster = cluster::Cluster::new(bus);
            state.inner.hub.join(Arc::clone(&cluster));
            // The tasks hold weak references: they end when the state is dropped.
            cluster::start(&cluster, Arc::downgrade(&state.inner)).await?;
        }
        Ok(state)
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }
    /// The store.
    pub fn store(&self) -> &dyn Store {
        self.inner.store.as_ref()
    }
    /// Live connections.
    pub fn hub(&self) -> &hub::Hub {
        &self.inner.hub
    }
    /// Rate limits.
    pub fn limiter(&self) -> &dyn ratelimit::RateLimiter {
        self.inner.limiter.as_ref()
    }
    /// Refuses (429) when `limit` has no room for `cost` for `key`, spending nothing: the first
    /// half of counting a request only once it succeeded ([`Self::charge`] is the second).
    pub async fn peek(
        &self,
        limit: ratelimit::Limit,
        key: ratelimit::RateKey<'_>,
        cost: u32,
    ) -> Result<(), AppError> {
        Ok(self.limiter().peek(limit, key, cost).await?)
    }
    /// Charges a request that succeeded. Concurrent requests that all passed [`Self::peek`] may
    /// overdraw the bucket by what they cost together; the next request then waits longer.
    pub async fn charge(&self, limit: ratelimit::Limit, key: ratelimit::RateKey<'_>, cost: u32) {
        if let Err(limited) = self.limiter().check(limit, key, cost).await {
            tracing::debug!(%limited, "charged past the limit by concurrent requests");
        }
    }
    /// Metrics.
    pub fn metrics(&self) -> &metrics::Metrics {
        &self.inner.metrics
    }
    /// Blobs, connected devices (presence), provisioning channels.
    pub fn services(&self) -> &services::Services {
        &self.inner.services
    }
    /// Tells WebSockets to close (graceful shutdown).
    pub fn begin_shutdown(&self) {
        self.inner.shutdown.send_replace(true);
    }
    /// Subscribes to the shutdown signal.
    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.inner.shutdown.subscribe()
    }
    /// Envelope expiry for something accepted at `now_ms`.
    pub fn expires_at(&self, now_ms: i64) -> i64 {
        let ttl = i64::try_from(self.inner.config.envelope_ttl.as_millis()).unwrap_or(i64::MAX);
        now_ms.saturating_add(ttl)
    }
}

/// What other relay processes say, applied here.
impl cluster::Apply for Inner {
    fn apply(self: Arc<Self>, origin: u64, event: cluster::Event) {
        use cluster::Event;
        let state = AppState {
            inner: Arc::clone(&self),
        };
        let realtime = self.services.realtime();
        match event {
            Event::Mailboxes { pks } => {
                for pk in pks {
                    self.hub.notify_local(pk);
                }
            }
            Event::Revoked { pks } => {
                for pk in pks {
                    self.hub.revoke_local(pk);
                }
            }
            Event::Connected { devices } => {
                for (pk, at) in devices {
                    self.hub.replaced_elsewhere(pk, at, origin);
                }
            }
            Event::Presence { devices } => {
                for device in devices {
                    let transition = realtime.apply_remote(origin, &device);
                    api::presence::announce_remote(&state, &device.user, transition);
                }
            }
            Event::Push { pks, text, .. } => {
                let text = axum::extract::ws::Utf8Bytes::from(text);
                let now = std::time::Instant::now();
                for pk in pks {
                    realtime.push(pk, text.clone(), now);
                }
            }
            Event::Away { pk, away, .. } => {
                if let Some(device) = realtime.device(pk) {
                    api::presence::set_away_here(&state, &device, away);
                }
            }
            Event::Subscribe { pk, users, .. } => {
                realtime.subscribe(pk, &users);
            }
            Event::Provision {
                request,
                address,
                message,
            } => {
                let channels = self.services.provisioning();
                if let Some(outcome) = channels.deliver_here(&address, message.into_bytes()) {
                    if let Some(cluster) = self.hub.cluster() {
                        cluster.publish(Event::Provisioned {
                            to: origin,
                            request,
                            outcome,
                        });
                    }
                }
            }
            Event::Alive | Event::Hello | Event::Provisioned { .. } => {}
        }
    }

    fn gap(self: Arc<Self>) {
        self.hub.notify_all();
    }

    fn process_gone(self: Arc<Self>, origin: u64) {
        let state = AppState {
            inner: Arc::clone(&self),
        };
        for (user, transition) in self.services.realtime().forget_origin(origin) {
            // Its devices went offline with it: lastSeen is recorded here (as by every process
            // that noticed; they agree to within the heartbeat), and each tells its own audience.
            api::presence::announce_here(&state, &user, transition);
        }
    }

    fn local_presence(&self) -> Vec<cluster::DevicePresence> {
        self.services.realtime().local_presence()
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The relay's routes.
pub fn app(state: AppState) -> Router {
    let body_limit = state.config().max_request_bytes;
    let (router, _) = openapi::routes().split_for_parts();
    let router = match &state.config().web_dir {
        // The chat page's files answer what no API route does (the folder's misses: JSON 404).
        Some(dir) => router.fallback_service(web::site::<()>(dir)),
        None => router.fallback(error::not_found),
    };
    router
        .method_not_allowed_fallback(error::method_not_allowed)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(tower_http::timeout::RequestBodyTimeoutLayer::new(
            state.config().http_body_timeout,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            refuse_declared_oversize,
        ))
        .layer(
            tower_http::trace::TraceLayer::new_for_http().make_span_with(
                |req: &axum::http::Request<_>| {
                    // The route template only (`/api/provisioning/{address}`): query strings may
                    // carry a token (`/ws?token=`) and paths carry capabilities (provisioning
                    // addresses, attachment ids) that logs must not hold.
                    let route = req
                        .extensions()
                        .get::<axum::extract::MatchedPath>()
                        .map_or("(no route)", axum::extract::MatchedPath::as_str);
                    tracing::info_span!("request", method = %req.method(), route)
                },
            ),
        )
        .layer(axum::middleware::map_response(tag_route))
        .with_state(state)
}

/// Puts the route template that served a request into its response's extensions, so a caller
/// in the same process (the test suite) can check the answer against the OpenAPI operation.
async fn tag_route(
    route: Option<axum::extract::MatchedPath>,
    mut resp: axum::response::Response,
) -> axum::response::Response {
    if let Some(route) = route {
        resp.extensions_mut().insert(route);
    }
    resp
}

/// Answers 413 before reading a body whose declared `Content-Length` is over the route's limit,
/// so a client that sent `Expect: 100-continue` is refused at once instead of told to go on.
async fn refuse_declared_oversize(
    axum::extract::State(state): axum::extract::State<AppState>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    let declared = req
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if let Some(len) = declared {
        let attachments = req.uri().path() == "/api/attachments";
        let max = if attachments {
            state.config().max_attachment_bytes
        } else {
            state.config().max_request_bytes as u64
        };
        if len > max {
            return AppError::too_large(format!(
                "the declared body is {len} bytes; the limit is {max}"
            ))
            .into_response();
        }
    }
    next.run(req).await
}

/// Deletes expired envelopes every `expiry_interval` until shutdown.
pub async fn run_expiry(state: AppState) {
    let mut shutdown = state.shutdown_signal();
    let mut tick = tokio::time::interval(state.config().expiry_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        let now = now_ms();
        let ttl_ms = i64::try_from(state.config().envelope_ttl.as_millis()).unwrap_or(i64::MAX);
        match state.store().expire(now, now.saturating_sub(ttl_ms)).await {
            Ok(0) => {}
            Ok(n) => {
                state.metrics().envelopes_expired.inc_by(n);
                tracing::info!(expired = n, "expired envelopes deleted");
            }
            Err(e) => tracing::warn!(error = %e, "expiry sweep failed"),
        }
        services::sweep(&state, now).await;
    }
}

/// How long WebSocket handlers get to say goodbye after shutdown starts.
pub(crate) const WS_CLOSE_GRACE: Duration = Duration::from_secs(2);
