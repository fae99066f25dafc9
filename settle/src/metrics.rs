//! The server's counters, served in Prometheus' text format on `/metrics`, and the risk
//! alerts standing per rule as gauges.

use crate::risk::Rule;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Records settled.
    pub settled: AtomicU64,
    /// Records rejected (with a receipt).
    pub rejected: AtomicU64,
    /// Records that were decided before (idempotent re-uploads).
    pub repeated: AtomicU64,
    /// Inputs that were not a record of this issuer or did not open (no receipt).
    pub unopened: AtomicU64,
    /// Records left undecided because their source's budget was spent.
    pub deferred: AtomicU64,
    /// Records answered `retry_later` because the database refused them.
    pub retry_later: AtomicU64,
    /// Upload batches.
    pub batches: AtomicU64,
    /// Uploads refused before reading (budget spent, queue full).
    pub uploads_refused: AtomicU64,
    /// Allowances issued.
    pub allowances: AtomicU64,
    /// Fraud proofs found.
    pub frauds: AtomicU64,
}

impl Metrics {
    /// Adds `n` to `counter`.
    pub fn add(counter: &AtomicU64, n: u64) {
        if n > 0 {
            counter.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// The counters in the text exposition format 0.0.4, then `uploads_waiting` as a gauge.
    pub fn render(&self, uploads_waiting: usize) -> String {
        let counters = [
            (
                "meshpay_records_settled_total",
                "Records settled.",
                &self.settled,
            ),
            (
                "meshpay_records_rejected_total",
                "Records refused with a receipt.",
                &self.rejected,
            ),
            (
                "meshpay_records_repeated_total",
                "Records uploaded again after their decision.",
                &self.repeated,
            ),
            (
                "meshpay_records_unopened_total",
                "Inputs that were not a record of this issuer or did not open.",
                &self.unopened,
            ),
            (
                "meshpay_records_deferred_total",
                "Records left undecided because their source's budget was spent.",
                &self.deferred,
            ),
            (
                "meshpay_records_retry_later_total",
                "Records answered retry_later because the database refused them.",
                &self.retry_later,
            ),
            (
                "meshpay_upload_batches_total",
                "Upload batches.",
                &self.batches,
            ),
            (
                "meshpay_uploads_refused_total",
                "Uploads refused before reading (budget spent, too many in progress).",
                &self.uploads_refused,
            ),
            (
                "meshpay_allowances_issued_total",
                "Allowances issued.",
                &self.allowances,
            ),
            (
                "meshpay_fraud_proofs_total",
                "Fraud proofs found.",
                &self.frauds,
            ),
        ];
        let mut text = String::new();
        for (name, help, v) in counters {
            let v = v.load(Ordering::Relaxed);
            let _ = write!(
                text,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}\n"
            );
        }
        let _ = write!(
            text,
            "# HELP meshpay_uploads_waiting Uploads read and waiting to be judged.\n# TYPE meshpay_uploads_waiting gauge\nmeshpay_uploads_waiting {uploads_waiting}\n"
        );
        text
    }
}

/// The alerts standing per rule as the gauge `meshpay_risk_alerts{rule="…"}`, one line per
/// rule (0 included; a rule missing from `counts` is 0).
pub fn render_risk(counts: &BTreeMap<Rule, u64>) -> String {
    let mut text = String::from(
        "# HELP meshpay_risk_alerts Risk alerts standing, by rule.\n# TYPE meshpay_risk_alerts gauge\n",
    );
    for rule in Rule::ALL {
        let n = counts.get(&rule).copied().unwrap_or(0);
        let _ = writeln!(text, "meshpay_risk_alerts{{rule=\"{}\"}} {n}", rule.name());
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rule_has_a_gauge() {
        let text = render_risk(&[(Rule::Fraud, 2)].into());
        assert!(text.contains("# TYPE meshpay_risk_alerts gauge\n"));
        assert!(text.contains("meshpay_risk_alerts{rule=\"fraud\"} 2\n"));
        assert!(text.contains("meshpay_risk_alerts{rule=\"junk_source\"} 0\n"));
        assert_eq!(text.lines().count(), 2 + Rule::ALL.len());
    }
}
