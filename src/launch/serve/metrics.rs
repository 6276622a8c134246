//! serve's Prometheus metrics (text format on `GET /metrics`); each is
//! described in docs/deploy.md.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeliveryLabels {
    pub event: String,
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    pub state: String,
}

/// Every metric serve keeps.
pub struct Metrics {
    registry: Registry,
    pub deliveries: Family<DeliveryLabels, Counter>,
    pub signature_failures: Counter,
    pub builds_launched: Counter,
    pub builds_queued: Gauge,
    pub builds_running: Gauge,
    pub builds_finished: Family<StateLabels, Counter>,
    pub launch_seconds: Histogram,
    pub statuses_posted: Counter,
    pub statuses_failed: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("forge_serve");
        let deliveries = Family::<DeliveryLabels, Counter>::default();
        registry.register(
            "deliveries",
            "Webhook deliveries by event and outcome",
            deliveries.clone(),
        );
        let signature_failures = Counter::default();
        registry.register(
            "signature_failures",
            "Deliveries refused for a missing or wrong signature",
            signature_failures.clone(),
        );
        let builds_launched = Counter::default();
        registry.register(
            "builds_launched",
            "Builds whose container was started",
            builds_launched.clone(),
        );
        let builds_queued = Gauge::default();
        registry.register(
            "builds_queued",
            "Builds whose task waits for a node",
            builds_queued.clone(),
        );
        let builds_running = Gauge::default();
        registry.register(
            "builds_running",
            "Builds whose container runs",
            builds_running.clone(),
        );
        let builds_finished = Family::<StateLabels, Counter>::default();
        registry.register(
            "builds_finished",
            "Builds that ended, by final state",
            builds_finished.clone(),
        );
        let launch_seconds = Histogram::new(exponential_buckets(0.05, 2.0, 12));
        registry.register(
            "launch_seconds",
            "Time from an accepted delivery to its build's container start",
            launch_seconds.clone(),
        );
        let statuses_posted = Counter::default();
        registry.register(
            "statuses_posted",
            "Commit statuses serve posted",
            statuses_posted.clone(),
        );
        let statuses_failed = Counter::default();
        registry.register(
            "statuses_failed",
            "Commit statuses serve could not post",
            statuses_failed.clone(),
        );
        Metrics {
            registry,
            deliveries,
            signature_failures,
            builds_launched,
            builds_queued,
            builds_running,
            builds_finished,
            launch_seconds,
            statuses_posted,
            statuses_failed,
        }
    }

    pub fn delivery(&self, event: &str, outcome: &str) {
        // Event names come from a signed delivery but are still bounded:
        // unknown ones share one label value.
        let event = match event {
            "ping" | "pull_request" | "push" => event,
            _ => "other",
        };
        self.deliveries
            .get_or_create(&DeliveryLabels {
                event: event.to_string(),
                outcome: outcome.to_string(),
            })
            .inc();
    }

    pub fn finished(&self, state: &str) {
        self.builds_finished
            .get_or_create(&StateLabels {
                state: state.to_string(),
            })
            .inc();
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_prometheus_text() {
        let m = Metrics::new();
        m.delivery("pull_request", "accepted");
        m.delivery("weird\"event", "ignored");
        m.signature_failures.inc();
        m.finished("success");
        m.launch_seconds.observe(0.3);
        let text = m.encode();
        assert!(
            text.contains(
                "forge_serve_deliveries_total{event=\"pull_request\",outcome=\"accepted\"} 1"
            ),
            "{text}"
        );
        assert!(text.contains("event=\"other\""), "{text}");
        assert!(
            text.contains("forge_serve_signature_failures_total 1"),
            "{text}"
        );
        assert!(text.contains("forge_serve_builds_finished_total{state=\"success\"} 1"));
        assert!(
            text.contains("forge_serve_launch_seconds_count 1"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
