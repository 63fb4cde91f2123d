//! The relay's Prometheus metrics, on `prometheus-client`: one registry per relay instance (no
//! global recorder, so several relays in one process, as in the tests, count apart), exposed in
//! the OpenMetrics text format.

use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Latency buckets in seconds.
const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A latency histogram in seconds.
#[derive(Debug, Clone)]
pub struct Histogram(prometheus_client::metrics::histogram::Histogram);

impl Default for Histogram {
    fn default() -> Self {
        Self(prometheus_client::metrics::histogram::Histogram::new(
            BUCKETS,
        ))
    }
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&self, d: Duration) {
        self.0.observe(d.as_secs_f64());
    }
}

/// The relay's metrics. Handles are cheap clones of what the registry holds.
#[derive(Debug)]
pub struct Metrics {
    /// Open WebSocket connections.
    pub connections: Gauge,
    /// Envelopes stored by sends.
    pub envelopes_accepted: Counter,
    /// Envelopes pushed over WebSockets.
    pub envelopes_pushed: Counter,
    /// Envelopes acked (delivered and deleted).
    pub envelopes_delivered: Counter,
    /// Envelopes removed by the TTL sweep.
    pub envelopes_expired: Counter,
    /// Slow consumers disconnected.
    pub slow_consumers: Counter,
    /// TCP connections refused by the per-address cap.
    pub connections_refused: Counter,
    /// Accepted → pushed to the device.
    pub delivery_latency: Histogram,
    /// Send request handling time.
    pub send_latency: Histogram,
    queued: Gauge,
    registry: Registry,
}

impl Default for Metrics {
    fn default() -> Self {
        let m = Metrics {
            connections: Gauge::default(),
            envelopes_accepted: Counter::default(),
            envelopes_pushed: Counter::default(),
            envelopes_delivered: Counter::default(),
            envelopes_expired: Counter::default(),
            slow_consumers: Counter::default(),
            connections_refused: Counter::default(),
            delivery_latency: Histogram::default(),
            send_latency: Histogram::default(),
            queued: Gauge::default(),
            registry: Registry::default(),
        };
        let mut registry = Registry::default();
        // Counters get their `_total` suffix from the encoder.
        registry.register(
            "sotto_connections",
            "Open WebSocket connections",
            m.connections.clone(),
        );
        registry.register(
            "sotto_envelopes_queued",
            "Envelopes waiting in mailboxes",
            m.queued.clone(),
        );
        registry.register(
            "sotto_envelopes_accepted",
            "Envelopes stored by sends",
            m.envelopes_accepted.clone(),
        );
        registry.register(
            "sotto_envelopes_pushed",
            "Envelopes pushed over WebSockets",
            m.envelopes_pushed.clone(),
        );
        registry.register(
            "sotto_envelopes_delivered",
            "Envelopes acked by their device and deleted",
            m.envelopes_delivered.clone(),
        );
        registry.register(
            "sotto_envelopes_expired",
            "Envelopes deleted by the TTL sweep",
            m.envelopes_expired.clone(),
        );
        registry.register(
            "sotto_slow_consumers",
            "WebSockets closed as slow consumers",
            m.slow_consumers.clone(),
        );
        registry.register(
            "sotto_connections_refused",
            "TCP connections refused because their address had too many open",
            m.connections_refused.clone(),
        );
        registry.register(
            "sotto_delivery_latency_seconds",
            "Time from acceptance to push over a WebSocket",
            m.delivery_latency.0.clone(),
        );
        registry.register(
            "sotto_send_duration_seconds",
            "Time to handle a send request",
            m.send_latency.0.clone(),
        );
        Metrics { registry, ..m }
    }
}

impl Metrics {
    /// OpenMetrics text; `queued` is read from the store by the caller (left at its last value
    /// when the store did not answer).
    pub fn render(&self, queued: Option<u64>) -> String {
        if let Some(q) = queued {
            self.queued.set(i64::try_from(q).unwrap_or(i64::MAX));
        }
        let mut out = String::with_capacity(4096);
        if encode(&mut out, &self.registry).is_err() {
            tracing::warn!("metrics encoding failed");
        }
        out
    }
}

/// The content type of [`Metrics::render`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_histogram_cumulatively() {
        let m = Metrics::default();
        m.delivery_latency.observe(Duration::from_millis(3));
        m.envelopes_accepted.inc_by(2);
        let text = m.render(Some(5));
        assert!(
            text.contains("sotto_delivery_latency_seconds_bucket{le=\"0.005\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("sotto_delivery_latency_seconds_bucket{le=\"0.001\"} 0"),
            "{text}"
        );
        assert!(text.contains("sotto_envelopes_queued 5"), "{text}");
        assert!(text.contains("sotto_envelopes_accepted_total 2"), "{text}");
        // Another instance counts apart.
        assert!(!Metrics::default()
            .render(None)
            .contains("sotto_envelopes_accepted_total 2"));
    }
}
