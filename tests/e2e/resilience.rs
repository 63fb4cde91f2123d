//! The relay killed (SIGKILL) under traffic and restarted: nothing accepted is lost, nothing shown
//! twice; typing and presence live.

use sotto_client::{ClientEvent, Event};
use sotto_e2e::Db;

use crate::both;
use crate::common::{relay, user};

async fn kill_9_under_traffic_loses_nothing(db: Db) {
    let mut relay = relay(db).await;
    let alice = user(&relay, "alice").await;
    let mut bob = user(&relay, "bob").await;
    let b = bob.id();
    alice.client.send_text(&b, "warm-up").await.unwrap();
    bob.wait_texts(1).await;
    let mut texts = Vec::new();
    for i in 0..150 {
        let t = format!("under fire {i}");
        alice.client.queue_text(&b, &t).await.unwrap();
        texts.push(t);
        if i == 60 {
            relay.kill().await;
        }
        if i == 90 {
            relay.restart().await.unwrap();
        }
    }
    bob.wait(120, "every message after the restart", |ev| {
        ev.iter()
            .filter(|e| matches!(e, ClientEvent::Event(Event::Message(m)) if !m.outgoing))
            .count()
            >= 151
    })
    .await;
    let mut got = bob.texts();
    got.retain(|t| t != "warm-up");
    got.sort();
    let mut want = texts.clone();
    want.sort();
    assert_eq!(got, want, "each accepted message exactly once");
    // Ordering across the restart: history follows the sender's order.
    let conv = sotto_client::ConversationId::Direct(alice.id());
    let mut all = Vec::new();
    let mut cursor = None;
    loop {
        let page = bob.client.history(&conv, cursor, 100).await.unwrap();
        all.extend(page.messages.iter().filter_map(|m| m.text.clone()));
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    all.reverse();
    all.retain(|t| t != "warm-up");
    assert_eq!(all, texts);
    alice.close().await;
    bob.close().await;
    relay.finish().await;
}
both!(kill_9_under_traffic_loses_nothing);

async fn typing_and_presence_are_live(db: Db) {
    let relay = relay(db).await;
    let mut alice = user(&relay, "alice").await;
    let mut bob = user(&relay, "bob").await;
    let (a, b) = (alice.id(), bob.id());
    alice.client.send_text(&b, "hi").await.unwrap();
    bob.wait_texts(1).await;
    bob.client.send_text(&a, "hello").await.unwrap();
    alice.wait_texts(1).await;
    alice.client.set_typing(&b, true).await.unwrap();
    bob.wait(20, "typing", |ev| {
        ev.iter()
            .any(|e| matches!(e, ClientEvent::Event(Event::Typing { typing: true, .. })))
    })
    .await;
    // Auto-stop after 5 s without a stop message.
    bob.wait(20, "typing auto-stop", |ev| {
        ev.iter()
            .any(|e| matches!(e, ClientEvent::Event(Event::Typing { typing: false, .. })))
    })
    .await;
    assert_eq!(bob.client.presence(&a).await.unwrap().status, "online");
    alice.client.set_away(true).await.unwrap();
    assert_eq!(bob.client.presence(&a).await.unwrap().status, "away");
    alice.close().await;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        if bob.client.presence(&a).await.unwrap().status == "offline" {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never offline");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    bob.close().await;
    relay.finish().await;
}
both!(typing_and_presence_are_live);
