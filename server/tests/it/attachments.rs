//! Attachments: streamed upload and download over a real socket, the size limit, guessed ids,
//! expiry.

use std::convert::Infallible;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use futures_util::stream;
use http_body_util::{Empty, Full, StreamBody};
use hyper::body::{Bytes, Frame};
use serde_json::Value;

use crate::both;
use crate::common::{Backend, TestApp};
use crate::support::{http, snapshot};

fn data(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i.wrapping_mul(131) >> 3) as u8).collect()
}

fn files_under(dir: &std::path::Path) -> usize {
    let mut n = 0;
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries {
            let p = e.unwrap().path();
            if p.is_dir() {
                pending.push(p);
            } else {
                n += 1;
            }
        }
    }
    n
}

async fn round_trip_over_a_socket(b: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let blob_dir = dir.path().join("blobs");
    let t = TestApp::with(b, |c| {
        c.blobs = sotto_server::blobs::BlobConfig::local(&blob_dir)
    })
    .await;
    let server = t.serve().await;
    let alice = t.client("alice").await;
    let bob = t.client("bob").await;

    // 3 MiB (three times the JSON request limit), streamed in chunks without a length.
    let payload = data(3 * 1024 * 1024 + 17);
    let chunks: Vec<Result<Frame<Bytes>, Infallible>> = payload
        .chunks(64 * 1024 + 3)
        .map(|c| Ok(Frame::data(Bytes::copy_from_slice(c))))
        .collect();
    let body = StreamBody::new(stream::iter(chunks));
    let (s, _, bytes) = http(
        server.addr,
        Method::POST,
        "/api/attachments",
        Some(&alice.token),
        &[("content-type", "application/octet-stream".into())],
        body,
    )
    .await;
    assert_eq!(s, StatusCode::CREATED);
    let v: Value = serde_json::from_slice(&bytes).unwrap();
    let id = v["attachmentId"].as_str().unwrap().to_owned();
    assert_eq!(id.len(), 43);
    assert_eq!(v["size"], payload.len() as u64);
    assert!(v["expiresAt"].as_u64().unwrap() > 1_600_000_000_000);

    let (s, headers, bytes) = http(
        server.addr,
        Method::GET,
        &format!("/api/attachments/{id}"),
        Some(&bob.token),
        &[],
        Empty::<Bytes>::new(),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(headers["content-type"], "application/octet-stream");
    assert_eq!(
        headers["content-length"],
        payload.len().to_string().as_str()
    );
    assert!(bytes.as_ref() == payload.as_slice(), "content differs");

    // Both directions need a token.
    let (s, _, bytes) = http(
        server.addr,
        Method::GET,
        &format!("/api/attachments/{id}"),
        None,
        &[],
        Empty::<Bytes>::new(),
    )
    .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let v: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(v["code"], "unauthorized");
    let before = files_under(&blob_dir);
    let (s, _, _) = http(
        server.addr,
        Method::POST,
        "/api/attachments",
        None,
        &[],
        Full::new(Bytes::from_static(b"x")),
    )
    .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_eq!(files_under(&blob_dir), before);
    server.shutdown().await.unwrap();
    t.finish().await;
}
both!(round_trip_over_a_socket);

async fn oversize_is_413_and_leaves_nothing(b: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let blob_dir = dir.path().join("blobs");
    let t = TestApp::with(b, |c| {
        c.blobs = sotto_server::blobs::BlobConfig::local(&blob_dir);
        c.max_attachment_bytes = 256 * 1024;
    })
    .await;
    let alice = t.client("alice").await;
    let rows = snapshot(&t).await;
    let upload = |body: Body, length: Option<usize>| {
        let mut r = Request::post("/api/attachments")
            .header("authorization", format!("Bearer {}", alice.token));
        if let Some(len) = length {
            r = r.header("content-length", len.to_string());
        }
        r.body(body).unwrap()
    };

    // Declared too large: refused before reading.
    let (s, v) = t
        .raw(upload(
            Body::from(data(256 * 1024 + 1)),
            Some(256 * 1024 + 1),
        ))
        .await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE, "{v}");
    assert_eq!(v["code"], "payload_too_large");

    // Streamed without a length: cut off once past the limit.
    let chunks: Vec<Result<Bytes, Infallible>> =
        (0..8).map(|_| Ok(Bytes::from(data(64 * 1024)))).collect();
    let (s, v) = t
        .raw(upload(Body::from_stream(stream::iter(chunks)), None))
        .await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE, "{v}");
    assert_eq!(v["code"], "payload_too_large");
    // An abort may finish on a spawned task: give it a moment, then nothing is stored.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(files_under(&blob_dir), 0);
    assert_eq!(snapshot(&t).await, rows);

    // Exactly the limit is fine.
    let (s, v) = t.raw(upload(Body::from(data(256 * 1024)), None)).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(files_under(&blob_dir), 1);
    t.finish().await;
}
both!(oversize_is_413_and_leaves_nothing);

async fn guessed_ids_are_404(b: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let blob_dir = dir.path().join("blobs");
    let t = TestApp::with(b, |c| {
        c.blobs = sotto_server::blobs::BlobConfig::local(&blob_dir)
    })
    .await;
    let alice = t.client("alice").await;
    let req = Request::post("/api/attachments")
        .header("authorization", format!("Bearer {}", alice.token))
        .body(Body::from(data(1000)))
        .unwrap();
    let (s, v) = t.raw(req).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let real = v["attachmentId"].as_str().unwrap().to_owned();
    let guessed = sotto_server::blobs::BlobId::random().to_string();
    let mut flipped = real.clone().into_bytes();
    flipped[0] = if flipped[0] == b'A' { b'B' } else { b'A' };
    let flipped = String::from_utf8(flipped).unwrap();
    for id in [
        guessed.as_str(),
        flipped.as_str(),
        "short",
        "..%2F..%2Fetc%2Fpasswd",
        &real[..42],
        &format!("{real}A"),
    ] {
        let (s, v) = t.get(&format!("/api/attachments/{id}"), &alice.token).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{id}: {v}");
        assert_eq!(v["code"], "unknown_attachment");
    }
    let (s, _) = t
        .get(&format!("/api/attachments/{real}"), &alice.token)
        .await;
    assert_eq!(s, StatusCode::OK);
    t.finish().await;
}
both!(guessed_ids_are_404);

async fn deleted_after_the_envelope_ttl(b: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let blob_dir = dir.path().join("blobs");
    let t = TestApp::with(b, |c| {
        c.blobs = sotto_server::blobs::BlobConfig::local(&blob_dir);
        c.envelope_ttl = Duration::from_secs(1);
    })
    .await;
    let alice = t.client("alice").await;
    let upload = |bytes: Vec<u8>| {
        Request::post("/api/attachments")
            .header("authorization", format!("Bearer {}", alice.token))
            .body(Body::from(bytes))
            .unwrap()
    };
    let (_, v) = t.raw(upload(data(100))).await;
    let old = v["attachmentId"].as_str().unwrap().to_owned();
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let (_, v) = t.raw(upload(data(100))).await;
    let fresh = v["attachmentId"].as_str().unwrap().to_owned();
    sotto_server::services::sweep(&t.state, sotto_server::now_ms()).await;
    let (s, _) = t
        .get(&format!("/api/attachments/{old}"), &alice.token)
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _) = t
        .get(&format!("/api/attachments/{fresh}"), &alice.token)
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(files_under(&blob_dir), 1);
    t.finish().await;
}
both!(deleted_after_the_envelope_ttl);
