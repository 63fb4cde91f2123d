//! Sender Keys: behaviour, known-answer vectors, and delivery-order properties.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;
use sotto_crypto::sender_key::{
    GroupId, ProcessDistributionError, SenderKeyDecryptError, SenderKeyDistributionMessage,
    SenderKeyEncryptError, SenderKeyMessage, SenderKeyRecord, SenderKeyState, MAX_FORWARD_JUMP,
    MAX_PLAINTEXT_LEN, MAX_SKIPPED_MESSAGE_KEYS, MAX_STATES_PER_SENDER,
};

fn rng(seed: u64) -> ChaCha20Rng {
    ChaCha20Rng::seed_from_u64(seed)
}

fn group(name: &str) -> GroupId {
    GroupId::new(name.as_bytes().to_vec()).unwrap()
}

/// A sender and one receiver that got the distribution at the sender's current iteration.
fn pair(seed: u64) -> (SenderKeyState, SenderKeyRecord) {
    let g = group("group-1");
    let sender = SenderKeyState::new(g.clone(), &mut rng(seed));
    let mut record = SenderKeyRecord::new(g);
    record
        .process_distribution(&wire_distribution(&sender))
        .unwrap();
    (sender, record)
}

/// The distribution as the receiver sees it: encoded, sent, decoded.
fn wire_distribution(sender: &SenderKeyState) -> SenderKeyDistributionMessage {
    SenderKeyDistributionMessage::from_bytes(&sender.distribution_message().to_bytes()).unwrap()
}

fn wire(message: &SenderKeyMessage) -> SenderKeyMessage {
    SenderKeyMessage::from_bytes(&message.to_bytes()).unwrap()
}

mod behaviour {
    use super::*;

    #[test]
    fn in_order_round_trip_and_serialization() {
        let (mut sender, mut record) = pair(1);
        for i in 0..5u32 {
            let text = format!("message {i}");
            let m = wire(&sender.encrypt(text.as_bytes()).unwrap());
            assert_eq!(m.iteration(), i);
            assert_eq!(m.chain_id(), sender.chain_id());
            assert_eq!(record.decrypt(&m).unwrap(), text.as_bytes());
        }
        // Both sides survive a trip through the store.
        let mut sender = SenderKeyState::from_bytes(&sender.to_bytes()).unwrap();
        let mut record = SenderKeyRecord::from_bytes(&record.to_bytes()).unwrap();
        assert_eq!(sender.iteration(), 5);
        let m = sender.encrypt(b"after restore").unwrap();
        assert_eq!(record.decrypt(&m).unwrap(), b"after restore");
        // Empty and maximal plaintexts.
        assert_eq!(record.decrypt(&sender.encrypt(b"").unwrap()).unwrap(), b"");
        let big = vec![0xa5; MAX_PLAINTEXT_LEN];
        assert_eq!(
            record
                .decrypt(&wire(&sender.encrypt(&big).unwrap()))
                .unwrap(),
            big
        );
        assert_eq!(
            sender.encrypt(&vec![0; MAX_PLAINTEXT_LEN + 1]),
            Err(SenderKeyEncryptError::PlaintextTooLong(
                MAX_PLAINTEXT_LEN + 1
            ))
        );
    }

    #[test]
    fn out_of_order_delivery_and_replay() {
        let (mut sender, mut record) = pair(2);
        let messages: Vec<_> = (0..6).map(|i| sender.encrypt(&[i]).unwrap()).collect();
        for &i in &[3usize, 0, 5, 1] {
            assert_eq!(record.decrypt(&messages[i]).unwrap(), [i as u8]);
        }
        // 2 and 4 are kept as skipped keys; used ones are gone.
        assert_eq!(record.skipped_message_keys(sender.chain_id()), 2);
        for &i in &[3usize, 0, 5, 1] {
            assert_eq!(
                record.decrypt(&messages[i]),
                Err(SenderKeyDecryptError::Replay {
                    iteration: i as u32
                })
            );
        }
        assert_eq!(record.decrypt(&messages[4]).unwrap(), [4]);
        assert_eq!(record.decrypt(&messages[2]).unwrap(), [2]);
        assert_eq!(record.skipped_message_keys(sender.chain_id()), 0);
        assert!(matches!(
            record.decrypt(&messages[2]),
            Err(SenderKeyDecryptError::Replay { iteration: 2 })
        ));
    }

    /// Builds the sender's state at `iteration` by stepping the chain as the specification says
    /// (`CK_{i+1} = HMAC-SHA256(CK_i, 0x02)`), without signing every message in between.
    fn sender_at(sender: &SenderKeyState, iteration: u32) -> SenderKeyState {
        use hmac::{Hmac, Mac};
        let mut bytes = sender.to_bytes().to_vec();
        // version, tag, u32 len + group id, chain id, iteration, chain key, secret key
        let at = 2 + 4 + sender.group_id().as_bytes().len() + 4;
        assert_eq!(u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap()), 0);
        let mut ck: [u8; 32] = bytes[at + 4..at + 36].try_into().unwrap();
        for _ in 0..iteration {
            let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(&ck).unwrap();
            mac.update(&[0x02]);
            ck = mac.finalize().into_bytes().into();
        }
        bytes[at..at + 4].copy_from_slice(&iteration.to_be_bytes());
        bytes[at + 4..at + 36].copy_from_slice(&ck);
        SenderKeyState::from_bytes(&bytes).unwrap()
    }

    #[test]
    fn forward_jump_limit_and_skipped_key_eviction() {
        let (sender, mut record) = pair(3);
        let chain = sender.chain_id();
        let too_far = sender_at(&sender, MAX_FORWARD_JUMP + 1)
            .encrypt(b"x")
            .unwrap();
        let before = record.to_bytes();
        assert_eq!(
            record.decrypt(&too_far),
            Err(SenderKeyDecryptError::TooFarAhead {
                iteration: MAX_FORWARD_JUMP + 1,
                current: 0
            })
        );
        assert_eq!(*record.to_bytes(), *before);

        // Exactly the limit is fine, and only the newest 2,000 skipped keys are kept.
        let mut far = sender_at(&sender, MAX_FORWARD_JUMP);
        assert_eq!(
            record.decrypt(&far.encrypt(b"far").unwrap()).unwrap(),
            b"far"
        );
        assert_eq!(record.skipped_message_keys(chain), MAX_SKIPPED_MESSAGE_KEYS);
        let oldest_kept = MAX_FORWARD_JUMP - MAX_SKIPPED_MESSAGE_KEYS as u32;
        let evicted = sender_at(&sender, oldest_kept - 1).encrypt(b"e").unwrap();
        assert_eq!(
            record.decrypt(&evicted),
            Err(SenderKeyDecryptError::Replay {
                iteration: oldest_kept - 1
            })
        );
        let kept = sender_at(&sender, oldest_kept).encrypt(b"k").unwrap();
        assert_eq!(record.decrypt(&kept).unwrap(), b"k");
        assert_eq!(
            record.skipped_message_keys(chain),
            MAX_SKIPPED_MESSAGE_KEYS - 1
        );

        // A second gap evicts the oldest of the first one.
        let mut next = sender_at(&sender, MAX_FORWARD_JUMP + 11);
        assert_eq!(record.decrypt(&next.encrypt(b"n").unwrap()).unwrap(), b"n");
        assert_eq!(record.skipped_message_keys(chain), MAX_SKIPPED_MESSAGE_KEYS);
        let pushed_out = sender_at(&sender, oldest_kept + 1).encrypt(b"p").unwrap();
        assert!(matches!(
            record.decrypt(&pushed_out),
            Err(SenderKeyDecryptError::Replay { .. })
        ));
        // The record with a full skipped-key store survives serialization.
        let restored = SenderKeyRecord::from_bytes(&record.to_bytes()).unwrap();
        assert_eq!(
            restored.skipped_message_keys(chain),
            MAX_SKIPPED_MESSAGE_KEYS
        );
    }

    #[test]
    fn five_states_per_sender_oldest_evicted() {
        let g = group("group-5");
        let mut r = rng(5);
        let mut sender = SenderKeyState::new(g.clone(), &mut r);
        let mut record = SenderKeyRecord::new(g);
        let mut first_messages = Vec::new();
        let mut chain_ids = Vec::new();
        for _ in 0..=MAX_STATES_PER_SENDER {
            record
                .process_distribution(&wire_distribution(&sender))
                .unwrap();
            chain_ids.push(sender.chain_id());
            first_messages.push(sender.encrypt(b"m").unwrap());
            sender.rotate(&mut r);
        }
        assert_eq!(record.chain_ids(), chain_ids[1..].to_vec());
        assert_eq!(
            record.decrypt(&first_messages[0]),
            Err(SenderKeyDecryptError::UnknownChain(chain_ids[0]))
        );
        for m in &first_messages[1..] {
            assert_eq!(record.decrypt(m).unwrap(), b"m");
        }
        let restored = SenderKeyRecord::from_bytes(&record.to_bytes()).unwrap();
        assert_eq!(restored.chain_ids(), record.chain_ids());
    }

    #[test]
    fn late_joiner_decrypts_from_its_distribution_on() {
        let (mut sender, mut early) = pair(6);
        let before: Vec<_> = (0..3).map(|i| sender.encrypt(&[i]).unwrap()).collect();
        let mut late = SenderKeyRecord::new(sender.group_id().clone());
        let distribution = wire_distribution(&sender);
        assert_eq!(distribution.iteration(), 3);
        late.process_distribution(&distribution).unwrap();
        let after = sender.encrypt(b"welcome").unwrap();
        for (i, m) in before.iter().enumerate() {
            assert_eq!(
                late.decrypt(m),
                Err(SenderKeyDecryptError::BeforeJoin {
                    iteration: i as u32,
                    first: 3
                })
            );
            assert_eq!(early.decrypt(m).unwrap(), [i as u8]);
        }
        assert_eq!(late.decrypt(&after).unwrap(), b"welcome");
        assert_eq!(early.decrypt(&after).unwrap(), b"welcome");
    }

    #[test]
    fn rotation_shuts_out_removed_members() {
        let g = group("group-r");
        let mut r = rng(7);
        let mut sender = SenderKeyState::new(g.clone(), &mut r);
        let mut stays = SenderKeyRecord::new(g.clone());
        let mut leaves = SenderKeyRecord::new(g);
        let d = wire_distribution(&sender);
        stays.process_distribution(&d).unwrap();
        leaves.process_distribution(&d).unwrap();
        let in_flight = sender.encrypt(b"old chain").unwrap();
        let old_chain = sender.chain_id();

        sender.rotate(&mut r);
        assert_ne!(sender.chain_id(), old_chain);
        assert_eq!(sender.iteration(), 0);
        assert_ne!(wire_distribution(&sender).signing_key(), d.signing_key());
        stays
            .process_distribution(&wire_distribution(&sender))
            .unwrap();
        let new = sender.encrypt(b"new chain").unwrap();

        assert_eq!(stays.decrypt(&new).unwrap(), b"new chain");
        assert_eq!(stays.decrypt(&in_flight).unwrap(), b"old chain");
        assert_eq!(
            leaves.decrypt(&new),
            Err(SenderKeyDecryptError::UnknownChain(sender.chain_id()))
        );
    }

    #[test]
    fn duplicate_distribution_never_rewinds_the_chain() {
        let (mut sender, mut record) = pair(8);
        let d0 = wire_distribution(&sender);
        let m0 = sender.encrypt(b"zero").unwrap();
        assert_eq!(record.decrypt(&m0).unwrap(), b"zero");
        record.process_distribution(&d0).unwrap();
        assert_eq!(
            record.decrypt(&m0),
            Err(SenderKeyDecryptError::Replay { iteration: 0 })
        );
        assert_eq!(record.chain_ids().len(), 1);
    }

    #[test]
    fn group_id_is_bound() {
        let (mut sender, _) = pair(9);
        let mut other = SenderKeyRecord::new(group("group-2"));
        let d = sender.distribution_message();
        assert_eq!(
            other.process_distribution(&d),
            Err(ProcessDistributionError::GroupMismatch)
        );
        // Re-label the distribution for group-2 (as a malicious sender could): the chain and
        // signature are valid, but the AEAD's associated data names group-1.
        let mut bytes = d.to_bytes().to_vec();
        let at = bytes.windows(7).position(|w| w == b"group-1").unwrap();
        bytes[at + 6] = b'2';
        other
            .process_distribution(&SenderKeyDistributionMessage::from_bytes(&bytes).unwrap())
            .unwrap();
        let m = sender.encrypt(b"for group-1").unwrap();
        assert_eq!(
            other.decrypt(&m),
            Err(SenderKeyDecryptError::DecryptionFailed)
        );
    }

    #[test]
    fn any_flipped_bit_is_rejected_and_leaves_the_record_unchanged() {
        let (mut sender, mut record) = pair(10);
        let message = sender.encrypt(b"tamper with me").unwrap().to_bytes();
        let before = record.to_bytes();
        // One flip per byte, cycling through bit positions, covers every field and every bit index;
        // each costs a signature verification, which is slow in debug builds.
        for i in 0..message.len() {
            let mut bad = message.clone();
            bad[i] ^= 1 << (i % 8);
            if let Ok(m) = SenderKeyMessage::from_bytes(&bad) {
                assert!(record.decrypt(&m).is_err(), "flip in byte {i} accepted");
            }
            assert_eq!(
                *record.to_bytes(),
                *before,
                "flip in byte {i} changed the record"
            );
        }
        // Truncated and extended encodings do not even decode.
        assert!(SenderKeyMessage::from_bytes(&message[..message.len() - 1]).is_err());
        let mut longer = message.clone();
        longer.push(0);
        assert!(SenderKeyMessage::from_bytes(&longer).is_err());
        // The untouched message still decrypts.
        assert_eq!(
            record
                .decrypt(&SenderKeyMessage::from_bytes(&message).unwrap())
                .unwrap(),
            b"tamper with me"
        );
    }

    #[test]
    fn signature_from_another_member_is_rejected() {
        // A member holds the chain key but not the sender's signing key.
        let (mut sender, mut record) = pair(11);
        let mut impostor = SenderKeyState::new(sender.group_id().clone(), &mut rng(12));
        let genuine = sender.encrypt(b"genuine").unwrap().to_bytes();
        let forged = impostor.encrypt(b"forged").unwrap().to_bytes();
        let mut spliced = genuine.clone();
        let n = spliced.len();
        spliced[n - 64..].copy_from_slice(&forged[forged.len() - 64..]);
        assert_eq!(
            record.decrypt(&SenderKeyMessage::from_bytes(&spliced).unwrap()),
            Err(SenderKeyDecryptError::BadSignature)
        );
    }

    #[test]
    fn hostile_records_and_distributions_are_refused() {
        let (mut sender, mut record) = pair(13);
        let ms: Vec<_> = (0..3).map(|_| sender.encrypt(b"x").unwrap()).collect();
        record.decrypt(&ms[2]).unwrap();
        let bytes = record.to_bytes().to_vec();
        for cut in 0..bytes.len() {
            assert!(SenderKeyRecord::from_bytes(&bytes[..cut]).is_err());
        }
        assert!(SenderKeyRecord::from_bytes(&[bytes.clone(), vec![0]].concat()).is_err());
        // Skipped iterations out of order are refused.
        let skipped_at = bytes.len() - 2 * 36;
        let mut swapped = bytes.clone();
        swapped[skipped_at..skipped_at + 4].copy_from_slice(&1u32.to_be_bytes());
        swapped[skipped_at + 36..skipped_at + 40].copy_from_slice(&0u32.to_be_bytes());
        assert!(SenderKeyRecord::from_bytes(&swapped).is_err());
        let d = sender.distribution_message().to_bytes();
        for cut in 0..d.len() {
            assert!(SenderKeyDistributionMessage::from_bytes(&d[..cut]).is_err());
        }
        assert!(GroupId::new(Vec::new()).is_err());
        assert!(GroupId::new(vec![0; 65]).is_err());
    }

    #[test]
    fn debug_output_holds_no_secrets() {
        let (sender, record) = pair(14);
        let d = sender.distribution_message();
        let state_bytes = sender.to_bytes();
        let secrets = [
            &state_bytes[state_bytes.len() - 64..state_bytes.len() - 32],
            &state_bytes[state_bytes.len() - 32..],
        ];
        let shown = format!("{sender:?} {record:?} {d:?}");
        for secret in secrets {
            assert!(!shown.contains(&hex::encode(secret)));
            assert!(!shown.contains(&format!("{secret:?}")));
            assert!(!shown.contains(&format!("{:?}", &secret[..4])));
        }
    }
}

/// Known-answer vectors: `crypto/vectors/sender_key.json`, regenerated with
/// `SOTTO_REGENERATE_VECTORS=1 cargo test -p sotto-crypto --test group`.
mod vectors {
    use super::*;
    use aes_gcm::aead::{Aead, KeyInit, Payload};
    use hkdf::Hkdf;
    use hmac::{Hmac, Mac};
    use serde_json::{json, Value};
    use sha2::{Digest, Sha256};

    const VECTORS: &str = "sender_key.json";

    fn generate() -> Value {
        let g = group("sotto-test-group");
        let mut r = rng(0x5e4d);
        let mut sender = SenderKeyState::new(g.clone(), &mut r);
        let distribution = sender.distribution_message();
        let state0 = sender.to_bytes();
        let plaintexts: [&[u8]; 3] = [b"", b"hello group", &[0x42; 100]];
        let messages: Vec<_> = plaintexts
            .iter()
            .map(|p| sender.encrypt(p).unwrap())
            .collect();
        let mut record = SenderKeyRecord::new(g.clone());
        record.process_distribution(&distribution).unwrap();
        // Deliver 0 then 2: the record keeps message 1's seed.
        record.decrypt(&messages[0]).unwrap();
        record.decrypt(&messages[2]).unwrap();
        json!({
            "description": "Sender Keys v1 (docs/protocol/sender-keys.md). Generated from ChaCha20Rng::seed_from_u64(0x5e4d): SenderKeyState::new draws the chain id (next_u32), the chain key (32 bytes), then the Ed25519 secret key (32 bytes).",
            "group_id": hex::encode(g.as_bytes()),
            "chain_id": sender.chain_id(),
            "signing_public_key": hex::encode(distribution.signing_key()),
            "sender_state_at_0": hex::encode(&*state0),
            "distribution": hex::encode(&*distribution.to_bytes()),
            "messages": messages.iter().zip(plaintexts).map(|(m, p)| json!({
                "iteration": m.iteration(),
                "plaintext": hex::encode(p),
                "message": hex::encode(m.as_bytes()),
            })).collect::<Vec<_>>(),
            "sender_state_after": hex::encode(&*sender.to_bytes()),
            "record_after_0_and_2": hex::encode(&*record.to_bytes()),
        })
    }

    #[test]
    fn vectors_match_the_committed_file() {
        common::check_committed_vectors(VECTORS, &generate());
    }

    fn unhex(v: &Value) -> Vec<u8> {
        hex::decode(v.as_str().unwrap()).unwrap()
    }

    /// Decrypts the committed messages from the committed distribution using only the
    /// specification and the primitives, independently of the crate's own code.
    #[test]
    fn vectors_follow_the_specification() {
        let v: Value = common::load_vectors(VECTORS);
        let group_id = unhex(&v["group_id"]);
        let d = unhex(&v["distribution"]);
        // version 1 | tag 0x20 | u32 len | group id | u32 chain id | u32 iteration | ck | signing key
        assert_eq!(&d[..2], &[1, 0x20]);
        let gl = u32::from_be_bytes(d[2..6].try_into().unwrap()) as usize;
        assert_eq!(&d[6..6 + gl], &group_id[..]);
        let rest = &d[6 + gl..];
        let chain_id = u32::from_be_bytes(rest[..4].try_into().unwrap());
        assert_eq!(u64::from(chain_id), v["chain_id"].as_u64().unwrap());
        assert_eq!(u32::from_be_bytes(rest[4..8].try_into().unwrap()), 0);
        let mut ck: [u8; 32] = rest[8..40].try_into().unwrap();
        let vk = ed25519_dalek::VerifyingKey::from_bytes(rest[40..72].try_into().unwrap()).unwrap();
        assert_eq!(rest.len(), 72);

        let hmac = |key: &[u8; 32], byte: u8| -> [u8; 32] {
            let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).unwrap();
            mac.update(&[byte]);
            mac.finalize().into_bytes().into()
        };
        for (i, m) in v["messages"].as_array().unwrap().iter().enumerate() {
            let bytes = unhex(&m["message"]);
            let (signed, sig) = bytes.split_at(bytes.len() - 64);
            let mut signed_input = b"Sotto v1 SenderKeyMessage signature".to_vec();
            signed_input.extend_from_slice(&sha2::Sha256::digest(signed));
            vk.verify_strict(
                &signed_input,
                &ed25519_dalek::Signature::from_slice(sig).unwrap(),
            )
            .unwrap();
            assert_eq!(&signed[..2], &[1, 0x21]);
            assert_eq!(&signed[2..6], &chain_id.to_be_bytes());
            assert_eq!(&signed[6..10], &(i as u32).to_be_bytes());
            let n = u32::from_be_bytes(signed[10..14].try_into().unwrap()) as usize;
            assert_eq!(signed.len(), 14 + n);

            let seed = hmac(&ck, 0x01);
            let mut okm = [0u8; 44];
            Hkdf::<Sha256>::from_prk(&seed)
                .unwrap()
                .expand(b"Sotto v1 SenderKey MessageKeys", &mut okm)
                .unwrap();
            let mut ad = signed[..10].to_vec();
            ad.extend_from_slice(&(group_id.len() as u32).to_be_bytes());
            ad.extend_from_slice(&group_id);
            let plaintext = aes_gcm::Aes256Gcm::new_from_slice(&okm[..32])
                .unwrap()
                .decrypt(
                    aes_gcm::Nonce::from_slice(&okm[32..]),
                    Payload {
                        msg: &signed[14..],
                        aad: &ad,
                    },
                )
                .unwrap();
            assert_eq!(plaintext, unhex(&m["plaintext"]));
            ck = hmac(&ck, 0x02);
        }
    }

    #[test]
    fn committed_record_and_state_still_work() {
        let v: Value = common::load_vectors(VECTORS);
        let mut record = SenderKeyRecord::from_bytes(&unhex(&v["record_after_0_and_2"])).unwrap();
        let m1 = SenderKeyMessage::from_bytes(&unhex(&v["messages"][1]["message"])).unwrap();
        assert_eq!(record.decrypt(&m1).unwrap(), b"hello group");
        let mut state = SenderKeyState::from_bytes(&unhex(&v["sender_state_after"])).unwrap();
        assert_eq!(state.iteration(), 3);
        assert_eq!(
            record.decrypt(&state.encrypt(b"next").unwrap()).unwrap(),
            b"next"
        );
    }
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

        /// Any delivery order, with duplicates, decrypts every message exactly once and rejects
        /// every repeat as a replay.
        #[test]
        fn any_delivery_order_decrypts_each_message_exactly_once(
            order in (1usize..12).prop_flat_map(|n| {
                prop::collection::vec(0..n, n..2 * n).prop_map(move |extra| (n, extra))
            }).prop_flat_map(|(n, extra)| {
                let all: Vec<usize> = (0..n).chain(extra).collect();
                Just(all).prop_shuffle()
            }),
            seed in any::<u64>(),
        ) {
            let n = order.iter().max().unwrap() + 1;
            let (mut sender, mut record) = pair(seed);
            let messages: Vec<_> = (0..n).map(|i| sender.encrypt(&(i as u32).to_be_bytes()).unwrap()).collect();
            let mut seen = vec![false; n];
            for &i in &order {
                match record.decrypt(&messages[i]) {
                    Ok(p) => {
                        prop_assert!(!seen[i]);
                        prop_assert_eq!(p, (i as u32).to_be_bytes().to_vec());
                        seen[i] = true;
                    }
                    Err(e) => {
                        prop_assert!(seen[i]);
                        prop_assert_eq!(e, SenderKeyDecryptError::Replay { iteration: i as u32 });
                    }
                }
            }
            prop_assert!(seen.iter().all(|s| *s));
            prop_assert_eq!(record.skipped_message_keys(sender.chain_id()), 0);
        }
    }
}
