//! Known-answer vectors for stored record states that the message vectors do not show:
//! a pending session with its pre-key fields, a record with archived sessions, a chain holding
//! skipped keys, and a sender-key record with several states (`vectors/records.json`).
//!
//! Each state is generated from fixed seeds; the file lists its storage encoding and what it
//! holds. `records_replay_from_the_file_alone` decodes every encoding, checks the listed contents
//! through the public API and that re-encoding gives the same bytes.

use super::harness::*;
use crate::common::{check_committed_vectors, load_vectors};
use serde_json::{json, Value};
use sotto_crypto::sender_key::{
    GroupId, SenderKeyDistributionMessage, SenderKeyMessage, SenderKeyRecord, SenderKeyState,
};
use sotto_crypto::session::{IncomingMessage, SessionRecord};

fn h(v: &Value) -> Vec<u8> {
    hex::decode(v.as_str().unwrap()).unwrap()
}

fn session_json(s: &sotto_crypto::session::Session) -> Value {
    json!({
        "id": hex::encode(s.id()),
        "pending": s.is_pending(),
        "receiver_chains": s.receiver_chain_count(),
        "skipped_keys": s.skipped_key_count(),
    })
}

fn record_json(r: &SessionRecord) -> Value {
    json!({
        "record": hex::encode(&*r.to_bytes()),
        "current": r.current().map(session_json),
        "archived_newest_first": r.archived().map(session_json).collect::<Vec<_>>(),
    })
}

fn generate() -> Value {
    // 1. A pending session: Alice initiated with a full bundle, nothing answered yet.
    let mut p = Pair::new(120);
    let pending = record_json(&p.a);
    let first = p.a_to_b(b"pending");
    let IncomingMessage::PreKey(m) = IncomingMessage::from_bytes(&first).unwrap() else {
        panic!("pending sessions send pre-key messages")
    };
    let prekey_fields = json!({
        "signed_prekey_id": m.signed_prekey_id(),
        "one_time_prekey_id": m.one_time_prekey_id(),
        "kem_prekey_id": m.kem_prekey_id(),
        "base_key": hex::encode(m.base_key()),
        "created": NOW.0,
    });

    // 2. Archived sessions: an established session, then two fresh initiations by Alice (the
    //    second without one-time keys); the first late message keeps its session archived.
    let mut q = Pair::established(121);
    for one_time in [true, false] {
        q.alice
            .initiate_with(&mut q.a, &q.bob, one_time, one_time, &mut q.rng);
    }
    let archived = record_json(&q.a);

    // 3. Skipped keys: Alice sends 0..5 on one chain; Bob receives 4 first (keys 0..3 skipped),
    //    then 1 (used and removed); then a DH step: Bob answers, Alice sends 0..2 on a new chain
    //    and Bob receives 2 (keys 0, 1 of the new chain skipped).
    let mut s = Pair::established(122);
    let first_chain: Vec<Vec<u8>> = (0..5u8).map(|i| s.a_to_b(&[i])).collect();
    s.b_receive(&first_chain[4]).unwrap();
    s.b_receive(&first_chain[1]).unwrap();
    let reply = s.b_to_a(b"reply");
    s.a_receive(&reply).unwrap();
    let second_chain: Vec<Vec<u8>> = (0..3u8).map(|i| s.a_to_b(&[10 + i])).collect();
    s.b_receive(&second_chain[2]).unwrap();
    let skipped = record_json(&s.b);

    // 4. A sender-key record with several states: three chains of one sender (two rotations),
    //    with messages received out of order on the newest two.
    let group = GroupId::new(b"vector group".to_vec()).unwrap();
    let mut r = rng(123);
    let mut sender = SenderKeyState::new(group.clone(), &mut r);
    let mut record = SenderKeyRecord::new(group);
    let mut chains = Vec::new();
    for (rotation, receive) in [(false, vec![]), (true, vec![3usize]), (true, vec![5, 0, 2])] {
        if rotation {
            sender.rotate(&mut r);
        }
        let d = SenderKeyDistributionMessage::from_bytes(&sender.distribution_message().to_bytes())
            .unwrap();
        record.process_distribution(&d).unwrap();
        let sent: Vec<SenderKeyMessage> = (0..6u8)
            .map(|i| {
                SenderKeyMessage::from_bytes(&sender.encrypt(&[i]).unwrap().to_bytes()).unwrap()
            })
            .collect();
        for i in receive {
            record.decrypt(&sent[i]).unwrap();
        }
        chains.push(sender.chain_id());
    }
    let sender_key = json!({
        "record": hex::encode(&*record.to_bytes()),
        "chain_ids_oldest_first": record.chain_ids(),
        "skipped_message_keys": record
            .chain_ids()
            .iter()
            .map(|id| record.skipped_message_keys(*id))
            .collect::<Vec<_>>(),
    });
    assert_eq!(record.chain_ids(), chains);

    json!({
        "description": "Stored record states (docs/protocol.md §6, protocol/sender-keys.md). Hex \
            strings. Each record is the exact storage encoding; the other fields say what it holds, \
            as the public API reports it.",
        "pending_session": {"record": pending, "prekey_fields": prekey_fields},
        "archived_sessions": archived,
        "skipped_keys": skipped,
        "sender_key_record": sender_key,
    })
}

#[test]
fn record_vectors_match() {
    check_committed_vectors("records.json", &generate());
}

fn check_record(v: &Value) -> SessionRecord {
    let bytes = h(&v["record"]);
    let record = SessionRecord::from_bytes(&bytes).unwrap();
    assert_eq!(*record.to_bytes(), bytes);
    assert_eq!(record_json(&record), *v);
    record
}

#[test]
fn records_replay_from_the_file_alone() {
    let v = load_vectors("records.json");
    let mut pending = check_record(&v["pending_session"]["record"]);
    let fields = &v["pending_session"]["prekey_fields"];
    assert!(pending.current().unwrap().is_pending());
    // The pre-key fields it holds are the ones its next message repeats.
    let next = pending.encrypt(b"again", NOW, &mut rng(1)).unwrap();
    let IncomingMessage::PreKey(m) = IncomingMessage::from_bytes(&next).unwrap() else {
        panic!("still pending")
    };
    assert_eq!(
        m.signed_prekey_id(),
        fields["signed_prekey_id"].as_u64().unwrap() as u32
    );
    assert_eq!(
        m.one_time_prekey_id(),
        fields["one_time_prekey_id"].as_u64().map(|id| id as u32)
    );
    assert_eq!(
        m.kem_prekey_id(),
        fields["kem_prekey_id"].as_u64().unwrap() as u32
    );
    assert_eq!(
        hex::encode(m.base_key()),
        fields["base_key"].as_str().unwrap()
    );
    let created = Timestamp(fields["created"].as_u64().unwrap());
    assert!(pending.has_usable_session(created));
    assert!(!pending.has_usable_session(Timestamp(
        created.0 + sotto_crypto::session::MAX_UNANSWERED_SESSION_AGE
    )));

    let archived = check_record(&v["archived_sessions"]);
    assert_eq!(archived.archived_count(), 2);
    let skipped = check_record(&v["skipped_keys"]);
    assert_eq!(skipped.current().unwrap().skipped_key_count(), 5);

    let sk = &v["sender_key_record"];
    let bytes = h(&sk["record"]);
    let record = SenderKeyRecord::from_bytes(&bytes).unwrap();
    assert_eq!(*record.to_bytes(), bytes);
    let ids: Vec<u32> = record.chain_ids();
    assert_eq!(json!(ids), sk["chain_ids_oldest_first"]);
    let counts: Vec<usize> = ids
        .iter()
        .map(|id| record.skipped_message_keys(*id))
        .collect();
    assert_eq!(json!(counts), sk["skipped_message_keys"]);
    assert_eq!(counts, [0, 3, 3]);
}
