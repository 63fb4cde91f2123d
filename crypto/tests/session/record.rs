//! Session records: archived sessions, simultaneous initiation.

use super::harness::*;
use rand_chacha::ChaCha20Rng;
use sotto_crypto::ratchet::DecryptError;
use sotto_crypto::session::{SessionRecord, MAX_ARCHIVED_SESSIONS};

/// Alice and Bob, each of whom has just set up a session to the other (nothing sent yet).
fn crossed(seed: u8) -> (ChaCha20Rng, Device, Device, SessionRecord, SessionRecord) {
    let mut rng = rng(seed);
    let alice = Device::new("alice", 1, &mut rng);
    let bob = Device::new("bob", 1, &mut rng);
    let mut a = SessionRecord::new();
    let mut b = SessionRecord::new();
    alice.initiate(&mut a, &bob, &mut rng);
    bob.initiate(&mut b, &alice, &mut rng);
    (rng, alice, bob, a, b)
}

#[test]
fn simultaneous_initiation_converges() {
    for seed in 0..8u8 {
        let (mut rng, mut alice, mut bob, mut a, mut b) = crossed(40 + seed);
        // Both send before either has heard from the other.
        let from_a = a.encrypt(b"hi from a", NOW, &mut rng).unwrap();
        let from_b = b.encrypt(b"hi from b", NOW, &mut rng).unwrap();
        let from_a2 = a.encrypt(b"second from a", NOW, &mut rng).unwrap();
        assert_eq!(
            bob.receive(&mut b, &alice.address, &from_a).unwrap(),
            b"hi from a"
        );
        assert_eq!(
            alice.receive(&mut a, &bob.address, &from_b).unwrap(),
            b"hi from b"
        );
        // Both now hold both sessions and agree on which is current.
        let ida = a.current().unwrap().id();
        let idb = b.current().unwrap().id();
        assert_eq!(ida, idb, "seed {seed}");
        assert_eq!(a.archived_count() + b.archived_count(), 2);
        // A late message on the losing session still decrypts and does not flip the choice.
        assert_eq!(
            bob.receive(&mut b, &alice.address, &from_a2).unwrap(),
            b"second from a"
        );
        assert_eq!(b.current().unwrap().id(), idb);
        // The conversation continues on the agreed session in both directions.
        for i in 0..3u8 {
            let m = a.encrypt(&[i], NOW, &mut rng).unwrap();
            assert_eq!(bob.receive(&mut b, &alice.address, &m).unwrap(), [i]);
            let m = b.encrypt(&[i + 10], NOW, &mut rng).unwrap();
            assert_eq!(alice.receive(&mut a, &bob.address, &m).unwrap(), [i + 10]);
        }
        assert_eq!(a.current().unwrap().id(), ida);
        assert_eq!(b.current().unwrap().id(), ida);
        assert!(!a.current().unwrap().is_pending());
        assert!(!b.current().unwrap().is_pending());
    }
}

#[test]
fn archived_session_still_decrypts() {
    let mut p = Pair::established(20);
    let old_id = p.a.current().unwrap().id();
    let late = p.b_to_a(b"sent on the old session");
    // Alice starts over with a fresh bundle (e.g. after a reinstall on her side).
    let bundle = p.bob.verified_bundle(false, false);
    let r =
        p.a.initiate(
            &p.alice.identity,
            &p.alice.address,
            &p.bob.address,
            &bundle,
            IdentityTrust::FirstUse,
            NOW,
            &mut p.rng,
        )
        .unwrap();
    assert!(!r.identity_changed);
    assert_ne!(p.a.current().unwrap().id(), old_id);
    assert_eq!(p.a.archived_count(), 1);
    assert_eq!(p.a_receive(&late).unwrap(), b"sent on the old session");
    // The new session stays current and works.
    let m = p.a_to_b(b"new session");
    assert_eq!(p.b_receive(&m).unwrap(), b"new session");
    assert_eq!(p.b.current().unwrap().id(), p.a.current().unwrap().id());
    let m = p.b_to_a(b"reply");
    assert_eq!(p.a_receive(&m).unwrap(), b"reply");
}

#[test]
fn archive_is_bounded() {
    let mut p = Pair::established(21);
    let first_late = p.b_to_a(b"oldest");
    // The original session plus 40 newer ones: the original falls out of the archive.
    for _ in 0..=MAX_ARCHIVED_SESSIONS {
        let bundle = p.bob.verified_bundle(false, false);
        p.a.initiate(
            &p.alice.identity,
            &p.alice.address,
            &p.bob.address,
            &bundle,
            IdentityTrust::FirstUse,
            NOW,
            &mut p.rng,
        )
        .unwrap();
    }
    assert_eq!(p.a.archived_count(), MAX_ARCHIVED_SESSIONS);
    assert!(p.a_receive(&first_late).is_err());
    let bytes = p.a.to_bytes();
    assert_eq!(SessionRecord::from_bytes(&bytes).unwrap().to_bytes(), bytes);
}

#[test]
fn late_prekey_message_before_a_reply_keeps_the_pair_together() {
    // A and B initiate at once; B's pre-key message reaches A first and A answers at once, so B
    // sees A's answer before A's own (delayed) pre-key message, and has not replied yet: the
    // tie-break decides as in a simultaneous initiation, the same way A did.
    for seed in 0..8u8 {
        let (mut rng, mut alice, mut bob, mut a, mut b) = crossed(60 + seed);
        let delayed = a.encrypt(b"a's first", NOW, &mut rng).unwrap();
        let from_b = b.encrypt(b"b's first", NOW, &mut rng).unwrap();
        assert_eq!(
            alice.receive(&mut a, &bob.address, &from_b).unwrap(),
            b"b's first"
        );
        let answer = a.encrypt(b"a answers", NOW, &mut rng).unwrap();
        assert_eq!(
            bob.receive(&mut b, &alice.address, &answer).unwrap(),
            b"a answers"
        );
        assert_eq!(
            bob.receive(&mut b, &alice.address, &delayed).unwrap(),
            b"a's first"
        );
        assert_eq!(
            a.current().unwrap().id(),
            b.current().unwrap().id(),
            "seed {seed}"
        );
    }
}

#[test]
fn late_prekey_message_after_an_answer_still_converges() {
    // As above, but B replies on A's answer before A's delayed pre-key message arrives.
    let mut diverged = 0;
    for seed in 0..8u8 {
        let (mut rng, mut alice, mut bob, mut a, mut b) = crossed(60 + seed);
        let delayed = a.encrypt(b"a's first", NOW, &mut rng).unwrap();
        let from_b = b.encrypt(b"b's first", NOW, &mut rng).unwrap();
        assert_eq!(
            alice.receive(&mut a, &bob.address, &from_b).unwrap(),
            b"b's first"
        );
        let answer = a.encrypt(b"a answers", NOW, &mut rng).unwrap();
        assert_eq!(
            bob.receive(&mut b, &alice.address, &answer).unwrap(),
            b"a answers"
        );
        let reply = b.encrypt(b"b replies", NOW, &mut rng).unwrap();
        assert_eq!(
            bob.receive(&mut b, &alice.address, &delayed).unwrap(),
            b"a's first"
        );
        assert_eq!(
            alice.receive(&mut a, &bob.address, &reply).unwrap(),
            b"b replies"
        );
        // In some runs B now holds A's late session as current while A uses B's: the case this
        // test is about.
        diverged += usize::from(a.current().unwrap().id() != b.current().unwrap().id());
        // Both keep talking; every message decrypts and they end on the same session.
        for i in 0..4u8 {
            let m = a.encrypt(&[i], NOW, &mut rng).unwrap();
            assert_eq!(bob.receive(&mut b, &alice.address, &m).unwrap(), [i]);
            let m = b.encrypt(&[i + 10], NOW, &mut rng).unwrap();
            assert_eq!(alice.receive(&mut a, &bob.address, &m).unwrap(), [i + 10]);
        }
        assert_eq!(
            a.current().unwrap().id(),
            b.current().unwrap().id(),
            "seed {seed}"
        );
        let id = a.current().unwrap().id();
        for i in 0..3u8 {
            let m = b.encrypt(&[i], NOW, &mut rng).unwrap();
            assert_eq!(alice.receive(&mut a, &bob.address, &m).unwrap(), [i]);
            let m = a.encrypt(&[i], NOW, &mut rng).unwrap();
            assert_eq!(bob.receive(&mut b, &alice.address, &m).unwrap(), [i]);
        }
        assert_eq!(a.current().unwrap().id(), id);
        assert_eq!(b.current().unwrap().id(), id);
    }
    assert!(
        diverged > 0,
        "the seeds never exercised a temporary divergence"
    );
}

/// A peer that restored an older copy of a session sends past the announced end of a chain it had
/// already left behind. Such a message is refused and changes nothing, on the current session (so
/// the peer learns at once that its copy is behind and moves to another session) as on an archived
/// one (it must not make the broken session current again), while a genuinely late message on that
/// chain still decrypts.
#[test]
fn sessions_refuse_messages_from_a_restored_copy() {
    let mut p = Pair::established(22);
    let late = p.b_to_a(b"late, on bob's first chain");
    let backup = p.b.to_bytes();
    // A round trip: Bob steps the ratchet, announcing two messages on his first chain.
    let m = p.a_to_b(b"a");
    assert_eq!(p.b_receive(&m).unwrap(), b"a");
    let m = p.b_to_a(b"b");
    assert_eq!(p.a_receive(&m).unwrap(), b"b");
    // Bob restores his backup and sends on his first chain again, past its announced end.
    p.b = SessionRecord::from_bytes(&backup).unwrap();
    let stale = p.b_to_a(b"from a restored copy");
    // Refused on the current session...
    let before = p.a.to_bytes();
    assert_eq!(
        p.a_receive(&stale).unwrap_err(),
        DecryptError::AuthenticationFailed
    );
    assert_eq!(p.a.to_bytes(), before);
    // ...and once Alice has moved to a new session, on the archived one.
    let (alice, bob) = (&p.alice, &p.bob);
    alice.initiate_with(&mut p.a, bob, false, false, &mut p.rng);
    let before = p.a.to_bytes();
    assert_eq!(
        p.a_receive(&stale).unwrap_err(),
        DecryptError::AuthenticationFailed
    );
    assert_eq!(p.a.to_bytes(), before);
    assert_eq!(p.a_receive(&late).unwrap(), b"late, on bob's first chain");
}

/// Alice and Bob on a second session, Bob's, with Alice's first one archived on both sides.
fn on_a_second_session(seed: u8) -> (Pair, [u8; 33], [u8; 33]) {
    let mut p = Pair::established(seed);
    let first = p.a.current().unwrap().id();
    p.b.archive_current();
    let (alice, bob) = (&p.alice, &p.bob);
    bob.initiate(&mut p.b, alice, &mut p.rng);
    let second = p.b.current().unwrap().id();
    let m = p.b_to_a(b"on bob's session");
    assert_eq!(p.a_receive(&m).unwrap(), b"on bob's session");
    assert_eq!(p.a.current().unwrap().id(), second);
    (p, first, second)
}

/// A failure report that names the session the peer uses makes that one current (the failed one is
/// reset), and what is sent next decrypts there.
#[test]
fn a_failure_report_moves_to_the_session_the_peer_uses() {
    let (mut p, first, second) = on_a_second_session(60);
    assert!(p.a.peer_cannot_decrypt(&second, Some(&first)));
    assert_eq!(p.a.current().unwrap().id(), first);
    assert_eq!(p.a.archived().next().unwrap().id(), second);
    let m = p.a_to_b(b"again, on the session bob named");
    assert_eq!(p.b_receive(&m).unwrap(), b"again, on the session bob named");
    // The reset session is no fallback any more: a reset now leaves no session.
    p.a.archive_current();
    assert!(p.a.current().is_none());
}

/// A report about a session that is no longer current changes nothing; one that names a session
/// the record does not hold, or the failed one itself, is a reset.
#[test]
fn failure_reports_change_only_the_current_session() {
    let (p, first, second) = on_a_second_session(61);
    let mut a = SessionRecord::from_bytes(&p.a.to_bytes()).unwrap();
    let before = a.to_bytes();
    assert!(!a.peer_cannot_decrypt(&first, Some(&second)));
    assert_eq!(a.to_bytes(), before);

    let mut reset = SessionRecord::from_bytes(&before).unwrap();
    reset.archive_current();
    for named in [None, Some([7u8; 33]), Some(second)] {
        let mut a = SessionRecord::from_bytes(&before).unwrap();
        assert!(a.peer_cannot_decrypt(&second, named.as_ref()));
        assert_eq!(a.to_bytes(), reset.to_bytes(), "named {named:?}");
    }
}
