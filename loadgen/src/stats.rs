//! Counting: a concurrent bit set for exact loss and duplicate accounting, and latency histograms.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hdrhistogram::Histogram;

/// A fixed-size set of message indices, shared between tasks.
#[derive(Debug)]
pub struct Bits(Vec<AtomicU64>);

impl Bits {
    /// Room for indices `0..len`.
    pub fn new(len: u64) -> Self {
        let words = usize::try_from(len.div_ceil(64)).unwrap_or(usize::MAX);
        Bits((0..words).map(|_| AtomicU64::new(0)).collect())
    }

    /// Adds `i`; true when it was already there (or out of range).
    pub fn insert(&self, i: u64) -> bool {
        let word = usize::try_from(i / 64).ok().and_then(|w| self.0.get(w));
        match word {
            Some(word) => {
                let bit = 1u64 << (i % 64);
                word.fetch_or(bit, Ordering::Relaxed) & bit != 0
            }
            None => true,
        }
    }

    /// Members.
    pub fn count(&self) -> u64 {
        self.0
            .iter()
            .map(|w| u64::from(w.load(Ordering::Relaxed).count_ones()))
            .sum()
    }

    /// Members of `self` missing from `other`.
    pub fn count_missing_from(&self, other: &Bits) -> u64 {
        self.0
            .iter()
            .zip(other.0.iter())
            .map(|(a, b)| {
                u64::from((a.load(Ordering::Relaxed) & !b.load(Ordering::Relaxed)).count_ones())
            })
            .sum()
    }
}

/// A latency histogram in microseconds, 1 µs to 10 minutes, 3 significant digits.
#[allow(clippy::expect_used)]
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3)
        .expect("constant bounds: low >= 1, high >= 2 * low, 3 significant digits")
}

/// Records a latency, saturating at the histogram's bound.
pub fn record(histogram: &mut Histogram<u64>, latency: Duration) {
    let micros = u64::try_from(latency.as_micros())
        .unwrap_or(u64::MAX)
        .max(1);
    histogram.saturating_record(micros);
}

/// `p50 / p99 / max` in milliseconds.
pub fn summary(histogram: &Histogram<u64>) -> String {
    if histogram.is_empty() {
        return "no samples".into();
    }
    let ms = |micros: u64| micros as f64 / 1000.0;
    format!(
        "p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms, max {:.2} ms ({} samples)",
        ms(histogram.value_at_quantile(0.50)),
        ms(histogram.value_at_quantile(0.99)),
        ms(histogram.value_at_quantile(0.999)),
        ms(histogram.max()),
        histogram.len()
    )
}

/// Memory in human units.
pub fn kib(kib: f64) -> String {
    if kib >= 1024.0 * 1024.0 {
        format!("{:.2} GiB", kib / 1024.0 / 1024.0)
    } else if kib >= 1024.0 {
        format!("{:.1} MiB", kib / 1024.0)
    } else {
        format!("{kib:.2} KiB")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_count_members_duplicates_and_losses() {
        let accepted = Bits::new(200);
        let received = Bits::new(200);
        for i in [0, 63, 64, 199] {
            assert!(!accepted.insert(i));
        }
        assert!(!received.insert(63));
        assert!(received.insert(63), "second insert is a duplicate");
        assert!(received.insert(256), "out of range counts as seen");
        assert_eq!(accepted.count(), 4);
        assert_eq!(accepted.count_missing_from(&received), 3);
    }

    #[test]
    fn histogram_summary() {
        let mut h = latency_histogram();
        for ms in 1..=100 {
            record(&mut h, Duration::from_millis(ms));
        }
        let text = summary(&h);
        assert!(text.contains("p50 50."), "{text}");
        assert!(text.contains("max 100."), "{text}");
    }
}
