//! Test harness: a fresh database per test on either backend, requests through `oneshot`, real
//! sockets on port 0, and real keys from `sotto_crypto`.

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use axum::Router;
use http_body_util::BodyExt as _;
use rand::RngCore as _;
use rand_chacha::rand_core::SeedableRng as _;
use serde_json::{json, Value};
use sotto_crypto::keys::{IdentityKeyPair, KemPreKey, OneTimePreKey, SignedPreKey};
use sotto_server::serve::Running;
use sotto_server::{app, AppState, Config};
use sqlx::{Connection as _, Executor as _};
use tower::ServiceExt as _;

/// Which database a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Runs an async test body once per backend.
#[macro_export]
macro_rules! both {
    ($name:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$name($crate::common::Backend::Sqlite).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$name($crate::common::Backend::Postgres).await
            }
        }
    };
}

fn admin_url() -> String {
    std::env::var("SOTTO_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

enum Db {
    Sqlite(#[allow(dead_code)] tempfile::TempDir),
    Postgres(String),
}

/// One relay on a fresh database.
pub struct TestApp {
    pub state: AppState,
    pub router: Router,
    pub url: String,
    db: Db,
}

/// A logged-in device.
#[derive(Debug, Clone)]
pub struct Client {
    pub user_id: String,
    pub device_id: u32,
    pub registration_id: u32,
    pub token: String,
}

impl TestApp {
    pub async fn new(backend: Backend) -> Self {
        Self::with(backend, |_| {}).await
    }

    /// A relay whose configuration `tweak` adjusts.
    pub async fn with(backend: Backend, tweak: impl FnOnce(&mut Config)) -> Self {
        let (url, db) = match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().unwrap();
                let url = format!("sqlite://{}", dir.path().join("relay.sqlite").display());
                (url, Db::Sqlite(dir))
            }
            Backend::Postgres => {
                let admin = admin_url();
                let name = format!("sotto_test_{:016x}", rand::thread_rng().next_u64());
                let mut conn = sqlx::PgConnection::connect(&admin).await.unwrap_or_else(|e| {
                    panic!(
                        "PostgreSQL is required for the relay tests and is not reachable at {admin} ({e}). \
                         Run `bash scripts/test.sh` (it starts PostgreSQL) or set SOTTO_TEST_POSTGRES_URL."
                    )
                });
                conn.execute(format!("CREATE DATABASE {name}").as_str())
                    .await
                    .unwrap();
                conn.close().await.unwrap();
                let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap();
                (format!("{base}/{name}"), Db::Postgres(name))
            }
        };
        let mut config = Config::for_tests(&url);
        tweak(&mut config);
        let state = AppState::open(config).await.unwrap();
        let router = app(state.clone());
        Self {
            state,
            router,
            url,
            db,
        }
    }

    /// A relay on the same database (a restart).
    pub async fn reopen(&self) -> AppState {
        AppState::open(Config::for_tests(&self.url)).await.unwrap()
    }

    /// Closes the store and drops the PostgreSQL database.
    pub async fn finish(self) {
        self.state.store().close().await;
        drop(self.router);
        drop(self.state);
        if let Db::Postgres(name) = self.db {
            let mut conn = sqlx::PgConnection::connect(&admin_url()).await.unwrap();
            conn.execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
                .await
                .unwrap();
        }
    }

    /// Serves the app on 127.0.0.1:0.
    pub async fn serve(&self) -> Running {
        sotto_server::serve::spawn(self.state.clone(), None)
            .await
            .unwrap()
    }

    /// A request with an optional bearer token and JSON body; returns status and JSON (or Null).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = Request::builder().method(method).uri(path);
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let req = match body {
            Some(b) => req
                .header("content-type", "application/json")
                .body(Body::from(serde_json::to_vec(&b).unwrap())),
            None => req.body(Body::empty()),
        }
        .unwrap();
        self.raw(req).await
    }

    /// Sends a prepared request. Every answer is checked against the OpenAPI document: the
    /// route that served it must be documented, and its status declared for that operation.
    pub async fn raw(&self, req: Request<Body>) -> (StatusCode, Value) {
        let method = req.method().clone();
        let path = req.uri().path().to_owned();
        let resp = self.router.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let route = resp
            .extensions()
            .get::<axum::extract::MatchedPath>()
            .map(|m| m.as_str().to_owned());
        check_declared(&method, &path, route.as_deref(), status);
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let value = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        };
        (status, value)
    }

    pub async fn get(&self, path: &str, token: &str) -> (StatusCode, Value) {
        self.call(Method::GET, path, Some(token), None).await
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, path, token, Some(body)).await
    }

    /// Registers `name` and logs in its first device.
    pub async fn client(&self, name: &str) -> Client {
        let (s, v) = self
            .post(
                "/api/users/register",
                None,
                json!({"username": name, "email": format!("{name}@example.com"), "password": "password123"}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
        let registration_id = rand::thread_rng().next_u32() | 1;
        let (s, v) = self
            .post(
                "/api/users/login",
                None,
                json!({"username": name, "password": "password123", "registrationId": registration_id}),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        Client {
            user_id: v["userId"].as_str().unwrap().to_owned(),
            device_id: u32::try_from(v["deviceId"].as_u64().unwrap()).unwrap(),
            registration_id,
            token: v["token"].as_str().unwrap().to_owned(),
        }
    }

    /// Sends one ciphertext to each listed device of `to`.
    pub async fn send(
        &self,
        from: &Client,
        to: &Client,
        client_message_id: &str,
        content: &[u8],
    ) -> (StatusCode, Value) {
        self.post(
            "/api/messages/send",
            Some(&from.token),
            json!({
                "recipientId": to.user_id,
                "clientMessageId": client_message_id,
                "messages": [{"deviceId": to.device_id, "registrationId": to.registration_id, "content": b64(content)}],
            }),
        )
        .await
    }

    /// Row counts of every table, to prove bad input changed nothing.
    pub async fn snapshot(&self) -> Vec<i64> {
        let tables = [
            "users",
            "devices",
            "tokens",
            "signed_prekeys",
            "one_time_prekeys",
            "envelopes",
            "sent_messages",
        ];
        let mut out = Vec::new();
        for t in tables {
            let q = format!("SELECT COUNT(*) FROM {t}");
            let n: i64 = if self.url.starts_with("postgres") {
                let mut c = sqlx::PgConnection::connect(&self.url).await.unwrap();
                let n = sqlx::query_scalar(&q).fetch_one(&mut c).await.unwrap();
                c.close().await.unwrap();
                n
            } else {
                let mut c = sqlx::SqliteConnection::connect(&self.url).await.unwrap();
                let n = sqlx::query_scalar(&q).fetch_one(&mut c).await.unwrap();
                c.close().await.unwrap();
                n
            };
            out.push(n);
        }
        out
    }
}

/// The relay's generated OpenAPI document.
pub fn openapi() -> &'static Value {
    static DOC: std::sync::OnceLock<Value> = std::sync::OnceLock::new();
    DOC.get_or_init(sotto_server::openapi::document_value)
}

/// Panics unless the OpenAPI document declares `status` for the operation of `route` (the
/// template that served `method path`); an answer from no route must be the fallback's 404 or
/// 405.
pub fn check_declared(method: &Method, path: &str, route: Option<&str>, status: StatusCode) {
    let Some(route) = route else {
        assert!(
            matches!(status.as_u16(), 404 | 405),
            "{method} {path} answered {status} without a route"
        );
        return;
    };
    let ops = &openapi()["paths"][route];
    assert!(
        ops.is_object(),
        "{method} {path}: route {route} is served but not in the OpenAPI document"
    );
    let op = &ops[method.as_str().to_ascii_lowercase()];
    if !op.is_object() {
        assert_eq!(
            status,
            StatusCode::METHOD_NOT_ALLOWED,
            "{method} {path}: {route} has no {method} operation but answered {status}"
        );
        return;
    }
    let declared: Vec<&String> = op["responses"]
        .as_object()
        .map(|r| r.keys().collect())
        .unwrap_or_default();
    assert!(
        declared.iter().any(|d| *d == status.as_str()),
        "{method} {path} answered {status}, which the OpenAPI document does not declare for \
         {method} {route} ({declared:?})"
    );
}

/// The documented route template `path` matches (literal segments preferred over parameters),
/// for answers read over a socket, where the router's match is not visible.
pub fn route_of(path: &str) -> Option<String> {
    let segments: Vec<&str> = path.split('/').collect();
    openapi()["paths"]
        .as_object()?
        .keys()
        .filter_map(|template| {
            let t: Vec<&str> = template.split('/').collect();
            let matches = t.len() == segments.len()
                && t.iter()
                    .zip(&segments)
                    .all(|(a, b)| a == b || (a.starts_with('{') && !b.is_empty()));
            matches.then(|| (t.iter().filter(|a| !a.starts_with('{')).count(), template))
        })
        .max_by_key(|(literal, _)| *literal)
        .map(|(_, template)| template.clone())
}

pub fn b64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

pub fn rng(seed: u64) -> rand_chacha::ChaCha20Rng {
    rand_chacha::ChaCha20Rng::seed_from_u64(seed)
}

/// An identity with a full key upload (signed prekey, `n` one-time keys of each kind, last resort).
pub struct Keys {
    pub upload: Value,
}

pub fn keys(seed: u64, n: u32) -> Keys {
    let mut rng = rng(seed);
    let identity = IdentityKeyPair::generate(&mut rng);
    let spk = SignedPreKey::generate(1, &identity, &mut rng).public();
    let pre_keys: Vec<Value> = (1..=n)
        .map(|i| {
            let k = OneTimePreKey::generate(100 + i, &mut rng).public();
            json!({"keyId": k.key_id(), "publicKey": b64(k.public_key())})
        })
        .collect();
    let kem_keys: Vec<Value> = (1..=n)
        .map(|i| {
            let k = KemPreKey::generate(200 + i, &identity, &mut rng).public();
            json!({"keyId": k.key_id(), "publicKey": b64(k.public_key()), "signature": b64(k.signature())})
        })
        .collect();
    let last = KemPreKey::generate_last_resort(999, &identity, &mut rng).public();
    let upload = json!({
        "identityKey": b64(&identity.public().to_bytes()),
        "signedPreKey": {"keyId": spk.key_id(), "publicKey": b64(spk.public_key()), "signature": b64(spk.signature())},
        "preKeys": pre_keys,
        "kemPreKeys": kem_keys,
        "kemLastResortKey": {"keyId": last.key_id(), "publicKey": b64(last.public_key()), "signature": b64(last.signature())},
    });
    Keys { upload }
}
