//! Consent before co-membership: adding a user who never wrote to the adder, or who accepts
//! invitations only, makes a pending invitation; only accepted members get the group's messages,
//! events and presence.

use axum::http::{Method, StatusCode};
use serde_json::{json, Value};

use crate::both;
use crate::common::{b64, Backend, Client, TestApp};
use crate::support::{event, frame_of, mailbox};
use crate::ws::connect;

async fn consenting(b: Backend) -> TestApp {
    TestApp::with(b, |c| c.group_consent = true).await
}

fn sorted(v: &Value) -> Vec<String> {
    let mut out: Vec<String> = v
        .as_array()
        .map(|a| a.iter().map(|x| x.as_str().unwrap().to_owned()).collect())
        .unwrap_or_default();
    out.sort();
    out
}

fn ids(cs: &[&Client]) -> Vec<String> {
    let mut out: Vec<String> = cs.iter().map(|c| c.user_id.clone()).collect();
    out.sort();
    out
}

async fn strangers_get_invitations_not_membership(b: Backend) {
    let t = consenting(b).await;
    let server = t.serve().await;
    let alice = t.client("alice").await;
    let bob = t.client("bob").await; // wrote to Alice: added at once
    let carol = t.client("carol").await; // never wrote to Alice: invited
    let dave = t.client("dave").await; // wrote to Alice but accepts invitations only
    for c in [&bob, &dave] {
        let (s, v) = t
            .send(c, &alice, &format!("hello-{}", c.user_id), b"hi")
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
    }
    // Alice writing to Carol does not make Carol consent.
    let (s, _) = t.send(&alice, &carol, "to-carol", b"hi").await;
    assert_eq!(s, StatusCode::OK);
    let (s, v) = t
        .call(
            Method::PUT,
            "/api/users/settings",
            Some(&dave.token),
            Some(json!({"invitesOnly": true})),
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{v}");
    let (_, v) = t.get("/api/users/settings", &dave.token).await;
    assert_eq!(v, json!({"invitesOnly": true}));
    let (s, v) = t
        .call(
            Method::PUT,
            "/api/users/settings",
            Some(&dave.token),
            Some(json!({"invitesOnly": "yes"})),
        )
        .await;
    assert_eq!(
        (s, v["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("invalid_fields"))
    );

    let carol_before = mailbox(&t, &carol).await.len();
    let (s, v) = t
        .post(
            "/api/groups",
            Some(&alice.token),
            json!({"members": [bob.user_id, carol.user_id, dave.user_id], "metadata": b64(b"enc")}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert_eq!(sorted(&v["invitedUserIds"]), ids(&[&carol, &dave]));
    let gid = v["groupId"].as_str().unwrap().to_owned();
    let (_, v) = t
        .get(&format!("/api/groups/{gid}/members"), &alice.token)
        .await;
    let members: Vec<String> = {
        let mut m: Vec<String> = v["members"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["userId"].as_str().unwrap().to_owned())
            .collect();
        m.sort();
        m
    };
    assert_eq!(members, ids(&[&alice, &bob]));
    assert_eq!(sorted(&v["invitedUserIds"]), ids(&[&carol, &dave]));

    // The invitee got one `invited` event and nothing else; it is not a member.
    let carol_box = mailbox(&t, &carol).await;
    assert_eq!(carol_box.len(), carol_before + 1);
    let ev = event(carol_box.last().unwrap());
    assert_eq!(ev["change"], "invited");
    assert_eq!(ev["actorUserId"], alice.user_id.as_str());
    assert_eq!(ev["userIds"], json!([carol.user_id]));
    let (s, _) = t
        .get(&format!("/api/groups/{gid}/members"), &carol.token)
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (_, v) = t.get("/api/groups/invitations", &carol.token).await;
    assert_eq!(v["invitations"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v["invitations"][0]["groupId"], gid.as_str());
    assert_eq!(v["invitations"][0]["inviterUserId"], alice.user_id.as_str());
    assert_eq!(v["invitations"][0]["metadata"], b64(b"enc"));

    // Group messages reach accepted members only.
    let send = |id: &str| json!({"clientMessageId": id, "content": b64(b"sender-key ct")});
    let (s, v) = t
        .post(
            &format!("/api/groups/{gid}/messages"),
            Some(&alice.token),
            send("g1"),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(mailbox(&t, &carol).await.len(), carol_before + 1);
    assert!(mailbox(&t, &bob)
        .await
        .iter()
        .any(|e| e["kind"] == "groupMessage"));
    // An invitee cannot send to the group or see its members' presence.
    let (s, _) = t
        .post(
            &format!("/api/groups/{gid}/messages"),
            Some(&carol.token),
            send("c1"),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    // (Alice wrote to Carol, so Carol sees Alice's presence anyway; Bob is the co-member to watch.)
    let mut bob_ws = connect(server.addr, &bob).await;
    frame_of(&mut bob_ws, "queueEmpty").await;
    let (_, v) = t
        .get(&format!("/api/users/{}/status", bob.user_id), &carol.token)
        .await;
    assert_eq!(
        v,
        json!({"userId": bob.user_id, "status": "offline"}),
        "an invitee sees no presence"
    );
    let (_, v) = t
        .get(&format!("/api/users/{}/status", bob.user_id), &alice.token)
        .await;
    assert_eq!(v["status"], "online");

    // Carol accepts: a member now, announced to every member, and her presence view opens.
    let (s, v) = t
        .post(
            &format!("/api/groups/{gid}/invitation"),
            Some(&carol.token),
            json!({}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert!(v["members"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["userId"] == carol.user_id.as_str()));
    let added = mailbox(&t, &bob)
        .await
        .into_iter()
        .filter(|e| e["kind"] == "groupEvent")
        .map(|e| event(&e))
        .find(|e| e["change"] == "membersAdded");
    assert_eq!(added.unwrap()["userIds"], json!([carol.user_id]));
    let (_, v) = t
        .get(&format!("/api/users/{}/status", bob.user_id), &carol.token)
        .await;
    assert_eq!(v["status"], "online");
    let (s, v) = t
        .post(
            &format!("/api/groups/{gid}/messages"),
            Some(&carol.token),
            send("c2"),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");

    // Dave declines: nothing left; a second answer finds no invitation.
    let path = format!("/api/groups/{gid}/invitation");
    let (s, _) = t.call(Method::DELETE, &path, Some(&dave.token), None).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    for method in [Method::DELETE, Method::POST] {
        let (s, v) = t.call(method, &path, Some(&dave.token), None).await;
        assert_eq!(
            (s, v["code"].as_str()),
            (StatusCode::NOT_FOUND, Some("unknown_invitation"))
        );
    }
    let (_, v) = t.get("/api/groups/invitations", &dave.token).await;
    assert_eq!(v["invitations"], json!([]));
    let (_, v) = t
        .get(&format!("/api/groups/{gid}/members"), &alice.token)
        .await;
    assert!(v.get("invitedUserIds").is_none(), "{v}");
    server.shutdown().await.unwrap();
    t.finish().await;
}
both!(strangers_get_invitations_not_membership);

async fn adding_a_stranger_later_is_an_invitation_too(b: Backend) {
    let t = consenting(b).await;
    let alice = t.client("alice").await;
    let erin = t.client("erin").await;
    let (s, v) = t
        .post(
            "/api/groups",
            Some(&alice.token),
            json!({"members": [], "metadata": b64(b"m")}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let gid = v["groupId"].as_str().unwrap().to_owned();
    let (s, v) = t
        .post(
            &format!("/api/groups/{gid}/join"),
            Some(&alice.token),
            json!({"userIds": [erin.user_id]}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["members"].as_array().unwrap().len(), 1);
    assert_eq!(v["invitedUserIds"], json!([erin.user_id]));
    // Asking twice invites once.
    let (s, _) = t
        .post(
            &format!("/api/groups/{gid}/join"),
            Some(&alice.token),
            json!({"userIds": [erin.user_id]}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let invited: Vec<Value> = mailbox(&t, &erin)
        .await
        .iter()
        .map(event)
        .filter(|e| e["change"] == "invited")
        .collect();
    assert_eq!(invited.len(), 1);
    // Without the setting (`--open-group-adds`), the add is immediate.
    let t2 = TestApp::new(b).await;
    let alice2 = t2.client("alice").await;
    let erin2 = t2.client("erin").await;
    let (s, v) = t2
        .post(
            "/api/groups",
            Some(&alice2.token),
            json!({"members": [erin2.user_id], "metadata": b64(b"m")}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    assert!(v.get("invitedUserIds").is_none());
    t2.finish().await;
    t.finish().await;
}
both!(adding_a_stranger_later_is_an_invitation_too);
