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
//! no Edwards form, and `u = -1`, where the birational map is undefined, fall back to the ladder.
//!
//! Which path runs depends on the public key only. Both paths read `u` as RFC 7748 does (bit 255
//! ignored, then reduced mod p), so the output equals x25519-dalek's for every 32-byte input; the
//! tests check this by input class (torsion points, non-canonical encodings, the top bit, random
//! strings). The argument is written out in `docs/protocol.md` §9.1.

use curve25519_dalek::edwards::EdwardsPoint;
use curve25519_dalek::montgomery::MontgomeryPoint;
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::IsIdentity;
use subtle::ConstantTimeEq;
use x25519_dalek::{PublicKey as X25519PublicKey, StaticSecret};
use zeroize::Zeroizing;

/// A peer's X25519 public key, with `[8]P` in Edwards form when it has one.
#[derive(Clone, Copy)]
pub(crate) struct Prepared {
    public: X25519PublicKey,
    cofactor_cleared: Option<EdwardsPoint>,
}

/// Whether `point` lies in the prime-order subgroup: `[ℓ]P` is the identity, computed as
/// `[ℓ - 1]P + P` (`ℓ - 1` is a canonical scalar, `ℓ` is not). Variable time, for public points
/// only: about half the cost of curve25519-dalek's constant-time `is_torsion_free`.
fn is_prime_order(point: &EdwardsPoint) -> bool {
    let l_minus_one = -Scalar::ONE;
    (EdwardsPoint::vartime_double_scalar_mul_basepoint(&l_minus_one, point, &Scalar::ZERO) + point)
        .is_identity()
}

/// Whether an X25519 public key is a point of the prime-order subgroup: on the curve (not the
/// twist) with no small-order component. Every honestly generated key (`X25519(k, 9)`) is; a
/// key with a torsion component gives the same shared secrets as its prime-order part, so it is
/// one of up to eight encodings of the same key.
pub(crate) fn is_prime_order_x25519(public: &X25519PublicKey) -> bool {
    MontgomeryPoint(*public.as_bytes())
        .to_edwards(0)
        .is_some_and(|p| is_prime_order(&p))
}

impl Prepared {
    /// [`Prepared::new`] for a key that must be a point of the prime-order subgroup (see
    /// [`is_prime_order_x25519`]); `None` otherwise. Costs one variable-time scalar
    /// multiplication more than `new`, sharing its square root.
    pub(crate) fn prime_order(public: &X25519PublicKey) -> Option<Self> {
        let point = MontgomeryPoint(*public.as_bytes()).to_edwards(0)?;
        is_prime_order(&point).then(|| Self {
            public: *public,
            cofactor_cleared: Some(point.mul_by_cofactor()),
        })
    }

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

/// RFC 7748 `decodeScalar25519`, in place (the same bits as curve25519-dalek's `clamp_integer`).
fn clamp_in_place(k: &mut [u8; 32]) {
    k[0] &= 0b1111_1000;
    k[31] &= 0b0111_1111;
    k[31] |= 0b0100_0000;
}

/// `X25519(secret, public)`, or `None` when the output is all zeros (non-contributory). Equal to
/// x25519-dalek's `diffie_hellman` for every 32-byte public key (see the tests); callers turn `None`
/// into their operation's typed error.
pub(crate) fn agree(secret: &StaticSecret, public: &Prepared) -> Option<Zeroizing<[u8; 32]>> {
    let out = match &public.cofactor_cleared {
        Some(point) => {
            // `clamp(k) / 8` computed in one self-wiping buffer: RFC 7748's decodeScalar25519
            // (clear bits 0-2 and 255, set bit 254), then a right shift by three bits of the
            // little-endian integer. No branch depends on the bytes.
            let mut k = Zeroizing::new(secret.to_bytes());
            clamp_in_place(&mut k);
            let mut carry = 0u8;
            for b in k.iter_mut().rev() {
                let next = *b << 5;
                *b = (*b >> 3) | carry;
                carry = next;
            }
            // `clamp(k) / 8` lies in [2^251, 2^252) and 2^252 < ℓ, so this is the integer itself,
            // not a reduction of it.
            let scalar = Zeroizing::new(Scalar::from_bytes_mod_order(*k));
            // `&EdwardsPoint * &Scalar` is curve25519-dalek's constant-time variable-base
            // multiplication (`backend::variable_base_mul`: fixed window, table lookups by
            // conditional selection). Called explicitly so the scalar stays behind its wrapper.
            let shared = Zeroizing::new(core::ops::Mul::mul(point, &*scalar));
            let u = Zeroizing::new(shared.to_montgomery());
            Zeroizing::new(u.to_bytes())
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

    /// Every kind of 32-byte input, not only canonical ones: the u-coordinates of all eight torsion
    /// points, small values, encodings of `p - 20 .. 2^255` (non-canonical from `p` on, which both
    /// sides reduce mod p), the exceptional `u = -1`, all of these with bit 255 set (ignored by
    /// RFC 7748), and random strings with the top bit unmasked. Each must give x25519-dalek's exact
    /// output, or `None` exactly where that output is all zeros.
    #[test]
    fn matches_x25519_dalek_on_all_input_classes() {
        let mut inputs: Vec<[u8; 32]> = curve25519_dalek::constants::EIGHT_TORSION
            .iter()
            .map(|t| t.to_montgomery().to_bytes())
            .collect();
        for small in 0u8..=40 {
            let mut u = [0u8; 32];
            u[0] = small;
            inputs.push(u);
        }
        // p = 2^255 - 19 = ed ff .. ff 7f (little-endian); the low byte runs over d9..=ff.
        for low in 0xd9u8..=0xff {
            let mut u = [0xffu8; 32];
            u[0] = low;
            u[31] = 0x7f;
            inputs.push(u);
        }
        for u in inputs.clone() {
            let mut high = u;
            high[31] |= 0x80;
            inputs.push(high);
        }
        let mut rng = ChaCha20Rng::from_seed([5; 32]);
        for _ in 0..300 {
            let mut u = [0u8; 32];
            rng.fill_bytes(&mut u);
            inputs.push(u);
        }
        let (mut via_edwards, mut zero) = (0, 0);
        for u in &inputs {
            let public = X25519PublicKey::from(*u);
            let prepared = Prepared::new(&public);
            via_edwards += usize::from(prepared.cofactor_cleared.is_some());
            for _ in 0..3 {
                let secret = StaticSecret::random_from_rng(&mut rng);
                let expected = *secret.diffie_hellman(&public).as_bytes();
                match agree(&secret, &prepared) {
                    Some(out) => assert_eq!(*out, expected, "u = {u:02x?}"),
                    None => {
                        assert_eq!(expected, [0; 32], "u = {u:02x?}");
                        zero += 1;
                    }
                }
            }
        }
        // Both paths and the rejection were exercised.
        assert!(via_edwards > 100 && via_edwards < inputs.len());
        assert!(zero >= 3 * 8);
    }

    #[test]
    fn clamping_matches_the_library() {
        let mut rng = ChaCha20Rng::from_seed([6; 32]);
        for _ in 0..100 {
            let mut k = [0u8; 32];
            rng.fill_bytes(&mut k);
            let expected = curve25519_dalek::scalar::clamp_integer(k);
            clamp_in_place(&mut k);
            assert_eq!(k, expected);
        }
    }

    /// Honest keys pass; the same keys plus any non-zero torsion point, twist points and the
    /// small-order points fail; the fast check agrees with curve25519-dalek's `is_torsion_free`.
    #[test]
    fn prime_order_check() {
        use curve25519_dalek::constants::{ED25519_BASEPOINT_POINT, EIGHT_TORSION};
        let mut rng = ChaCha20Rng::from_seed([8; 32]);
        for _ in 0..50 {
            let secret = StaticSecret::random_from_rng(&mut rng);
            let public = X25519PublicKey::from(&secret);
            assert!(is_prime_order_x25519(&public));
            let prepared = Prepared::prime_order(&public).unwrap();
            assert_eq!(
                *agree(&secret, &prepared).unwrap(),
                *secret.diffie_hellman(&public).as_bytes()
            );
            let mut k = [0u8; 32];
            rng.fill_bytes(&mut k);
            let p = ED25519_BASEPOINT_POINT * Scalar::from_bytes_mod_order(k);
            assert!(is_prime_order(&p) && p.is_torsion_free());
            for t in EIGHT_TORSION.iter().skip(1) {
                let q = p + t;
                assert!(!is_prime_order(&q) && !q.is_torsion_free());
                let u = X25519PublicKey::from(q.to_montgomery().to_bytes());
                assert!(!is_prime_order_x25519(&u));
                assert!(Prepared::prime_order(&u).is_none());
                // The same shared secret as the prime-order part: why the encoding matters.
                assert_eq!(
                    *secret.diffie_hellman(&u).as_bytes(),
                    *secret
                        .diffie_hellman(&X25519PublicKey::from(p.to_montgomery().to_bytes()))
                        .as_bytes()
                );
            }
        }
        for t in EIGHT_TORSION {
            let u = X25519PublicKey::from(t.to_montgomery().to_bytes());
            assert!(!is_prime_order_x25519(&u));
        }
        // Random u-coordinates: about half are on the twist, the rest mostly have a torsion part.
        let mut accepted = 0;
        for _ in 0..200 {
            let mut u = [0u8; 32];
            rng.fill_bytes(&mut u);
            u[31] &= 0x7f;
            let expected = MontgomeryPoint(u)
                .to_edwards(0)
                .is_some_and(|p| p.is_torsion_free());
            let got = is_prime_order_x25519(&X25519PublicKey::from(u));
            assert_eq!(got, expected);
            accepted += usize::from(got);
        }
        assert!(accepted < 20, "{accepted}");
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
