//! A relay that lies: forged and swapped bundles, invented devices, replays, garbage answers,
//! forged and truncated envelopes. The SDK refuses or recovers; nothing forged is shown, no key
//! goes to a device the relay invented, nothing panics.

use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;
use sotto_client_core::{Event, RelayAnswer, RelayCall, RelayFailure, SendFailure};
use sotto_crypto::keys::{IdentityKeyPair, KemPreKey, SignedPreKey};
use sotto_wire::{Base64, DeviceBundle, Envelope, EnvelopeKind, SignedPreKey as WireSigned};

use crate::net::Net;

fn sends_to(net: &Net, node: usize, user: &str, device: u32) -> usize {
    net.nodes[node]
        .sent
        .iter()
        .filter_map(|c| match c {
            RelayCall::SendMessage(r) => Some(r),
            _ => None,
        })
        .filter(|r| r.recipient_id == user)
        .filter(|r| r.messages.iter().any(|m| m.device_id == device))
        .count()
}

fn relay_device(identity: &IdentityKeyPair, device_id: u32, rng: &mut ChaCha20Rng) -> DeviceBundle {
    let spk = SignedPreKey::generate(1, identity, rng).public();
    let kem = KemPreKey::generate_last_resort(2, identity, rng).public();
    DeviceBundle {
        device_id,
        registration_id: 77,
        signed_pre_key: WireSigned {
            key_id: spk.key_id(),
            public_key: Base64(spk.public_key().to_vec()),
            signature: Base64(spk.signature().to_vec()),
        },
        pre_key: None,
        kem_pre_key: Some(WireSigned {
            key_id: kem.key_id(),
            public_key: Base64(kem.public_key().to_vec()),
            signature: Base64(kem.signature().to_vec()),
        }),
    }
}

#[test]
fn an_invented_device_with_forged_keys_gets_nothing() {
    let mut net = Net::new(20);
    let alice = net.user("alice");
    let _bob = net.user("bob");
    // The relay adds device 9 to Bob's account, with keys signed by its own identity.
    net.relay.add_device("bob", 9, 99);
    let mut rng = ChaCha20Rng::seed_from_u64(9);
    let fake = IdentityKeyPair::generate(&mut rng);
    let ghost = relay_device(&fake, 9, &mut rng);
    net.tamper = Some(Box::new(move |_, call, answer| {
        if let (RelayCall::FetchBundles { user_id, .. }, Ok(RelayAnswer::Bundles(b))) =
            (call, answer)
        {
            if user_id == "bob" && !b.devices.iter().any(|d| d.device_id == 9) {
                b.devices.push(ghost.clone());
            }
        }
    }));
    net.nodes[alice]
        .client
        .send_text(net.now, "bob", "secret")
        .unwrap();
    for _ in 0..10 {
        net.advance(2_000);
        net.run();
    }
    assert_eq!(
        sends_to(&net, alice, "bob", 9),
        0,
        "no ciphertext for the ghost device"
    );
    assert!(net.nodes[alice].events.iter().any(|e| matches!(
        e,
        Event::UntrustedDevice { user_id, device_id: 9 } if user_id == "bob"
    )));
    // The relay insists on the ghost, so the send cannot complete: a typed failure, not a leak.
    assert!(net.nodes[alice].events.iter().any(|e| matches!(
        e,
        Event::SendFailed {
            reason: SendFailure::DeviceListUnresolved,
            ..
        }
    )));
    assert!(net.texts(1).is_empty());
}

#[test]
fn a_swapped_bundle_after_pinning_is_an_identity_change_and_sends_nothing() {
    let mut net = Net::new(21);
    let alice = net.user("alice");
    let bob = net.user("bob");
    net.nodes[alice]
        .client
        .send_text(net.now, "bob", "one")
        .unwrap();
    net.run();
    // Bob's device "re-registers" (410) and the relay hands out its own identity's bundle.
    net.relay
        .users
        .get_mut("bob")
        .unwrap()
        .devices
        .get_mut(&1)
        .unwrap()
        .registration_id = 4242;
    let mut rng = ChaCha20Rng::seed_from_u64(10);
    let fake = IdentityKeyPair::generate(&mut rng);
    let bundle = relay_device(&fake, 1, &mut rng);
    let fake_pub = fake.public().to_bytes();
    let fake_pub2 = fake_pub.clone();
    net.tamper = Some(Box::new(move |_, call, answer| {
        if let RelayCall::FetchBundles { user_id, .. } = call {
            if user_id == "bob" {
                let mut b = bundle.clone();
                b.registration_id = 4242;
                *answer = Ok(RelayAnswer::Bundles(sotto_wire::PreKeyBundles {
                    user_id: "bob".into(),
                    identity_key: Base64(fake_pub.clone()),
                    devices: vec![b],
                }));
            }
        }
    }));
    let before = sends_to(&net, alice, "bob", 1);
    net.nodes[alice]
        .client
        .send_text(net.now, "bob", "two")
        .unwrap();
    net.run();
    assert!(net.nodes[alice].events.iter().any(|e| matches!(
        e,
        Event::IdentityChanged {
            needs_approval: true,
            ..
        }
    )));
    // One attempt went out on the real (pinned) session and got 410; nothing after it.
    assert_eq!(sends_to(&net, alice, "bob", 1), before + 1);
    assert_ne!(
        net.nodes[alice].client.pinned_identity("bob"),
        Some(fake_pub2)
    );
    assert_eq!(net.texts(bob), ["one"]);
}

#[test]
fn an_invented_own_device_gets_no_sync_copy() {
    let mut net = Net::new(22);
    let alice = net.user("alice");
    let _bob = net.user("bob");
    net.relay.add_device("alice", 5, 55);
    let mut rng = ChaCha20Rng::seed_from_u64(11);
    let fake = IdentityKeyPair::generate(&mut rng);
    let ghost = relay_device(&fake, 5, &mut rng);
    let fake_pub = fake.public().to_bytes();
    net.tamper = Some(Box::new(move |_, call, answer| {
        if let RelayCall::FetchBundles {
            user_id,
            device_id: Some(5),
        } = call
        {
            if user_id == "alice" {
                *answer = Ok(RelayAnswer::Bundles(sotto_wire::PreKeyBundles {
                    user_id: "alice".into(),
                    identity_key: Base64(fake_pub.clone()),
                    devices: vec![ghost.clone()],
                }));
            }
        }
    }));
    net.nodes[alice]
        .client
        .send_text(net.now, "bob", "hi")
        .unwrap();
    for _ in 0..8 {
        net.advance(2_000);
        net.run();
    }
    let syncs = net.nodes[alice]
        .sent
        .iter()
        .filter_map(|c| match c {
            RelayCall::SendMessage(r) => Some(r),
            _ => None,
        })
        .filter(|r| r.sync_messages.iter().any(|m| m.device_id == 5))
        .count();
    assert_eq!(syncs, 0);
}

#[test]
fn replayed_envelopes_are_dropped() {
    let mut net = Net::new(23);
    let alice = net.user("alice");
    let bob = net.user("bob");
    net.nodes[alice]
        .client
        .send_text(net.now, "bob", "pay 10")
        .unwrap();
    net.run();
    net.nodes[alice]
        .client
        .send_text(net.now, "bob", "pay 20")
        .unwrap();
    net.run();
    // The relay keeps every ciphertext it saw and replays them all, several times, later.
    let logged: Vec<_> = net
        .relay
        .log
        .iter()
        .filter(|(u, _, _)| u == "bob")
        .cloned()
        .collect();
    assert_eq!(logged.len(), 2);
    for round in 0..3 {
        for (i, (_, _, content)) in logged.iter().enumerate() {
            net.relay.enqueue(
                "bob",
                1,
                Envelope {
                    seq: 0,
                    kind: EnvelopeKind::Message,
                    source_user_id: "alice".into(),
                    source_device_id: 1,
                    server_message_id: format!("r{round}{i}"),
                    client_message_id: format!("r{round}{i}"),
                    server_timestamp: net.now,
                    content: Some(Base64(content.clone())),
                    group_id: None,
                },
            );
        }
        net.run();
    }
    // Also after a restart (dedup survives in the store).
    net.restart(bob);
    let (_, _, first) = logged[0].clone();
    net.relay.enqueue(
        "bob",
        1,
        Envelope {
            seq: 0,
            kind: EnvelopeKind::Message,
            source_user_id: "alice".into(),
            source_device_id: 1,
            server_message_id: "late".into(),
            client_message_id: "late".into(),
            server_timestamp: net.now,
            content: Some(Base64(first)),
            group_id: None,
        },
    );
    net.run();
    assert_eq!(net.texts(bob), ["pay 10", "pay 20"]);
    assert!(net.relay.mailbox("bob", 1).is_empty());
}

#[test]
fn forged_truncated_and_misattributed_envelopes_show_nothing() {
    let mut net = Net::new(24);
    let alice = net.user("alice");
    let bob = net.user("bob");
    let carol = net.user("carol");
    net.nodes[alice]
        .client
        .send_text(net.now, "bob", "real")
        .unwrap();
    net.run();
    let real = net
        .relay
        .log
        .iter()
        .find(|(u, _, _)| u == "bob")
        .unwrap()
        .2
        .clone();
    let mut rng = ChaCha20Rng::seed_from_u64(12);
    let mut forged: Vec<(String, u32, Vec<u8>)> = Vec::new();
    // Truncations and bit flips of a real ciphertext.
    for cut in [0, 1, 2, 10, real.len() / 2, real.len() - 1] {
        forged.push(("alice".into(), 1, real[..cut].to_vec()));
    }
    for _ in 0..30 {
        let mut c = real.clone();
        let i = (rng.next_u32() as usize) % c.len();
        c[i] ^= 1 << (rng.next_u32() % 8);
        forged.push(("alice".into(), 1, c));
    }
    // The real ciphertext claimed to be from someone else, or from another of Alice's devices.
    forged.push(("carol".into(), 1, real.clone()));
    forged.push(("alice".into(), 2, real.clone()));
    // Random bytes.
    for n in [3usize, 64, 2000] {
        let mut c = vec![0u8; n];
        rng.fill_bytes(&mut c);
        forged.push(("alice".into(), 1, c));
    }
    for (i, (user, device, content)) in forged.into_iter().enumerate() {
        net.relay.enqueue(
            "bob",
            1,
            Envelope {
                seq: 0,
                kind: EnvelopeKind::Message,
                source_user_id: user,
                source_device_id: device,
                server_message_id: format!("f{i}"),
                client_message_id: format!("f{i}"),
                server_timestamp: net.now,
                content: Some(Base64(content)),
                group_id: None,
            },
        );
    }
    // And envelopes with no content, or claiming to be from Bob's own device.
    net.relay.enqueue(
        "bob",
        1,
        Envelope {
            seq: 0,
            kind: EnvelopeKind::Message,
            source_user_id: "bob".into(),
            source_device_id: 1,
            server_message_id: "x".into(),
            client_message_id: "x".into(),
            server_timestamp: net.now,
            content: None,
            group_id: None,
        },
    );
    net.run();
    assert_eq!(net.texts(bob), ["real"], "only the real message is shown");
    assert!(
        net.relay.mailbox("bob", 1).is_empty(),
        "garbage is acked, not retried forever"
    );
    assert!(net.nodes[bob]
        .events
        .iter()
        .any(|e| matches!(e, Event::DecryptionFailed { .. })));
    // Bob and Alice still talk afterwards.
    net.nodes[alice]
        .client
        .send_text(net.now, "bob", "still here")
        .unwrap();
    net.nodes[bob]
        .client
        .send_text(net.now, "alice", "me too")
        .unwrap();
    net.run();
    assert_eq!(net.texts(bob), ["real", "still here"]);
    assert_eq!(net.texts(alice), ["me too"]);
    assert!(net.texts(carol).is_empty());
}

#[test]
fn garbage_answers_become_typed_failures() {
    let answers: Vec<Box<dyn Fn() -> Result<RelayAnswer, RelayFailure>>> = vec![
        Box::new(|| Err(RelayFailure::Malformed)),
        Box::new(|| Ok(RelayAnswer::NoContent)),
        Box::new(|| {
            Err(RelayFailure::Rejected {
                status: 409,
                code: "mismatched_devices".into(),
                body: serde_json::json!({"nonsense": true}),
                retry_after_secs: None,
            })
        }),
        Box::new(|| {
            Err(RelayFailure::Rejected {
                status: 410,
                code: "stale_devices".into(),
                body: serde_json::json!([1, 2, 3]),
                retry_after_secs: None,
            })
        }),
        Box::new(|| {
            Ok(RelayAnswer::Bundles(sotto_wire::PreKeyBundles {
                user_id: "mallory".into(),
                identity_key: Base64(vec![1, 2, 3]),
                devices: vec![],
            }))
        }),
        Box::new(|| {
            Err(RelayFailure::Rejected {
                status: 500,
                code: "".into(),
                body: serde_json::Value::Null,
                retry_after_secs: None,
            })
        }),
    ];
    for (k, make) in answers.into_iter().enumerate() {
        let mut net = Net::new(30 + k as u64);
        let alice = net.user("alice");
        let bob = net.user("bob");
        net.tamper = Some(Box::new(move |_, call, answer| {
            if matches!(
                call,
                RelayCall::SendMessage(_) | RelayCall::FetchBundles { .. }
            ) {
                *answer = make();
            }
        }));
        net.nodes[alice]
            .client
            .send_text(net.now, "bob", "hi")
            .unwrap();
        for _ in 0..8 {
            net.advance(2_000);
            net.run();
        }
        let failed = net.nodes[alice]
            .events
            .iter()
            .any(|e| matches!(e, Event::SendFailed { .. }));
        assert!(net.texts(bob).is_empty());
        // Honest again: the next message goes through.
        net.tamper = None;
        net.nodes[alice]
            .client
            .send_text(net.now, "bob", "again")
            .unwrap();
        net.advance(2_000);
        net.run();
        if k == 5 {
            // A relay fault (5xx) is retried with backoff, not given up: both arrive.
            assert!(!failed);
            assert_eq!(net.texts(bob), ["hi", "again"], "case {k}");
        } else {
            assert!(failed, "case {k}: a typed failure");
            assert_eq!(net.texts(bob), ["again"], "case {k}");
        }
    }
}

#[test]
fn bundles_with_a_bad_signature_or_wrong_user_are_refused() {
    let mut net = Net::new(25);
    let alice = net.user("alice");
    let bob = net.user("bob");
    net.tamper = Some(Box::new(|_, call, answer| {
        if let (RelayCall::FetchBundles { user_id, .. }, Ok(RelayAnswer::Bundles(b))) =
            (call, answer)
        {
            if user_id == "bob" {
                for d in &mut b.devices {
                    d.signed_pre_key.signature.0[0] ^= 1;
                }
            }
        }
    }));
    net.nodes[alice]
        .client
        .send_text(net.now, "bob", "hi")
        .unwrap();
    for _ in 0..6 {
        net.advance(2_000);
        net.run();
    }
    assert_eq!(sends_to(&net, alice, "bob", 1), 0);
    assert!(net.texts(bob).is_empty());
    assert!(net.nodes[alice]
        .events
        .iter()
        .any(|e| matches!(e, Event::UntrustedDevice { .. })));
}

#[test]
fn a_forged_delivery_receipt_is_only_a_receipt() {
    let mut net = Net::new(26);
    let alice = net.user("alice");
    net.relay.enqueue(
        "alice",
        1,
        Envelope {
            seq: 0,
            kind: EnvelopeKind::DeliveryReceipt,
            source_user_id: "bob".into(),
            source_device_id: 1,
            server_message_id: "s".into(),
            client_message_id: "x".repeat(500),
            server_timestamp: 0,
            content: Some(Base64(vec![0; 10])),
            group_id: None,
        },
    );
    net.run();
    assert!(!net.nodes[alice]
        .events
        .iter()
        .any(|e| matches!(e, Event::Delivered { .. } | Event::Message(_))));
}
