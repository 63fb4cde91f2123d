//! The real relay for end-to-end tests: the `sotto-server` binary on a free loopback port, on a
//! fresh SQLite file or a fresh PostgreSQL database, restartable (also with `kill -9`), and a
//! dump of everything it stored (to prove it holds no plaintext).
//!
//! The binary is looked up in `SOTTO_SERVER_BIN`, else next to the test executable
//! (`target/<profile>/sotto-server`): `scripts/test.sh` builds it first (`cargo build -p
//! sotto-server`).
#![forbid(unsafe_code)]

use std::net::{Ipv4Addr, TcpListener};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use rand::RngCore as _;
use sqlx::{Connection as _, Executor as _, Row as _};
use tokio::process::{Child, Command};

/// Which database the relay runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Db {
    /// A fresh SQLite file.
    Sqlite,
    /// A fresh PostgreSQL database on `SOTTO_TEST_POSTGRES_URL` (default postgres://postgres@127.0.0.1:5432/postgres).
    Postgres,
}

/// Every rate limit off: the tests send more than 100 messages a minute.
const CONFIG: &str = "[rate-limits]
messages = \"off\"
login = \"off\"
registration = \"off\"
bundle-fetch = \"off\"
provisioning = \"off\"
";

/// A running relay.
#[derive(Debug)]
pub struct Relay {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// The database URL it uses.
    pub database_url: String,
    /// Where its blobs go.
    pub blob_dir: PathBuf,
    db: Db,
    port: u16,
    /// `(certificate chain, key)` PEM files when it serves HTTPS.
    tls: Option<(PathBuf, PathBuf)>,
    child: Option<Child>,
    dir: tempfile::TempDir,
    pg_name: Option<String>,
}

fn admin_url() -> String {
    std::env::var("SOTTO_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// The relay binary.
pub fn server_bin() -> PathBuf {
    if let Ok(p) = std::env::var("SOTTO_SERVER_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().unwrap_or_default();
    let mut dir = exe.parent().map(PathBuf::from).unwrap_or_default();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir.join("sotto-server")
}

impl Relay {
    /// Starts a relay on a fresh database.
    pub async fn start(db: Db) -> Result<Self, String> {
        Self::start_with(db, None).await
    }

    /// Starts a relay on a fresh database serving HTTPS and WSS with this certificate (PEM
    /// files), at `https://localhost:PORT`.
    pub async fn start_tls(db: Db, cert: PathBuf, key: PathBuf) -> Result<Self, String> {
        Self::start_with(db, Some((cert, key))).await
    }

    async fn start_with(db: Db, tls: Option<(PathBuf, PathBuf)>) -> Result<Self, String> {
        let dir = tempfile::Builder::new()
            .prefix("sotto-e2e-")
            .tempdir()
            .map_err(|e| e.to_string())?;
        let (database_url, pg_name) = match db {
            Db::Sqlite => (
                format!("sqlite://{}", dir.path().join("relay.sqlite").display()),
                None,
            ),
            Db::Postgres => {
                let admin = admin_url();
                let name = format!("sotto_e2e_{:016x}", rand::thread_rng().next_u64());
                let mut conn = sqlx::PgConnection::connect(&admin)
                    .await
                    .map_err(|e| format!("PostgreSQL at {admin}: {e} (run scripts/setup.sh)"))?;
                conn.execute(format!("CREATE DATABASE {name}").as_str())
                    .await
                    .map_err(|e| e.to_string())?;
                let _ = conn.close().await;
                let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap_or(&admin);
                (format!("{base}/{name}"), Some(name))
            }
        };
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|l| l.local_addr())
            .map_err(|e| e.to_string())?
            .port();
        std::fs::write(dir.path().join("relay.toml"), CONFIG).map_err(|e| e.to_string())?;
        let blob_dir = dir.path().join("blobs");
        let mut relay = Relay {
            url: match tls {
                Some(_) => format!("https://localhost:{port}"),
                None => format!("http://127.0.0.1:{port}"),
            },
            database_url,
            blob_dir,
            db,
            port,
            tls,
            child: None,
            dir,
            pg_name,
        };
        relay.spawn().await?;
        Ok(relay)
    }

    async fn spawn(&mut self) -> Result<(), String> {
        let bin = server_bin();
        if !bin.exists() {
            return Err(format!(
                "relay binary {} not found: run `cargo build -p sotto-server` (scripts/test.sh does) or set SOTTO_SERVER_BIN",
                bin.display()
            ));
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("relay.log"))
            .map_err(|e| e.to_string())?;
        let err = log.try_clone().map_err(|e| e.to_string())?;
        let mut command = Command::new(&bin);
        if let Some((cert, key)) = &self.tls {
            command
                .arg("--tls-cert")
                .arg(cert)
                .arg("--tls-key")
                .arg(key);
        }
        let child = command
            .arg("--config")
            .arg(self.dir.path().join("relay.toml"))
            .arg("--listen")
            .arg(format!("127.0.0.1:{}", self.port))
            .arg("--database-url")
            .arg(&self.database_url)
            .arg("--blob-dir")
            .arg(&self.blob_dir)
            .args(["--argon2-memory-kib", "64", "--argon2-iterations", "1"])
            .args(["--sqlite-synchronous", "normal"])
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                .await
                .is_ok()
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("relay did not start; log: {}", self.log()));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The relay's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("relay.log")).unwrap_or_default()
    }

    /// Kills the relay (SIGKILL: no graceful shutdown).
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
    }

    /// Starts it again on the same database and port.
    pub async fn restart(&mut self) -> Result<(), String> {
        self.kill().await;
        self.spawn().await
    }

    /// Everything the relay stored, as bytes: every row of every table (PostgreSQL, as text) or
    /// the SQLite files, plus every blob.
    pub async fn dump(&self) -> Result<Vec<u8>, String> {
        let mut out = Vec::new();
        match self.db {
            Db::Sqlite => {
                for entry in std::fs::read_dir(self.dir.path()).map_err(|e| e.to_string())? {
                    let path = entry.map_err(|e| e.to_string())?.path();
                    let name = path
                        .file_name()
                        .and_then(|n| n.to_str())
                        .unwrap_or_default();
                    if name.starts_with("relay.sqlite") {
                        out.extend(std::fs::read(&path).map_err(|e| e.to_string())?);
                    }
                }
            }
            Db::Postgres => {
                let mut conn = sqlx::PgConnection::connect(&self.database_url)
                    .await
                    .map_err(|e| e.to_string())?;
                let tables = sqlx::query(
                    "SELECT table_name::text FROM information_schema.tables WHERE table_schema = 'public'",
                )
                .fetch_all(&mut conn)
                .await
                .map_err(|e| e.to_string())?;
                for t in tables {
                    let name: String = t.try_get(0).map_err(|e| e.to_string())?;
                    let rows = sqlx::query(&format!("SELECT t::text FROM \"{name}\" t"))
                        .fetch_all(&mut conn)
                        .await
                        .map_err(|e| e.to_string())?;
                    for r in rows {
                        let text: String = r.try_get(0).map_err(|e| e.to_string())?;
                        out.extend(text.into_bytes());
                        out.push(b'\n');
                    }
                }
                let _ = conn.close().await;
            }
        }
        if let Ok(walk) = std::fs::read_dir(&self.blob_dir) {
            let mut stack: Vec<PathBuf> = walk.filter_map(|e| e.ok().map(|e| e.path())).collect();
            while let Some(p) = stack.pop() {
                if p.is_dir() {
                    if let Ok(w) = std::fs::read_dir(&p) {
                        stack.extend(w.filter_map(|e| e.ok().map(|e| e.path())));
                    }
                } else if let Ok(bytes) = std::fs::read(&p) {
                    out.extend(bytes);
                }
            }
        }
        Ok(out)
    }

    /// Stops the relay and drops its PostgreSQL database.
    pub async fn finish(mut self) {
        self.kill().await;
        if let Some(name) = self.pg_name.take() {
            if let Ok(mut conn) = sqlx::PgConnection::connect(&admin_url()).await {
                let _ = conn
                    .execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
                    .await;
            }
        }
    }
}

/// Whether `haystack` contains `needle` as bytes, or as lowercase hex (PostgreSQL's bytea text).
pub fn contains_plaintext(haystack: &[u8], needle: &str) -> bool {
    let n = needle.as_bytes();
    let hex: String = n.iter().map(|b| format!("{b:02x}")).collect();
    haystack.windows(n.len()).any(|w| w == n)
        || haystack.windows(hex.len()).any(|w| w == hex.as_bytes())
}
