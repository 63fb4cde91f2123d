//! 1:1 against the real relay.

use sotto_client::{ClientEvent, ConversationId, Event, LoginError, MessageStatus, SottoClient};
use sotto_e2e::{contains_plaintext, Db};

use crate::both;
use crate::common::{options, relay, user};

async fn one_to_one_both_ways_offline_history_receipts(db: Db) {
    let relay = relay(db).await;
    let mut alice = user(&relay, "alice").await;
    let mut bob = user(&relay, "bob").await;
    let (a, b) = (alice.id(), bob.id());

    // Both ways, live.
    let sent = alice
        .client
        .send_text(&b, "hello Bob, the code is 7431")
        .await
        .unwrap();
    assert!(sent.server_timestamp > 0);
    bob.wait_texts(1).await;
    bob.client.send_text(&a, "hi Alice, got it").await.unwrap();
    alice.wait_texts(1).await;
    assert_eq!(bob.texts(), ["hello Bob, the code is 7431"]);
    assert_eq!(alice.texts(), ["hi Alice, got it"]);
    // Delivered: the relay's receipt when Bob's device acked.
    alice
        .wait(20, "delivery receipt", |ev| {
            ev.iter().any(|e| matches!(e, ClientEvent::Event(Event::Delivered { message_id, .. }) if *message_id == sent.id))
        })
        .await;

    // Offline delivery: Bob goes away, Alice writes 120 messages, Bob comes back.
    bob.close().await;
    let mut texts = Vec::new();
    for i in 0..120 {
        let t = format!("offline message {i}");
        alice.client.queue_text(&b, &t).await.unwrap();
        texts.push(t);
    }
    alice.client.send_text(&b, "last one").await.unwrap();
    texts.push("last one".into());
    bob.reopen().await;
    bob.wait_texts(121).await;
    // Each once (sends run in parallel, so arrival order may differ) ...
    let mut got = bob.texts();
    got.sort();
    let mut want = texts.clone();
    want.sort();
    assert_eq!(got, want, "each once");

    // Unread counts and history pagination (cursor, limit ≤ 100).
    let conv = ConversationId::Direct(a.clone());
    let c = bob
        .client
        .conversations()
        .into_iter()
        .find(|c| c.id == conv)
        .unwrap();
    assert_eq!(c.unread_count, 122);
    assert_eq!(c.last_message.unwrap().text, "last one");
    let first = bob.client.history(&conv, None, 100).await.unwrap();
    assert_eq!(first.messages.len(), 100);
    assert_eq!(first.messages[0].text.as_deref(), Some("last one"));
    let second = bob
        .client
        .history(&conv, first.next_cursor, 100)
        .await
        .unwrap();
    assert_eq!(second.messages.len(), 23);
    assert_eq!(second.next_cursor, None);
    assert_eq!(
        second.messages.last().unwrap().text.as_deref(),
        Some("hello Bob, the code is 7431")
    );
    // ... and history is in the sender's order.
    let mut ordered: Vec<String> = first
        .messages
        .iter()
        .chain(second.messages.iter())
        .rev()
        .filter_map(|m| m.text.clone())
        .collect();
    ordered.drain(..2);
    assert_eq!(ordered, texts);
    assert!(bob.client.history(&conv, None, 101).await.is_err());
    assert!(bob.client.history(&conv, None, 0).await.is_err());

    // Read receipt: end to end, back to Alice.
    bob.client.mark_read(&conv).await;
    assert_eq!(
        bob.client
            .conversations()
            .into_iter()
            .find(|c| c.id == conv)
            .unwrap()
            .unread_count,
        0
    );
    alice
        .wait(20, "read receipt", |ev| {
            ev.iter().any(|e| matches!(e, ClientEvent::Event(Event::Read { message_ids, .. }) if message_ids.len() == 122))
        })
        .await;
    let page = alice
        .client
        .history(&ConversationId::Direct(b.clone()), None, 1)
        .await
        .unwrap();
    assert_eq!(page.messages[0].status, MessageStatus::Read);

    // The relay stored ciphertext only.
    alice.close().await;
    bob.close().await;
    let dump = relay.dump().await.unwrap();
    assert!(!dump.is_empty());
    for t in texts.iter().chain(
        [
            "hello Bob, the code is 7431".to_owned(),
            "hi Alice, got it".to_owned(),
        ]
        .iter(),
    ) {
        assert!(!contains_plaintext(&dump, t), "relay database holds {t:?}");
    }
    relay.finish().await;
}
both!(one_to_one_both_ways_offline_history_receipts);

async fn login_errors_are_clear(db: Db) {
    let relay = relay(db).await;
    let alice = user(&relay, "carol").await;
    let backend = std::sync::Arc::new(sotto_store::memory::MemoryBackend::new());
    let wrong =
        SottoClient::login(options(&relay.url, &backend), "carol", "not the password").await;
    assert!(
        matches!(wrong, Err(LoginError::InvalidCredentials)),
        "{wrong:?}"
    );
    let again = SottoClient::login(options(&relay.url, &backend), "carol", "carol-password").await;
    assert!(matches!(again, Err(LoginError::DeviceExists)), "{again:?}");
    let down = SottoClient::login(options("http://127.0.0.1:9", &backend), "carol", "x").await;
    assert!(matches!(down, Err(LoginError::Unreachable)), "{down:?}");
    // A profile opened with the wrong passphrase.
    alice.close().await;
    let mut o = options(&relay.url, &alice.backend);
    o.store_secret = sotto_client::StoreSecret::InsecureTestPassphrase("wrong".into());
    assert!(matches!(
        SottoClient::open(o).await,
        Err(LoginError::WrongStoreKey)
    ));
    // Unknown user: a typed failure.
    let alice = SottoClient::open(options(&relay.url, &alice.backend))
        .await
        .unwrap();
    let r = alice
        .send_text("00000000-0000-4000-8000-000000000000", "hello?")
        .await;
    assert!(r.is_err(), "{r:?}");
    alice.close().await;
    relay.finish().await;
}
both!(login_errors_are_clear);

async fn multi_device_on_both_sides(db: Db) {
    let relay = relay(db).await;
    let mut phone = user(&relay, "alice").await;
    let mut laptop = crate::common::link(&relay, &phone).await;
    assert_eq!(laptop.id(), phone.id());
    assert_ne!(laptop.client.device_id(), phone.client.device_id());
    let mut bob = user(&relay, "bob").await;
    let mut tablet = crate::common::link(&relay, &bob).await;
    let (a, b) = (phone.id(), bob.id());

    phone.client.send_text(&b, "from the phone").await.unwrap();
    bob.wait_texts(1).await;
    tablet.wait_texts(1).await;
    // The laptop sees what the phone sent, as its own outgoing message.
    laptop
        .wait(30, "synced sent message", |ev| {
            ev.iter().any(|e| matches!(e, ClientEvent::Event(Event::Message(m)) if m.outgoing && m.text.as_deref() == Some("from the phone")))
        })
        .await;
    tablet
        .client
        .send_text(&a, "from the tablet")
        .await
        .unwrap();
    phone.wait_texts(1).await;
    laptop.wait_texts(1).await;
    bob.wait(30, "tablet's sent message", |ev| {
        ev.iter()
            .any(|e| matches!(e, ClientEvent::Event(Event::Message(m)) if m.outgoing))
    })
    .await;
    // Reading on the phone clears the laptop's unread count.
    let conv = ConversationId::Direct(b.clone());
    phone.client.mark_read(&conv).await;
    laptop
        .wait(30, "read sync", |ev| {
            ev.iter().any(|e| matches!(e, ClientEvent::Event(Event::ConversationUpdated(c)) if c.id == conv && c.unread_count == 0))
        })
        .await;
    let devices = phone.client.devices().await.unwrap();
    assert_eq!(devices.len(), 2);
    for d in [&phone, &laptop, &bob, &tablet] {
        d.close().await;
    }
    relay.finish().await;
}
both!(multi_device_on_both_sides);
