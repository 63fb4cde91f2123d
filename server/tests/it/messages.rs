use axum::http::{Method, StatusCode};
use serde_json::json;

use crate::both;
use crate::common::{b64, Backend, TestApp};

async fn send_fetch_page_ack_with_receipt(b: Backend) {
    let t = TestApp::new(b).await;
    let alice = t.client("alice").await;
    let bob = t.client("bob").await;
    for i in 0..5 {
        let (s, v) = t
            .send(&alice, &bob, &format!("m{i}"), format!("ct{i}").as_bytes())
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        assert!(v["serverMessageId"].as_str().unwrap().len() >= 32);
        assert!(v["serverTimestamp"].as_u64().unwrap() > 1_600_000_000_000);
        assert_eq!(v["duplicate"], false);
    }
    let (_, v) = t.get("/api/messages/unread", &bob.token).await;
    assert_eq!(v, json!({"count": 5}));
    let (_, v) = t.get("/api/messages/unread", &alice.token).await;
    assert_eq!(v, json!({"count": 0}));

    // Pages of 2: cursor walks in mailbox order.
    let mut seen = Vec::new();
    let mut after = 0;
    loop {
        let (s, v) = t
            .get(&format!("/api/messages?after={after}&limit=2"), &bob.token)
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        for e in v["envelopes"].as_array().unwrap() {
            assert_eq!(e["kind"], "message");
            assert_eq!(e["sourceUserId"], alice.user_id.as_str());
            assert_eq!(e["sourceDeviceId"], 1);
            seen.push((
                e["seq"].as_u64().unwrap(),
                e["content"].as_str().unwrap().to_owned(),
            ));
        }
        match v["nextCursor"].as_u64() {
            Some(c) => after = c,
            None => break,
        }
    }
    let contents: Vec<String> = seen.iter().map(|s| s.1.clone()).collect();
    let expected: Vec<String> = (0..5).map(|i| b64(format!("ct{i}").as_bytes())).collect();
    assert_eq!(contents, expected);
    assert!(seen.windows(2).all(|w| w[0].0 < w[1].0));

    // Ack the first: deleted, and alice gets a delivery receipt.
    let first = seen[0].0;
    let (s, _) = t
        .call(
            Method::DELETE,
            &format!("/api/messages/{first}"),
            Some(&bob.token),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, v) = t
        .call(
            Method::DELETE,
            &format!("/api/messages/{first}"),
            Some(&bob.token),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "replayed ack");
    assert_eq!(v["code"], "unknown_envelope");
    let (_, v) = t.get("/api/messages/unread", &bob.token).await;
    assert_eq!(v, json!({"count": 4}));
    let (_, v) = t.get("/api/messages", &alice.token).await;
    let receipt = &v["envelopes"][0];
    assert_eq!(receipt["kind"], "deliveryReceipt");
    assert_eq!(receipt["sourceUserId"], bob.user_id.as_str());
    assert_eq!(receipt["clientMessageId"], "m0");
    assert!(receipt.get("content").is_none());
    t.finish().await;
}
both!(send_fetch_page_ack_with_receipt);

async fn idempotent_retry(b: Backend) {
    let t = TestApp::new(b).await;
    let alice = t.client("alice").await;
    let bob = t.client("bob").await;
    let (_, first) = t.send(&alice, &bob, "same-id", b"x").await;
    let (s, again) = t.send(&alice, &bob, "same-id", b"x").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(again["serverMessageId"], first["serverMessageId"]);
    assert_eq!(again["serverTimestamp"], first["serverTimestamp"]);
    assert_eq!(again["duplicate"], true);
    let (_, v) = t.get("/api/messages/unread", &bob.token).await;
    assert_eq!(v["count"], 1);

    // Concurrent retries store once.
    let t = std::sync::Arc::new(t);
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (t, a, b) = (t.clone(), alice.clone(), bob.clone());
        tasks.push(tokio::spawn(
            async move { t.send(&a, &b, "burst", b"y").await },
        ));
    }
    let mut ids = std::collections::HashSet::new();
    for task in tasks {
        let (s, v) = task.await.unwrap();
        assert_eq!(s, StatusCode::OK, "{v}");
        ids.insert(v["serverMessageId"].as_str().unwrap().to_owned());
    }
    assert_eq!(ids.len(), 1);
    let (_, v) = t.get("/api/messages/unread", &bob.token).await;
    assert_eq!(v["count"], 2);
    std::sync::Arc::into_inner(t).unwrap().finish().await;
}
both!(idempotent_retry);

async fn device_set_checks_and_limits(b: Backend) {
    let t = TestApp::with(b, |c| c.max_envelope_bytes = 1000).await;
    let alice = t.client("alice").await;
    let bob = t.client("bob").await;
    let before = t.snapshot().await;
    let send = |messages: serde_json::Value| {
        t.post(
            "/api/messages/send",
            Some(&alice.token),
            json!({"recipientId": bob.user_id, "clientMessageId": "c", "messages": messages}),
        )
    };
    // Extra device 2, missing device 1.
    let (s, v) = send(json!([{"deviceId": 2, "registrationId": 1, "content": "AA=="}])).await;
    assert_eq!(s, StatusCode::CONFLICT, "{v}");
    assert_eq!(v["code"], "mismatched_devices");
    assert_eq!(
        v["missingDevices"],
        json!([{"userId": bob.user_id, "deviceId": 1}])
    );
    assert_eq!(
        v["extraDevices"],
        json!([{"userId": bob.user_id, "deviceId": 2}])
    );
    // Stale registration id.
    let (s, v) = send(
        json!([{"deviceId": 1, "registrationId": bob.registration_id ^ 4, "content": "AA=="}]),
    )
    .await;
    assert_eq!(s, StatusCode::GONE);
    assert_eq!(
        v["staleDevices"],
        json!([{"userId": bob.user_id, "deviceId": 1}])
    );
    // Over the per-envelope limit.
    let big = b64(&vec![7u8; 1001]);
    let (s, v) =
        send(json!([{"deviceId": 1, "registrationId": bob.registration_id, "content": big}])).await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(v["code"], "payload_too_large");
    // Unknown recipient.
    let (s, v) = t
        .post(
            "/api/messages/send",
            Some(&alice.token),
            json!({"recipientId": "00000000-0000-0000-0000-000000000000", "clientMessageId": "c",
                   "messages": [{"deviceId": 1, "registrationId": 1, "content": "AA=="}]}),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert_eq!(v["code"], "unknown_user");
    // Sending to oneself with no other device: the own device is "extra".
    let (s, _) = t
        .post(
            "/api/messages/send",
            Some(&alice.token),
            json!({"recipientId": alice.user_id, "clientMessageId": "c",
                   "messages": [{"deviceId": 1, "registrationId": alice.registration_id, "content": "AA=="}]}),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert_eq!(t.snapshot().await, before, "rejected sends change nothing");
    // The same client message id still works once the request is right.
    let (s, _) =
        send(json!([{"deviceId": 1, "registrationId": bob.registration_id, "content": "AA=="}]))
            .await;
    assert_eq!(s, StatusCode::OK);
    t.finish().await;
}
both!(device_set_checks_and_limits);

async fn accepted_means_durable(b: Backend) {
    let t = TestApp::new(b).await;
    let alice = t.client("alice").await;
    let bob = t.client("bob").await;
    for i in 0..20 {
        let (s, _) = t.send(&alice, &bob, &format!("d{i}"), b"durable").await;
        assert_eq!(s, StatusCode::OK);
    }
    // A second relay process on the same database sees every accepted envelope.
    let other = t.reopen().await;
    let bob_auth = sotto_server::auth::authenticate(&other, &bob.token)
        .await
        .unwrap();
    assert_eq!(other.store().unread(bob_auth.pk).await.unwrap(), 20);
    other.store().close().await;
    t.finish().await;
}
both!(accepted_means_durable);

async fn expiry_removes_old_envelopes(b: Backend) {
    let t = TestApp::new(b).await;
    let alice = t.client("alice").await;
    let bob = t.client("bob").await;
    let (s, _) = t.send(&alice, &bob, "old", b"x").await;
    assert_eq!(s, StatusCode::OK);
    let far = sotto_server::now_ms() + 31 * 24 * 3600 * 1000;
    assert_eq!(t.state.store().expire(far, far).await.unwrap(), 1);
    let (_, v) = t.get("/api/messages/unread", &bob.token).await;
    assert_eq!(v["count"], 0);
    // The idempotency record went too: the id can be reused.
    let (_, v) = t.send(&alice, &bob, "old", b"x").await;
    assert_eq!(v["duplicate"], false);
    t.finish().await;
}
both!(expiry_removes_old_envelopes);

/// Acks of many devices at once (which PostgreSQL writes as one batch): each deletes only its
/// own envelopes, an id acked twice at once is deleted once, and every sender gets exactly the
/// receipts of its acked messages.
async fn concurrent_acks_each_get_their_receipts(b: Backend) {
    let t = TestApp::new(b).await;
    let carol = t.client("carol").await;
    let mut pairs = Vec::new();
    for i in 0..6 {
        let sender = t.client(&format!("sender{i}")).await;
        let receiver = t.client(&format!("receiver{i}")).await;
        for (from, id) in [(&sender, format!("s{i}")), (&carol, format!("c{i}"))] {
            let (s, v) = t.send(from, &receiver, &id, id.as_bytes()).await;
            assert_eq!(s, StatusCode::OK, "{v}");
        }
        pairs.push((sender, receiver));
    }
    // Every receiver acks both of its envelopes, the first one twice, all at the same time.
    let mut acks = Vec::new();
    for (_, receiver) in &pairs {
        let (_, v) = t.get("/api/messages", &receiver.token).await;
        let seqs: Vec<u64> = v["envelopes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["seq"].as_u64().unwrap())
            .collect();
        assert_eq!(seqs.len(), 2, "{v}");
        for seq in [seqs[0], seqs[0], seqs[1]] {
            let token = receiver.token.clone();
            let t = &t;
            acks.push(async move {
                t.call(
                    Method::DELETE,
                    &format!("/api/messages/{seq}"),
                    Some(&token),
                    None,
                )
                .await
            });
        }
    }
    let statuses: Vec<StatusCode> = futures_util::future::join_all(acks)
        .await
        .into_iter()
        .map(|(s, _)| s)
        .collect();
    for per_receiver in statuses.chunks(3) {
        let mut twice = [per_receiver[0], per_receiver[1]];
        twice.sort();
        assert_eq!(
            twice,
            [StatusCode::NO_CONTENT, StatusCode::NOT_FOUND],
            "{statuses:?}"
        );
        assert_eq!(per_receiver[2], StatusCode::NO_CONTENT, "{statuses:?}");
    }
    for (sender, receiver) in &pairs {
        let (_, v) = t.get("/api/messages/unread", &receiver.token).await;
        assert_eq!(v, json!({"count": 0}));
        let (_, v) = t.get("/api/messages", &sender.token).await;
        let receipts = v["envelopes"].as_array().unwrap();
        assert_eq!(receipts.len(), 1, "{v}");
        assert_eq!(receipts[0]["kind"], "deliveryReceipt");
        assert_eq!(receipts[0]["sourceUserId"], receiver.user_id.as_str());
    }
    // Carol wrote to every receiver: one receipt each, in her mailbox's order.
    let (_, v) = t.get("/api/messages", &carol.token).await;
    let mut from: Vec<&str> = v["envelopes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            assert_eq!(e["kind"], "deliveryReceipt");
            e["clientMessageId"].as_str().unwrap()
        })
        .collect();
    let seqs: Vec<u64> = v["envelopes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    from.sort_unstable();
    assert_eq!(from, ["c0", "c1", "c2", "c3", "c4", "c5"]);
    t.finish().await;
}
both!(concurrent_acks_each_get_their_receipts);

/// Sends of many devices at once (which PostgreSQL writes as one batch), each with its own
/// outcome: accepted, a stale registration id, an unknown recipient, a retry of an accepted send,
/// a reused id, and the same new send twice at once (stored once).
async fn concurrent_sends_each_get_their_outcome(b: Backend) {
    let t = TestApp::new(b).await;
    let bob = t.client("bob").await;
    let mut senders = Vec::new();
    for i in 0..8 {
        senders.push(t.client(&format!("sender{i}")).await);
    }
    let (s, v) = t.send(&senders[0], &bob, "earlier", b"earlier").await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let earlier_id = v["serverMessageId"].as_str().unwrap().to_owned();
    let body = |to: &str, id: &str, reg: u32, content: &[u8]| {
        json!({
            "recipientId": to,
            "clientMessageId": id,
            "messages": [{"deviceId": bob.device_id, "registrationId": reg, "content": b64(content)}],
        })
    };
    let unknown = "00000000-0000-4000-8000-000000000000";
    let requests = [
        (
            &senders[0],
            body(&bob.user_id, "earlier", bob.registration_id, b"earlier"),
        ),
        (
            &senders[0],
            body(&bob.user_id, "new0", bob.registration_id, b"new0"),
        ),
        (
            &senders[1],
            body(&bob.user_id, "earlier", bob.registration_id, b"not a retry"),
        ),
        (
            &senders[2],
            body(&bob.user_id, "stale", bob.registration_id ^ 2, b"stale"),
        ),
        (&senders[3], body(unknown, "nobody", 1, b"nobody")),
        (
            &senders[4],
            body(&bob.user_id, "twice", bob.registration_id, b"twice"),
        ),
        (
            &senders[4],
            body(&bob.user_id, "twice", bob.registration_id, b"twice"),
        ),
        (
            &senders[5],
            body(&bob.user_id, "new5", bob.registration_id, b"new5"),
        ),
        (
            &senders[6],
            body(&bob.user_id, "new6", bob.registration_id, b"new6"),
        ),
    ];
    let calls = requests.iter().map(|(from, body)| {
        let t = &t;
        async move {
            t.post("/api/messages/send", Some(&from.token), body.clone())
                .await
        }
    });
    let answers = futures_util::future::join_all(calls).await;
    let status: Vec<StatusCode> = answers.iter().map(|(s, _)| *s).collect();
    // A retry of an accepted send answers its first outcome.
    assert_eq!(status[0], StatusCode::OK, "{answers:?}");
    assert_eq!(answers[0].1["duplicate"], true);
    assert_eq!(answers[0].1["serverMessageId"], earlier_id.as_str());
    assert_eq!(status[1], StatusCode::OK, "{answers:?}");
    // "earlier" is a new id for another sender.
    assert_eq!(status[2], StatusCode::OK, "{answers:?}");
    assert_eq!(answers[2].1["duplicate"], false);
    assert_eq!(status[3], StatusCode::GONE, "{answers:?}");
    assert_eq!(status[4], StatusCode::NOT_FOUND, "{answers:?}");
    // The same new send twice at once: stored once, both answered with its id.
    assert_eq!((status[5], status[6]), (StatusCode::OK, StatusCode::OK));
    assert_eq!(
        answers[5].1["serverMessageId"],
        answers[6].1["serverMessageId"]
    );
    let mut dup = [&answers[5].1["duplicate"], &answers[6].1["duplicate"]];
    dup.sort_by_key(|d| d.as_bool());
    assert_eq!(dup, [&json!(false), &json!(true)]);
    assert_eq!((status[7], status[8]), (StatusCode::OK, StatusCode::OK));
    // Bob's mailbox: exactly the stored sends, each once, in increasing sequence.
    let (_, v) = t.get("/api/messages", &bob.token).await;
    let envelopes = v["envelopes"].as_array().unwrap();
    let seqs: Vec<u64> = envelopes
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    let mut ids: Vec<&str> = envelopes
        .iter()
        .map(|e| e["clientMessageId"].as_str().unwrap())
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, ["earlier", "earlier", "new0", "new5", "new6", "twice"]);
    t.finish().await;
}
both!(concurrent_sends_each_get_their_outcome);
