//! X25519 (RFC 7748), computed on the Edwards form of the curve when the peer's key allows it.
//!
//! `X25519(k, u)` is the u-coordinate of `[clamp(k)]P` for a point `P` with u-coordinate `u`.
//! `clamp(k)` is a multiple of 8 below 2^255, so `[clamp(k)]P = [clamp(k)/8]([8]P)`, where `[8]P`
//! lies in the prime-order subgroup and `clamp(k)/8 < 2^252 < ℓ` is an exact scalar. The
//! Edwards-form scalar multiplication of curve25519-dalek is constant-time and, on x86-64 with
//! AVX2, vectorized, which makes this faster than the Montgomery ladder; converting the peer's key
//! to Edwards form costs a square root, so it is done once per key ([`Prepared`]) and reused when
//! the same key takes part in several agreements (PQXDH uses `SPK` and `EK_A` more than once; a
//! ratchet key is used once to receive and once to send). Keys on the quadratic twist, which have
//! no Edwards form, fall back to the ladder. Tests check equality with the ladder.

use curve25519_dalek::edwards::EdwardsPoint;
use curve25519_dalek::montgomery::MontgomeryPoint;
use curve25519_dalek::scalar::{clamp_integer, Scalar};
use subtle::ConstantTimeEq;
use x25519_dalek::{PublicKey as X25519PublicKey, StaticSecret};
use zeroize::{Zeroize, Zeroizing};

/// A peer's X25519 public key, with `[8]P` in Edwards form when it has one.
#[derive(Clone, Copy)]
pub(crate) struct Prepared {
    public: X25519PublicKey,
    cofactor_cleared: Option<EdwardsPoint>,
}

impl Prepared {
    pub(crate) fn new(public: &X25519PublicKey) -> Self {
        let cofactor_cleared = MontgomeryPoint(*public.as_bytes())
            .to_edwards(0)
            .map(|p| p.mul_by_cofactor());
        Self {
            public: *public,
            cofactor_cleared,
        }
    }

    pub(crate) fn public(&self) -> &X25519PublicKey {
        &self.public
    }
}

/// `X25519(secret, public)`, or `None` when the output is all zeros (non-contributory).
pub(crate) fn agree(secret: &StaticSecret, public: &Prepared) -> Option<Zeroizing<[u8; 32]>> {
    let out = match &public.cofactor_cleared {
        Some(point) => {
            let mut raw = secret.to_bytes();
            let mut bytes = clamp_integer(raw);
            raw.zeroize();
            // Divide by 8: shift the little-endian integer right by three bits.
            let mut carry = 0u8;
            for b in bytes.iter_mut().rev() {
                let next = *b << 5;
                *b = (*b >> 3) | carry;
                carry = next;
            }
            let scalar = Zeroizing::new(Scalar::from_bytes_mod_order(bytes));
            bytes.zeroize();
            // Explicit call: keeps the scalar behind its wiping wrapper instead of copying it out.
            let shared = Zeroizing::new(core::ops::Mul::mul(point, &*scalar));
            Zeroizing::new(shared.to_montgomery().to_bytes())
        }
        None => Zeroizing::new(*secret.diffie_hellman(&public.public).as_bytes()),
    };
    // Constant time: the output is secret, and an early-exit comparison would leak its prefix.
    let is_zero: bool = out.ct_eq(&[0u8; 32]).into();
    (!is_zero).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::rand_core::{RngCore, SeedableRng};
    use rand_chacha::ChaCha20Rng;

    #[test]
    fn matches_the_ladder() {
        let mut rng = ChaCha20Rng::from_seed([3; 32]);
        for _ in 0..500 {
            let secret = StaticSecret::random_from_rng(&mut rng);
            let other = X25519PublicKey::from(&StaticSecret::random_from_rng(&mut rng));
            let expected = secret.diffie_hellman(&other);
            let prepared = Prepared::new(&other);
            assert!(prepared.cofactor_cleared.is_some());
            assert_eq!(*agree(&secret, &prepared).unwrap(), *expected.as_bytes());
        }
        // Arbitrary u-coordinates: about half are on the twist (ladder fallback), the rest have a
        // torsion component that the cofactor clearing must remove.
        for _ in 0..500 {
            let secret = StaticSecret::random_from_rng(&mut rng);
            let mut u = [0u8; 32];
            rng.fill_bytes(&mut u);
            u[31] &= 0x7f;
            let public = X25519PublicKey::from(u);
            let expected = *secret.diffie_hellman(&public).as_bytes();
            match agree(&secret, &Prepared::new(&public)) {
                Some(out) => assert_eq!(*out, expected),
                None => assert_eq!(expected, [0; 32]),
            }
        }
    }

    #[test]
    fn rfc7748_vector() {
        let k = hex_literal(b"a546e36bf0527c9d3b16154b82465edd62144c0ac1fc5a18506a2244ba449ac4");
        let u = hex_literal(b"e6db6867583030db3594c1a424b15f7c726624ec26b3353b10a903a6d0ab1c4c");
        let out = hex_literal(b"c3da55379de9c6908e94ea4df28d084f32eccf03491c71f754b4075577a28552");
        let secret = StaticSecret::from(k);
        let got = agree(&secret, &Prepared::new(&X25519PublicKey::from(u))).unwrap();
        assert_eq!(*got, out);
    }

    #[test]
    fn small_order_is_non_contributory() {
        let secret = StaticSecret::from([9; 32]);
        for u in [[0u8; 32], {
            let mut one = [0u8; 32];
            one[0] = 1;
            one
        }] {
            assert!(agree(&secret, &Prepared::new(&X25519PublicKey::from(u))).is_none());
        }
    }

    fn hex_literal(s: &[u8; 64]) -> [u8; 32] {
        let mut out = [0u8; 32];
        for (i, pair) in s.chunks(2).enumerate() {
            let digit = |c: u8| match c {
                b'0'..=b'9' => c - b'0',
                _ => c - b'a' + 10,
            };
            out[i] = digit(pair[0]) << 4 | digit(pair[1]);
        }
        out
    }
}
