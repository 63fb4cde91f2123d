//! 1:1 messaging, multi-device fan-out, receipts, conversations, history, restarts.

use sotto_client_core::store::tables;
use sotto_client_core::{
    ConversationId, Event, IdentityPolicy, MessageStatus, RelayCall, SendFailure,
};

use crate::net::{Faults, Net};

fn direct(u: &str) -> ConversationId {
    ConversationId::Direct(u.to_owned())
}

#[test]
fn one_to_one_both_ways_with_fan_out_to_every_device() {
    let mut net = Net::new(1);
    let alice = net.user("alice");
    let laptop = net.link("alice", alice);
    let bob = net.user("bob");
    let bob2 = net.link("bob", bob);
    let bob3 = net.link("bob", bob);

    net.nodes[alice]
        .client
        .send_text(net.now, "bob", "hi Bob")
        .unwrap();
    net.run();
    for b in [bob, bob2, bob3] {
        assert_eq!(net.texts(b), ["hi Bob"], "{}", net.nodes[b].name);
    }
    // Alice's laptop sees what her phone sent, as an outgoing message.
    let synced: Vec<_> = net.nodes[laptop]
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Message(m) => Some(m.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(synced.len(), 1);
    assert!(synced[0].outgoing);
    assert_eq!(synced[0].conversation, direct("bob"));
    // The phone learned of the laptop (signed by the account identity) on this first send.
    let linked: Vec<u32> = net.nodes[alice]
        .events
        .iter()
        .filter_map(|e| match e {
            Event::DeviceLinked { device_id } => Some(*device_id),
            _ => None,
        })
        .collect();
    assert_eq!(linked, [net.nodes[laptop].client.device_id()]);

    // Bob answers from his second device; every device of both sides has it.
    net.nodes[bob2]
        .client
        .send_text(net.now, "alice", "hi Alice")
        .unwrap();
    net.run();
    assert_eq!(net.texts(alice), ["hi Alice"]);
    assert_eq!(net.texts(laptop), ["hi Bob", "hi Alice"]);
    assert_eq!(net.texts(bob), ["hi Bob", "hi Alice"]);

    // Exactly one ciphertext per device each time: 3 for Bob + 1 sync for Alice's laptop.
    let sends: Vec<_> = net.nodes[alice]
        .sent
        .iter()
        .filter_map(|c| match c {
            RelayCall::SendMessage(r) => Some(r.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(sends.len(), 1);
    assert_eq!(sends[0].messages.len(), 3);
    assert_eq!(sends[0].sync_messages.len(), 1);
    assert_eq!(sends[0].sync_messages[0].device_id, 2);
}

#[test]
fn receipts_unread_and_read_state_sync() {
    let mut net = Net::new(2);
    let alice = net.user("alice");
    let bob = net.user("bob");
    let bob2 = net.link("bob", bob);
    for t in ["one", "two", "three"] {
        net.nodes[alice]
            .client
            .send_text(net.now, "bob", t)
            .unwrap();
    }
    net.run();
    let conv = net.nodes[bob]
        .client
        .conversation(&direct("alice"))
        .unwrap();
    assert_eq!(conv.unread_count, 3);
    assert_eq!(conv.last_message.unwrap().text, "three");
    assert_eq!(
        net.nodes[bob2]
            .client
            .conversation(&direct("alice"))
            .unwrap()
            .unread_count,
        3
    );
    // Delivered: one relay receipt per message per Bob device.
    let delivered = net.nodes[alice]
        .events
        .iter()
        .filter(|e| matches!(e, Event::Delivered { .. }))
        .count();
    assert_eq!(delivered, 6);
    let sent = net.nodes[alice]
        .events
        .iter()
        .filter(|e| matches!(e, Event::MessageSent { .. }))
        .count();
    assert_eq!(sent, 3);

    // Bob reads on his phone: his tablet's count clears too, Alice gets an encrypted read receipt.
    net.nodes[bob].client.mark_read(net.now, &direct("alice"));
    net.run();
    assert_eq!(
        net.nodes[bob]
            .client
            .conversation(&direct("alice"))
            .unwrap()
            .unread_count,
        0
    );
    assert_eq!(
        net.nodes[bob2]
            .client
            .conversation(&direct("alice"))
            .unwrap()
            .unread_count,
        0
    );
    let read: Vec<_> = net.nodes[alice]
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Read {
                message_ids,
                user_id,
                ..
            } => Some((user_id.clone(), message_ids.len())),
            _ => None,
        })
        .collect();
    assert_eq!(read, [("bob".to_owned(), 3)]);
    // History on Alice's side: all three read, newest first.
    let page = net.nodes[alice]
        .store
        .history(&direct("bob").key(), None, 10);
    assert_eq!(page.len(), 3);
    assert_eq!(page[0].text.as_deref(), Some("three"));
    let receipts: Vec<_> = net.nodes[alice]
        .store
        .rows
        .iter()
        .filter(|((t, p, _), _)| t == tables::RECEIPTS && *p == page[0].id.as_bytes())
        .map(|(_, v)| sotto_client_core::store::decode_receipt(v).unwrap())
        .collect();
    let mut m = page[0].clone();
    sotto_client_core::store::apply_receipts(&mut m, &receipts);
    assert_eq!(m.status, MessageStatus::Read);
    // Receipts are not history.
    assert_eq!(
        net.nodes[bob]
            .store
            .history(&direct("alice").key(), None, 10)
            .len(),
        3
    );
}

#[test]
fn drops_duplicates_and_reordering_show_each_message_once() {
    let mut net = Net::new(3);
    let alice = net.user("alice");
    let bob = net.user("bob");
    net.faults = Faults {
        drop: 200,
        duplicate: 300,
        reorder: true,
    };
    let mut expected = Vec::new();
    for i in 0..40 {
        let t = format!("m{i}");
        net.nodes[alice]
            .client
            .send_text(net.now + i, "bob", &t)
            .unwrap();
        expected.push(t);
        if i % 7 == 0 {
            net.run();
            net.reconnect(bob);
        }
    }
    for _ in 0..20 {
        net.run();
        net.reconnect(bob);
    }
    net.faults = Faults::default();
    net.run();
    let mut got = net.texts(bob);
    got.sort();
    let mut want = expected.clone();
    want.sort();
    assert_eq!(got, want, "every message exactly once");
    // History is ordered by the sender's clock whatever the arrival order.
    let page = net.nodes[bob]
        .store
        .history(&direct("alice").key(), None, 100);
    let texts: Vec<_> = page.iter().rev().map(|m| m.text.clone().unwrap()).collect();
    assert_eq!(texts, expected);
    assert!(net.relay.mailbox("bob", 1).is_empty());
}

#[test]
fn history_pages_with_a_cursor() {
    let mut net = Net::new(4);
    let alice = net.user("alice");
    let bob = net.user("bob");
    for i in 0..250u64 {
        net.nodes[alice]
            .client
            .send_text(net.now + i, "bob", &format!("n{i}"))
            .unwrap();
    }
    net.run();
    let store = &net.nodes[bob].store;
    let mut cursor = None;
    let mut all = Vec::new();
    loop {
        let page = store.history(&direct("alice").key(), cursor, 100);
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 100);
        cursor = page.last().map(|m| m.sort);
        all.extend(page);
    }
    assert_eq!(all.len(), 250);
    assert_eq!(all[0].text.as_deref(), Some("n249"));
    assert_eq!(all[249].text.as_deref(), Some("n0"));
    assert_eq!(
        net.nodes[bob]
            .client
            .conversation(&direct("alice"))
            .unwrap()
            .unread_count,
        250
    );
}

#[test]
fn restart_from_the_store_keeps_sessions_and_dedup() {
    let mut net = Net::new(5);
    let alice = net.user("alice");
    let bob = net.user("bob");
    net.nodes[alice]
        .client
        .send_text(net.now, "bob", "before")
        .unwrap();
    net.run();
    // Bob processes the next message but "crashes" before acking: the relay sends it again.
    net.nodes[alice]
        .client
        .send_text(net.now, "bob", "during")
        .unwrap();
    net.set_online(bob, false);
    net.run();
    let pending = net.relay.mailbox("bob", 1);
    assert_eq!(pending.len(), 1);
    let now = net.now;
    net.nodes[bob]
        .client
        .handle_envelope(now, pending[0].clone());
    let writes = net.nodes[bob].client.take_writes();
    net.nodes[bob].store.apply(writes);
    let _ = net.nodes[bob].client.take_acks(); // lost with the crash
    net.restart(bob);
    net.restart(alice);
    net.set_online(bob, true);
    net.run();
    assert_eq!(net.relay.mailbox("bob", 1).len(), 0);
    net.nodes[alice]
        .client
        .send_text(net.now, "bob", "after")
        .unwrap();
    net.run();
    net.advance(10);
    net.nodes[bob]
        .client
        .send_text(net.now, "alice", "reply")
        .unwrap();
    net.run();
    let history = net.nodes[bob]
        .store
        .history(&direct("alice").key(), None, 10);
    let texts: Vec<_> = history
        .iter()
        .rev()
        .map(|m| m.text.clone().unwrap())
        .collect();
    assert_eq!(texts, ["before", "during", "after", "reply"]);
    assert_eq!(net.texts(alice), ["reply"]);
}

#[test]
fn outbox_survives_a_restart_and_is_not_sent_twice() {
    let mut net = Net::new(6);
    let alice = net.user("alice");
    let bob = net.user("bob");
    net.nodes[alice]
        .client
        .send_text(net.now, "bob", "warm-up")
        .unwrap();
    net.run();
    // Queued but never sent: the requests are lost with the process.
    net.nodes[alice]
        .client
        .send_text(net.now, "bob", "queued")
        .unwrap();
    let writes = net.nodes[alice].client.take_writes();
    net.nodes[alice].store.apply(writes);
    while net.nodes[alice].client.poll_request().is_some() {}
    net.restart(alice);
    net.advance(2_000);
    net.run();
    assert_eq!(net.texts(bob), ["warm-up", "queued"]);
}

#[test]
fn new_and_removed_devices_are_picked_up_from_409_and_410() {
    let mut net = Net::new(7);
    let alice = net.user("alice");
    let bob = net.user("bob");
    net.nodes[alice]
        .client
        .send_text(net.now, "bob", "first")
        .unwrap();
    net.run();
    // Bob links a tablet; Alice's next send gets 409 missing, fetches it, retries.
    let tablet = net.link("bob", bob);
    net.nodes[alice]
        .client
        .send_text(net.now, "bob", "second")
        .unwrap();
    net.run();
    assert_eq!(net.texts(tablet), ["second"]);
    assert_eq!(net.texts(bob), ["first", "second"]);
    // The tablet goes away: 409 extra, dropped.
    net.relay.remove_device("bob", 2);
    net.nodes[alice]
        .client
        .send_text(net.now, "bob", "third")
        .unwrap();
    net.run();
    assert_eq!(net.texts(bob), ["first", "second", "third"]);
    assert_eq!(net.nodes[alice].client.contact_devices("bob"), [1]);
    // Bob reinstalls: new registration id (410) and a new identity (approval needed).
    net.reinstall(bob);
    net.nodes[alice]
        .client
        .send_text(net.now, "bob", "fourth")
        .unwrap();
    net.run();
    assert!(net.nodes[alice].events.iter().any(|e| matches!(
        e,
        Event::IdentityChanged { user_id, needs_approval: true, .. } if user_id == "bob"
    )));
    assert!(
        net.texts(bob).is_empty(),
        "nothing goes to the new identity before approval"
    );
    net.take_events(alice);
    net.nodes[alice]
        .client
        .approve_identity(net.now, "bob")
        .unwrap();
    net.run();
    assert_eq!(net.texts(bob), ["fourth"]);
}

#[test]
fn identity_change_can_be_accepted_automatically() {
    let mut net = Net::new(8);
    net.config.identity_policy = IdentityPolicy::AcceptAndNotify;
    let alice = net.user("alice");
    let bob = net.user("bob");
    net.nodes[alice]
        .client
        .send_text(net.now, "bob", "one")
        .unwrap();
    net.run();
    net.nodes[alice]
        .client
        .set_verified(net.now, "bob", true)
        .unwrap();
    net.reinstall(bob);
    // Bob writes first from his new install: Alice is told, and reads it.
    net.nodes[bob]
        .client
        .send_text(net.now, "alice", "new phone")
        .unwrap();
    net.run();
    assert!(net.nodes[alice].events.iter().any(|e| matches!(
        e,
        Event::IdentityChanged {
            was_verified: true,
            needs_approval: false,
            ..
        }
    )));
    assert_eq!(net.texts(alice), ["new phone"]);
    assert!(
        !net.nodes[alice]
            .client
            .safety_number("bob")
            .unwrap()
            .verified
    );
}

#[test]
fn incoming_from_a_changed_identity_waits_for_approval() {
    let mut net = Net::new(9);
    let alice = net.user("alice");
    let bob = net.user("bob");
    net.nodes[alice]
        .client
        .send_text(net.now, "bob", "one")
        .unwrap();
    net.run();
    net.reinstall(bob);
    net.nodes[bob]
        .client
        .send_text(net.now, "alice", "it's me")
        .unwrap();
    net.run();
    assert!(net.texts(alice).is_empty());
    assert!(
        net.relay.mailbox("alice", 1).is_empty(),
        "held locally, acked"
    );
    net.restart(alice);
    net.nodes[alice]
        .client
        .approve_identity(net.now, "bob")
        .unwrap();
    net.run();
    assert_eq!(net.texts(alice), ["it's me"]);
}

#[test]
fn safety_numbers_match_on_both_sides() {
    let mut net = Net::new(10);
    let alice = net.user("alice");
    let bob = net.user("bob");
    net.nodes[alice]
        .client
        .send_text(net.now, "bob", "hello")
        .unwrap();
    net.run();
    let a = net.nodes[alice].client.safety_number("bob").unwrap();
    let b = net.nodes[bob].client.safety_number("alice").unwrap();
    assert_eq!(a.display, b.display);
    assert_eq!(a.display.chars().filter(|c| c.is_ascii_digit()).count(), 60);
    assert!(net.nodes[alice].client.safety_number("carol").is_err());
}

#[test]
fn typing_is_delivered_live_and_stops_by_itself() {
    let mut net = Net::new(11);
    let alice = net.user("alice");
    let bob = net.user("bob");
    net.nodes[alice]
        .client
        .send_text(net.now, "bob", "hello")
        .unwrap();
    net.run();
    net.nodes[bob]
        .client
        .send_text(net.now, "alice", "hi")
        .unwrap();
    net.run();
    net.take_events(bob);
    net.nodes[alice]
        .client
        .set_typing(net.now, "bob", true)
        .unwrap();
    net.run();
    let typing: Vec<_> = net
        .take_events(bob)
        .into_iter()
        .filter(|e| matches!(e, Event::Typing { .. }))
        .collect();
    assert_eq!(typing.len(), 1);
    net.advance(5_001);
    net.run();
    assert!(net
        .take_events(bob)
        .iter()
        .any(|e| matches!(e, Event::Typing { typing: false, .. })));
    assert!(
        net.relay.mailbox("bob", 1).is_empty(),
        "typing is never queued"
    );
}

#[test]
fn one_time_prekeys_are_replenished_when_low() {
    let mut net = Net::new(12);
    let bob = net.user("bob");
    let before = net.relay.users["bob"].devices[&1].one_time.len();
    assert_eq!(before, 100);
    for i in 0..85 {
        let s = net.user(&format!("s{i}"));
        net.nodes[s].client.send_text(net.now, "bob", "hi").unwrap();
        net.run();
    }
    assert_eq!(net.texts(bob).len(), 85);
    let left = net.relay.users["bob"].devices[&1].one_time.len();
    assert!(left >= 20, "replenished, {left} left");
    assert!(
        net.nodes[bob]
            .sent
            .iter()
            .filter(|c| matches!(c, RelayCall::UploadKeys(_)))
            .count()
            >= 2
    );
}

#[test]
fn invalid_sends_are_refused() {
    let mut net = Net::new(13);
    let alice = net.user("alice");
    let c = &mut net.nodes[alice].client;
    assert!(c.send_text(0, "bob", "").is_err());
    assert!(c.send_text(0, "bob", &"x".repeat(1001)).is_err());
    assert!(c.send_text(0, "bob", &"é".repeat(1000)).is_ok());
    assert!(c.send_text(0, "alice", "me").is_err());
    assert!(c.send_text(0, "", "x").is_err());
    net.run();
    // Unknown user: a typed failure.
    assert!(net.nodes[alice].events.iter().any(|e| matches!(
        e,
        Event::SendFailed {
            reason: SendFailure::NoVerifiedDevices | SendFailure::UnknownUser,
            ..
        }
    )));
}

#[test]
fn sessions_never_answered_expire_after_30_days() {
    let mut net = Net::new(14);
    let alice = net.user("alice");
    let bob = net.user("bob");
    net.set_online(bob, false);
    net.nodes[alice]
        .client
        .send_text(net.now, "bob", "one")
        .unwrap();
    net.run();
    let fetches = |net: &Net| {
        net.nodes[alice]
            .sent
            .iter()
            .filter(|c| matches!(c, RelayCall::FetchBundles { user_id, .. } if user_id == "bob"))
            .count()
    };
    assert_eq!(fetches(&net), 1);
    net.advance(31 * 24 * 3600 * 1000);
    net.nodes[alice]
        .client
        .send_text(net.now, "bob", "two")
        .unwrap();
    net.run();
    assert_eq!(
        fetches(&net),
        2,
        "a fresh bundle for the expired pending session"
    );
    net.set_online(bob, true);
    net.run();
    assert_eq!(net.texts(bob), ["one", "two"]);
}

use proptest::strategy::Strategy as _;

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 12, ..Default::default() })]
    /// Any delivery order, with any duplicates, shows every message exactly once.
    #[test]
    fn any_delivery_order_shows_each_message_once(
        order in proptest::sample::subsequence((0..10usize).collect::<Vec<_>>(), 10).prop_shuffle(),
        dups in proptest::collection::vec(0..10usize, 0..6),
    ) {
        let mut net = Net::new(99);
        let alice = net.user("alice");
        let bob = net.user("bob");
        net.set_online(bob, false);
        for i in 0..10 {
            net.nodes[alice].client.send_text(net.now + i, "bob", &format!("p{i}")).unwrap();
        }
        net.run();
        let mailbox = net.relay.mailbox("bob", 1);
        proptest::prop_assert_eq!(mailbox.len(), 10);
        let now = net.now;
        for i in order.iter().chain(dups.iter()) {
            net.nodes[bob].client.handle_envelope(now, mailbox[*i].clone());
        }
        let mut texts = Vec::new();
        while let Some(e) = net.nodes[bob].client.poll_event() {
            if let Event::Message(m) = e {
                texts.push(m.text.unwrap());
            }
        }
        texts.sort();
        let mut want: Vec<String> = (0..10).map(|i| format!("p{i}")).collect();
        want.sort();
        proptest::prop_assert_eq!(texts, want);
    }
}

#[test]
fn verified_contacts_sync_to_own_devices() {
    let mut net = Net::new(15);
    let phone = net.user("alice");
    let laptop = net.link("alice", phone);
    let bob = net.user("bob");
    net.nodes[phone]
        .client
        .send_text(net.now, "bob", "hi")
        .unwrap();
    net.run();
    net.nodes[bob]
        .client
        .send_text(net.now, "alice", "hello")
        .unwrap();
    net.run();
    assert!(
        !net.nodes[laptop]
            .client
            .safety_number("bob")
            .unwrap()
            .verified
    );
    net.take_events(laptop);
    net.nodes[phone]
        .client
        .set_verified(net.now, "bob", true)
        .unwrap();
    net.run();
    assert!(
        net.nodes[laptop]
            .client
            .safety_number("bob")
            .unwrap()
            .verified
    );
    // Nothing of it went to Bob.
    assert!(net.relay.mailbox("bob", 1).is_empty());
    assert_eq!(net.texts(bob), ["hi"]);
    // A single-device account has nobody to tell: the item is dropped, nothing is sent.
    net.nodes[bob]
        .client
        .set_verified(net.now, "alice", true)
        .unwrap();
    net.run();
    assert!(
        net.nodes[bob]
            .client
            .safety_number("alice")
            .unwrap()
            .verified
    );
}

#[test]
fn a_long_queue_keeps_the_send_window_and_the_order() {
    let mut net = Net::new(11);
    let alice = net.user("alice");
    let bob = net.user("bob");
    net.nodes[alice]
        .client
        .send_text(net.now, "bob", "first")
        .unwrap();
    net.run();
    let queued = 300;
    for i in 0..queued {
        net.nodes[alice]
            .client
            .send_text(net.now, "bob", &format!("m{i}"))
            .unwrap();
    }
    // Nothing answered yet: exactly the window is out.
    let mut held = Vec::new();
    while let Some(req) = net.nodes[alice].client.poll_request() {
        held.push(req);
    }
    let window = sotto_client_core::Config::default().max_sends_in_flight;
    let sends = held
        .iter()
        .filter(|r| matches!(r.call, RelayCall::SendMessage(_)))
        .count();
    assert_eq!(sends, window);
    // Answers free the window one by one; everything arrives, in the order queued.
    let user = net.nodes[alice].user.clone();
    let device = net.nodes[alice].device;
    for req in held {
        let answer = net.relay.handle((&user, device), &req.call);
        let now = net.now;
        net.nodes[alice].client.handle_response(now, req.id, answer);
    }
    net.run();
    let expected: Vec<String> = std::iter::once("first".to_owned())
        .chain((0..queued).map(|i| format!("m{i}")))
        .collect();
    assert_eq!(net.texts(bob), expected);
}

#[test]
fn signed_and_kem_prekeys_rotate_weekly_and_keys_in_flight_still_open() {
    const WEEK: u64 = 7 * 24 * 3600 * 1000;
    let mut net = Net::new(21);
    let alice = net.user("alice");
    let bob = net.user("bob");
    let published = |net: &Net| {
        let d = &net.relay.users["bob"].devices[&1];
        (
            d.signed.as_ref().map(|k| k.key_id),
            d.last_resort.as_ref().map(|k| k.key_id),
        )
    };
    let first = published(&net);
    assert!(first.0.is_some() && first.1.is_some());

    // Alice's first message is set up on the week-one keys and waits while Bob is offline.
    net.set_online(bob, false);
    net.nodes[alice]
        .client
        .send_text(net.now, "bob", "set up on last week's keys")
        .unwrap();
    net.run();

    // Short of a week: nothing changes.
    net.advance(WEEK - 60_000);
    net.run();
    assert_eq!(published(&net), first);

    // A week: a new signed prekey and last-resort KEM key are signed and published.
    net.advance(60_000);
    net.run();
    let second = published(&net);
    assert_ne!(second.0, first.0, "signed prekey rotated");
    assert_ne!(second.1, first.1, "last-resort KEM key rotated");

    // The message set up on the old keys still opens; a new contact uses the new ones.
    net.set_online(bob, true);
    net.run();
    assert_eq!(net.texts(bob), ["set up on last week's keys"]);
    let carol = net.user("carol");
    net.nodes[carol]
        .client
        .send_text(net.now, "bob", "set up on this week's keys")
        .unwrap();
    net.run();
    assert_eq!(
        net.texts(bob),
        ["set up on last week's keys", "set up on this week's keys"]
    );

    // The rotation time survives a restart: no second rotation before the next week.
    net.restart(bob);
    net.advance(WEEK - 120_000);
    net.run();
    assert_eq!(published(&net), second);
    net.advance(120_000);
    net.run();
    assert_ne!(published(&net), second, "rotated again a week later");
}
