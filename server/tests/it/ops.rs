use std::sync::Arc;

use axum::http::{Method, StatusCode};
use clap::CommandFactory as _;
use http_body_util::{BodyExt as _, Empty};
use hyper::body::Bytes;
use serde_json::Value;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};

use crate::both;
use crate::common::{Backend, TestApp};

async fn health_metrics_openapi(b: Backend) {
    let t = TestApp::new(b).await;
    let (s, v) = t.call(Method::GET, "/healthz", None, None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["status"], "ok");
    let alice = t.client("alice").await;
    let bob = t.client("bob").await;
    t.send(&alice, &bob, "m", b"x").await;
    let (s, v) = t.call(Method::GET, "/metrics", None, None).await;
    assert_eq!(s, StatusCode::OK);
    let text = v.as_str().unwrap();
    for needle in [
        "sotto_connections 0",
        "sotto_envelopes_queued 1",
        "sotto_envelopes_accepted_total 1",
        "sotto_delivery_latency_seconds_bucket",
        "sotto_send_duration_seconds_count 1",
    ] {
        assert!(text.contains(needle), "missing {needle} in\n{text}");
    }
    let (s, doc) = t.call(Method::GET, "/openapi.json", None, None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(doc["openapi"], "3.1.0");
    t.finish().await;
}
both!(health_metrics_openapi);

#[test]
fn help_documents_every_setting() {
    let help = sotto_server::config::Cli::command()
        .render_long_help()
        .to_string();
    for var in [
        "SOTTO_LISTEN",
        "SOTTO_DATABASE_URL",
        "SOTTO_TLS_CERT",
        "SOTTO_TLS_KEY",
        "SOTTO_MAX_ENVELOPE_BYTES",
        "SOTTO_MAX_REQUEST_BYTES",
        "SOTTO_ENVELOPE_TTL_SECS",
        "SOTTO_CONFIG",
        "SOTTO_GROUP_INVITATION_TTL_SECS",
        "SOTTO_NATS_URL",
        "SOTTO_RELAY_PROCESSES",
        "127.0.0.1:7700",
    ] {
        assert!(help.contains(var), "--help lacks {var}");
    }
}

async fn tls_with_generated_certificate(b: Backend) {
    let t = TestApp::new(b).await;
    let alice = t.client("alice").await;
    let dir = tempfile::tempdir().unwrap();
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let cert_path = dir.path().join("cert.pem");
    let key_path = dir.path().join("key.pem");
    std::fs::write(&cert_path, certified.cert.pem()).unwrap();
    std::fs::write(&key_path, certified.key_pair.serialize_pem()).unwrap();
    let tls = sotto_server::serve::load_tls(&cert_path, &key_path).unwrap();
    let server = sotto_server::serve::spawn(t.state.clone(), Some(tls))
        .await
        .unwrap();

    let mut roots = RootCertStore::empty();
    roots
        .add(CertificateDer::from(certified.cert.der().to_vec()))
        .unwrap();
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let client = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
    let name = ServerName::try_from("localhost").unwrap();

    // HTTPS request.
    let tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let stream = connector.connect(name.clone(), tcp).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = hyper::Request::get("/healthz")
        .header("host", "localhost")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["status"], "ok");

    // WSS.
    let tcp = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let stream = connector.connect(name, tcp).await.unwrap();
    let url = format!("wss://localhost/ws?token={}", alice.token);
    let (ws, _) =
        tokio_tungstenite::client_async(url, tokio_tungstenite::MaybeTlsStream::Plain(stream))
            .await
            .unwrap();
    let mut ws = ws;
    assert_eq!(frame_any(&mut ws).await["type"], "queueEmpty");

    // A plain-text client is refused by the TLS listener.
    let plain = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(plain))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = hyper::Request::get("/healthz")
        .body(Empty::<Bytes>::new())
        .unwrap();
    assert!(sender.send_request(req).await.is_err());
    drop(ws);
    server.shutdown().await.unwrap();
    t.finish().await;
}
both!(tls_with_generated_certificate);

async fn frame_any<S>(ws: &mut tokio_tungstenite::WebSocketStream<S>) -> Value
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use futures_util::StreamExt as _;
    loop {
        match ws.next().await.unwrap().unwrap() {
            tokio_tungstenite::tungstenite::Message::Text(t) => {
                return serde_json::from_str(t.as_str()).unwrap()
            }
            _ => continue,
        }
    }
}
