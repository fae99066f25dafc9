//! Reports: The ONE's `MessageStatsReport` with its definitions (so two runs can be compared
//! line by line), the meeting rate, and JSON and CSV forms.

use crate::engine::Outcome;
use serde::Serialize;
use std::fmt::Write as _;

/// The statistics of a run.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Stats {
    /// Scenario name.
    pub scenario: String,
    /// Seed.
    pub seed: u64,
    /// Nodes.
    pub nodes: u32,
    /// Simulated seconds.
    pub sim_time: f64,
    /// Messages created.
    pub created: u64,
    /// Transfers started: relayed plus aborted.
    pub started: u64,
    /// Message copies handed over.
    pub relayed: u64,
    /// Transfers cut off by the end of their contact.
    pub aborted: u64,
    /// Copies dropped from buffers (full, or expired).
    pub dropped: u64,
    /// Copies removed for other reasons (none: delivered messages are not purged).
    pub removed: u64,
    /// Messages that reached their destination.
    pub delivered: u64,
    /// delivered / created.
    pub delivery_prob: f64,
    /// (relayed − delivered) / delivered.
    pub overhead_ratio: f64,
    /// Mean creation-to-delivery time of delivered messages, s.
    pub latency_avg: f64,
    /// Median of the same, s.
    pub latency_med: f64,
    /// 90th percentile, s.
    pub latency_p90: f64,
    /// Mean hops of the first copy to arrive.
    pub hopcount_avg: f64,
    /// Mean time a copy spent in a buffer before it left (dropped, expired, handed on or
    /// purged), s: The ONE's `buffertime_avg`.
    pub buffertime_avg: f64,
    /// Median of the same, s.
    pub buffertime_med: f64,
    /// Responses delivered per message that asked for one (The ONE's `response_prob`).
    pub response_prob: f64,
    /// Mean time from a request's creation to its response's delivery, s (`rtt_avg`).
    pub rtt_avg: f64,
    /// Median of the same, s.
    pub rtt_med: f64,
    /// Median of the same.
    pub hopcount_med: f64,
    /// Contacts that came up.
    pub contacts: u64,
    /// Mean contact duration, s.
    pub contact_avg_s: f64,
    /// Pairwise meeting rate λ: contacts / (pairs × time), per second.
    pub meeting_rate: f64,
    /// Sync sessions run.
    pub sessions: u64,
    /// Bytes sent in sync messages, all sessions, both ways.
    pub bytes: u64,
    /// Of which bundle bytes.
    pub bundle_bytes: u64,
    /// Most bundles one node held.
    pub peak_buffer: usize,
    /// The payments workload, if it ran.
    pub payments: Option<crate::market::PaymentStats>,
}

fn median(v: &mut [f64]) -> f64 {
    quantile(v, 0.5)
}

// Sorting a copy: lengths are counts of messages, exact in f64.
#[allow(
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss
)]
fn quantile(v: &mut [f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    // The ONE takes the element at index n/2 for the median; the same rule generalised.
    let i = ((v.len() as f64) * q) as usize;
    v[i.min(v.len() - 1)]
}

// Counts and milliseconds of a run are exact in f64.
#[allow(clippy::cast_precision_loss)]
fn mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        f64::NAN
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}

impl Stats {
    /// Computes the statistics of `outcome`.
    // Counts and milliseconds of a run are exact in f64.
    #[allow(clippy::cast_precision_loss)]
    pub fn of(outcome: &Outcome, scenario: &str, seed: u64) -> Self {
        let c = &outcome.counters;
        let created = outcome.messages.len() as u64;
        let mut latencies: Vec<f64> = outcome
            .messages
            .iter()
            .filter_map(|m| m.delivered_ms.map(|d| (d - m.created_ms) as f64 / 1000.0))
            .collect();
        let mut hops: Vec<f64> = outcome
            .messages
            .iter()
            .filter_map(|m| m.hops.map(f64::from))
            .collect();
        let mut buffered: Vec<f64> = c.buffer_ms.iter().map(|&b| b as f64 / 1000.0).collect();
        let delivered = latencies.len() as u64;
        let asked = outcome
            .messages
            .iter()
            .filter(|m| m.response_size > 0)
            .count();
        let mut rtts: Vec<f64> = outcome
            .messages
            .iter()
            .filter_map(|m| {
                let request = &outcome.messages[m.request?];
                Some((m.delivered_ms? - request.created_ms) as f64 / 1000.0)
            })
            .collect();
        let n = f64::from(outcome.nodes);
        let secs = outcome.duration_ms as f64 / 1000.0;
        Self {
            scenario: scenario.to_owned(),
            seed,
            nodes: outcome.nodes,
            sim_time: secs,
            created,
            started: c.relayed + c.aborted,
            relayed: c.relayed,
            aborted: c.aborted,
            dropped: c.dropped,
            removed: 0,
            delivered,
            delivery_prob: if created == 0 {
                f64::NAN
            } else {
                delivered as f64 / created as f64
            },
            overhead_ratio: if delivered == 0 {
                f64::NAN
            } else {
                (c.relayed as f64 - delivered as f64) / delivered as f64
            },
            latency_avg: mean(&latencies),
            latency_med: median(&mut latencies),
            latency_p90: quantile(&mut latencies, 0.9),
            hopcount_avg: mean(&hops),
            hopcount_med: median(&mut hops),
            buffertime_avg: mean(&buffered),
            buffertime_med: median(&mut buffered),
            response_prob: if asked == 0 {
                0.0
            } else {
                rtts.len() as f64 / asked as f64
            },
            rtt_avg: mean(&rtts),
            rtt_med: median(&mut rtts),
            contacts: c.contacts,
            contact_avg_s: if c.contacts == 0 {
                f64::NAN
            } else {
                c.contact_ms as f64 / 1000.0 / c.contacts as f64
            },
            meeting_rate: c.contacts as f64 / (n * (n - 1.0) / 2.0) / secs,
            sessions: c.sessions,
            bytes: c.bytes,
            bundle_bytes: c.bundle_bytes,
            peak_buffer: c.peak_buffer,
            payments: outcome.payments.clone(),
        }
    }

    /// The report in The ONE's `MessageStatsReport` layout (`key: value` lines), with the
    /// meshpay extras after it.
    pub fn one_report(&self) -> String {
        let f = |x: f64| {
            if x.is_nan() {
                "NaN".to_owned()
            } else {
                format!("{x:.4}")
            }
        };
        let mut s = format!(
            "Message stats for scenario {}\nsim_time: {:.4}\n",
            self.scenario, self.sim_time
        );
        let _ = writeln!(s, "created: {}", self.created);
        let _ = writeln!(s, "started: {}", self.started);
        let _ = writeln!(s, "relayed: {}", self.relayed);
        let _ = writeln!(s, "aborted: {}", self.aborted);
        let _ = writeln!(s, "dropped: {}", self.dropped);
        let _ = writeln!(s, "removed: {}", self.removed);
        let _ = writeln!(s, "delivered: {}", self.delivered);
        let _ = writeln!(s, "delivery_prob: {}", f(self.delivery_prob));
        let _ = writeln!(s, "response_prob: {}", f(self.response_prob));
        let _ = writeln!(s, "overhead_ratio: {}", f(self.overhead_ratio));
        let _ = writeln!(s, "latency_avg: {}", f(self.latency_avg));
        let _ = writeln!(s, "latency_med: {}", f(self.latency_med));
        let _ = writeln!(s, "hopcount_avg: {}", f(self.hopcount_avg));
        let _ = writeln!(s, "hopcount_med: {}", f(self.hopcount_med));
        let _ = writeln!(s, "buffertime_avg: {}", f(self.buffertime_avg));
        let _ = writeln!(s, "buffertime_med: {}", f(self.buffertime_med));
        // NaN when no message asked for a response, as The ONE prints it.
        let _ = writeln!(s, "rtt_avg: {}", f(self.rtt_avg));
        let _ = writeln!(s, "rtt_med: {}", f(self.rtt_med));
        let _ = writeln!(s, "# meshpay");
        let _ = writeln!(s, "latency_p90: {}", f(self.latency_p90));
        let _ = writeln!(s, "contacts: {}", self.contacts);
        let _ = writeln!(s, "contact_avg_s: {}", f(self.contact_avg_s));
        let _ = writeln!(s, "meeting_rate: {:.6e}", self.meeting_rate);
        let _ = writeln!(s, "sessions: {}", self.sessions);
        let _ = writeln!(s, "bytes: {}", self.bytes);
        let _ = writeln!(s, "bundle_bytes: {}", self.bundle_bytes);
        let _ = writeln!(s, "peak_buffer: {}", self.peak_buffer);
        if let Some(p) = &self.payments {
            let _ = writeln!(s, "# payments");
            if let Ok(serde_json::Value::Object(map)) = serde_json::to_value(p) {
                for (k, v) in map {
                    let _ = writeln!(s, "{k}: {v}");
                }
            }
        }
        s
    }

    /// One CSV header line.
    pub fn csv_header() -> &'static str {
        "scenario,seed,nodes,sim_time,created,relayed,dropped,delivered,delivery_prob,overhead_ratio,latency_avg,latency_med,latency_p90,hopcount_avg,hopcount_med,contacts,contact_avg_s,meeting_rate,sessions,bytes,bundle_bytes,peak_buffer"
    }

    /// One CSV row.
    pub fn csv_row(&self) -> String {
        format!(
            "{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{:e},{},{},{},{}",
            self.scenario,
            self.seed,
            self.nodes,
            self.sim_time,
            self.created,
            self.relayed,
            self.dropped,
            self.delivered,
            self.delivery_prob,
            self.overhead_ratio,
            self.latency_avg,
            self.latency_med,
            self.latency_p90,
            self.hopcount_avg,
            self.hopcount_med,
            self.contacts,
            self.contact_avg_s,
            self.meeting_rate,
            self.sessions,
            self.bytes,
            self.bundle_bytes,
            self.peak_buffer
        )
    }
}
