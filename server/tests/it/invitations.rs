//! Pending group invitations expire (`group_invitation_ttl`), and the inviter or an admin can
//! cancel one.

use std::time::Duration;

use axum::http::{Method, StatusCode};
use serde_json::{json, Value};

use crate::both;
use crate::common::{b64, Backend, Client, TestApp};
use crate::support::{count, snapshot};

async fn invitations(t: &TestApp, c: &Client) -> Vec<Value> {
    let (s, v) = t.get("/api/groups/invitations", &c.token).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v["invitations"].as_array().unwrap().clone()
}

async fn invited(t: &TestApp, gid: &str, member: &Client) -> Value {
    let (s, v) = t
        .get(&format!("/api/groups/{gid}/members"), &member.token)
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    v["invitedUserIds"].clone()
}

async fn create(t: &TestApp, admin: &Client, members: &[&Client]) -> String {
    let ids: Vec<&str> = members.iter().map(|c| c.user_id.as_str()).collect();
    let (s, v) = t
        .post(
            "/api/groups",
            Some(&admin.token),
            json!({"members": ids, "metadata": b64(b"enc")}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    v["groupId"].as_str().unwrap().to_owned()
}

async fn accept(t: &TestApp, gid: &str, c: &Client) -> (StatusCode, Value) {
    t.call(
        Method::POST,
        &format!("/api/groups/{gid}/invitation"),
        Some(&c.token),
        None,
    )
    .await
}

async fn cancel(t: &TestApp, gid: &str, by: &Client, user: &str) -> (StatusCode, Value) {
    t.call(
        Method::DELETE,
        &format!("/api/groups/{gid}/invitations/{user}"),
        Some(&by.token),
        None,
    )
    .await
}

const TTL: Duration = Duration::from_millis(1500);

async fn invitations_expire(b: Backend) {
    let t = TestApp::with(b, |c| {
        c.group_consent = true;
        c.group_invitation_ttl = TTL;
    })
    .await;
    let alice = t.client("alice").await;
    let carol = t.client("carol").await;
    let dave = t.client("dave").await;
    let erin = t.client("erin").await;
    let gid = create(&t, &alice, &[&carol, &dave, &erin]).await;
    let listed = invitations(&t, &carol).await;
    assert_eq!(listed.len(), 1);
    let (at, until) = (
        listed[0]["invitedAt"].as_u64().unwrap(),
        listed[0]["expiresAt"].as_u64().unwrap(),
    );
    assert_eq!(until - at, 1500);
    assert_eq!(invited(&t, &gid, &alice).await.as_array().unwrap().len(), 3);

    tokio::time::sleep(TTL + Duration::from_millis(200)).await;
    // Expired: not listed, not shown to members, not accepted — and the refusal changes nothing.
    assert!(invitations(&t, &carol).await.is_empty());
    assert_eq!(
        invited(&t, &gid, &alice).await,
        Value::Null,
        "no invited users left"
    );
    let before = (snapshot(&t).await, count(&t, "group_invitations").await);
    let (s, v) = accept(&t, &gid, &carol).await;
    assert_eq!(
        (s, v["code"].as_str()),
        (StatusCode::GONE, Some("invitation_expired")),
        "{v}"
    );
    assert_eq!(
        (snapshot(&t).await, count(&t, "group_invitations").await),
        before
    );
    let (s, _) = t
        .get(&format!("/api/groups/{gid}/members"), &carol.token)
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "an expired invitee is no member");

    // Declining an expired invitation just removes it.
    let (s, v) = t
        .call(
            Method::DELETE,
            &format!("/api/groups/{gid}/invitation"),
            Some(&erin.token),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{v}");

    // Adding the user again makes a fresh invitation, which works.
    let (s, v) = t
        .post(
            &format!("/api/groups/{gid}/join"),
            Some(&alice.token),
            json!({"userIds": [carol.user_id]}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["invitedUserIds"], json!([carol.user_id]));
    let listed = invitations(&t, &carol).await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert!(listed[0]["invitedAt"].as_u64().unwrap() > at);
    let (s, v) = accept(&t, &gid, &carol).await;
    assert_eq!(s, StatusCode::OK, "{v}");

    // The sweep deletes the expired rest (Dave's); then accepting is an unknown invitation.
    assert_eq!(count(&t, "group_invitations").await, 1);
    sotto_server::services::sweep(&t.state, sotto_server::now_ms()).await;
    assert_eq!(count(&t, "group_invitations").await, 0);
    let (s, v) = accept(&t, &gid, &dave).await;
    assert_eq!(
        (s, v["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("unknown_invitation")),
        "{v}"
    );
    t.finish().await;
}
both!(invitations_expire);

async fn inviter_or_admin_cancels(b: Backend) {
    let t = TestApp::with(b, |c| c.group_consent = true).await;
    let alice = t.client("alice").await;
    let bob = t.client("bob").await;
    let carol = t.client("carol").await;
    let dave = t.client("dave").await;
    let frank = t.client("frank").await;
    let eve = t.client("eve").await;
    // Bob wrote to Alice, so he is added at once; Carol and Dave are invited by Alice.
    let (s, _) = t.send(&bob, &alice, "hi", b"hi").await;
    assert_eq!(s, StatusCode::OK);
    let gid = create(&t, &alice, &[&bob, &carol, &dave]).await;
    assert_eq!(invited(&t, &gid, &alice).await.as_array().unwrap().len(), 2);

    // Refusals change nothing.
    let before = (snapshot(&t).await, count(&t, "group_invitations").await);
    for (by, user, status, code) in [
        (
            &bob,
            carol.user_id.as_str(),
            StatusCode::FORBIDDEN,
            "not_inviter",
        ),
        (
            &eve,
            carol.user_id.as_str(),
            StatusCode::NOT_FOUND,
            "unknown_group",
        ),
        (
            &carol,
            carol.user_id.as_str(),
            StatusCode::NOT_FOUND,
            "unknown_group",
        ),
        (
            &alice,
            eve.user_id.as_str(),
            StatusCode::NOT_FOUND,
            "unknown_invitation",
        ),
        (
            &alice,
            bob.user_id.as_str(),
            StatusCode::NOT_FOUND,
            "unknown_invitation",
        ),
        (
            &alice,
            "nobody",
            StatusCode::NOT_FOUND,
            "unknown_invitation",
        ),
        (&alice, "a%00b", StatusCode::NOT_FOUND, "unknown_invitation"),
    ] {
        let (s, v) = cancel(&t, &gid, by, user).await;
        assert_eq!((s, v["code"].as_str()), (status, Some(code)), "{user}: {v}");
    }
    let (s, v) = cancel(&t, "no-such-group", &alice, &carol.user_id).await;
    assert_eq!(
        (s, v["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("unknown_group"))
    );
    assert_eq!(
        (snapshot(&t).await, count(&t, "group_invitations").await),
        before
    );

    // The inviter cancels Carol's: gone from every list, and it can no longer be accepted.
    let (s, v) = cancel(&t, &gid, &alice, &carol.user_id).await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{v}");
    assert!(invitations(&t, &carol).await.is_empty());
    assert_eq!(invited(&t, &gid, &alice).await, json!([dave.user_id]));
    let (s, v) = accept(&t, &gid, &carol).await;
    assert_eq!(
        (s, v["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("unknown_invitation"))
    );
    let (s, _) = cancel(&t, &gid, &alice, &carol.user_id).await;
    assert_eq!(s, StatusCode::NOT_FOUND, "cancelled once only");

    // An admin who did not invite cancels too.
    let (s, v) = t
        .call(
            Method::PUT,
            &format!("/api/groups/{gid}/members/{}", bob.user_id),
            Some(&alice.token),
            Some(json!({"role": "admin"})),
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{v}");
    let (s, v) = cancel(&t, &gid, &bob, &dave.user_id).await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{v}");
    assert!(invitations(&t, &dave).await.is_empty());

    // The inviter, no longer an admin, still cancels the invitation they made.
    let (s, v) = t
        .post(
            &format!("/api/groups/{gid}/join"),
            Some(&alice.token),
            json!({"userIds": [frank.user_id]}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (s, v) = t
        .call(
            Method::PUT,
            &format!("/api/groups/{gid}/members/{}", alice.user_id),
            Some(&bob.token),
            Some(json!({"role": "member"})),
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{v}");
    let (s, v) = cancel(&t, &gid, &alice, &frank.user_id).await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{v}");
    assert!(invitations(&t, &frank).await.is_empty());
    assert_eq!(count(&t, "group_invitations").await, 0);
    t.finish().await;
}
both!(inviter_or_admin_cancels);
