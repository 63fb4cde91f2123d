//! Clients against a real relay, and waiting for events.

use std::sync::Arc;
use std::time::Duration;

use sotto_client::{
    ClientEvent, ClientOptions, Event, IdentityPolicy, SottoClient, StoreLocation, StoreSecret,
};
use sotto_e2e::{Db, Relay};
use sotto_store::memory::MemoryBackend;

/// Runs a test body on SQLite and on PostgreSQL.
#[macro_export]
macro_rules! both {
    ($name:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name(sotto_e2e::Db::Sqlite).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$name(sotto_e2e::Db::Postgres).await
            }
        }
    };
}

pub async fn relay(db: Db) -> Relay {
    Relay::start(db).await.unwrap()
}

/// A device with its store backend kept, so it can be closed and opened again.
pub struct Device {
    pub client: SottoClient,
    pub backend: Arc<MemoryBackend>,
    pub url: String,
    pub events: Vec<ClientEvent>,
}

pub fn options(url: &str, backend: &Arc<MemoryBackend>) -> ClientOptions {
    ClientOptions {
        server_url: url.to_owned(),
        store: StoreLocation::Backend(backend.clone()),
        store_secret: StoreSecret::InsecureTestPassphrase("correct horse".into()),
        identity_policy: IdentityPolicy::RequireApproval,
    }
}

/// Registers `name` and logs in its first device.
pub async fn user(relay: &Relay, name: &str) -> Device {
    let password = format!("{name}-password");
    SottoClient::register(&relay.url, name, &format!("{name}@example.com"), &password)
        .await
        .unwrap();
    let backend = Arc::new(MemoryBackend::new());
    let client = SottoClient::login(options(&relay.url, &backend), name, &password)
        .await
        .unwrap();
    Device {
        client,
        backend,
        url: relay.url.clone(),
        events: Vec::new(),
    }
}

impl Device {
    pub fn id(&self) -> String {
        self.client.user_id()
    }

    /// Collects events until `done` holds for the collected ones (or panics after `secs`).
    pub async fn wait(&mut self, secs: u64, what: &str, done: impl Fn(&[ClientEvent]) -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        while !done(&self.events) {
            match tokio::time::timeout_at(deadline, self.client.next_event()).await {
                Ok(Some(e)) => self.events.push(e),
                Ok(None) => panic!("client stopped while waiting for {what}"),
                Err(_) => panic!("timed out waiting for {what}; events: {:#?}", self.events),
            }
        }
    }

    pub fn texts(&self) -> Vec<String> {
        self.events
            .iter()
            .filter_map(|e| match e {
                ClientEvent::Event(Event::Message(m)) if !m.outgoing => m.text.clone(),
                _ => None,
            })
            .collect()
    }

    pub async fn wait_texts(&mut self, n: usize) {
        self.wait(30, &format!("{n} messages"), |ev| {
            ev.iter()
                .filter(|e| matches!(e, ClientEvent::Event(Event::Message(m)) if !m.outgoing))
                .count()
                >= n
        })
        .await;
    }

    /// Closes the client (as an app going away).
    pub async fn close(&self) {
        self.client.close().await;
    }

    /// Opens the same profile again.
    pub async fn reopen(&mut self) {
        self.client = SottoClient::open(options(&self.url, &self.backend))
            .await
            .unwrap();
        self.events.clear();
    }
}

/// Links a new device to `existing`'s account over the provisioning channel.
pub async fn link(relay: &Relay, existing: &Device) -> Device {
    let pending = SottoClient::begin_link(&relay.url).await.unwrap();
    let code = pending.code();
    let backend = Arc::new(MemoryBackend::new());
    let opts = options(&relay.url, &backend);
    let finishing = tokio::spawn(SottoClient::finish_link(pending, opts, 30));
    existing.client.link_device(&code).await.unwrap();
    let client = finishing.await.unwrap().unwrap();
    Device {
        client,
        backend,
        url: relay.url.clone(),
        events: Vec::new(),
    }
}
