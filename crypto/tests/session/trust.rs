//! The caller's trust decision: untrusted identities are refused before anything changes, and
//! unanswered sessions expire.

use super::harness::*;
use sotto_crypto::keys::{IdentityKey, IdentityKeyPair};
use sotto_crypto::pqxdh::{PreKeyMessage, SessionSetupError};
use sotto_crypto::ratchet::{DecryptError, EncryptError};
use sotto_crypto::session::{IncomingMessage, SessionRecord, MAX_UNANSWERED_SESSION_AGE};

fn prekey_message(bytes: &[u8]) -> PreKeyMessage {
    match IncomingMessage::from_bytes(bytes).unwrap() {
        IncomingMessage::PreKey(m) => *m,
        IncomingMessage::Ratchet(_) => panic!("expected a pre-key message"),
    }
}

fn offered(e: &DecryptError) -> &IdentityKey {
    match e {
        DecryptError::UntrustedIdentity { offered } => offered,
        other => panic!("expected UntrustedIdentity, got {other:?}"),
    }
}

/// Bob reinstalls (same address, new identity). Alice's record refuses his new bundle under
/// trust on first use and under the old pin, changing nothing; once she pins the new key the
/// session is set up and both directions work.
#[test]
fn reinstalled_peer_is_refused_until_accepted_as_initiator() {
    let mut p = Pair::established(22);
    let mut rng = rng(23);
    let old_bob = p.bob.identity.public();
    let mut new_bob =
        Device::with_identity(IdentityKeyPair::generate(&mut rng), "bob", 2, &mut rng);
    let new_key = new_bob.identity.public();
    let bundle = new_bob.verified_bundle(true, true);
    let before = p.a.to_bytes();
    for trust in [IdentityTrust::FirstUse, IdentityTrust::Pinned(&old_bob)] {
        let e =
            p.a.initiate(
                &p.alice.identity,
                &p.alice.address,
                &new_bob.address,
                &bundle,
                trust,
                NOW,
                &mut rng,
            )
            .unwrap_err();
        assert_eq!(
            e,
            SessionSetupError::UntrustedIdentity {
                offered: Box::new(new_key.clone())
            }
        );
        assert_eq!(p.a.to_bytes(), before, "refusal changed the record");
    }
    // The old session still works while the user decides.
    let m = p.b_to_a(b"still the old bob");
    assert_eq!(p.a_receive(&m).unwrap(), b"still the old bob");

    // The user accepts the new key (after comparing safety numbers).
    let r =
        p.a.initiate(
            &p.alice.identity,
            &p.alice.address,
            &new_bob.address,
            &bundle,
            IdentityTrust::Pinned(&new_key),
            NOW,
            &mut rng,
        )
        .unwrap();
    assert!(r.identity_changed);
    assert_eq!(p.a.remote_identity(), Some(&new_key));
    let m = p.a.encrypt(b"welcome back", NOW, &mut rng).unwrap();
    let mut at_new_bob = SessionRecord::new();
    let from = p.alice.address.clone();
    assert_eq!(
        new_bob.receive(&mut at_new_bob, &from, &m).unwrap(),
        b"welcome back"
    );
    let reply = at_new_bob.encrypt(b"thanks", NOW, &mut rng).unwrap();
    assert_eq!(p.a_receive(&reply).unwrap(), b"thanks");
}

/// Alice reinstalls and writes to Bob. Bob's record refuses the pre-key message until he accepts
/// her new key; the refusal reports exactly the message's key, consumes no prekey and changes
/// nothing, and the same message decrypts once accepted.
#[test]
fn reinstalled_peer_is_refused_until_accepted_as_responder() {
    let mut q = Pair::established(24);
    let mut rng = rng(25);
    let old_alice = q.alice.identity.public();
    let new_alice =
        Device::with_identity(IdentityKeyPair::generate(&mut rng), "alice", 1, &mut rng);
    let new_key = new_alice.identity.public();
    let mut a2 = SessionRecord::new();
    new_alice.initiate_with(&mut a2, &q.bob, true, true, &mut rng);
    let pm = prekey_message(&a2.encrypt(b"it's me, really", NOW, &mut rng).unwrap());
    let before = q.b.to_bytes();
    for trust in [IdentityTrust::FirstUse, IdentityTrust::Pinned(&old_alice)] {
        let e =
            q.b.decrypt_prekey(
                &pm,
                &q.bob.keys_for(&pm),
                &q.bob.address,
                &new_alice.address,
                trust,
                NOW,
            )
            .unwrap_err();
        assert_eq!(offered(&e), pm.identity_key());
        assert_eq!(offered(&e), &new_key);
        assert_eq!(q.b.to_bytes(), before, "refusal changed the record");
    }
    // No prekey was consumed: the keys the message names are all still there.
    let keys = q.bob.keys_for(&pm);
    assert!(keys.one_time_prekey.is_some() && keys.kem_prekey.is_some());

    let d =
        q.b.decrypt_prekey(
            &pm,
            &keys,
            &q.bob.address,
            &new_alice.address,
            IdentityTrust::Pinned(&new_key),
            NOW,
        )
        .unwrap();
    assert_eq!(d.plaintext, b"it's me, really");
    assert!(d.identity_changed && d.new_session);
    q.bob.consume(&d);
    assert_eq!(q.b.remote_identity(), Some(&new_key));
    let reply = q.b.encrypt(b"hi again", NOW, &mut rng).unwrap();
    let mut new_alice = new_alice;
    let from = q.bob.address.clone();
    assert_eq!(
        new_alice.receive(&mut a2, &from, &reply).unwrap(),
        b"hi again"
    );
}

/// Eve (her own identity) builds a valid pre-key message from Bob's public bundle and claims to
/// be `alice.1`. Bob's record is byte-for-byte unchanged, his next message still goes to Alice on
/// the old session, and Eve cannot read it.
#[test]
fn forged_prekey_message_under_a_known_address_changes_nothing() {
    let mut p = Pair::established(26);
    let mut rng = rng(27);
    let eve = Device::new("alice", 1, &mut rng);
    let mut at_eve = SessionRecord::new();
    eve.initiate_with(&mut at_eve, &p.bob, false, false, &mut rng);
    let forged = at_eve.encrypt(b"bob, it's alice", NOW, &mut rng).unwrap();
    let pm = prekey_message(&forged);
    let before = p.b.to_bytes();
    let alice_key = p.alice.identity.public();
    for trust in [IdentityTrust::FirstUse, IdentityTrust::Pinned(&alice_key)] {
        let e =
            p.b.decrypt_bytes(
                &forged,
                &p.bob.keys_for(&pm),
                &p.bob.address,
                &p.alice.address,
                trust,
                NOW,
            )
            .unwrap_err();
        assert_eq!(offered(&e), &eve.identity.public());
        assert_eq!(p.b.to_bytes(), before);
    }
    let reply = p.b_to_a(b"for alice only");
    let IncomingMessage::Ratchet(r) = IncomingMessage::from_bytes(&reply).unwrap() else {
        panic!("Bob's session with Alice is established")
    };
    assert!(at_eve.decrypt(&r).is_err());
    assert_eq!(p.a_receive(&reply).unwrap(), b"for alice only");
    let before = p.b.to_bytes();

    // A tampered message under an unknown identity is only an authentication failure: nobody is
    // asked to trust a key whose holder did not produce the message.
    let mut tampered = forged.clone();
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    let e =
        p.b.decrypt_bytes(
            &tampered,
            &p.bob.keys_for(&pm),
            &p.bob.address,
            &p.alice.address,
            IdentityTrust::FirstUse,
            NOW,
        )
        .unwrap_err();
    assert_eq!(e, DecryptError::AuthenticationFailed);
    assert_eq!(p.b.to_bytes(), before);
}

/// Trust on first use accepts any identity into an empty record, then holds the record to it.
#[test]
fn first_use_accepts_once_then_holds() {
    let mut rng = rng(28);
    let alice = Device::new("alice", 1, &mut rng);
    let bob = Device::new("bob", 2, &mut rng);
    let other = Device::new("bob", 2, &mut rng);
    let mut a = SessionRecord::new();
    alice.initiate(&mut a, &bob, &mut rng);
    let e = a
        .initiate(
            &alice.identity,
            &alice.address,
            &other.address,
            &other.verified_bundle(false, false),
            IdentityTrust::FirstUse,
            NOW,
            &mut rng,
        )
        .unwrap_err();
    assert!(matches!(e, SessionSetupError::UntrustedIdentity { .. }));
    // The same identity again (a fresh session) is fine.
    alice.initiate_with(&mut a, &bob, false, false, &mut rng);
    assert_eq!(a.archived_count(), 1);
}

/// A session nobody answered expires 30 days after it was set up, also across storage; an
/// answered one never does.
#[test]
fn unanswered_sessions_expire_after_30_days() {
    let mut p = Pair::new(29);
    let expiry = Timestamp(NOW.0 + MAX_UNANSWERED_SESSION_AGE);
    let just_before = Timestamp(expiry.0 - 1);
    assert!(p.a.has_usable_session(just_before));
    let m = p.a.encrypt(b"day 29", just_before, &mut p.rng).unwrap();
    let mut stored = SessionRecord::from_bytes(&p.a.to_bytes()).unwrap();
    for record in [&mut p.a, &mut stored] {
        assert!(!record.has_usable_session(expiry));
        let before = record.to_bytes();
        assert_eq!(
            record.encrypt(b"day 30", expiry, &mut p.rng),
            Err(EncryptError::SessionExpired)
        );
        assert_eq!(record.to_bytes(), before);
        // A clock that went backwards does not expire anything.
        assert!(record.has_usable_session(Timestamp(NOW.0 - 1)));
    }
    assert!(!SessionRecord::new().has_usable_session(NOW));

    // Bob answers (late): the session is no longer pending and stays usable.
    assert_eq!(p.b_receive(&m).unwrap(), b"day 29");
    let reply = p.b_to_a(b"sorry, I was away");
    assert_eq!(p.a_receive(&reply).unwrap(), b"sorry, I was away");
    let much_later = Timestamp(NOW.0 + 10 * MAX_UNANSWERED_SESSION_AGE);
    assert!(p.a.has_usable_session(much_later));
    let m = p.a.encrypt(b"back", much_later, &mut p.rng).unwrap();
    assert_eq!(p.b_receive(&m).unwrap(), b"back");
}

/// An expired pending session no longer wins the simultaneous-initiation tie-break: the peer's
/// new session becomes current whatever the base keys' order.
#[test]
fn expired_pending_session_yields_to_the_peers_new_one() {
    for seed in 0..6u8 {
        let mut rng = rng(90 + seed);
        let mut alice = Device::new("alice", 1, &mut rng);
        let bob = Device::new("bob", 2, &mut rng);
        let mut a = SessionRecord::new();
        let mut b = SessionRecord::new();
        alice.initiate(&mut a, &bob, &mut rng);
        let later = Timestamp(NOW.0 + MAX_UNANSWERED_SESSION_AGE);
        b.initiate(
            &bob.identity,
            &bob.address,
            &alice.address,
            &alice.verified_bundle(false, false),
            IdentityTrust::FirstUse,
            later,
            &mut rng,
        )
        .unwrap();
        let m = b.encrypt(b"hello", later, &mut rng).unwrap();
        let id = prekey_message(&m).base_key();
        let d = a
            .decrypt_bytes(
                &m,
                &alice.keys_for(&prekey_message(&m)),
                &alice.address,
                &bob.address,
                IdentityTrust::FirstUse,
                later,
            )
            .unwrap();
        alice.consume(&d);
        assert_eq!(a.current().unwrap().id(), id, "seed {seed}");
        assert!(a.has_usable_session(later));
    }
}
