//! Starts the relay binary: built once per test run with `cargo build -p sotto-server` (or taken
//! from `SOTTO_SERVER_BIN`), on a free loopback port, with a temporary SQLite file, cheap
//! password hashing and (unless asked otherwise) rate limits off.

use std::net::{Ipv4Addr, TcpListener};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use rand_chacha::rand_core::SeedableRng as _;
use sotto_crypto::keys::{IdentityKeyPair, KemPreKey, OneTimePreKey, SignedPreKey};
use sotto_transport::RelayClient;
use sotto_wire as wire;
use tokio::process::{Child, Command};

const RATE_LIMITS_OFF: &str = "[rate-limits]
messages = \"off\"
login = \"off\"
registration = \"off\"
bundle-fetch = \"off\"
provisioning = \"off\"
";

fn server_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(bin) = std::env::var_os("SOTTO_SERVER_BIN") {
            return PathBuf::from(bin);
        }
        // <target>/debug/deps/it-… → <target>
        let exe = std::env::current_exe().unwrap();
        let target = exe.parent().unwrap().parent().unwrap().parent().unwrap();
        let status = std::process::Command::new(env!("CARGO"))
            .args(["build", "-p", "sotto-server", "--bin", "sotto-server"])
            .arg("--target-dir")
            .arg(target)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("run cargo build for the relay");
        assert!(status.success(), "building sotto-server failed");
        target.join("debug").join("sotto-server")
    })
    .clone()
}

/// Tests that measure this process's memory run alone: every other test holds a shared guard
/// for as long as its relay lives, a measuring test the exclusive one.
fn memory_gate() -> Arc<tokio::sync::RwLock<()>> {
    static GATE: OnceLock<Arc<tokio::sync::RwLock<()>>> = OnceLock::new();
    GATE.get_or_init(Default::default).clone()
}

#[allow(dead_code)] // held, never read
enum Gate {
    Shared(tokio::sync::OwnedRwLockReadGuard<()>),
    Alone(tokio::sync::OwnedRwLockWriteGuard<()>),
}

/// A running (or stopped) relay process and its database.
pub struct Relay {
    _gate: Gate,
    pub url: String,
    port: u16,
    dir: tempfile::TempDir,
    args: Vec<String>,
    child: Option<Child>,
    /// The CA to trust when the relay serves TLS.
    ca_pem: Option<String>,
}

impl Relay {
    pub async fn start() -> Self {
        Self::start_with(&[]).await
    }

    /// A relay with extra flags (rate limits are off unless a `--rate-limit` flag turns one on).
    pub async fn start_with(args: &[&str]) -> Self {
        let gate = Gate::Shared(memory_gate().read_owned().await);
        Self::start_gated(args, gate).await
    }

    /// A relay for a test that measures this process's memory: no other test runs meanwhile.
    pub async fn start_alone() -> Self {
        let gate = Gate::Alone(memory_gate().write_owned().await);
        Self::start_gated(&[], gate).await
    }

    async fn start_gated(args: &[&str], gate: Gate) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut relay = Self {
            _gate: gate,
            url: format!("http://127.0.0.1:{port}"),
            port,
            dir,
            args: args.iter().map(|a| a.to_string()).collect(),
            child: None,
            ca_pem: None,
        };
        relay.spawn().await;
        relay
    }

    /// A relay serving HTTPS and WSS with a freshly generated certificate for `localhost`.
    pub async fn start_tls() -> Self {
        let gate = Gate::Shared(memory_gate().read_owned().await);
        let dir = tempfile::tempdir().unwrap();
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let cert = dir.path().join("cert.pem");
        let key = dir.path().join("key.pem");
        std::fs::write(&cert, certified.cert.pem()).unwrap();
        std::fs::write(&key, certified.key_pair.serialize_pem()).unwrap();
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut relay = Self {
            _gate: gate,
            url: format!("https://localhost:{port}"),
            port,
            args: vec![
                "--tls-cert".into(),
                cert.display().to_string(),
                "--tls-key".into(),
                key.display().to_string(),
            ],
            dir,
            child: None,
            ca_pem: Some(certified.cert.pem()),
        };
        relay.spawn().await;
        relay
    }

    async fn spawn(&mut self) {
        let config = self.dir.path().join("relay.toml");
        std::fs::write(&config, RATE_LIMITS_OFF).unwrap();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("relay.log"))
            .unwrap();
        let child = Command::new(server_bin())
            .arg("--config")
            .arg(&config)
            .arg("--listen")
            .arg(format!("127.0.0.1:{}", self.port))
            .arg("--database-url")
            .arg(format!(
                "sqlite://{}",
                self.dir.path().join("relay.sqlite").display()
            ))
            .arg("--blob-dir")
            .arg(self.dir.path().join("blobs"))
            .args(["--argon2-memory-kib", "64", "--argon2-iterations", "1"])
            .args(&self.args)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("start sotto-server");
        self.child = Some(child);
        let client = self.client();
        let deadline = Instant::now() + Duration::from_secs(60);
        while client.health().await.is_err() {
            assert!(
                Instant::now() < deadline,
                "relay not healthy; log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("relay.log")).unwrap_or_default()
    }

    pub fn client(&self) -> RelayClient {
        match &self.ca_pem {
            Some(pem) => RelayClient::builder(&self.url)
                .extra_ca_pem(pem.as_bytes())
                .only_extra_ca()
                .build()
                .unwrap(),
            None => RelayClient::new(&self.url).unwrap(),
        }
    }

    /// Kills the process (SIGKILL: no goodbye to the WebSockets).
    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.start_kill().unwrap();
            child.wait().await.unwrap();
        }
    }

    /// Starts the relay again on the same port and database.
    pub async fn restart(&mut self) {
        self.kill().await;
        self.spawn().await;
    }
}

/// A registered, logged-in device.
pub struct Device {
    pub user_id: String,
    pub username: String,
    pub device_id: u32,
    pub registration_id: u32,
    pub client: RelayClient,
}

static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1);

/// Registers `name` (made unique) and logs its first device in.
pub async fn device(relay: &Relay, name: &str) -> Device {
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let username = format!("{name}_{n}");
    let anonymous = relay.client();
    let registered = anonymous
        .register(&wire::RegisterRequest {
            username: username.clone(),
            email: format!("{username}@example.com"),
            password: "correct horse battery".into(),
        })
        .await
        .unwrap();
    let registration_id = 1000 + n;
    let login = anonymous
        .login(&wire::LoginRequest {
            username: username.clone(),
            password: "correct horse battery".into(),
            registration_id,
        })
        .await
        .unwrap();
    assert_eq!(login.user_id, registered.user_id);
    Device {
        user_id: login.user_id,
        username,
        device_id: login.device_id,
        registration_id,
        client: anonymous.with_token(&login.token),
    }
}

/// A full key upload made with the real key types: identity, signed prekey, `n` one-time EC and
/// KEM prekeys, and a last-resort KEM key.
pub fn keys_upload(seed: u64, n: u32) -> wire::KeysUpload {
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(seed);
    let identity = IdentityKeyPair::generate(&mut rng);
    let spk = SignedPreKey::generate(1, &identity, &mut rng).public();
    let signed = |id, pk: &[u8], sig: &[u8]| wire::SignedPreKey {
        key_id: id,
        public_key: wire::Base64(pk.to_vec()),
        signature: wire::Base64(sig.to_vec()),
    };
    let pre_keys = (1..=n)
        .map(|i| {
            let k = OneTimePreKey::generate(100 + i, &mut rng).public();
            wire::PreKey {
                key_id: k.key_id(),
                public_key: wire::Base64(k.public_key().to_vec()),
            }
        })
        .collect();
    let kem_pre_keys = (1..=n)
        .map(|i| {
            let k = KemPreKey::generate(200 + i, &identity, &mut rng).public();
            signed(k.key_id(), k.public_key(), k.signature())
        })
        .collect();
    let last = KemPreKey::generate_last_resort(999, &identity, &mut rng).public();
    wire::KeysUpload {
        identity_key: Some(wire::Base64(identity.public().to_bytes())),
        signed_pre_key: Some(signed(spk.key_id(), spk.public_key(), spk.signature())),
        pre_keys: Some(pre_keys),
        kem_pre_keys: Some(kem_pre_keys),
        kem_last_resort_key: Some(signed(last.key_id(), last.public_key(), last.signature())),
    }
}

/// A one-device send from `from` to `to`.
pub fn send_request(to: &Device, id: &str, content: &[u8]) -> wire::SendMessageRequest {
    wire::SendMessageRequest {
        recipient_id: to.user_id.clone(),
        client_message_id: id.into(),
        messages: vec![wire::OutgoingMessage {
            device_id: to.device_id,
            registration_id: to.registration_id,
            content: wire::Base64(content.to_vec()),
        }],
        sync_messages: vec![],
    }
}
