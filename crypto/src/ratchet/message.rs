//! The ratchet message: a header in the clear, then the AEAD ciphertext.
//!
//! ```text
//! u8      version            0x01
//! u8      type               0x01 (ratchet message)
//! [33]    ratchet key        typed X25519 public key (0x01 || 32 bytes)
//! u32 BE  counter            N: position in the sender's current sending chain
//! u32 BE  previous counter   PN: length of the sender's previous sending chain
//! ...     ciphertext         AES-256-GCM output, the 16-byte tag last (at least 16 bytes)
//! ```
//!
//! The first 43 bytes are the header and are authenticated as part of the associated data.

use x25519_dalek::PublicKey as X25519PublicKey;

use crate::codec::{Reader, Writer};
use crate::keys::{decode_x25519, encode_x25519, X25519_PUBLIC_KEY_LEN};
use crate::DecodeError;

/// Version byte of every message this build writes.
pub const MESSAGE_VERSION: u8 = 0x01;
/// Type byte of a ratchet message.
pub const MESSAGE_TYPE_RATCHET: u8 = 0x01;
/// Type byte of a pre-key (session setup) message.
pub const MESSAGE_TYPE_PREKEY: u8 = 0x02;
/// Length of a ratchet message header.
pub const HEADER_LEN: usize = 2 + X25519_PUBLIC_KEY_LEN + 8;
/// Length of the AES-256-GCM tag.
pub const TAG_LEN: usize = 16;
/// The largest plaintext a message may carry (1 MiB).
pub const MAX_PLAINTEXT_LEN: usize = 1 << 20;

/// A parsed ratchet message. Its header is checked (valid ratchet key); its ciphertext is not.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct RatchetMessage {
    pub(crate) ratchet_key: X25519PublicKey,
    pub(crate) counter: u32,
    pub(crate) previous_counter: u32,
    pub(crate) ciphertext: Vec<u8>,
}

impl RatchetMessage {
    pub(crate) fn header(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        let mut w = Writer::with_capacity(HEADER_LEN);
        w.u8(MESSAGE_VERSION)
            .u8(MESSAGE_TYPE_RATCHET)
            .fixed(&encode_x25519(&self.ratchet_key))
            .u32(self.counter)
            .u32(self.previous_counter);
        out.copy_from_slice(&w.into_vec());
        out
    }

    pub(crate) fn write(&self, w: &mut Writer) {
        w.fixed(&self.header()).fixed(&self.ciphertext);
    }

    /// The wire encoding.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(HEADER_LEN + self.ciphertext.len());
        self.write(&mut w);
        w.into_vec()
    }

    /// Reads a message that runs to the end of the reader's input.
    pub(crate) fn read(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        r.version(MESSAGE_VERSION)?;
        r.tag(MESSAGE_TYPE_RATCHET)?;
        let ratchet_key = decode_x25519(r.fixed(X25519_PUBLIC_KEY_LEN)?)?;
        let counter = r.u32()?;
        let previous_counter = r.u32()?;
        let ciphertext = r.rest();
        if ciphertext.len() < TAG_LEN {
            return Err(DecodeError::Truncated);
        }
        if ciphertext.len() > MAX_PLAINTEXT_LEN + TAG_LEN {
            return Err(DecodeError::TooLong {
                len: ciphertext.len() as u64,
                max: (MAX_PLAINTEXT_LEN + TAG_LEN) as u64,
            });
        }
        Ok(Self {
            ratchet_key,
            counter,
            previous_counter,
            ciphertext: ciphertext.to_vec(),
        })
    }

    /// Decodes the wire encoding.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let m = Self::read(&mut r)?;
        r.finish()?;
        Ok(m)
    }

    /// The sender's ratchet key (typed encoding).
    pub fn ratchet_key(&self) -> [u8; X25519_PUBLIC_KEY_LEN] {
        encode_x25519(&self.ratchet_key)
    }

    /// The message's position in its sending chain.
    pub fn counter(&self) -> u32 {
        self.counter
    }
}
