//! Property: any delivery order within the limits decrypts every message exactly once.

use super::harness::*;
use proptest::prelude::*;
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;

fn shuffle<T>(items: &mut [T], rng: &mut ChaCha20Rng) {
    for i in (1..items.len()).rev() {
        let j = (rng.next_u32() as usize) % (i + 1);
        items.swap(i, j);
    }
}

#[derive(Debug)]
struct Pending {
    to_bob: bool,
    id: u32,
    bytes: Vec<u8>,
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Up to four rounds in which both sides send a few messages and some of what is in flight is
    /// delivered (in random order); then everything left is delivered in random order. At most
    /// five chains per direction ever exist, and far fewer than 2,000 keys are skipped.
    #[test]
    fn any_order_decrypts_exactly_once(
        rounds in prop::collection::vec((0u8..6, 0u8..6, 0u8..=100), 1..=4),
        seed in any::<u64>(),
    ) {
        let mut p = Pair::established(77);
        let mut order = ChaCha20Rng::seed_from_u64(seed);
        let mut in_flight: Vec<Pending> = Vec::new();
        let mut delivered: Vec<Pending> = Vec::new();
        let mut next_id = 0u32;
        let deliver = |p: &mut Pair, m: Pending, delivered: &mut Vec<Pending>| {
            let pt = if m.to_bob { p.b_receive(&m.bytes) } else { p.a_receive(&m.bytes) };
            prop_assert_eq!(pt.unwrap(), m.id.to_be_bytes().to_vec());
            delivered.push(m);
            Ok(())
        };
        for (na, nb, percent) in rounds {
            for _ in 0..na {
                let bytes = p.a_to_b(&next_id.to_be_bytes());
                in_flight.push(Pending { to_bob: true, id: next_id, bytes });
                next_id += 1;
            }
            for _ in 0..nb {
                let bytes = p.b_to_a(&next_id.to_be_bytes());
                in_flight.push(Pending { to_bob: false, id: next_id, bytes });
                next_id += 1;
            }
            shuffle(&mut in_flight, &mut order);
            let n = in_flight.len() * usize::from(percent) / 100;
            for m in in_flight.drain(..n).collect::<Vec<_>>() {
                deliver(&mut p, m, &mut delivered)?;
            }
        }
        shuffle(&mut in_flight, &mut order);
        for m in std::mem::take(&mut in_flight) {
            deliver(&mut p, m, &mut delivered)?;
        }
        prop_assert_eq!(delivered.len(), next_id as usize);
        // Exactly once: every replay is refused.
        for m in &delivered {
            let r = if m.to_bob { p.b_receive(&m.bytes) } else { p.a_receive(&m.bytes) };
            prop_assert!(r.is_err());
        }
    }
}
