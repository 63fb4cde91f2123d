//! Listening (plain or rustls), signals and graceful shutdown.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;

use crate::conn::{serve_connection, Admission};
use crate::{app, run_expiry, AppState};

/// How long a TLS handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Loads a PEM certificate chain and private key into a rustls server configuration (ring
/// provider, TLS 1.2 and 1.3, HTTP/1.1).
pub fn load_tls(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, io::Error> {
    let invalid = |what: &str, e: &dyn std::fmt::Display| {
        io::Error::new(io::ErrorKind::InvalidData, format!("{what}: {e}"))
    };
    let certs = CertificateDer::pem_file_iter(cert)
        .map_err(|e| invalid("certificate file", &e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid("certificate file", &e))?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| invalid("key file", &e))?;
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid("tls", &e))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| invalid("certificate/key", &e))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Accepts connections until `stop` turns true: each one is admitted against the per-address
/// cap, gets its TLS handshake (bounded) off the accept path, then is served by
/// [`conn::serve_connection`](crate::conn::serve_connection). Returns once every connection
/// has closed (WebSockets, once upgraded, are the hub's to close).
async fn accept_loop(
    state: AppState,
    tcp: TcpListener,
    tls: Option<TlsAcceptor>,
    mut stop: watch::Receiver<bool>,
) {
    let router = app(state.clone());
    let limits = Arc::new(state.config().conn_limits());
    let admission = Arc::new(Admission::default());
    // Every connection task holds a sender; `recv` answers `None` once all are gone.
    let (alive, mut all_closed) = mpsc::channel::<()>(1);
    loop {
        let accepted = tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            accepted = tcp.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some(admitted) = admission.admit(peer.ip(), &limits) else {
            state.metrics().connections_refused.inc();
            tracing::debug!(%peer, "connection refused: too many from this address");
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let limits = Arc::clone(&limits);
        let shutdown = stop.clone();
        let tls = tls.clone();
        let alive = alive.clone();
        tokio::spawn(async move {
            let _admitted = admitted;
            let _alive = alive;
            match tls {
                None => serve_connection(stream, peer, router, limits, shutdown).await,
                Some(tls) => {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.accept(stream)).await {
                        Ok(Ok(stream)) => {
                            serve_connection(stream, peer, router, limits, shutdown).await;
                        }
                        Ok(Err(e)) => tracing::debug!(error = %e, "tls handshake failed"),
                        Err(_) => tracing::debug!("tls handshake timed out"),
                    }
                }
            }
        });
    }
    drop(tcp);
    drop(alive);
    let _ = all_closed.recv().await;
}

/// Serves until `stop` resolves, then stops accepting, closes WebSockets with "going away",
/// lets requests in flight finish (up to the configured grace) and flushes the store.
pub async fn serve(
    state: AppState,
    tcp: TcpListener,
    tls: Option<Arc<ServerConfig>>,
    stop: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let expiry = tokio::spawn(run_expiry(state.clone()));
    let signal_state = state.clone();
    tokio::spawn(async move {
        stop.await;
        tracing::info!("shutting down");
        signal_state.begin_shutdown();
    });
    let grace = state.config().shutdown_grace;
    let mut server = tokio::spawn(accept_loop(
        state.clone(),
        tcp,
        tls.map(TlsAcceptor::from),
        state.shutdown_signal(),
    ));
    let mut shutdown = state.shutdown_signal();
    let result = tokio::select! {
        r = &mut server => r.map_err(io::Error::other),
        _ = async { let _ = shutdown.wait_for(|s| *s).await; } => {
            // Requests in flight get the grace period; then we stop waiting.
            match tokio::time::timeout(grace, &mut server).await {
                Ok(r) => r.map_err(io::Error::other),
                Err(_) => {
                    tracing::warn!("grace period over; dropping remaining connections");
                    server.abort();
                    Ok(())
                }
            }
        }
    };
    let deadline = tokio::time::Instant::now() + grace;
    while !state.hub().is_empty() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    expiry.abort();
    tracing::debug!("connections closed; flushing the store");
    state.store().close().await;
    tracing::debug!("store closed");
    result
}

/// A server running on a background task (tests, embedding).
#[derive(Debug)]
pub struct Running {
    /// The bound address.
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<io::Result<()>>,
}

impl Running {
    /// Triggers graceful shutdown and waits for it.
    pub async fn shutdown(mut self) -> io::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        (&mut self.task).await.map_err(io::Error::other)?
    }
}

/// Binds `state.config().listen` (port 0 picks a free port) and serves in the background.
pub async fn spawn(state: AppState, tls: Option<Arc<ServerConfig>>) -> io::Result<Running> {
    let tcp = TcpListener::bind(state.config().listen).await?;
    let addr = tcp.local_addr()?;
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let task = tokio::spawn(serve(state, tcp, tls, async move {
        let _ = stop_rx.await;
    }));
    Ok(Running {
        addr,
        stop: Some(stop_tx),
        task,
    })
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
