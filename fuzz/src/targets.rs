//! Every `sotto-crypto` decoder of untrusted bytes, as one entry point per fuzz target.
//!
//! Shared by the libFuzzer targets in `fuzz/fuzz_targets/` and by `crypto/tests/fuzz_corpus.rs`,
//! which replays the committed corpus through the same functions on stable Rust. Each function must
//! return for every input without panicking; the assertions state properties that hold for every
//! input (a panic is a finding):
//! - a decoder that accepts bytes re-encodes them to a value that decodes again to the same encoding
//!   (for the group, attachment and safety-number formats: to exactly the input, as every encoding
//!   has one valid byte string);
//! - a failed group decryption leaves the receiver's record unchanged.

use std::sync::OnceLock;

use sotto_crypto::address::DeviceAddress;
use sotto_crypto::attachment::{AttachmentDigest, AttachmentKey, Decryptor};
use sotto_crypto::fingerprint::SafetyNumber;
use sotto_crypto::keys::{
    validate_one_time_prekey, IdentityKey, IdentityKeyPair, KemPreKey, KemPreKeyPublic,
    OneTimePreKey, OneTimePreKeyPublic, PreKeyBundle, SignedPreKey, SignedPreKeyPublic,
};
use sotto_crypto::pqxdh::PreKeyMessage;
use sotto_crypto::ratchet::RatchetMessage;
use sotto_crypto::sender_key::{
    SenderKeyDistributionMessage, SenderKeyMessage, SenderKeyRecord, SenderKeyState,
};
use sotto_crypto::session::{IncomingMessage, SessionRecord};

/// A target's entry point: runs one input.
pub type Target = fn(&[u8]);

/// Every target by name (the name of its `fuzz_targets/<name>.rs` and `corpus/<name>/`).
pub const TARGETS: &[(&str, Target)] = &[
    ("sender_key_message", sender_key_message),
    ("sender_key_distribution", sender_key_distribution),
    ("sender_key_state", sender_key_state),
    ("sender_key_record", sender_key_record),
    ("attachment_decrypt", attachment_decrypt),
    ("safety_number_qr", safety_number_qr),
    ("identity_key", identity_key),
    ("identity_key_pair", identity_key_pair),
    ("signed_prekey", signed_prekey),
    ("one_time_prekey", one_time_prekey),
    ("kem_prekey", kem_prekey),
    ("device_address", device_address),
    ("prekey_message", prekey_message),
    ("ratchet_message", ratchet_message),
    ("incoming_message", incoming_message),
    ("session_record", session_record),
    ("prekey_bundle", prekey_bundle),
];

/// The group sender every sender-key target decrypts against: a fixed state (group "fuzz-group",
/// chain id 0x0102_0304, iteration 0, chain key 0x11.., signing secret 0x22..).
pub fn fixed_sender() -> SenderKeyState {
    let mut bytes = vec![0x01, 0x22, 0, 0, 0, 10];
    bytes.extend_from_slice(b"fuzz-group");
    bytes.extend_from_slice(&0x0102_0304u32.to_be_bytes());
    bytes.extend_from_slice(&0u32.to_be_bytes());
    bytes.extend_from_slice(&[0x11; 32]);
    bytes.extend_from_slice(&[0x22; 32]);
    match SenderKeyState::from_bytes(&bytes) {
        Ok(state) => state,
        Err(e) => panic!("the fixed sender state must decode: {e}"),
    }
}

fn fixed_record() -> SenderKeyRecord {
    static RECORD: OnceLock<SenderKeyRecord> = OnceLock::new();
    RECORD
        .get_or_init(|| {
            let sender = fixed_sender();
            let mut record = SenderKeyRecord::new(sender.group_id().clone());
            if record
                .process_distribution(&sender.distribution_message())
                .is_err()
            {
                panic!("a sender's own distribution must install");
            }
            record
        })
        .clone()
}

pub fn sender_key_message(data: &[u8]) {
    let Ok(message) = SenderKeyMessage::from_bytes(data) else {
        return;
    };
    assert_eq!(message.as_bytes(), data);
    let mut record = fixed_record();
    let before = record.to_bytes();
    if record.decrypt(&message).is_err() {
        assert_eq!(
            *record.to_bytes(),
            *before,
            "a failed decryption changed the record"
        );
    }
}

pub fn sender_key_distribution(data: &[u8]) {
    let Ok(distribution) = SenderKeyDistributionMessage::from_bytes(data) else {
        return;
    };
    assert_eq!(*distribution.to_bytes(), data);
    let mut record = SenderKeyRecord::new(distribution.group_id().clone());
    assert!(record.process_distribution(&distribution).is_ok());
    assert!(SenderKeyRecord::from_bytes(&record.to_bytes()).is_ok());
}

pub fn sender_key_state(data: &[u8]) {
    if let Ok(state) = SenderKeyState::from_bytes(data) {
        assert_eq!(*state.to_bytes(), data);
    }
}

pub fn sender_key_record(data: &[u8]) {
    if let Ok(record) = SenderKeyRecord::from_bytes(data) {
        assert_eq!(*record.to_bytes(), data);
    }
}

/// The first byte picks how the rest is split into pushes; the rest is the blob.
pub fn attachment_decrypt(data: &[u8]) {
    let Some((&split, blob)) = data.split_first() else {
        return;
    };
    let key = AttachmentKey::from_bytes(&[0x33; 32]);
    for digest in [AttachmentDigest::of(blob), AttachmentDigest([0; 32])] {
        let mut decryptor = Decryptor::new(&key, &digest);
        let mut out = Vec::new();
        let mut ok = true;
        for piece in blob.chunks(usize::from(split) * 257 + 1) {
            if decryptor.push(piece, &mut out).is_err() {
                ok = false;
                break;
            }
        }
        if ok {
            let _ = decryptor.finish(&mut out);
        }
    }
}

/// The safety number the QR target compares against ("alice" and "bob" with identity keys from
/// all-1 and all-2 secret seeds).
pub fn fixed_safety_number() -> &'static SafetyNumber {
    static NUMBER: OnceLock<SafetyNumber> = OnceLock::new();
    NUMBER.get_or_init(|| {
        let key = |seed: u8| {
            let ed = ed25519_dalek::SigningKey::from_bytes(&[seed; 32]).verifying_key();
            let x = x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::from([seed; 32]));
            let bytes = [&[0x10][..], ed.as_bytes(), x.as_bytes()].concat();
            match IdentityKey::from_bytes(&bytes) {
                Ok(k) => k,
                Err(e) => panic!("fixed identity key must decode: {e}"),
            }
        };
        SafetyNumber::new("alice", &key(1), "bob", &key(2))
    })
}

pub fn safety_number_qr(data: &[u8]) {
    let number = fixed_safety_number();
    if let Ok(true) = number.matches_qr(data) {
        assert_eq!(number.qr_payload(), data);
    }
}

/// A decoder that accepts must re-encode to bytes that decode to the same encoding again.
fn stable<T, E, B: AsRef<[u8]>>(
    data: &[u8],
    decode: impl Fn(&[u8]) -> Result<T, E>,
    encode: impl Fn(&T) -> B,
) {
    if let Ok(value) = decode(data) {
        let once = encode(&value);
        match decode(once.as_ref()) {
            Ok(again) => assert_eq!(encode(&again).as_ref(), once.as_ref()),
            Err(_) => panic!("re-encoding of an accepted input does not decode"),
        }
    }
}

pub fn identity_key(data: &[u8]) {
    stable(data, IdentityKey::from_bytes, IdentityKey::to_bytes);
}

pub fn identity_key_pair(data: &[u8]) {
    stable(data, IdentityKeyPair::from_bytes, |k| k.to_bytes().to_vec());
}

pub fn signed_prekey(data: &[u8]) {
    stable(data, SignedPreKey::from_bytes, |k| k.to_bytes().to_vec());
}

pub fn one_time_prekey(data: &[u8]) {
    stable(data, OneTimePreKey::from_bytes, |k| k.to_bytes().to_vec());
}

pub fn kem_prekey(data: &[u8]) {
    stable(data, KemPreKey::from_bytes, |k| k.to_bytes().to_vec());
}

pub fn device_address(data: &[u8]) {
    stable(data, DeviceAddress::from_bytes, DeviceAddress::to_bytes);
}

pub fn prekey_message(data: &[u8]) {
    stable(data, PreKeyMessage::from_bytes, PreKeyMessage::to_bytes);
}

pub fn ratchet_message(data: &[u8]) {
    stable(data, RatchetMessage::from_bytes, RatchetMessage::to_bytes);
}

pub fn incoming_message(data: &[u8]) {
    let _ = IncomingMessage::from_bytes(data);
}

pub fn session_record(data: &[u8]) {
    stable(data, SessionRecord::from_bytes, |r| r.to_bytes().to_vec());
}

/// Splits a fuzz input into length-prefixed fields (`u16` BE length, then bytes; missing input reads
/// as empty) and `u32` ids (missing bytes read as zero).
struct Fields<'a>(&'a [u8]);

impl<'a> Fields<'a> {
    fn bytes(&mut self) -> &'a [u8] {
        let (len, rest) = match self.0 {
            [a, b, rest @ ..] => (usize::from(u16::from_be_bytes([*a, *b])), rest),
            _ => (0, &[][..]),
        };
        let (field, rest) = rest.split_at(len.min(rest.len()));
        self.0 = rest;
        field
    }

    fn id(&mut self) -> u32 {
        let mut id = [0u8; 4];
        let n = self.0.len().min(4);
        id[..n].copy_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        u32::from_be_bytes(id)
    }
}

/// The input framing of [`prekey_bundle`], for building seeds: identity key, signed prekey id,
/// public key and signature, one-time prekey id and public key (`None`: empty key), KEM prekey id,
/// public key and signature.
#[allow(clippy::too_many_arguments)]
pub fn prekey_bundle_input(
    identity_key: &[u8],
    signed_id: u32,
    signed_public: &[u8],
    signed_signature: &[u8],
    one_time: Option<(u32, &[u8])>,
    kem_id: u32,
    kem_public: &[u8],
    kem_signature: &[u8],
) -> Vec<u8> {
    let mut out = Vec::new();
    let mut field = |bytes: &[u8]| {
        out.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
        out.extend_from_slice(bytes);
    };
    field(identity_key);
    field(signed_public);
    field(signed_signature);
    field(one_time.map_or(&[][..], |(_, k)| k));
    field(kem_public);
    field(kem_signature);
    out.extend_from_slice(&signed_id.to_be_bytes());
    out.extend_from_slice(&one_time.map_or(0, |(id, _)| id).to_be_bytes());
    out.extend_from_slice(&kem_id.to_be_bytes());
    out
}

/// A prekey bundle as the relay hands it out: every field untrusted until `verify` succeeds.
pub fn prekey_bundle(data: &[u8]) {
    let _ = prekey_bundle_verifies(data);
}

/// Whether the framed bundle decodes and verifies (the replay test checks the valid seeds do).
pub fn prekey_bundle_verifies(data: &[u8]) -> bool {
    let mut f = Fields(data);
    let (identity, signed_public, signed_signature, one_time_public, kem_public, kem_signature) = (
        f.bytes(),
        f.bytes(),
        f.bytes(),
        f.bytes(),
        f.bytes(),
        f.bytes(),
    );
    let (signed_id, one_time_id, kem_id) = (f.id(), f.id(), f.id());
    let _ = validate_one_time_prekey(one_time_public);
    let Ok(identity_key) = IdentityKey::from_bytes(identity) else {
        return false;
    };
    let Ok(signed_prekey) = SignedPreKeyPublic::new(signed_id, signed_public, signed_signature)
    else {
        return false;
    };
    let Ok(kem_prekey) = KemPreKeyPublic::new(kem_id, kem_public, kem_signature) else {
        return false;
    };
    let one_time_prekey = if one_time_public.is_empty() {
        None
    } else {
        match OneTimePreKeyPublic::new(one_time_id, one_time_public) {
            Ok(k) => Some(k),
            Err(_) => return false,
        }
    };
    let bundle = PreKeyBundle {
        identity_key,
        signed_prekey,
        one_time_prekey,
        kem_prekey,
    };
    bundle.verify().is_ok()
}
