//! Prometheus text exposition of a few counters, gauges and histograms, kept in atomics.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

/// Latency buckets in seconds.
const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A fixed-bucket histogram.
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        for (bucket, bound) in self.buckets.iter().zip(BUCKETS) {
            if secs <= bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (bucket, bound) in self.buckets.iter().zip(BUCKETS) {
            let _ = writeln!(
                out,
                "{name}_bucket{{le=\"{bound}\"}} {}",
                bucket.load(Ordering::Relaxed)
            );
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {count}");
    }
}

/// The relay's metrics.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Open WebSocket connections.
    pub connections: AtomicI64,
    /// Envelopes stored by sends.
    pub envelopes_accepted: AtomicU64,
    /// Envelopes pushed over WebSockets.
    pub envelopes_pushed: AtomicU64,
    /// Envelopes acked (delivered and deleted).
    pub envelopes_delivered: AtomicU64,
    /// Envelopes removed by the TTL sweep.
    pub envelopes_expired: AtomicU64,
    /// Slow consumers disconnected.
    pub slow_consumers: AtomicU64,
    /// TCP connections refused by the per-address cap.
    pub connections_refused: AtomicU64,
    /// Accepted → pushed to the device.
    pub delivery_latency: Histogram,
    /// Send request handling time.
    pub send_latency: Histogram,
}

impl Metrics {
    /// Prometheus text format; `queued` is read from the store by the caller.
    pub fn render(&self, queued: Option<u64>) -> String {
        let mut out = String::with_capacity(4096);
        let counter = |out: &mut String, name: &str, help: &str, v: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
            );
        };
        let _ = writeln!(
            out,
            "# HELP sotto_connections Open WebSocket connections.\n# TYPE sotto_connections gauge\nsotto_connections {}",
            self.connections.load(Ordering::Relaxed)
        );
        if let Some(q) = queued {
            let _ = writeln!(
                out,
                "# HELP sotto_envelopes_queued Envelopes waiting in mailboxes.\n# TYPE sotto_envelopes_queued gauge\nsotto_envelopes_queued {q}"
            );
        }
        counter(
            &mut out,
            "sotto_envelopes_accepted_total",
            "Envelopes stored by sends.",
            self.envelopes_accepted.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "sotto_envelopes_pushed_total",
            "Envelopes pushed over WebSockets.",
            self.envelopes_pushed.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "sotto_envelopes_delivered_total",
            "Envelopes acked by their device and deleted.",
            self.envelopes_delivered.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "sotto_envelopes_expired_total",
            "Envelopes deleted by the TTL sweep.",
            self.envelopes_expired.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "sotto_slow_consumers_total",
            "WebSockets closed as slow consumers.",
            self.slow_consumers.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "sotto_connections_refused_total",
            "TCP connections refused because their address had too many open.",
            self.connections_refused.load(Ordering::Relaxed),
        );
        self.delivery_latency.render(
            &mut out,
            "sotto_delivery_latency_seconds",
            "Time from acceptance to push over a WebSocket.",
        );
        self.send_latency.render(
            &mut out,
            "sotto_send_duration_seconds",
            "Time to handle a send request.",
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_histogram_cumulatively() {
        let m = Metrics::default();
        m.delivery_latency.observe(Duration::from_millis(3));
        let text = m.render(Some(5));
        assert!(text.contains("sotto_delivery_latency_seconds_bucket{le=\"0.005\"} 1"));
        assert!(text.contains("sotto_delivery_latency_seconds_bucket{le=\"0.001\"} 0"));
        assert!(text.contains("sotto_envelopes_queued 5"));
    }
}
