//! PQXDH session setup: bundles, pre-key messages, prekey consumption, rejection paths.

use super::harness::*;
use sotto_crypto::address::DeviceAddress;
use sotto_crypto::keys::{BundleError, KemPreKey, OneTimePreKeyPublic, PreKeyBundle};
use sotto_crypto::pqxdh::{PreKeyMessage, ResponderKeys};
use sotto_crypto::ratchet::{DecryptError, PreKeyKind};
use sotto_crypto::session::{IncomingMessage, SessionRecord};

fn prekey_message(bytes: &[u8]) -> PreKeyMessage {
    match IncomingMessage::from_bytes(bytes).unwrap() {
        IncomingMessage::PreKey(m) => *m,
        IncomingMessage::Ratchet(_) => panic!("expected a pre-key message"),
    }
}

#[test]
fn setup_with_and_without_one_time_keys() {
    for (otk, kem_otk) in [(true, true), (false, true), (true, false), (false, false)] {
        let mut rng = rng(1);
        let alice = Device::new("alice", 1, &mut rng);
        let mut bob = Device::new("bob", 2, &mut rng);
        let mut a = SessionRecord::new();
        let mut b = SessionRecord::new();
        alice.initiate_with(&mut a, &bob, otk, kem_otk, &mut rng);
        let bytes = a.encrypt(b"first", NOW, &mut rng).unwrap();
        let m = prekey_message(&bytes);
        assert_eq!(m.one_time_prekey_id().is_some(), otk);
        let d = b
            .decrypt_prekey(
                &m,
                &bob.keys_for(&m),
                &bob.address,
                &alice.address,
                IdentityTrust::FirstUse,
                NOW,
            )
            .unwrap();
        assert_eq!(d.plaintext, b"first");
        assert!(d.new_session);
        assert!(!d.identity_changed);
        assert_eq!(d.consumed_one_time_prekey, otk.then_some(100));
        assert_eq!(d.consumed_kem_prekey, kem_otk.then_some(200));
        bob.consume(&d);

        // Until Bob answers, Alice keeps sending pre-key messages on the same session; they
        // decrypt without any prekey (the one-time keys are gone now).
        let bytes = a.encrypt(b"second", NOW, &mut rng).unwrap();
        let m2 = prekey_message(&bytes);
        assert_eq!(m2.base_key(), m.base_key());
        let d = b
            .decrypt_prekey(
                &m2,
                &bob.keys_for(&m2),
                &bob.address,
                &alice.address,
                IdentityTrust::FirstUse,
                NOW,
            )
            .unwrap();
        assert_eq!(d.plaintext, b"second");
        assert!(!d.new_session);
        assert_eq!(d.consumed_one_time_prekey, None);

        let reply = b.encrypt(b"reply", NOW, &mut rng).unwrap();
        assert!(matches!(
            IncomingMessage::from_bytes(&reply).unwrap(),
            IncomingMessage::Ratchet(_)
        ));
        let mut alice = alice;
        assert_eq!(
            alice.receive(&mut a, &bob.address, &reply).unwrap(),
            b"reply"
        );
        assert!(!a.current().unwrap().is_pending());
        let next = a.encrypt(b"now a ratchet message", NOW, &mut rng).unwrap();
        assert!(matches!(
            IncomingMessage::from_bytes(&next).unwrap(),
            IncomingMessage::Ratchet(_)
        ));
        assert_eq!(
            bob.receive(&mut b, &alice.address, &next).unwrap(),
            b"now a ratchet message"
        );
    }
}

#[test]
fn every_single_bit_flip_of_every_signature_is_rejected() {
    let mut rng = rng(2);
    let bob = Device::new("bob", 2, &mut rng);
    let good = bob.bundle(true, true);
    good.verify().unwrap();
    for bit in 0..512 {
        let mut sig = good.signed_prekey.signature().to_vec();
        sig[bit / 8] ^= 1 << (bit % 8);
        let mut b = good.clone();
        b.signed_prekey = sotto_crypto::keys::SignedPreKeyPublic::new(
            good.signed_prekey.key_id(),
            good.signed_prekey.public_key(),
            &sig,
        )
        .unwrap();
        assert!(
            matches!(b.verify(), Err(BundleError::SignedPreKey(_))),
            "signed prekey bit {bit}"
        );

        let mut sig = good.kem_prekey.signature().to_vec();
        sig[bit / 8] ^= 1 << (bit % 8);
        let mut b = good.clone();
        b.kem_prekey = sotto_crypto::keys::KemPreKeyPublic::new(
            good.kem_prekey.key_id(),
            good.kem_prekey.public_key(),
            &sig,
        )
        .unwrap();
        assert!(
            matches!(b.verify(), Err(BundleError::KemPreKey(_))),
            "KEM prekey bit {bit}"
        );
    }
}

#[test]
fn bundle_with_foreign_or_swapped_keys_is_rejected() {
    let mut rng = rng(3);
    let bob = Device::new("bob", 2, &mut rng);
    let mallory = Device::new("mallory", 1, &mut rng);
    // Bob's prekeys presented under Mallory's identity.
    let mut b = bob.bundle(true, true);
    b.identity_key = mallory.identity.public();
    assert!(b.verify().is_err());
    // Mallory's signed prekey in Bob's bundle.
    let mut b = bob.bundle(true, true);
    b.signed_prekey = mallory.signed_prekey.public();
    assert!(matches!(b.verify(), Err(BundleError::SignedPreKey(_))));
    // Mallory's KEM key in Bob's bundle.
    let mut b = bob.bundle(true, true);
    b.kem_prekey = mallory.kem_last_resort.public();
    assert!(matches!(b.verify(), Err(BundleError::KemPreKey(_))));
    // A different key id than the one signed.
    let mut b = bob.bundle(true, true);
    b.signed_prekey = sotto_crypto::keys::SignedPreKeyPublic::new(
        7,
        b.signed_prekey.public_key(),
        b.signed_prekey.signature(),
    )
    .unwrap();
    assert!(b.verify().is_err());
    // A low-order one-time key cannot even be assembled.
    let mut low = vec![0x01];
    low.extend_from_slice(&[0; 32]);
    assert!(OneTimePreKeyPublic::new(1, &low).is_err());
    // A bundle is verified before use: the type system makes an unverified one unusable.
    let _: PreKeyBundle = bob.bundle(false, false);
}

#[test]
fn unknown_prekeys_are_rejected_and_consume_nothing() {
    let mut rng = rng(4);
    let alice = Device::new("alice", 1, &mut rng);
    let bob = Device::new("bob", 2, &mut rng);
    let mut a = SessionRecord::new();
    alice.initiate(&mut a, &bob, &mut rng);
    let m = prekey_message(&a.encrypt(b"x", NOW, &mut rng).unwrap());
    let mut b = SessionRecord::new();
    let full = bob.keys_for(&m);
    let cases = [
        (
            ResponderKeys {
                signed_prekey: None,
                ..full
            },
            PreKeyKind::Signed,
        ),
        (
            ResponderKeys {
                one_time_prekey: None,
                ..full
            },
            PreKeyKind::OneTime,
        ),
        (
            ResponderKeys {
                kem_prekey: None,
                ..full
            },
            PreKeyKind::Kem,
        ),
        (
            ResponderKeys {
                kem_prekey: Some(&bob.kem_last_resort),
                ..full
            },
            PreKeyKind::Kem,
        ),
    ];
    for (keys, kind) in cases {
        assert_eq!(
            b.decrypt_prekey(
                &m,
                &keys,
                &bob.address,
                &alice.address,
                IdentityTrust::FirstUse,
                NOW
            )
            .unwrap_err(),
            DecryptError::UnknownPreKey(kind)
        );
        assert!(b.current().is_none());
    }
    b.decrypt_prekey(
        &m,
        &full,
        &bob.address,
        &alice.address,
        IdentityTrust::FirstUse,
        NOW,
    )
    .unwrap();
}

#[test]
fn failed_setup_changes_nothing() {
    let mut rng = rng(5);
    let alice = Device::new("alice", 1, &mut rng);
    let bob = Device::new("bob", 2, &mut rng);
    let mut a = SessionRecord::new();
    alice.initiate(&mut a, &bob, &mut rng);
    let bytes = a.encrypt(b"secret", NOW, &mut rng).unwrap();
    let mut b = Pair::established(6).b; // a record with an unrelated session in it
    let before = b.to_bytes();

    // Every single-byte corruption of the message either fails to parse or fails to decrypt,
    // and leaves the record as it was.
    let step = 7;
    for i in (0..bytes.len()).step_by(step) {
        let mut bad = bytes.clone();
        bad[i] ^= 0x40;
        if let Ok(IncomingMessage::PreKey(m)) = IncomingMessage::from_bytes(&bad) {
            let r = b.decrypt_prekey(
                &m,
                &bob.keys_for(&m),
                &bob.address,
                &alice.address,
                IdentityTrust::FirstUse,
                NOW,
            );
            assert!(r.is_err(), "byte {i}");
        }
        assert_eq!(b.to_bytes(), before, "byte {i}");
    }
    // Wrong addresses: the relay claims another sender, or delivers to another device.
    let m = prekey_message(&bytes);
    let eve = DeviceAddress::new("eve", 1).unwrap();
    assert_eq!(
        b.decrypt_prekey(
            &m,
            &bob.keys_for(&m),
            &bob.address,
            &eve,
            IdentityTrust::FirstUse,
            NOW
        )
        .unwrap_err(),
        DecryptError::AuthenticationFailed
    );
    let bob3 = DeviceAddress::new("bob", 3).unwrap();
    assert_eq!(
        b.decrypt_prekey(
            &m,
            &bob.keys_for(&m),
            &bob3,
            &alice.address,
            IdentityTrust::FirstUse,
            NOW
        )
        .unwrap_err(),
        DecryptError::AuthenticationFailed
    );
    assert_eq!(b.to_bytes(), before);
    // The genuine message still works afterwards (the record held another identity for this
    // address, so the caller must accept Alice's explicitly).
    let alice_key = alice.identity.public();
    let d = b
        .decrypt_prekey(
            &m,
            &bob.keys_for(&m),
            &bob.address,
            &alice.address,
            IdentityTrust::Pinned(&alice_key),
            NOW,
        )
        .unwrap();
    assert_eq!(d.plaintext, b"secret");
}

#[test]
fn substituted_identity_or_kem_key_fails() {
    let mut rng = rng(7);
    let alice = Device::new("alice", 1, &mut rng);
    let mallory = Device::new("mallory", 1, &mut rng);
    let bob = Device::new("bob", 2, &mut rng);
    let mut a = SessionRecord::new();
    alice.initiate_with(&mut a, &bob, false, false, &mut rng);
    let bytes = a.encrypt(b"x", NOW, &mut rng).unwrap();
    // Mallory swaps in her identity key: the transcript and DH1 no longer match.
    let mut bad = bytes.clone();
    bad[2..67].copy_from_slice(&mallory.identity.public().to_bytes());
    let m = prekey_message(&bad);
    let mut b = SessionRecord::new();
    assert_eq!(
        b.decrypt_prekey(
            &m,
            &bob.keys_for(&m),
            &bob.address,
            &alice.address,
            IdentityTrust::FirstUse,
            NOW
        )
        .unwrap_err(),
        DecryptError::AuthenticationFailed
    );
    // Bob decapsulating with a different KEM key (the relay lied about which key was used).
    let m = prekey_message(&bytes);
    let other = KemPreKey::generate_last_resort(300, &bob.identity, &mut rng);
    let keys = ResponderKeys {
        kem_prekey: Some(&other),
        ..bob.keys_for(&m)
    };
    assert_eq!(
        b.decrypt_prekey(
            &m,
            &keys,
            &bob.address,
            &alice.address,
            IdentityTrust::FirstUse,
            NOW
        )
        .unwrap_err(),
        DecryptError::AuthenticationFailed
    );
    assert!(b.current().is_none());
}

#[test]
fn low_order_base_key_is_rejected() {
    let mut rng = rng(8);
    let alice = Device::new("alice", 1, &mut rng);
    let bob = Device::new("bob", 2, &mut rng);
    let mut a = SessionRecord::new();
    alice.initiate(&mut a, &bob, &mut rng);
    let bytes = a.encrypt(b"x", NOW, &mut rng).unwrap();
    // Base key sits after version, type, identity (65), spk id (4), flag + opk id (5), kem id (4).
    let at = 2 + 65 + 4 + 5 + 4;
    let mut bad = bytes.clone();
    bad[at + 1..at + 33].fill(0);
    assert!(IncomingMessage::from_bytes(&bad).is_err());
    let mut bad = bytes;
    bad[at + 1..at + 33].fill(0);
    bad[at + 1] = 1;
    assert!(IncomingMessage::from_bytes(&bad).is_err());
}

#[test]
fn garbage_never_panics() {
    let mut rng = rng(9);
    let bob = Device::new("bob", 2, &mut rng);
    let mut b = SessionRecord::new();
    let alice = DeviceAddress::new("alice", 1).unwrap();
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for len in 0..300 {
        let mut bytes = Vec::with_capacity(len);
        for _ in 0..len {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            bytes.push(x as u8);
        }
        if len > 2 {
            bytes[0] = 1;
            bytes[1] = 1 + (len % 2) as u8;
        }
        let keys = ResponderKeys {
            identity: &bob.identity,
            signed_prekey: Some(&bob.signed_prekey),
            one_time_prekey: None,
            kem_prekey: Some(&bob.kem_last_resort),
        };
        assert!(b
            .decrypt_bytes(
                &bytes,
                &keys,
                &bob.address,
                &alice,
                IdentityTrust::FirstUse,
                NOW
            )
            .is_err());
        assert!(SessionRecord::from_bytes(&bytes).is_err());
    }
}

/// The base key plus a point of order 8 is the same key for every Diffie-Hellman (the torsion
/// part vanishes under the clamped scalar), so without a check one session would have eight ids.
/// Such a message is refused as malformed and changes nothing; so is an identity key whose X25519
/// half carries a torsion part.
#[test]
fn base_and_identity_keys_with_a_small_order_component_are_rejected() {
    use curve25519_dalek::constants::EIGHT_TORSION;
    use curve25519_dalek::montgomery::MontgomeryPoint;
    use sotto_crypto::keys::IdentityKey;
    let mut rng = rng(8);
    let alice = Device::new("alice", 1, &mut rng);
    let bob = Device::new("bob", 2, &mut rng);
    let with_torsion = |typed: &[u8], t: usize| {
        let u: [u8; 32] = typed[1..33].try_into().unwrap();
        let p = MontgomeryPoint(u).to_edwards(0).unwrap() + EIGHT_TORSION[t];
        let mut out = vec![0x01];
        out.extend_from_slice(&p.to_montgomery().to_bytes());
        out
    };
    for (otk, t) in [(true, 1), (false, 4), (true, 7)] {
        let mut a = SessionRecord::new();
        alice.initiate_with(&mut a, &bob, otk, false, &mut rng);
        let bytes = a.encrypt(b"x", NOW, &mut rng).unwrap();
        let base_at = 2 + 65 + 4 + 1 + if otk { 4 } else { 0 } + 4;
        let ratchet_key_at = base_at + 33 + 1088 + 2;
        assert_eq!(
            bytes[base_at..base_at + 33],
            bytes[ratchet_key_at..ratchet_key_at + 33]
        );
        let bad_key = with_torsion(&bytes[base_at..base_at + 33], t);
        let mut bad = bytes.clone();
        bad[base_at..base_at + 33].copy_from_slice(&bad_key);
        bad[ratchet_key_at..ratchet_key_at + 33].copy_from_slice(&bad_key);
        let m = prekey_message(&bad);
        let mut b = Pair::established(9).b;
        let before = b.to_bytes();
        let alice_key = alice.identity.public();
        let e = b
            .decrypt_prekey(
                &m,
                &bob.keys_for(&m),
                &bob.address,
                &alice.address,
                IdentityTrust::Pinned(&alice_key),
                NOW,
            )
            .unwrap_err();
        assert!(matches!(e, DecryptError::Malformed(_)), "{e:?}");
        assert_eq!(b.to_bytes(), before);
        // The genuine message is fine.
        let m = prekey_message(&bytes);
        b.decrypt_prekey(
            &m,
            &bob.keys_for(&m),
            &bob.address,
            &alice.address,
            IdentityTrust::Pinned(&alice_key),
            NOW,
        )
        .unwrap();
    }
    let good = alice.identity.public().to_bytes();
    IdentityKey::from_bytes(&good).unwrap();
    let pinned = alice.identity.public();
    assert_eq!(
        IdentityKey::from_bytes_known(&good, Some(&pinned)).unwrap(),
        pinned
    );
    for t in 1..8 {
        let mut bad = good.clone();
        bad[33..].copy_from_slice(&with_torsion(&good[32..], t)[1..]);
        assert!(IdentityKey::from_bytes(&bad).is_err(), "torsion {t}");
        // Only an exact copy of the pinned key skips the check.
        assert!(
            IdentityKey::from_bytes_known(&bad, Some(&pinned)).is_err(),
            "torsion {t}"
        );
        assert!(IdentityKey::from_bytes_known(&bad, None).is_err());
    }
}

/// A pre-key message whose identity is the one the responder pinned decodes to exactly that key
/// (its prime-order check is not repeated), through `decrypt_bytes` as well; one under another
/// identity is still fully checked and refused as untrusted.
#[test]
fn pinned_identity_is_not_checked_twice_but_others_are() {
    let mut rng = rng(12);
    let alice = Device::new("alice", 1, &mut rng);
    let bob = Device::new("bob", 2, &mut rng);
    let eve = Device::new("alice", 1, &mut rng);
    let alice_key = alice.identity.public();
    let mut a = SessionRecord::new();
    alice.initiate(&mut a, &bob, &mut rng);
    let wire = a.encrypt(b"hi", NOW, &mut rng).unwrap();
    let IncomingMessage::PreKey(known) =
        IncomingMessage::from_bytes_known(&wire, Some(&alice_key)).unwrap()
    else {
        panic!("expected a pre-key message")
    };
    assert_eq!(*known, prekey_message(&wire));
    let mut b = SessionRecord::new();
    let keys = bob.keys_for(&known);
    let d = b
        .decrypt_bytes(
            &wire,
            &keys,
            &bob.address,
            &alice.address,
            IdentityTrust::Pinned(&alice_key),
            NOW,
        )
        .unwrap();
    assert_eq!(d.plaintext, b"hi");
    // Eve's message, decoded with Alice's key as the known one, keeps Eve's key and is refused.
    let mut e = SessionRecord::new();
    eve.initiate(&mut e, &bob, &mut rng);
    let wire = e.encrypt(b"hi", NOW, &mut rng).unwrap();
    let m = prekey_message(&wire);
    let before = b.to_bytes();
    let r = b.decrypt_bytes(
        &wire,
        &bob.keys_for(&m),
        &bob.address,
        &alice.address,
        IdentityTrust::Pinned(&alice_key),
        NOW,
    );
    assert!(
        matches!(r, Err(DecryptError::UntrustedIdentity { ref offered }) if **offered == eve.identity.public()),
        "{r:?}"
    );
    assert_eq!(b.to_bytes(), before);
}
