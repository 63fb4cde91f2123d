//! Double Ratchet behaviour: ordering, loss, replays, limits, failure atomicity.

use super::harness::*;
use sotto_crypto::ratchet::{
    DecryptError, RatchetMessage, MAX_FORWARD_JUMP, MAX_RECEIVER_CHAINS, MAX_SKIPPED_KEYS,
};
use sotto_crypto::session::SessionRecord;

#[test]
fn out_of_order_and_lost_messages() {
    let mut p = Pair::established(10);
    let msgs: Vec<Vec<u8>> = (0..10u8).map(|i| p.a_to_b(&[i; 20])).collect();
    // Deliver in a scrambled order, losing 3 and 7 entirely.
    for i in [5usize, 0, 9, 2, 1, 8, 4, 6] {
        assert_eq!(p.b_receive(&msgs[i]).unwrap(), [i as u8; 20]);
    }
    // Replies and further sends interleave with stragglers from an old chain.
    let r = p.b_to_a(b"r1");
    let a2: Vec<Vec<u8>> = (0..3u8).map(|i| p.a_to_b(&[100 + i])).collect();
    assert_eq!(p.a_receive(&r).unwrap(), b"r1");
    let a3 = p.a_to_b(b"after ratchet");
    assert_eq!(p.b_receive(&a3).unwrap(), b"after ratchet");
    assert_eq!(p.b_receive(&a2[1]).unwrap(), [101]);
    assert_eq!(p.b_receive(&msgs[3]).unwrap(), [3; 20]);
    assert_eq!(p.b_receive(&a2[0]).unwrap(), [100]);
    assert_eq!(p.b_receive(&a2[2]).unwrap(), [102]);
}

#[test]
fn replays_are_rejected_as_duplicates() {
    let mut p = Pair::established(11);
    let m0 = p.a_to_b(b"zero");
    let m1 = p.a_to_b(b"one");
    assert_eq!(p.b_receive(&m1).unwrap(), b"one");
    assert_eq!(p.b_receive(&m0).unwrap(), b"zero");
    for m in [&m0, &m1] {
        let before = p.b.to_bytes();
        assert!(matches!(
            p.b_receive(m),
            Err(DecryptError::DuplicateMessage(_))
        ));
        assert_eq!(p.b.to_bytes(), before);
    }
    // A replayed message from before a DH ratchet step.
    let r = p.b_to_a(b"r");
    p.a_receive(&r).unwrap();
    let m2 = p.a_to_b(b"two");
    p.b_receive(&m2).unwrap();
    assert!(matches!(
        p.b_receive(&m1),
        Err(DecryptError::DuplicateMessage(1))
    ));
    assert!(matches!(
        p.a_receive(&r),
        Err(DecryptError::DuplicateMessage(0))
    ));
}

#[test]
fn forward_jump_limit() {
    let mut p = Pair::established(12);
    let first = p.a_to_b(b"first");
    let mut last = Vec::new();
    for i in 1..=MAX_FORWARD_JUMP {
        last = p.a_to_b(&i.to_be_bytes());
    }
    let over = p.a_to_b(b"over");
    // `last` is MAX_FORWARD_JUMP positions past `first`: exactly at the limit.
    assert_eq!(p.b_receive(&last).unwrap(), MAX_FORWARD_JUMP.to_be_bytes());
    assert_eq!(p.b.current().unwrap().skipped_key_count(), MAX_SKIPPED_KEYS);
    assert_eq!(p.b_receive(&over).unwrap(), b"over");

    // A jump of MAX_FORWARD_JUMP + 1 from the next expected position is refused up front.
    let mut q = Pair::established(13);
    let mut msg = RatchetMessage::from_bytes(&q.a_to_b(b"x"))
        .unwrap()
        .to_bytes();
    let next = RatchetMessage::from_bytes(&msg).unwrap().counter();
    msg[35..39].copy_from_slice(&(next + MAX_FORWARD_JUMP + 1).to_be_bytes());
    let before = q.b.to_bytes();
    assert_eq!(
        q.b_receive(&msg),
        Err(DecryptError::TooFarInFuture(
            u64::from(MAX_FORWARD_JUMP) + 1
        ))
    );
    assert_eq!(q.b.to_bytes(), before);
    drop(first);
}

#[test]
fn skipped_keys_are_bounded_and_oldest_evicted() {
    let mut p = Pair::established(14);
    let extra = 100;
    let msgs: Vec<Vec<u8>> = (0..MAX_SKIPPED_KEYS + extra + 1)
        .map(|i| p.a_to_b(&(i as u32).to_be_bytes()))
        .collect();
    p.b_receive(msgs.last().unwrap()).unwrap();
    assert_eq!(p.b.current().unwrap().skipped_key_count(), MAX_SKIPPED_KEYS);
    // The oldest `extra` keys were evicted; the rest still decrypt.
    for m in &msgs[..extra] {
        assert!(matches!(
            p.b_receive(m),
            Err(DecryptError::DuplicateMessage(_))
        ));
    }
    for (i, m) in msgs.iter().enumerate().skip(extra).take(MAX_SKIPPED_KEYS) {
        assert_eq!(p.b_receive(m).unwrap(), (i as u32).to_be_bytes());
    }
    assert_eq!(p.b.current().unwrap().skipped_key_count(), 0);
}

#[test]
fn at_most_five_receiver_chains() {
    let mut p = Pair::established(15);
    // Each round: Alice sends two messages on a fresh chain, one is held back; Bob answers,
    // which makes Alice's next message start a new chain.
    let mut held = Vec::new();
    for round in 0..MAX_RECEIVER_CHAINS + 2 {
        let keep = p.a_to_b(&[round as u8, 0]);
        let deliver = p.a_to_b(&[round as u8, 1]);
        assert_eq!(p.b_receive(&deliver).unwrap(), [round as u8, 1]);
        held.push(keep);
        let r = p.b_to_a(b"ack");
        p.a_receive(&r).unwrap();
        assert!(p.b.current().unwrap().receiver_chain_count() <= MAX_RECEIVER_CHAINS);
    }
    assert_eq!(
        p.b.current().unwrap().receiver_chain_count(),
        MAX_RECEIVER_CHAINS
    );
    // Chains from the last MAX_RECEIVER_CHAINS rounds are kept; older ones are gone.
    let rounds = held.len();
    for (round, m) in held.iter().enumerate() {
        let r = p.b_receive(m);
        if round + MAX_RECEIVER_CHAINS >= rounds {
            assert_eq!(r.unwrap(), [round as u8, 0], "round {round}");
        } else {
            assert!(r.is_err(), "round {round}");
        }
    }
}

#[test]
fn failed_decryption_leaves_state_unchanged() {
    let mut p = Pair::established(16);
    let skipped = p.a_to_b(b"skipped");
    let in_chain = p.a_to_b(b"in chain");
    let r = p.b_to_a(b"reply");
    p.a_receive(&r).unwrap();
    let new_chain = p.a_to_b(b"new chain"); // forces a DH ratchet step on Bob's side
    for m in [&in_chain, &skipped, &new_chain] {
        for i in 0..m.len() {
            for flip in [0x01u8, 0x80] {
                let mut bad = m.clone();
                bad[i] ^= flip;
                let before = p.b.to_bytes();
                assert!(p.b_receive(&bad).is_err(), "byte {i}");
                assert_eq!(p.b.to_bytes(), before, "byte {i}");
            }
        }
        // Truncations too.
        for len in [0, 1, 2, 40, 43, 50, m.len() - 1] {
            let before = p.b.to_bytes();
            assert!(p.b_receive(&m[..len]).is_err());
            assert_eq!(p.b.to_bytes(), before);
        }
    }
    assert_eq!(p.b_receive(&new_chain).unwrap(), b"new chain");
    assert_eq!(p.b_receive(&skipped).unwrap(), b"skipped");
    assert_eq!(p.b_receive(&in_chain).unwrap(), b"in chain");
}

#[test]
fn state_survives_serialization() {
    let mut p = Pair::established(17);
    let held = p.a_to_b(b"held");
    let m = p.a_to_b(b"m");
    p.b_receive(&m).unwrap();
    p.a = SessionRecord::from_bytes(&p.a.to_bytes()).unwrap();
    p.b = SessionRecord::from_bytes(&p.b.to_bytes()).unwrap();
    assert_eq!(p.b_receive(&held).unwrap(), b"held");
    let r = p.b_to_a(b"r");
    assert_eq!(p.a_receive(&r).unwrap(), b"r");
    let bytes = p.a.to_bytes();
    assert_eq!(SessionRecord::from_bytes(&bytes).unwrap().to_bytes(), bytes);
    let mut long = bytes.to_vec();
    long.push(0);
    assert!(SessionRecord::from_bytes(&long).is_err());
    assert!(SessionRecord::from_bytes(&bytes[..bytes.len() - 1]).is_err());
}

#[test]
fn debug_output_holds_no_secrets() {
    let p = Pair::established(18);
    let stored = p.a.to_bytes();
    let debug = format!("{:?} {:?} {:?}", p.a, p.b, p.alice.identity);
    // No 8-byte window of the stored record's secret region appears in Debug output, in hex or
    // as a decimal byte list.
    let window_hex: Vec<String> = stored
        .windows(8)
        .map(|w| w.iter().map(|b| format!("{b:02x}")).collect())
        .collect();
    let sample: Vec<&String> = window_hex.iter().step_by(97).collect();
    assert!(!sample.is_empty());
    for w in sample {
        assert!(!debug.contains(w.as_str()));
    }
    assert!(!debug.contains(&format!("{:?}", &stored[200..208])[1..20]));
}
