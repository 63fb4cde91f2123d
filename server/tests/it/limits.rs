//! Per-account limits on what one account can make the relay store or send to others: group
//! creations and membership changes, invites, linking codes, ephemeral sends, failed logins,
//! attachment volume and stored bytes. Each answers 429 with `Retry-After` (413 for the stored
//! quota), and refused requests spend nothing. Also `GET /api/groups` paging.

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use serde_json::{json, Value};
use tower::ServiceExt as _;

use crate::both;
use crate::common::{b64, Backend, Client, TestApp};
use crate::linking::linked;
use crate::support::{count, group};

async fn limited(b: Backend, limits: &[&str]) -> TestApp {
    let limits: Vec<String> = limits.iter().map(|l| (*l).to_owned()).collect();
    TestApp::with(b, move |c| {
        for l in &limits {
            c.rate_limits.set_from_flag(l).unwrap();
        }
    })
    .await
}

/// Status, `code` and `Retry-After` of a request.
async fn answer(
    t: &TestApp,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, Value, Option<String>) {
    let mut req = Request::builder().method(method).uri(path);
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let req = match body {
        Some(b) => req
            .header("content-type", "application/json")
            .body(Body::from(b.to_string())),
        None => req.body(Body::empty()),
    }
    .unwrap();
    upload_answer(t, req).await
}

async fn upload_answer(t: &TestApp, req: Request<Body>) -> (StatusCode, Value, Option<String>) {
    use http_body_util::BodyExt as _;
    let resp = t.router.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let retry = resp
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let v = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, v, retry)
}

fn assert_limited(a: &(StatusCode, Value, Option<String>), what: &str) {
    assert_eq!(a.0, StatusCode::TOO_MANY_REQUESTS, "{what}: {}", a.1);
    assert_eq!(a.1["code"], "rate_limited", "{what}");
    assert!(
        a.2.as_deref()
            .is_some_and(|r| r.parse::<u64>().unwrap() >= 1),
        "{what}: Retry-After"
    );
}

/// Makes `a` and `b` contacts (a message each way is not needed: one is enough).
async fn contacts(t: &TestApp, a: &Client, b: &Client) {
    let (s, v) = t.send(a, b, &format!("hi-{}", b.user_id), b"hi").await;
    assert_eq!(s, StatusCode::OK, "{v}");
}

async fn group_creations_and_changes_per_account(b: Backend) {
    let t = limited(b, &["group-changes=3/hour"]).await;
    let alice = t.client("alice").await;
    let bob = t.client("bob").await;
    contacts(&t, &alice, &bob).await;
    let create = |members: Vec<String>| json!({"members": members, "metadata": b64(b"m")});
    // Refused requests spend nothing.
    for _ in 0..5 {
        let a = answer(
            &t,
            Method::POST,
            "/api/groups",
            Some(&alice.token),
            Some(create(vec!["nobody".into()])),
        )
        .await;
        assert_eq!(a.0, StatusCode::NOT_FOUND, "{}", a.1);
    }
    let gid = group(&t, &alice, &[&bob]).await;
    // An add and a removal are changes too; leaving is not.
    let carol = t.client("carol").await;
    contacts(&t, &alice, &carol).await;
    let a = answer(
        &t,
        Method::POST,
        &format!("/api/groups/{gid}/join"),
        Some(&alice.token),
        Some(json!({"userIds": [carol.user_id]})),
    )
    .await;
    assert_eq!(a.0, StatusCode::OK, "{}", a.1);
    let a = answer(
        &t,
        Method::DELETE,
        &format!("/api/groups/{gid}/members/{}", carol.user_id),
        Some(&alice.token),
        None,
    )
    .await;
    assert_eq!(a.0, StatusCode::NO_CONTENT, "{}", a.1);
    let bob_before = count(
        &t,
        &format!(
            "envelopes e JOIN devices d ON d.pk = e.device_pk WHERE d.user_id = '{}'",
            bob.user_id
        ),
    )
    .await;
    let a = answer(
        &t,
        Method::POST,
        "/api/groups",
        Some(&alice.token),
        Some(create(vec![bob.user_id.clone()])),
    )
    .await;
    assert_limited(&a, "fourth change");
    let a = answer(
        &t,
        Method::POST,
        &format!("/api/groups/{gid}/join"),
        Some(&alice.token),
        Some(json!({"userIds": [carol.user_id]})),
    )
    .await;
    assert_limited(&a, "add after the limit");
    // Nothing reached Bob's mailbox from the refused requests.
    let bob_after = count(
        &t,
        &format!(
            "envelopes e JOIN devices d ON d.pk = e.device_pk WHERE d.user_id = '{}'",
            bob.user_id
        ),
    )
    .await;
    assert_eq!(bob_before, bob_after);
    // Bob's own allowance is his; leaving always works.
    let a = answer(
        &t,
        Method::DELETE,
        &format!("/api/groups/{gid}/leave"),
        Some(&bob.token),
        None,
    )
    .await;
    assert_eq!(a.0, StatusCode::NO_CONTENT, "{}", a.1);
    t.finish().await;
}
both!(group_creations_and_changes_per_account);

async fn invites_linking_codes_and_ephemeral(b: Backend) {
    let t = limited(
        b,
        &[
            "invites=1/hour",
            "linking-codes=2/hour",
            "ephemeral=2/minute",
        ],
    )
    .await;
    let alice = t.client("alice").await;
    let bob = t.client("bob").await;
    contacts(&t, &alice, &bob).await;
    let gid = group(&t, &alice, &[&bob]).await;
    // Bob is not an admin: refused, and it costs Alice nothing (nor Bob).
    let path = format!("/api/groups/{gid}/invites");
    let a = answer(&t, Method::POST, &path, Some(&bob.token), Some(json!({}))).await;
    assert_eq!(a.0, StatusCode::FORBIDDEN, "{}", a.1);
    let a = answer(&t, Method::POST, &path, Some(&alice.token), Some(json!({}))).await;
    assert_eq!(a.0, StatusCode::CREATED, "{}", a.1);
    assert_limited(
        &answer(&t, Method::POST, &path, Some(&alice.token), Some(json!({}))).await,
        "second invite",
    );

    for _ in 0..2 {
        let a = answer(
            &t,
            Method::POST,
            "/api/devices/linking-codes",
            Some(&alice.token),
            Some(json!({})),
        )
        .await;
        assert_eq!(a.0, StatusCode::CREATED, "{}", a.1);
    }
    assert_limited(
        &answer(
            &t,
            Method::POST,
            "/api/devices/linking-codes",
            Some(&alice.token),
            Some(json!({})),
        )
        .await,
        "third code",
    );
    let a = answer(
        &t,
        Method::POST,
        "/api/devices/linking-codes",
        Some(&bob.token),
        Some(json!({})),
    )
    .await;
    assert_eq!(a.0, StatusCode::CREATED, "per account");

    let now = sotto_server::now_ms();
    let typing = |ts: i64| json!({"recipientId": bob.user_id, "timestamp": ts, "messages": [{"deviceId": bob.device_id, "content": b64(b"typing")}]});
    // Malformed ones spend nothing.
    for _ in 0..3 {
        let a = answer(
            &t,
            Method::POST,
            "/api/messages/ephemeral",
            Some(&alice.token),
            Some(json!({"recipientId": bob.user_id, "timestamp": now, "messages": []})),
        )
        .await;
        assert_eq!(a.0, StatusCode::BAD_REQUEST, "{}", a.1);
    }
    for _ in 0..2 {
        let a = answer(
            &t,
            Method::POST,
            "/api/messages/ephemeral",
            Some(&alice.token),
            Some(typing(now)),
        )
        .await;
        assert_eq!(a.0, StatusCode::NO_CONTENT, "{}", a.1);
    }
    assert_limited(
        &answer(
            &t,
            Method::POST,
            "/api/messages/ephemeral",
            Some(&alice.token),
            Some(typing(now)),
        )
        .await,
        "third ephemeral",
    );
    t.finish().await;
}
both!(invites_linking_codes_and_ephemeral);

async fn failed_logins_per_account(b: Backend) {
    // Per-address login limit off: the account limit alone must stop guessing from many addresses.
    let t = limited(b, &["failed-logins=3/hour", "login=off"]).await;
    for name in ["victim", "other"] {
        let (s, v) = t
            .post(
                "/api/users/register",
                None,
                json!({"username": name, "email": "v@example.com", "password": "password123"}),
            )
            .await;
        assert_eq!(s, StatusCode::CREATED, "{v}");
    }
    let login =
        |name: &str, pw: &str| json!({"username": name, "password": pw, "registrationId": 9});
    for i in 0..3 {
        let a = answer(
            &t,
            Method::POST,
            "/api/users/login",
            None,
            Some(login("victim", &format!("guess-{i}-xx"))),
        )
        .await;
        assert_eq!(
            (a.0, a.1["code"].as_str()),
            (StatusCode::UNAUTHORIZED, Some("invalid_credentials"))
        );
    }
    assert_limited(
        &answer(
            &t,
            Method::POST,
            "/api/users/login",
            None,
            Some(login("victim", "guess-4-xxx")),
        )
        .await,
        "fourth guess",
    );
    // Even the right password waits now: guessing tells nothing until the allowance refills.
    assert_limited(
        &answer(
            &t,
            Method::POST,
            "/api/users/login",
            None,
            Some(login("VICTIM", "password123")),
        )
        .await,
        "right password",
    );
    assert_eq!(count(&t, "devices").await, 0);
    // Other accounts are unaffected; unknown names are not limited per account.
    let a = answer(
        &t,
        Method::POST,
        "/api/users/login",
        None,
        Some(login("other", "password123")),
    )
    .await;
    assert_eq!(a.0, StatusCode::OK, "{}", a.1);
    for _ in 0..5 {
        let a = answer(
            &t,
            Method::POST,
            "/api/users/login",
            None,
            Some(login("nobody", "password123")),
        )
        .await;
        assert_eq!(a.0, StatusCode::UNAUTHORIZED);
    }
    t.finish().await;
}
both!(failed_logins_per_account);

fn upload(token: &str, bytes: Vec<u8>, declare: bool) -> Request<Body> {
    let mut req = Request::builder()
        .method(Method::POST)
        .uri("/api/attachments")
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/octet-stream");
    if declare {
        req = req.header("content-length", bytes.len().to_string());
    }
    req.body(Body::from(bytes)).unwrap()
}

async fn attachment_volume_and_stored_quota(b: Backend) {
    // Upload volume per day.
    let t = limited(b, &["attachment-kib=100/day"]).await;
    let alice = t.client("alice").await;
    let bob = t.client("bob").await;
    let a = upload_answer(&t, upload(&alice.token, vec![1; 60 * 1024], true)).await;
    assert_eq!(a.0, StatusCode::CREATED, "{}", a.1);
    let a = upload_answer(&t, upload(&alice.token, vec![2; 60 * 1024], true)).await;
    assert_limited(&a, "declared upload over the day's volume");
    // Undeclared (chunked): read, found over the volume, not kept.
    let a = upload_answer(&t, upload(&alice.token, vec![3; 60 * 1024], false)).await;
    assert_limited(&a, "undeclared upload over the day's volume");
    assert_eq!(count(&t, "attachment_uploads").await, 1);
    let a = upload_answer(&t, upload(&bob.token, vec![4; 60 * 1024], true)).await;
    assert_eq!(a.0, StatusCode::CREATED, "per account: {}", a.1);
    t.finish().await;

    // Stored bytes per account.
    let t = TestApp::with(b, |c| c.max_attachment_storage_bytes = 100_000).await;
    let alice = t.client("alice").await;
    let a = upload_answer(&t, upload(&alice.token, vec![1; 60_000], true)).await;
    assert_eq!(a.0, StatusCode::CREATED, "{}", a.1);
    for declare in [true, false] {
        let a = upload_answer(&t, upload(&alice.token, vec![2; 60_000], declare)).await;
        assert_eq!(
            (a.0, a.1["code"].as_str()),
            (
                StatusCode::PAYLOAD_TOO_LARGE,
                Some("attachment_quota_exceeded")
            ),
            "declared {declare}: {}",
            a.1
        );
    }
    let a = upload_answer(&t, upload(&alice.token, vec![3; 40_000], false)).await;
    assert_eq!(a.0, StatusCode::CREATED, "what is left still fits: {}", a.1);
    assert_eq!(count(&t, "attachment_uploads").await, 2);
    let a = upload_answer(&t, upload(&alice.token, vec![4; 1], true)).await;
    assert_eq!(a.0, StatusCode::PAYLOAD_TOO_LARGE, "{}", a.1);
    t.finish().await;
}
both!(attachment_volume_and_stored_quota);

async fn refused_sends_spend_no_message_quota(b: Backend) {
    let t = limited(b, &["messages=2/minute"]).await;
    let alice = t.client("alice").await;
    let bob = t.client("bob").await;
    let bob2 = linked(&t, &bob, 4242).await;
    // Missing Bob's second device: 409, five times, free.
    for i in 0..5 {
        let (s, v) = t.send(&alice, &bob, &format!("m{i}"), b"x").await;
        assert_eq!(s, StatusCode::CONFLICT, "{v}");
    }
    let both = |id: &str| {
        json!({"recipientId": bob.user_id, "clientMessageId": id, "messages": [
            {"deviceId": bob.device_id, "registrationId": bob.registration_id, "content": b64(b"x")},
            {"deviceId": bob2.device_id, "registrationId": bob2.registration_id, "content": b64(b"x")}]})
    };
    for id in ["ok1", "ok2"] {
        let (s, v) = t
            .post("/api/messages/send", Some(&alice.token), both(id))
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
    }
    let a = answer(
        &t,
        Method::POST,
        "/api/messages/send",
        Some(&alice.token),
        Some(both("ok3")),
    )
    .await;
    assert_limited(&a, "third send");
    t.finish().await;
}
both!(refused_sends_spend_no_message_quota);

async fn group_list_pages(b: Backend) {
    let t = TestApp::new(b).await;
    let alice = t.client("alice").await;
    let mut made = Vec::new();
    for _ in 0..5 {
        made.push(group(&t, &alice, &[]).await);
    }
    let mut seen = Vec::new();
    let mut path = "/api/groups?limit=2".to_owned();
    let mut pages = 0;
    loop {
        let (s, v) = t.get(&path, &alice.token).await;
        assert_eq!(s, StatusCode::OK, "{v}");
        pages += 1;
        for g in v["groups"].as_array().unwrap() {
            seen.push(g["groupId"].as_str().unwrap().to_owned());
        }
        match v["nextCursor"].as_str() {
            Some(c) => path = format!("/api/groups?limit=2&after={c}"),
            None => break,
        }
        assert!(pages < 10);
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, made, "every group once, oldest first");
    let (_, v) = t.get("/api/groups", &alice.token).await;
    assert_eq!(v["groups"].as_array().unwrap().len(), 5);
    assert!(v.get("nextCursor").is_none());
    for (bad, code) in [
        ("/api/groups?limit=0", "invalid_limit"),
        ("/api/groups?limit=101", "invalid_limit"),
        ("/api/groups?after=garbage", "invalid_cursor"),
        ("/api/groups?after=x.y", "invalid_cursor"),
        ("/api/groups?page=2", "invalid_query"),
    ] {
        let (s, v) = t.get(bad, &alice.token).await;
        assert_eq!(
            (s, v["code"].as_str()),
            (StatusCode::BAD_REQUEST, Some(code)),
            "{bad}"
        );
    }
    t.finish().await;
}
both!(group_list_pages);

async fn username_lookups_per_account(b: Backend) {
    let t = limited(b, &["user-lookups=3/hour"]).await;
    let alice = t.client("alice").await;
    let bob = t.client("bob").await;
    for name in ["bob", "nobody1", "nobody2"] {
        let a = answer(
            &t,
            Method::GET,
            &format!("/api/usernames/{name}"),
            Some(&alice.token),
            None,
        )
        .await;
        assert_ne!(a.0, StatusCode::TOO_MANY_REQUESTS, "{name}: {}", a.1);
    }
    let a = answer(
        &t,
        Method::GET,
        "/api/usernames/bob",
        Some(&alice.token),
        None,
    )
    .await;
    assert_limited(&a, "the fourth lookup in an hour");
    let a = answer(
        &t,
        Method::GET,
        "/api/usernames/alice",
        Some(&bob.token),
        None,
    )
    .await;
    assert_eq!(a.0, StatusCode::OK, "per account: {}", a.1);
    t.finish().await;
}
both!(username_lookups_per_account);
