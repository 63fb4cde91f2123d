//! One HTTP/1.1 connection: hyper with upgrades (WebSockets), a watchdog for the header-read and
//! keep-alive idle timeouts, the per-address connection cap, and the client address handlers see
//! (read from `Forwarded` / `X-Forwarded-For` only when the TCP peer is a trusted proxy).
//!
//! ```text
//!  accept ──▶ Admission (per-address count) ──▶ [TLS handshake] ──▶ serve_connection
//!                                                                   ├─ Watched io: last byte time
//!                                                                   ├─ service: requests in flight
//!                                                                   └─ watchdog tick: close when
//!                                                                      a head takes too long or
//!                                                                      the connection idles
//! ```
//!
//! The body-read timeout is the router's `RequestBodyTimeoutLayer` (longest silence between body
//! chunks, like nginx's `client_body_timeout`), so it also applies to in-process requests.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, Request};
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::watch;
use tower::ServiceExt as _;

use crate::api::provisioning::PeerAddr;

/// Connection timeouts and caps (from [`Config`](crate::Config)).
#[derive(Debug, Clone)]
pub struct ConnLimits {
    /// Longest time from the first byte of a request head to its end.
    pub header_timeout: Duration,
    /// Longest silence on a connection with no request in flight.
    pub idle_timeout: Duration,
    /// Most open connections per client address (0: no cap).
    pub max_per_address: u32,
    /// Peers whose `Forwarded` / `X-Forwarded-For` headers are believed.
    pub trusted_proxies: Vec<IpAddr>,
}

/// Open connections per TCP peer address.
#[derive(Debug, Default)]
pub struct Admission {
    open: Mutex<HashMap<IpAddr, u32>>,
}

/// Held for as long as a connection is open.
#[derive(Debug)]
pub struct Admitted {
    admission: Arc<Admission>,
    ip: IpAddr,
}

impl Admission {
    /// Counts a new connection from `ip`, or refuses it when `ip` already has `max` open
    /// (trusted proxies carry many clients and are not capped).
    pub fn admit(self: &Arc<Self>, ip: IpAddr, limits: &ConnLimits) -> Option<Admitted> {
        let mut open = self
            .open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = open.entry(ip).or_insert(0);
        if limits.max_per_address > 0
            && *n >= limits.max_per_address
            && !limits.trusted_proxies.contains(&ip)
        {
            return None;
        }
        *n += 1;
        Some(Admitted {
            admission: Arc::clone(self),
            ip,
        })
    }

    /// Open connections from `ip`.
    pub fn open(&self, ip: IpAddr) -> u32 {
        let open = self
            .open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        open.get(&ip).copied().unwrap_or(0)
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        let mut open = self
            .admission
            .open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(n) = open.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// What the watchdog reads: milliseconds since the connection opened (0 = never).
#[derive(Debug)]
struct Activity {
    opened: Instant,
    last_io: AtomicU64,
    head_started: AtomicU64,
    in_flight: AtomicU32,
}

impl Activity {
    fn new() -> Self {
        Self {
            opened: Instant::now(),
            last_io: AtomicU64::new(1),
            // A new connection is waiting for its first head: the header timeout runs from the
            // accept, so a client that sends nothing is closed like one that trickles.
            head_started: AtomicU64::new(1),
            in_flight: AtomicU32::new(0),
        }
    }

    fn now(&self) -> u64 {
        u64::try_from(self.opened.elapsed().as_millis())
            .unwrap_or(u64::MAX)
            .max(1)
    }

    fn read(&self, n: usize) {
        if n == 0 {
            return;
        }
        let now = self.now();
        self.last_io.store(now, Ordering::Relaxed);
        if self.in_flight.load(Ordering::Acquire) == 0 {
            // Bytes with no request in flight belong to the next request head.
            let _ = self
                .head_started
                .compare_exchange(0, now, Ordering::AcqRel, Ordering::Relaxed);
        }
    }

    fn wrote(&self) {
        self.last_io.store(self.now(), Ordering::Relaxed);
    }
}

/// Marks a request in flight until dropped.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn start(activity: &Arc<Activity>) -> Self {
        activity.in_flight.fetch_add(1, Ordering::AcqRel);
        activity.head_started.store(0, Ordering::Release);
        Self(Arc::clone(activity))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.wrote();
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// An IO stream that records when bytes last moved.
struct Watched<I> {
    inner: I,
    activity: Arc<Activity>,
}

impl<I: AsyncRead + Unpin> AsyncRead for Watched<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            self.activity.read(buf.filled().len() - before);
        }
        polled
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Watched<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = polled {
            if n > 0 {
                self.activity.wrote();
            }
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = polled {
            if n > 0 {
                self.activity.wrote();
            }
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// The client address of a request: the TCP peer, unless the peer is a trusted proxy and the
/// request names the client in `Forwarded` (RFC 7239) or `X-Forwarded-For`. The list is read
/// from the right (the hop nearest to us); trusted proxies are skipped and the first other
/// address is the client. Anything unparsable leaves the peer's address.
pub fn client_address(peer: SocketAddr, headers: &HeaderMap, trusted: &[IpAddr]) -> SocketAddr {
    if !trusted.contains(&peer.ip()) {
        return peer;
    }
    let hops = forwarded_hops(headers).or_else(|| x_forwarded_for_hops(headers));
    let Some(hops) = hops else { return peer };
    for hop in hops.iter().rev() {
        match hop {
            Some(ip) if trusted.contains(ip) => continue,
            Some(ip) => return SocketAddr::new(*ip, peer.port()),
            None => return peer,
        }
    }
    peer
}

fn forwarded_hops(headers: &HeaderMap) -> Option<Vec<Option<IpAddr>>> {
    let mut hops = Vec::new();
    let mut any = false;
    for value in headers.get_all("forwarded") {
        any = true;
        let text = value.to_str().ok()?;
        for element in text.split(',') {
            let node = element.split(';').find_map(|pair| {
                let (k, v) = pair.trim().split_once('=')?;
                k.trim().eq_ignore_ascii_case("for").then(|| v.trim())
            });
            hops.push(node.and_then(parse_node));
        }
    }
    any.then_some(hops)
}

fn x_forwarded_for_hops(headers: &HeaderMap) -> Option<Vec<Option<IpAddr>>> {
    let mut hops = Vec::new();
    let mut any = false;
    for value in headers.get_all("x-forwarded-for") {
        any = true;
        let text = value.to_str().ok()?;
        hops.extend(text.split(',').map(|h| parse_node(h.trim())));
    }
    any.then_some(hops)
}

/// `192.0.2.1`, `192.0.2.1:80`, `"[2001:db8::1]:4711"`, `2001:db8::1`; `None` for `unknown`
/// or obfuscated names.
fn parse_node(node: &str) -> Option<IpAddr> {
    let node = node.trim_matches('"');
    if let Ok(ip) = node.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(addr) = node.parse::<SocketAddr>() {
        return Some(addr.ip());
    }
    node.strip_prefix('[')
        .and_then(|rest| rest.split_once(']'))
        .and_then(|(ip, _)| ip.parse().ok())
}

/// Serves one connection until it closes, is upgraded, times out, or `shutdown` turns true
/// (then it finishes the request in flight and closes).
pub async fn serve_connection<I>(
    io: I,
    peer: SocketAddr,
    router: Router,
    limits: Arc<ConnLimits>,
    mut shutdown: watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(Watched {
        inner: io,
        activity: Arc::clone(&activity),
    });
    let service = {
        let activity = Arc::clone(&activity);
        let limits = Arc::clone(&limits);
        hyper::service::service_fn(move |mut req: Request<Incoming>| {
            let client = client_address(peer, req.headers(), &limits.trusted_proxies);
            req.extensions_mut().insert(ConnectInfo(PeerAddr(client)));
            let in_flight = InFlight::start(&activity);
            let router = router.clone();
            async move {
                let response = router.oneshot(req.map(Body::new)).await;
                drop(in_flight);
                response
            }
        })
    };
    let conn = hyper::server::conn::http1::Builder::new()
        .serve_connection(io, service)
        .with_upgrades();
    tokio::pin!(conn);
    let header_ms = u64::try_from(limits.header_timeout.as_millis()).unwrap_or(u64::MAX);
    let idle_ms = u64::try_from(limits.idle_timeout.as_millis()).unwrap_or(u64::MAX);
    let period = (limits.header_timeout.min(limits.idle_timeout) / 4)
        .clamp(Duration::from_millis(20), Duration::from_secs(1));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut draining = *shutdown.borrow();
    if draining {
        conn.as_mut().graceful_shutdown();
    }
    loop {
        tokio::select! {
            done = conn.as_mut() => {
                if let Err(e) = done {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return;
            }
            _ = shutdown.changed(), if !draining => {
                draining = true;
                conn.as_mut().graceful_shutdown();
            }
            _ = tick.tick() => {
                if activity.in_flight.load(Ordering::Acquire) > 0 {
                    continue;
                }
                let now = activity.now();
                let head = activity.head_started.load(Ordering::Acquire);
                if head != 0 && now.saturating_sub(head) > header_ms {
                    tracing::debug!(%peer, "request head not received in time; closing");
                    return;
                }
                let last = activity.last_io.load(Ordering::Relaxed);
                if head == 0 && now.saturating_sub(last) > idle_ms {
                    tracing::debug!(%peer, "idle keep-alive connection closed");
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn forwarded_addresses_are_read_only_from_trusted_peers() {
        let proxy: IpAddr = "10.0.0.1".parse().unwrap();
        let peer = SocketAddr::new(proxy, 5000);
        let stranger = SocketAddr::new("203.0.113.9".parse().unwrap(), 5000);
        let trusted = [proxy];
        let xff = headers(&[("x-forwarded-for", "198.51.100.7, 10.0.0.1")]);
        assert_eq!(
            client_address(peer, &xff, &trusted).ip().to_string(),
            "198.51.100.7"
        );
        // An untrusted peer's header is ignored.
        assert_eq!(client_address(stranger, &xff, &trusted), stranger);
        // Forwarded wins over X-Forwarded-For; quoted IPv6 with a port.
        let both = headers(&[
            (
                "forwarded",
                "for=192.0.2.60;proto=https, for=\"[2001:db8::1]:4711\"",
            ),
            ("x-forwarded-for", "198.51.100.7"),
        ]);
        assert_eq!(
            client_address(peer, &both, &trusted).ip().to_string(),
            "2001:db8::1"
        );
        // A spoofed left-most entry does not matter: the right-most untrusted hop is the client.
        let spoofed = headers(&[("x-forwarded-for", "1.2.3.4, 198.51.100.7")]);
        assert_eq!(
            client_address(peer, &spoofed, &trusted).ip().to_string(),
            "198.51.100.7"
        );
        // Unknown or garbage: the proxy's own address.
        for bad in ["unknown", "not an address", ""] {
            let h = headers(&[("x-forwarded-for", bad)]);
            assert_eq!(client_address(peer, &h, &trusted), peer, "{bad}");
        }
        assert_eq!(client_address(peer, &HeaderMap::new(), &trusted), peer);
    }

    #[test]
    fn admission_caps_per_address_and_releases() {
        let limits = ConnLimits {
            header_timeout: Duration::from_secs(1),
            idle_timeout: Duration::from_secs(1),
            max_per_address: 2,
            trusted_proxies: vec!["10.0.0.1".parse().unwrap()],
        };
        let a = Arc::new(Admission::default());
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let one = a.admit(ip, &limits).unwrap();
        let _two = a.admit(ip, &limits).unwrap();
        assert!(a.admit(ip, &limits).is_none());
        assert!(a.admit("192.0.2.2".parse().unwrap(), &limits).is_some());
        drop(one);
        assert_eq!(a.open(ip), 1);
        assert!(a.admit(ip, &limits).is_some());
        let proxy: IpAddr = "10.0.0.1".parse().unwrap();
        let held: Vec<_> = (0..5).map(|_| a.admit(proxy, &limits).unwrap()).collect();
        assert_eq!(a.open(proxy), 5);
        drop(held);
        assert_eq!(a.open(proxy), 0);
    }
}
