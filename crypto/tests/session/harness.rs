//! A device with its keys, and helpers to run sessions between devices.

use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;
use sotto_crypto::address::DeviceAddress;
use sotto_crypto::keys::{
    IdentityKeyPair, KemPreKey, OneTimePreKey, PreKeyBundle, SignedPreKey, VerifiedBundle,
};
use sotto_crypto::pqxdh::{PreKeyMessage, ResponderKeys};
use sotto_crypto::ratchet::DecryptError;
pub use sotto_crypto::session::{IdentityTrust, Timestamp};
use sotto_crypto::session::{IncomingMessage, PreKeyDecrypted, SessionRecord};

/// The time every test runs at unless it says otherwise (2027-01-15).
pub const NOW: Timestamp = Timestamp(1_800_000_000);

pub fn rng(seed: u8) -> ChaCha20Rng {
    ChaCha20Rng::from_seed([seed; 32])
}

pub struct Device {
    pub identity: IdentityKeyPair,
    pub address: DeviceAddress,
    pub signed_prekey: SignedPreKey,
    pub one_time: Vec<OneTimePreKey>,
    pub kem_one_time: Vec<KemPreKey>,
    pub kem_last_resort: KemPreKey,
}

impl Device {
    pub fn new(user: &str, device: u32, rng: &mut ChaCha20Rng) -> Self {
        let identity = IdentityKeyPair::generate(rng);
        Self::with_identity(identity, user, device, rng)
    }

    pub fn with_identity(
        identity: IdentityKeyPair,
        user: &str,
        device: u32,
        rng: &mut ChaCha20Rng,
    ) -> Self {
        let signed_prekey = SignedPreKey::generate(1, &identity, rng);
        let one_time = (100..103)
            .map(|id| OneTimePreKey::generate(id, rng))
            .collect();
        let kem_one_time = (200..202)
            .map(|id| KemPreKey::generate(id, &identity, rng))
            .collect();
        let kem_last_resort = KemPreKey::generate_last_resort(300, &identity, rng);
        Self {
            identity,
            address: DeviceAddress::new(user, device).unwrap(),
            signed_prekey,
            one_time,
            kem_one_time,
            kem_last_resort,
        }
    }

    /// A bundle as the relay would hand it out, with or without one-time keys.
    pub fn bundle(&self, one_time: bool, kem_one_time: bool) -> PreKeyBundle {
        PreKeyBundle {
            identity_key: self.identity.public(),
            signed_prekey: self.signed_prekey.public(),
            one_time_prekey: if one_time {
                self.one_time.first().map(OneTimePreKey::public)
            } else {
                None
            },
            kem_prekey: if kem_one_time {
                self.kem_one_time.first().unwrap().public()
            } else {
                self.kem_last_resort.public()
            },
        }
    }

    pub fn verified_bundle(&self, one_time: bool, kem_one_time: bool) -> VerifiedBundle {
        self.bundle(one_time, kem_one_time).verify().unwrap()
    }

    /// Sets up a session to `peer` in `record` from `peer`'s bundle (with or without one-time keys).
    pub fn initiate_with(
        &self,
        record: &mut SessionRecord,
        peer: &Device,
        one_time: bool,
        kem_one_time: bool,
        rng: &mut ChaCha20Rng,
    ) {
        record
            .initiate(
                &self.identity,
                &self.address,
                &peer.address,
                &peer.verified_bundle(one_time, kem_one_time),
                IdentityTrust::FirstUse,
                NOW,
                rng,
            )
            .unwrap();
    }

    /// [`Device::initiate_with`] from a full bundle.
    pub fn initiate(&self, record: &mut SessionRecord, peer: &Device, rng: &mut ChaCha20Rng) {
        self.initiate_with(record, peer, true, true, rng);
    }

    /// Looks up the keys a pre-key message names, as the SDK's store would.
    pub fn keys_for(&self, m: &PreKeyMessage) -> ResponderKeys<'_> {
        ResponderKeys {
            identity: &self.identity,
            signed_prekey: Some(&self.signed_prekey).filter(|k| k.id() == m.signed_prekey_id()),
            one_time_prekey: m
                .one_time_prekey_id()
                .and_then(|id| self.one_time.iter().find(|k| k.id() == id)),
            kem_prekey: self
                .kem_one_time
                .iter()
                .chain(std::iter::once(&self.kem_last_resort))
                .find(|k| k.id() == m.kem_prekey_id()),
        }
    }

    /// Commits what a successful pre-key decryption consumed.
    pub fn consume(&mut self, d: &PreKeyDecrypted) {
        if let Some(id) = d.consumed_one_time_prekey {
            self.one_time.retain(|k| k.id() != id);
        }
        if let Some(id) = d.consumed_kem_prekey {
            self.kem_one_time.retain(|k| k.id() != id);
        }
    }

    /// Receives wire bytes from `from` into `record`, committing consumed prekeys on success.
    pub fn receive(
        &mut self,
        record: &mut SessionRecord,
        from: &DeviceAddress,
        bytes: &[u8],
    ) -> Result<Vec<u8>, DecryptError> {
        match IncomingMessage::from_bytes(bytes)? {
            IncomingMessage::PreKey(m) => {
                let d = record.decrypt_prekey(
                    &m,
                    &self.keys_for(&m),
                    &self.address,
                    from,
                    IdentityTrust::FirstUse,
                    NOW,
                )?;
                self.consume(&d);
                Ok(d.plaintext)
            }
            IncomingMessage::Ratchet(m) => record.decrypt(&m),
        }
    }
}

/// Alice and Bob with an established session (Alice initiated, Bob answered once).
pub struct Pair {
    pub alice: Device,
    pub bob: Device,
    pub a: SessionRecord,
    pub b: SessionRecord,
    pub rng: ChaCha20Rng,
}

impl Pair {
    pub fn new(seed: u8) -> Self {
        let mut rng = rng(seed);
        let alice = Device::new("alice", 1, &mut rng);
        let bob = Device::new("bob", 2, &mut rng);
        let mut a = SessionRecord::new();
        alice.initiate(&mut a, &bob, &mut rng);
        Self {
            alice,
            bob,
            a,
            b: SessionRecord::new(),
            rng,
        }
    }

    pub fn established(seed: u8) -> Self {
        let mut p = Self::new(seed);
        let m = p.a_to_b(b"hello bob");
        assert_eq!(p.b_receive(&m).unwrap(), b"hello bob");
        let m = p.b_to_a(b"hello alice");
        assert_eq!(p.a_receive(&m).unwrap(), b"hello alice");
        p
    }

    pub fn a_to_b(&mut self, pt: &[u8]) -> Vec<u8> {
        self.a.encrypt(pt, NOW, &mut self.rng).unwrap()
    }

    pub fn b_to_a(&mut self, pt: &[u8]) -> Vec<u8> {
        self.b.encrypt(pt, NOW, &mut self.rng).unwrap()
    }

    pub fn b_receive(&mut self, m: &[u8]) -> Result<Vec<u8>, DecryptError> {
        let from = self.alice.address.clone();
        self.bob.receive(&mut self.b, &from, m)
    }

    pub fn a_receive(&mut self, m: &[u8]) -> Result<Vec<u8>, DecryptError> {
        let from = self.bob.address.clone();
        self.alice.receive(&mut self.a, &from, m)
    }
}
