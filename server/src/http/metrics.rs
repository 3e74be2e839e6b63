//! Prometheus metrics, written out by hand: counters, gauges and histograms with explicit buckets.
//! All names carry the `triage_` prefix.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;

/// Bucket bounds in seconds: from a fast cached lookup to a long draft.
const BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

#[derive(Default)]
struct Histogram {
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, seconds: f64) {
        if self.counts.is_empty() {
            self.counts = vec![0; BUCKETS.len()];
        }
        for (i, bound) in BUCKETS.iter().enumerate() {
            if seconds <= *bound {
                self.counts[i] += 1;
            }
        }
        self.sum += seconds;
        self.count += 1;
    }

    fn write(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        for (i, bound) in BUCKETS.iter().enumerate() {
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {}",
                self.counts.get(i).unwrap_or(&0)
            );
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}",
            self.count
        );
        let _ = writeln!(out, "{name}_sum{{{labels}}} {}", self.sum);
        let _ = writeln!(out, "{name}_count{{{labels}}} {}", self.count);
    }
}

#[derive(Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(String, u16), u64>>,
    request_seconds: Mutex<BTreeMap<String, Histogram>>,
    stage_seconds: Mutex<BTreeMap<String, Histogram>>,
    first_token_seconds: Mutex<Histogram>,
    pub queue_depth: AtomicI64,
    pub in_flight: AtomicI64,
    pub shed: AtomicU64,
}

impl Metrics {
    pub fn record_request(&self, route: &str, status: u16, seconds: f64) {
        *self
            .requests
            .lock()
            .expect("metrics")
            .entry((route.to_string(), status))
            .or_default() += 1;
        self.request_seconds
            .lock()
            .expect("metrics")
            .entry(route.to_string())
            .or_default()
            .observe(seconds);
    }

    pub fn record_stages(&self, timings_ms: &BTreeMap<String, f64>) {
        let mut stages = self.stage_seconds.lock().expect("metrics");
        for (stage, ms) in timings_ms {
            stages.entry(stage.clone()).or_default().observe(ms / 1e3);
        }
    }

    pub fn record_first_token(&self, seconds: f64) {
        self.first_token_seconds
            .lock()
            .expect("metrics")
            .observe(seconds);
    }

    /// The Prometheus text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        out.push_str("# HELP triage_requests_total HTTP requests by route and status.\n# TYPE triage_requests_total counter\n");
        for ((route, status), n) in self.requests.lock().expect("metrics").iter() {
            let _ = writeln!(
                out,
                "triage_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}"
            );
        }
        out.push_str("# HELP triage_request_duration_seconds HTTP request duration by route.\n# TYPE triage_request_duration_seconds histogram\n");
        for (route, h) in self.request_seconds.lock().expect("metrics").iter() {
            h.write(
                &mut out,
                "triage_request_duration_seconds",
                &format!("route=\"{route}\""),
            );
        }
        out.push_str("# HELP triage_stage_duration_seconds Pipeline stage duration (embed, search, classify, units, draft).\n# TYPE triage_stage_duration_seconds histogram\n");
        for (stage, h) in self.stage_seconds.lock().expect("metrics").iter() {
            h.write(
                &mut out,
                "triage_stage_duration_seconds",
                &format!("stage=\"{stage}\""),
            );
        }
        out.push_str("# HELP triage_time_to_first_token_seconds Time from request to the first streamed draft text.\n# TYPE triage_time_to_first_token_seconds histogram\n");
        self.first_token_seconds.lock().expect("metrics").write(
            &mut out,
            "triage_time_to_first_token_seconds",
            "",
        );
        let gauges = [
            (
                "triage_queue_depth",
                "Model jobs waiting for a worker.",
                self.queue_depth.load(Ordering::Relaxed),
            ),
            (
                "triage_in_flight",
                "Model jobs running.",
                self.in_flight.load(Ordering::Relaxed),
            ),
        ];
        for (name, help, value) in gauges {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP triage_shed_requests_total Requests refused with 429 because the queue was full.\n# TYPE triage_shed_requests_total counter\ntriage_shed_requests_total {}",
            self.shed.load(Ordering::Relaxed)
        );
        out
    }
}

/// The audit trail's gauges and counters (none with `--no-audit`).
pub fn render_audit(out: &mut String, audit: Option<&triage_core::audit::AuditHealth>) {
    let Some(a) = audit else {
        return;
    };
    let rows: [(&str, &str, &str, u64); 6] = [
        (
            "triage_audit_healthy",
            "gauge",
            "1 while the audit trail takes and writes records, 0 otherwise.",
            a.healthy as u64,
        ),
        (
            "triage_audit_records_total",
            "counter",
            "Audit records accepted since the service started.",
            a.accepted,
        ),
        (
            "triage_audit_dropped_total",
            "counter",
            "Audit records refused (queue full or writer failing): requests served unaudited, or refused with --audit-refuse-unaudited.",
            a.dropped,
        ),
        (
            "triage_audit_write_errors_total",
            "counter",
            "Failed attempts to write or sync the audit trail (each is retried).",
            a.write_errors,
        ),
        (
            "triage_audit_queued",
            "gauge",
            "Audit records waiting for the writer.",
            a.queued,
        ),
        (
            "triage_audit_durable_records",
            "gauge",
            "Records of this audit stream synced to disk.",
            a.durable_next_seq,
        ),
    ];
    for (name, kind, help, value) in rows {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_histograms() {
        let m = Metrics::default();
        m.record_request("/v1/triage", 200, 0.03);
        m.record_request("/v1/triage", 200, 0.2);
        let text = m.render();
        assert!(text.contains("triage_requests_total{route=\"/v1/triage\",status=\"200\"} 2"));
        assert!(text.contains(
            "triage_request_duration_seconds_bucket{route=\"/v1/triage\",le=\"0.05\"} 1"
        ));
        assert!(text.contains(
            "triage_request_duration_seconds_bucket{route=\"/v1/triage\",le=\"+Inf\"} 2"
        ));
        assert!(text.contains("triage_shed_requests_total 0"));
    }
}
