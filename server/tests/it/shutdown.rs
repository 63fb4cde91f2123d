//! The real binary on SIGTERM: WebSockets are closed with 1001 ("going away") and the process
//! exits successfully within the grace period.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use crate::both;
use crate::common::{Backend, TestApp};
use crate::ws::{close_code, frame};

async fn sigterm_drains_sockets_and_exits_cleanly(b: Backend) {
    let t = TestApp::new(b).await;
    let alice = t.client("alice").await;
    t.state.store().close().await;

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("relay.toml");
    std::fs::write(&config, "shutdown-grace-secs = 5\n").unwrap();
    let addr: SocketAddr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut relay = tokio::process::Command::new(env!("CARGO_BIN_EXE_sotto-server"))
        .args(["--listen", &addr.to_string(), "--database-url", &t.url])
        .arg("--config")
        .arg(&config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let url = format!("ws://{addr}/ws?token={}", alice.token);
    let mut ws = None;
    for _ in 0..200 {
        if let Ok((socket, _)) = tokio_tungstenite::connect_async(url.as_str()).await {
            ws = Some(socket);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut ws = ws.expect("relay came up");
    assert_eq!(frame(&mut ws).await["type"], "queueEmpty");

    let pid = relay.id().unwrap().to_string();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(close_code(&mut ws).await, 1001);
    let exit = tokio::time::timeout(Duration::from_secs(10), relay.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(exit.success(), "exit status {exit:?}");
    t.finish().await;
}
both!(sigterm_drains_sockets_and_exits_cleanly);
