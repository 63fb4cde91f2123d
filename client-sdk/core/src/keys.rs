//! This device's prekeys: generation, upload bodies, lookup for incoming pre-key messages,
//! consumption, replenishment and rotation.

use std::collections::BTreeMap;

use rand_core::{CryptoRng, RngCore};
use sotto_crypto::keys::{IdentityKeyPair, KemPreKey, OneTimePreKey, SignedPreKey};
use sotto_crypto::pqxdh::ResponderKeys;
use sotto_wire::{Base64, KeysUpload, PreKey};
use zeroize::Zeroizing;

use crate::store::{tables, StoreOp};

/// One-time X25519 prekeys per upload.
pub const ONE_TIME_BATCH: u32 = 100;
/// One-time ML-KEM prekeys per upload.
pub const KEM_BATCH: u32 = 40;
/// Upload more when the relay holds fewer than this many of either kind.
pub const LOW_WATER: u32 = 20;
/// Signed and last-resort KEM prekeys are replaced after this long (ms).
pub const ROTATE_AFTER_MS: u64 = 7 * 24 * 3600 * 1000;
/// Replaced signed/last-resort keys are kept this many generations for late pre-key messages.
const KEEP_GENERATIONS: usize = 3;
/// Most one-time secrets kept locally (the oldest go first).
const MAX_LOCAL_ONE_TIME: usize = 1000;

const KIND_SIGNED: u8 = 1;
const KIND_ONE_TIME: u8 = 2;
const KIND_KEM: u8 = 3;
const KIND_LAST_RESORT: u8 = 4;

/// The device's prekey secrets.
#[derive(Default)]
pub(crate) struct PreKeys {
    signed: Vec<SignedPreKey>,
    last_resort: Vec<KemPreKey>,
    one_time: BTreeMap<u32, OneTimePreKey>,
    kem: BTreeMap<u32, KemPreKey>,
    /// When the newest signed prekey was made (ms).
    pub(crate) rotated_at: u64,
    pub(crate) next_id: u32,
}

impl core::fmt::Debug for PreKeys {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let Self {
            signed,
            last_resort,
            one_time,
            kem,
            rotated_at,
            next_id,
        } = self;
        f.debug_struct("PreKeys")
            .field("signed", &signed.len())
            .field("last_resort", &last_resort.len())
            .field("one_time", &one_time.len())
            .field("kem", &kem.len())
            .field("rotated_at", rotated_at)
            .field("next_id", next_id)
            .finish_non_exhaustive()
    }
}

fn partition(kind: u8, id: u32) -> Vec<u8> {
    let mut p = vec![kind];
    p.extend_from_slice(&id.to_be_bytes());
    p
}

fn put(kind: u8, id: u32, secret: &[u8]) -> StoreOp {
    let mut value = Zeroizing::new(Vec::with_capacity(1 + secret.len()));
    value.push(kind);
    value.extend_from_slice(secret);
    StoreOp::Put {
        table: tables::PREKEYS,
        partition: partition(kind, id),
        sort: 0,
        value,
    }
}

fn delete(kind: u8, id: u32) -> StoreOp {
    StoreOp::Delete {
        table: tables::PREKEYS,
        partition: partition(kind, id),
        sort: 0,
    }
}

impl PreKeys {
    fn take_id(&mut self) -> u32 {
        self.next_id = self.next_id.wrapping_add(1).max(1);
        self.next_id
    }

    /// A fresh signed prekey and last-resort KEM key (first upload or rotation).
    pub(crate) fn rotate(
        &mut self,
        identity: &IdentityKeyPair,
        now_ms: u64,
        rng: &mut (impl RngCore + CryptoRng),
        upload: &mut KeysUpload,
        ops: &mut Vec<StoreOp>,
    ) {
        let spk = SignedPreKey::generate(self.take_id(), identity, rng);
        let lr = KemPreKey::generate_last_resort(self.take_id(), identity, rng);
        ops.push(put(KIND_SIGNED, spk.id(), &spk.to_bytes()));
        ops.push(put(KIND_LAST_RESORT, lr.id(), &lr.to_bytes()));
        let p = spk.public();
        upload.signed_pre_key = Some(sotto_wire::SignedPreKey {
            key_id: p.key_id(),
            public_key: Base64(p.public_key().to_vec()),
            signature: Base64(p.signature().to_vec()),
        });
        let k = lr.public();
        upload.kem_last_resort_key = Some(sotto_wire::SignedPreKey {
            key_id: k.key_id(),
            public_key: Base64(k.public_key().to_vec()),
            signature: Base64(k.signature().to_vec()),
        });
        self.signed.push(spk);
        self.last_resort.push(lr);
        while self.signed.len() > KEEP_GENERATIONS {
            let old = self.signed.remove(0);
            ops.push(delete(KIND_SIGNED, old.id()));
        }
        while self.last_resort.len() > KEEP_GENERATIONS {
            let old = self.last_resort.remove(0);
            ops.push(delete(KIND_LAST_RESORT, old.id()));
        }
        self.rotated_at = now_ms;
    }

    /// A batch of one-time X25519 keys (the upload replaces the relay's list).
    pub(crate) fn more_one_time(
        &mut self,
        rng: &mut (impl RngCore + CryptoRng),
        upload: &mut KeysUpload,
        ops: &mut Vec<StoreOp>,
    ) {
        let mut list = Vec::new();
        for _ in 0..ONE_TIME_BATCH {
            let k = OneTimePreKey::generate(self.take_id(), rng);
            ops.push(put(KIND_ONE_TIME, k.id(), &k.to_bytes()));
            let p = k.public();
            list.push(PreKey {
                key_id: p.key_id(),
                public_key: Base64(p.public_key().to_vec()),
            });
            self.one_time.insert(k.id(), k);
        }
        while self.one_time.len() > MAX_LOCAL_ONE_TIME {
            if let Some((id, _)) = self.one_time.pop_first() {
                ops.push(delete(KIND_ONE_TIME, id));
            }
        }
        upload.pre_keys = Some(list);
    }

    /// A batch of one-time KEM keys.
    pub(crate) fn more_kem(
        &mut self,
        identity: &IdentityKeyPair,
        rng: &mut (impl RngCore + CryptoRng),
        upload: &mut KeysUpload,
        ops: &mut Vec<StoreOp>,
    ) {
        let mut list = Vec::new();
        for _ in 0..KEM_BATCH {
            let k = KemPreKey::generate(self.take_id(), identity, rng);
            ops.push(put(KIND_KEM, k.id(), &k.to_bytes()));
            let p = k.public();
            list.push(sotto_wire::SignedPreKey {
                key_id: p.key_id(),
                public_key: Base64(p.public_key().to_vec()),
                signature: Base64(p.signature().to_vec()),
            });
            self.kem.insert(k.id(), k);
        }
        while self.kem.len() > MAX_LOCAL_ONE_TIME {
            if let Some((id, _)) = self.kem.pop_first() {
                ops.push(delete(KIND_KEM, id));
            }
        }
        upload.kem_pre_keys = Some(list);
    }

    /// The keys a pre-key message names (each `None` when this device no longer has it).
    pub(crate) fn responder<'a>(
        &'a self,
        identity: &'a IdentityKeyPair,
        ids: Option<(u32, Option<u32>, u32)>,
    ) -> ResponderKeys<'a> {
        let (spk, opk, kem) = match ids {
            Some(ids) => ids,
            None => {
                return ResponderKeys {
                    identity,
                    signed_prekey: None,
                    one_time_prekey: None,
                    kem_prekey: None,
                }
            }
        };
        ResponderKeys {
            identity,
            signed_prekey: self.signed.iter().find(|k| k.id() == spk),
            one_time_prekey: opk.and_then(|id| self.one_time.get(&id)),
            kem_prekey: self
                .kem
                .get(&kem)
                .or_else(|| self.last_resort.iter().find(|k| k.id() == kem)),
        }
    }

    /// Forgets consumed one-time keys.
    pub(crate) fn consume(
        &mut self,
        one_time: Option<u32>,
        kem: Option<u32>,
        ops: &mut Vec<StoreOp>,
    ) {
        if let Some(id) = one_time {
            if self.one_time.remove(&id).is_some() {
                ops.push(delete(KIND_ONE_TIME, id));
            }
        }
        if let Some(id) = kem {
            if self.kem.remove(&id).is_some() {
                ops.push(delete(KIND_KEM, id));
            }
        }
    }

    /// Loads one stored row; `false` if it is not a prekey row this build knows.
    pub(crate) fn restore_row(&mut self, value: &[u8]) -> bool {
        let Some((&kind, secret)) = value.split_first() else {
            return false;
        };
        match kind {
            KIND_SIGNED => match SignedPreKey::from_bytes(secret) {
                Ok(k) => {
                    self.next_id = self.next_id.max(k.id());
                    self.signed.push(k);
                    self.signed.sort_by_key(SignedPreKey::id);
                    true
                }
                Err(_) => false,
            },
            KIND_LAST_RESORT => match KemPreKey::from_bytes(secret) {
                Ok(k) => {
                    self.next_id = self.next_id.max(k.id());
                    self.last_resort.push(k);
                    self.last_resort.sort_by_key(KemPreKey::id);
                    true
                }
                Err(_) => false,
            },
            KIND_ONE_TIME => match OneTimePreKey::from_bytes(secret) {
                Ok(k) => {
                    self.next_id = self.next_id.max(k.id());
                    self.one_time.insert(k.id(), k);
                    true
                }
                Err(_) => false,
            },
            KIND_KEM => match KemPreKey::from_bytes(secret) {
                Ok(k) => {
                    self.next_id = self.next_id.max(k.id());
                    self.kem.insert(k.id(), k);
                    true
                }
                Err(_) => false,
            },
            _ => false,
        }
    }

    /// One-time keys held locally: (X25519, ML-KEM).
    pub(crate) fn local_counts(&self) -> (usize, usize) {
        (self.one_time.len(), self.kem.len())
    }
}
