//! Groups: admin-announced rosters, Sender Keys, rotation, multi-device, hostile routing.

use std::collections::BTreeSet;

use sotto_client_core::{ConversationId, Event, GroupError, RelayCall, SendError, TypingError};

use crate::net::{Faults, Net};

const GROUP: &str = "7f1c2a9e-0000-4000-8000-000000000001";

fn route(net: &mut Net, members: &[&str]) {
    net.relay.groups.insert(
        GROUP.to_owned(),
        members
            .iter()
            .map(|m| (*m).to_owned())
            .collect::<BTreeSet<_>>(),
    );
}

fn group_texts(net: &Net, node: usize) -> Vec<String> {
    net.nodes[node]
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Message(m) if m.conversation == ConversationId::Group(GROUP.into()) => {
                m.text.clone()
            }
            _ => None,
        })
        .collect()
}

/// Alice (phone + laptop) creates a group with Bob and Carol.
fn setup(net: &mut Net) -> [usize; 4] {
    let alice = net.user("alice");
    let laptop = net.link("alice", alice);
    let bob = net.user("bob");
    let carol = net.user("carol");
    net.run();
    route(net, &["alice", "bob", "carol"]);
    let now = net.now;
    net.nodes[alice]
        .client
        .group_created(now, GROUP, &["bob".into(), "carol".into()], "Hiking")
        .unwrap();
    net.run();
    [alice, laptop, bob, carol]
}

#[test]
fn a_group_of_three_chats_and_every_device_holds_the_roster() {
    let mut net = Net::new(21);
    let [alice, laptop, bob, carol] = setup(&mut net);
    for n in [alice, laptop, bob, carol] {
        let g = net.nodes[n].client.group(GROUP).expect("group known");
        assert_eq!(g.name, "Hiking", "{}", net.nodes[n].name);
        assert!(g.active);
        let members: Vec<_> = g
            .members
            .iter()
            .map(|m| (m.user_id.as_str(), m.admin))
            .collect();
        assert_eq!(members, [("alice", true), ("bob", false), ("carol", false)]);
    }
    let now = net.now;
    net.nodes[alice]
        .client
        .send_group_text(now, GROUP, "trail at 9?")
        .unwrap();
    net.run();
    net.nodes[bob]
        .client
        .send_group_text(net.now, GROUP, "yes")
        .unwrap();
    net.run();
    net.nodes[carol]
        .client
        .send_group_text(net.now, GROUP, "count me in")
        .unwrap();
    net.run();
    assert_eq!(group_texts(&net, bob), ["trail at 9?", "count me in"]);
    assert_eq!(group_texts(&net, carol), ["trail at 9?", "yes"]);
    assert_eq!(group_texts(&net, alice), ["yes", "count me in"]);
    // The laptop sees its own account's message as outgoing, and the others.
    assert_eq!(
        group_texts(&net, laptop),
        ["trail at 9?", "yes", "count me in"]
    );
    let outgoing = net.nodes[laptop].events.iter().any(|e| {
        matches!(e, Event::Message(m) if m.outgoing && m.text.as_deref() == Some("trail at 9?"))
    });
    assert!(outgoing);
    // One ciphertext per group message, whatever the group's size.
    let group_sends = net.nodes[alice]
        .sent
        .iter()
        .filter(|c| matches!(c, RelayCall::SendGroup { .. }))
        .count();
    assert_eq!(group_sends, 1);
    // Conversations carry the group's name and unread counts.
    let conv = net.nodes[carol]
        .client
        .conversation(&ConversationId::Group(GROUP.into()))
        .unwrap();
    assert_eq!(conv.name.as_deref(), Some("Hiking"));
    assert_eq!(conv.unread_count, 2);
    // Carol reads: each sender gets an end-to-end read receipt naming the group.
    let now = net.now;
    net.nodes[carol]
        .client
        .mark_read(now, &ConversationId::Group(GROUP.into()));
    net.run();
    assert_eq!(
        net.nodes[carol]
            .client
            .conversation(&ConversationId::Group(GROUP.into()))
            .unwrap()
            .unread_count,
        0
    );
    for n in [alice, bob] {
        let read = net.nodes[n].events.iter().any(|e| {
            matches!(e, Event::Read { conversation, user_id, message_ids }
                if *conversation == ConversationId::Group(GROUP.into())
                    && user_id == "carol" && message_ids.len() == 1)
        });
        assert!(read, "{} got carol's read receipt", net.nodes[n].name);
    }
    // Nothing the relay stored holds a text or the name.
    for (_, _, ct) in &net.relay.log {
        for needle in ["trail at 9?", "count me in", "Hiking"] {
            assert!(!ct.windows(needle.len()).any(|w| w == needle.as_bytes()));
        }
    }
}

#[test]
fn a_removed_member_reads_nothing_after_even_if_the_relay_still_routes_to_them() {
    let mut net = Net::new(22);
    let [alice, _laptop, bob, carol] = setup(&mut net);
    net.nodes[alice]
        .client
        .send_group_text(net.now, GROUP, "before")
        .unwrap();
    net.run();
    assert_eq!(group_texts(&net, bob), ["before"]);
    let now = net.now;
    net.nodes[alice]
        .client
        .group_member_removed(now, GROUP, "carol")
        .unwrap();
    net.run();
    assert!(!net.nodes[carol].client.group(GROUP).unwrap().active);
    assert!(!net.nodes[bob]
        .client
        .group(GROUP)
        .unwrap()
        .members
        .iter()
        .any(|m| m.user_id == "carol"));
    // A relay that keeps carol on the route: the new chains never reach her.
    net.nodes[alice]
        .client
        .send_group_text(net.now, GROUP, "after, from alice")
        .unwrap();
    net.nodes[bob]
        .client
        .send_group_text(net.now, GROUP, "after, from bob")
        .unwrap();
    net.run();
    assert_eq!(group_texts(&net, carol), ["before"]);
    // She got the ciphertexts and could not open them: no key for the new chains.
    let refused = net.nodes[carol]
        .events
        .iter()
        .filter(|e| {
            matches!(e, Event::DecryptionFailed { reason, .. }
                if reason.contains("sender key") || reason.contains("chain"))
        })
        .count();
    assert_eq!(refused, 2);
    assert!(group_texts(&net, bob).contains(&"after, from alice".to_string()));
    assert!(group_texts(&net, alice).contains(&"after, from bob".to_string()));
    // And carol's own messages are no longer shown by the others.
    let _ = net.nodes[carol]
        .client
        .send_group_text(net.now, GROUP, "still here?");
    net.run();
    assert!(!group_texts(&net, bob).contains(&"still here?".to_string()));
}

#[test]
fn a_member_only_the_relay_lists_gets_no_key() {
    let mut net = Net::new(23);
    let [alice, _laptop, bob, _carol] = setup(&mut net);
    let mallory = net.user("mallory");
    net.run();
    // The relay adds mallory on its own; no admin announced her.
    route(&mut net, &["alice", "bob", "carol", "mallory"]);
    net.nodes[alice]
        .client
        .send_group_text(net.now, GROUP, "secret plan")
        .unwrap();
    net.nodes[bob]
        .client
        .send_group_text(net.now, GROUP, "agreed")
        .unwrap();
    net.run();
    assert!(group_texts(&net, mallory).is_empty());
    // The relay's own word about the add reaches Alice: her next send tells her app.
    let event = sotto_wire::GroupEvent {
        group_id: GROUP.into(),
        revision: 2,
        change: sotto_wire::GroupChange::MembersAdded,
        actor_user_id: "alice".into(),
        user_ids: vec!["mallory".into()],
        role: None,
    };
    net.relay.enqueue(
        "alice",
        1,
        sotto_wire::Envelope {
            seq: 0,
            kind: sotto_wire::EnvelopeKind::GroupEvent,
            source_user_id: String::new(),
            source_device_id: 0,
            server_message_id: "ev".into(),
            client_message_id: "ev".into(),
            server_timestamp: net.now,
            content: Some(sotto_wire::Base64(serde_json::to_vec(&event).unwrap())),
            group_id: Some(GROUP.into()),
        },
    );
    net.run();
    net.nodes[alice]
        .client
        .send_group_text(net.now, GROUP, "still secret")
        .unwrap();
    net.run();
    let warned: Vec<_> = net.nodes[alice]
        .events
        .iter()
        .filter(
            |e| matches!(e, Event::UnverifiedGroupMember { user_id, .. } if user_id == "mallory"),
        )
        .collect();
    assert_eq!(warned.len(), 1);
    assert!(group_texts(&net, mallory).is_empty());
    assert!(net.nodes[mallory].client.group(GROUP).is_none());
    // No 1:1 message at all went to her devices: only the fanned-out group ciphertexts.
    for n in [alice, bob] {
        for c in &net.nodes[n].sent {
            if let RelayCall::SendMessage(r) = c {
                assert_ne!(r.recipient_id, "mallory");
            }
        }
    }
}

#[test]
fn only_admins_change_the_group_and_bad_input_changes_nothing() {
    let mut net = Net::new(24);
    let [alice, _laptop, bob, carol] = setup(&mut net);
    let now = net.now;
    let c = &mut net.nodes[bob].client;
    assert_eq!(
        c.rename_group(now, GROUP, "Mine"),
        Err(GroupError::NotAdmin)
    );
    assert_eq!(
        c.group_members_added(now, GROUP, &["mallory".into()]),
        Err(GroupError::NotAdmin)
    );
    assert_eq!(
        c.group_member_removed(now, GROUP, "carol"),
        Err(GroupError::NotAdmin)
    );
    assert_eq!(
        c.send_group_text(now, "unknown", "hi"),
        Err(SendError::InvalidRecipient)
    );
    assert_eq!(
        c.send_group_text(now, GROUP, &"x".repeat(1001)),
        Err(SendError::InvalidText)
    );
    let a = &mut net.nodes[alice].client;
    assert_eq!(a.rename_group(now, GROUP, ""), Err(GroupError::InvalidName));
    assert_eq!(
        a.rename_group(now, GROUP, &"n".repeat(101)),
        Err(GroupError::InvalidName)
    );
    assert_eq!(
        a.group_members_added(now, GROUP, &["alice".into()]),
        Err(GroupError::InvalidMembers)
    );
    assert_eq!(
        a.group_created(now, "", &[], "x"),
        Err(GroupError::InvalidGroupId)
    );
    assert!(net.nodes[alice].client.take_writes().is_empty());
    // The admin renames and promotes bob; bob, now admin, renames too.
    net.nodes[alice]
        .client
        .rename_group(now, GROUP, "Hiking club")
        .unwrap();
    net.nodes[alice]
        .client
        .group_role_set(now, GROUP, "bob", true)
        .unwrap();
    net.run();
    assert_eq!(
        net.nodes[carol].client.group(GROUP).unwrap().name,
        "Hiking club"
    );
    net.nodes[bob]
        .client
        .rename_group(net.now, GROUP, "Mountain club")
        .unwrap();
    net.run();
    for n in [alice, carol] {
        assert_eq!(
            net.nodes[n].client.group(GROUP).unwrap().name,
            "Mountain club"
        );
    }
}

#[test]
fn leaving_rotates_and_history_survives_restarts_and_faults() {
    let mut net = Net::new(25);
    net.faults = Faults {
        drop: 0,
        duplicate: 200,
        reorder: false,
    };
    let [alice, laptop, bob, carol] = setup(&mut net);
    net.nodes[bob]
        .client
        .send_group_text(net.now, GROUP, "one")
        .unwrap();
    net.run();
    net.restart(carol);
    net.restart(laptop);
    net.nodes[bob]
        .client
        .send_group_text(net.now, GROUP, "two")
        .unwrap();
    net.run();
    assert_eq!(group_texts(&net, carol), ["one", "two"]);
    assert_eq!(group_texts(&net, laptop), ["one", "two"]);
    // Carol leaves; the relay stops routing to her; bob's next chain is not hers.
    let now = net.now;
    net.nodes[carol].client.group_left(now, GROUP).unwrap();
    route(&mut net, &["alice", "bob"]);
    net.run();
    assert!(!net.nodes[carol].client.group(GROUP).unwrap().active);
    assert!(!net.nodes[alice]
        .client
        .group(GROUP)
        .unwrap()
        .members
        .iter()
        .any(|m| m.user_id == "carol"));
    // Even routed to her again, bob's post-leave messages stay closed to her.
    route(&mut net, &["alice", "bob", "carol"]);
    net.nodes[bob]
        .client
        .send_group_text(net.now, GROUP, "three")
        .unwrap();
    net.run();
    assert_eq!(group_texts(&net, carol), ["one", "two"]);
    assert_eq!(group_texts(&net, alice), ["one", "two", "three"]);
}

#[test]
fn a_device_linked_later_gets_the_roster_and_the_keys_once_its_devices_are_known() {
    let mut net = Net::new(26);
    let [alice, _laptop, bob, _carol] = setup(&mut net);
    net.nodes[alice]
        .client
        .send_group_text(net.now, GROUP, "before the tablet")
        .unwrap();
    net.run();
    let tablet = net.link("bob", bob);
    net.run();
    assert!(net.nodes[tablet].client.group(GROUP).is_none());
    // Bob's phone learns of the tablet on its next send (the relay's 409) and hands it the
    // roster; Alice learns of it when she writes to Bob.
    net.nodes[bob]
        .client
        .send_text(net.now, "alice", "got a tablet")
        .unwrap();
    net.run();
    net.nodes[alice]
        .client
        .send_text(net.now, "bob", "nice")
        .unwrap();
    net.run();
    let g = net.nodes[tablet]
        .client
        .group(GROUP)
        .expect("roster on the tablet");
    assert_eq!(g.name, "Hiking");
    assert!(g.active);
    // Alice's next group message re-hands her chain to Bob's devices, the tablet included.
    net.nodes[alice]
        .client
        .send_group_text(net.now, GROUP, "welcome, tablet")
        .unwrap();
    net.run();
    assert_eq!(group_texts(&net, tablet), ["welcome, tablet"]);
    assert_eq!(
        group_texts(&net, bob),
        ["before the tablet", "welcome, tablet"]
    );
    // And the tablet writes to the group: everyone reads it.
    net.nodes[tablet]
        .client
        .send_group_text(net.now, GROUP, "hello from the tablet")
        .unwrap();
    net.run();
    assert!(group_texts(&net, alice).contains(&"hello from the tablet".to_string()));
    assert!(group_texts(&net, bob).contains(&"hello from the tablet".to_string()));
}

#[test]
fn typing_in_a_group_reaches_the_members_and_stops_by_itself() {
    let mut net = Net::new(27);
    let [alice, laptop, bob, carol] = setup(&mut net);
    let now = net.now;
    // No chain handed out yet: nothing to encrypt typing with.
    assert_eq!(
        net.nodes[bob].client.set_group_typing(now, GROUP, true),
        Err(TypingError::NoSession)
    );
    assert_eq!(
        net.nodes[bob].client.set_group_typing(now, "unknown", true),
        Err(TypingError::NoSession)
    );
    net.nodes[bob]
        .client
        .send_group_text(now, GROUP, "hi all")
        .unwrap();
    net.run();
    net.nodes[bob]
        .client
        .set_group_typing(net.now, GROUP, true)
        .unwrap();
    net.run();
    let group = ConversationId::Group(GROUP.into());
    for n in [alice, laptop, carol] {
        let typing = net.nodes[n].events.iter().any(|e| {
            matches!(e, Event::Typing { conversation, user_id, typing: true }
                if *conversation == group && user_id == "bob")
        });
        assert!(typing, "{} sees bob typing", net.nodes[n].name);
    }
    // Nothing of it was stored by the relay.
    assert!(net.relay.mailbox("carol", 1).is_empty());
    // It stops by itself after 5 s.
    net.advance(5_001);
    net.run();
    let stopped = net.nodes[carol].events.iter().any(|e| {
        matches!(e, Event::Typing { conversation, user_id, typing: false }
            if *conversation == group && user_id == "bob")
    });
    assert!(stopped);
}

#[test]
fn a_hostile_relay_cannot_forge_replay_or_misattribute_group_messages() {
    let mut net = Net::new(28);
    let [alice, _laptop, bob, carol] = setup(&mut net);
    net.nodes[alice]
        .client
        .send_group_text(net.now, GROUP, "genuine")
        .unwrap();
    net.run();
    assert_eq!(group_texts(&net, bob), ["genuine"]);
    // The ciphertext the relay fanned out to bob.
    let (_, _, ct) = net
        .relay
        .log
        .iter()
        .rev()
        .find(|(u, _, _)| u == "bob")
        .cloned()
        .unwrap();
    let envelope =
        |source: &str, device: u32, group: Option<&str>, content: Vec<u8>| sotto_wire::Envelope {
            seq: 0,
            kind: sotto_wire::EnvelopeKind::GroupMessage,
            source_user_id: source.into(),
            source_device_id: device,
            server_message_id: "x".into(),
            client_message_id: "x".into(),
            server_timestamp: 1,
            content: Some(sotto_wire::Base64(content)),
            group_id: group.map(Into::into),
        };
    let mut flipped = ct.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 1;
    let hostile = vec![
        envelope("alice", 1, Some(GROUP), ct.clone()), // replay
        envelope("carol", 1, Some(GROUP), ct.clone()), // claimed from another member
        envelope("alice", 2, Some(GROUP), ct.clone()), // from another device of the sender
        envelope("alice", 1, Some("other-group"), ct.clone()), // another group
        envelope("alice", 1, None, ct.clone()),
        envelope("alice", 1, Some(GROUP), flipped),
        envelope("alice", 1, Some(GROUP), ct[..ct.len() / 2].to_vec()),
        envelope("alice", 1, Some(GROUP), vec![0xff; 200]),
        envelope("alice", 1, Some(GROUP), Vec::new()),
        envelope("", 0, Some(GROUP), ct.clone()),
    ];
    for env in hostile {
        net.relay.enqueue("bob", 1, env);
    }
    // Garbage relay group events change nothing either.
    for content in [
        b"{}".to_vec(),
        b"not json".to_vec(),
        br#"{"groupId":"","revision":1,"change":"memberRemoved","actorUserId":"x","userIds":[]}"#
            .to_vec(),
    ] {
        let mut env = envelope("", 0, Some(GROUP), content);
        env.kind = sotto_wire::EnvelopeKind::GroupEvent;
        net.relay.enqueue("carol", 1, env);
    }
    net.run();
    assert_eq!(group_texts(&net, bob), ["genuine"]);
    let g = net.nodes[carol].client.group(GROUP).unwrap();
    assert_eq!(g.members.len(), 3);
    assert!(
        net.relay.mailbox("bob", 1).is_empty(),
        "every envelope acked"
    );
    // Still working afterwards.
    net.nodes[alice]
        .client
        .send_group_text(net.now, GROUP, "still fine")
        .unwrap();
    net.run();
    assert_eq!(group_texts(&net, bob), ["genuine", "still fine"]);
    assert_eq!(group_texts(&net, carol), ["genuine", "still fine"]);
}

#[test]
fn a_stranger_cannot_make_a_device_keep_unbounded_groups() {
    let mut net = Net::new(29);
    let alice = net.user("alice");
    let bob = net.user("bob");
    net.run();
    let n = sotto_client_core::MAX_GROUPS + 3;
    for i in 0..n {
        let id = format!("g-{i}");
        route(&mut net, &["alice", "bob"]);
        let now = net.now;
        net.nodes[bob]
            .client
            .group_created(now, &id, &["alice".into()], "spam")
            .unwrap();
    }
    net.run();
    assert_eq!(net.nodes[bob].client.groups().len(), n);
    assert_eq!(
        net.nodes[alice].client.groups().len(),
        sotto_client_core::MAX_GROUPS
    );
    let refused = net.nodes[alice]
        .events
        .iter()
        .filter(
            |e| matches!(e, Event::DecryptionFailed { reason, .. } if reason == "too many groups"),
        )
        .count();
    assert_eq!(refused, 3);
}

fn one_to_one_sends_to(net: &Net, node: usize, peer: &str) -> usize {
    net.nodes[node]
        .sent
        .iter()
        .filter(|c| matches!(c, RelayCall::SendMessage(r) if r.recipient_id == peer))
        .count()
}

#[test]
fn a_device_linked_later_asks_for_what_it_lacks_and_reads_the_next_message() {
    let mut net = Net::new(27);
    let [alice, _laptop, bob, carol] = setup(&mut net);
    net.nodes[carol]
        .client
        .send_group_text(net.now, GROUP, "before the tablet")
        .unwrap();
    net.run();
    let tablet = net.link("bob", bob);
    net.run();
    // Nobody wrote to Bob since: his phone has handed the tablet nothing yet.
    assert!(net.nodes[tablet].client.group(GROUP).is_none());

    // Carol writes. The tablet cannot open it: it asks Carol for her chain and Bob's own
    // devices for the group's state.
    net.nodes[carol]
        .client
        .send_group_text(net.now, GROUP, "the tablet misses this one")
        .unwrap();
    net.run();
    assert!(group_texts(&net, tablet).is_empty());
    assert!(net.nodes[tablet].events.iter().any(|e| matches!(
        e,
        Event::DecryptionFailed { user_id, .. } if user_id == "carol"
    )));
    let g = net.nodes[tablet]
        .client
        .group(GROUP)
        .expect("the phone answered with the state");
    assert_eq!(g.name, "Hiking");

    // Within that round trip the tablet holds Carol's chain: her next message opens there.
    net.nodes[carol]
        .client
        .send_group_text(net.now, GROUP, "welcome, tablet")
        .unwrap();
    net.run();
    assert_eq!(group_texts(&net, tablet), ["welcome, tablet"]);
    // Alice's messages reach the tablet too.
    net.nodes[alice]
        .client
        .send_group_text(net.now, GROUP, "alice, first after the tablet")
        .unwrap();
    net.run();
    net.nodes[alice]
        .client
        .send_group_text(net.now, GROUP, "alice's second")
        .unwrap();
    net.run();
    // (Alice may already have learned of the tablet by then and handed it her chain first.)
    let texts = group_texts(&net, tablet);
    assert_eq!(texts.first().map(String::as_str), Some("welcome, tablet"));
    assert_eq!(texts.last().map(String::as_str), Some("alice's second"));
    // Bob's phone read everything all along.
    assert!(group_texts(&net, bob).contains(&"the tablet misses this one".to_string()));
}

#[test]
fn a_non_member_asking_for_a_chain_gets_nothing_and_requests_stay_bounded() {
    let mut net = Net::new(28);
    let [_alice, _laptop, bob, carol] = setup(&mut net);
    let dave = net.user("dave");
    net.run();
    // A hostile relay routes the group to Dave: he cannot open it and asks Carol.
    route(&mut net, &["alice", "bob", "carol", "dave"]);
    net.nodes[carol]
        .client
        .send_group_text(net.now, GROUP, "not for dave")
        .unwrap();
    net.run();
    // Carol refused: no sender key (nor anything else) went to Dave.
    assert_eq!(one_to_one_sends_to(&net, carol, "dave"), 0);
    assert!(net.nodes[carol].events.iter().any(|e| matches!(
        e,
        Event::DecryptionFailed { user_id, reason, .. }
            if user_id == "dave" && reason.contains("non-member")
    )));
    net.nodes[carol]
        .client
        .send_group_text(net.now, GROUP, "still not for dave")
        .unwrap();
    net.run();
    assert!(group_texts(&net, dave).is_empty());

    // A flood of group ciphertexts from devices Carol does not have: Bob asks a bounded
    // number of times, and once per sender device per minute.
    net.set_online(bob, false);
    net.nodes[carol]
        .client
        .send_group_text(net.now, GROUP, "copied by the relay")
        .unwrap();
    net.run();
    let original = net
        .relay
        .mailbox("bob", 1)
        .into_iter()
        .find(|e| e.group_id.as_deref() == Some(GROUP))
        .expect("queued for bob");
    net.set_online(bob, true);
    net.run();
    let before = one_to_one_sends_to(&net, bob, "carol");
    for device in 2..500u32 {
        for _ in 0..3 {
            let mut forged = original.clone();
            forged.source_device_id = device;
            forged.seq = 1_000_000 + u64::from(device);
            let now = net.now;
            net.nodes[bob].client.handle_envelope(now, forged);
        }
    }
    net.run();
    let asked = one_to_one_sends_to(&net, bob, "carol") - before;
    assert!((1..=32).contains(&asked), "{asked} requests");
    assert_eq!(
        group_texts(&net, bob)
            .iter()
            .filter(|t| *t == "copied by the relay")
            .count(),
        1
    );
}

fn avatar(size: u64, content_type: &str) -> sotto_client_core::AttachmentPointer {
    sotto_client_core::AttachmentPointer {
        attachment_id: "a1b2c3".into(),
        key: "11".repeat(32),
        digest: "22".repeat(32),
        size,
        file_name: "avatar.png".into(),
        content_type: content_type.into(),
    }
}

#[test]
fn description_and_avatar_travel_end_to_end_from_admins_only() {
    let mut net = Net::new(29);
    let [alice, laptop, bob, carol] = setup(&mut net);
    let now = net.now;
    // Bad input and non-admins: typed errors, nothing written.
    let a = &mut net.nodes[alice].client;
    assert_eq!(
        a.set_group_description(now, GROUP, &"d".repeat(501)),
        Err(GroupError::InvalidDescription)
    );
    assert_eq!(
        a.set_group_avatar(now, GROUP, Some(avatar(6 << 20, "image/png"))),
        Err(GroupError::InvalidAvatar)
    );
    assert_eq!(
        a.set_group_avatar(now, GROUP, Some(avatar(1000, "text/html"))),
        Err(GroupError::InvalidAvatar)
    );
    assert!(net.nodes[alice].client.take_writes().is_empty());
    let b = &mut net.nodes[bob].client;
    assert_eq!(
        b.set_group_description(now, GROUP, "bob's"),
        Err(GroupError::NotAdmin)
    );
    assert_eq!(
        b.set_group_avatar(now, GROUP, Some(avatar(1000, "image/png"))),
        Err(GroupError::NotAdmin)
    );
    assert!(net.nodes[bob].client.take_writes().is_empty());

    // The admin sets both: every device holds them; the relay saw neither.
    let a = &mut net.nodes[alice].client;
    a.set_group_description(now, GROUP, "Sundays, 9 am, by the lake")
        .unwrap();
    a.set_group_avatar(now, GROUP, Some(avatar(48_000, "image/png")))
        .unwrap();
    net.run();
    for n in [alice, laptop, bob, carol] {
        let g = net.nodes[n].client.group(GROUP).unwrap();
        assert_eq!(
            g.description, "Sundays, 9 am, by the lake",
            "{}",
            net.nodes[n].name
        );
        assert_eq!(g.avatar, Some(avatar(48_000, "image/png")));
    }
    let log: Vec<u8> = net
        .relay
        .log
        .iter()
        .flat_map(|(_, _, b)| b.clone())
        .collect();
    assert!(!log.windows(10).any(|w| w == b"by the lake"[..10].as_ref()));
    // They survive a restart from the store.
    net.restart(carol);
    let g = net.nodes[carol].client.group(GROUP).unwrap();
    assert_eq!(g.description, "Sundays, 9 am, by the lake");
    assert!(g.avatar.is_some());
    // Cleared, for everyone.
    let now = net.now;
    net.nodes[alice]
        .client
        .set_group_avatar(now, GROUP, None)
        .unwrap();
    net.run();
    assert_eq!(net.nodes[bob].client.group(GROUP).unwrap().avatar, None);
}
