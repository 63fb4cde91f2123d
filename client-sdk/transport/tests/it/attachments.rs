//! A 50 MB attachment up and down, streamed: the test process never holds it.

use std::time::Duration;

use bytes::Bytes;
use sha2::{Digest, Sha256};
use sotto_transport::TransportError;

use crate::common::{device, Relay};

const SIZE: usize = 50_000_000;
const CHUNK: usize = 64 * 1024;

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// Deterministic, incompressible-enough bytes made on the fly.
fn chunk(index: usize, len: usize) -> Bytes {
    let mut out = vec![0u8; len];
    let mut x = (index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for b in &mut out {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    Bytes::from(out)
}

// One thread: with buffers allocated on one worker and freed on another, glibc's per-thread
// arenas keep freed memory resident and the measurement would show the allocator, not us.
#[tokio::test]
async fn fifty_megabytes_streamed_both_ways() {
    // The resident-memory figure is this whole process's: no other test may run meanwhile.
    let relay = Relay::start_alone().await;
    let alice = device(&relay, "alice").await;
    let bob = device(&relay, "bob").await;

    // Peak resident memory, sampled while the transfers run.
    let baseline = rss_kib();
    let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(baseline));
    let sampler = {
        let peak = peak.clone();
        tokio::spawn(async move {
            loop {
                peak.fetch_max(rss_kib(), std::sync::atomic::Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };

    let chunks = SIZE.div_ceil(CHUNK);
    let mut expected = Sha256::new();
    for i in 0..chunks {
        expected.update(chunk(i, CHUNK.min(SIZE - i * CHUNK)));
    }
    let expected = expected.finalize();
    let body = futures_util::stream::iter(0..chunks)
        .map(|i| Ok::<_, std::io::Error>(chunk(i, CHUNK.min(SIZE - i * CHUNK))));
    let uploaded = alice
        .client
        .upload_attachment(body, Some(SIZE as u64))
        .await
        .unwrap();
    assert_eq!(uploaded.size, SIZE as u64);

    let mut download = bob
        .client
        .download_attachment(&uploaded.attachment_id)
        .await
        .unwrap()
        .limit(SIZE as u64);
    assert_eq!(download.size(), Some(SIZE as u64));
    let mut got = Sha256::new();
    let mut total = 0usize;
    while let Some(c) = download.chunk().await.unwrap() {
        total += c.len();
        got.update(&c);
    }
    sampler.abort();
    assert_eq!(total, SIZE);
    assert_eq!(got.finalize(), expected);
    let grew_mib = (peak.load(std::sync::atomic::Ordering::Relaxed) - baseline) / 1024;
    assert!(
        grew_mib < 24,
        "resident memory grew {grew_mib} MiB during a 48 MiB transfer"
    );

    // A download larger than the message said is cut off.
    let mut short = bob
        .client
        .download_attachment(&uploaded.attachment_id)
        .await
        .unwrap()
        .limit(1000);
    let mut err = None;
    while err.is_none() {
        match short.chunk().await {
            Ok(Some(_)) => {}
            Ok(None) => break,
            Err(e) => err = Some(e),
        }
    }
    assert!(matches!(err, Some(TransportError::Malformed(_))));
}

#[tokio::test]
async fn oversized_and_unknown_attachments() {
    let relay = Relay::start_with(&["--max-attachment-bytes", "100000"]).await;
    let alice = device(&relay, "alice").await;
    let err = alice
        .client
        .upload_attachment_reader(std::io::Cursor::new(vec![7u8; 200_000]), Some(200_000))
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(413));
    // Also without a declared length.
    let err = alice
        .client
        .upload_attachment_reader(std::io::Cursor::new(vec![7u8; 200_000]), None)
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(413), "{err:?}");
    let ok = alice
        .client
        .upload_attachment_reader(std::io::Cursor::new(vec![7u8; 1000]), None)
        .await
        .unwrap();
    assert_eq!(ok.size, 1000);
    let err = alice
        .client
        .download_attachment(&"A".repeat(43))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("unknown_attachment"));
}

use futures_util::StreamExt as _;
