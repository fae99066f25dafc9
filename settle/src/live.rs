//! The live feed: what settlement decides, as it decides it, for the issuer console.
//!
//! [`crate::Server::settle`] publishes, after each batch is committed, one `receipt` event per
//! new decision (at most [`RECEIPTS_PER_BATCH`] per batch: the feed is for watching, the
//! receipts feed `/v1/receipts` is the record), a `fraud` event per allowance newly proven
//! forked, an `alert` per risk alert raised, and one `upload` event per upload. The events go
//! to a bounded broadcast channel (a subscriber that falls behind skips what it missed) and
//! the last [`KEPT`] are kept for pages that open later. Nothing here reads the database, so
//! publishing costs settlement a few allocations per batch.

use crate::risk::Alert;
use serde::Serialize;
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use tokio::sync::{broadcast, watch};
use utoipa::ToSchema;

/// Receipts published per batch at most.
pub const RECEIPTS_PER_BATCH: usize = 100;
/// Events kept for pages that open later.
pub const KEPT: usize = 100;
/// Events a subscriber may fall behind by before it skips.
const CHANNEL: usize = 256;

/// One event of the live feed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LiveEvent {
    /// An upload was settled.
    Upload {
        /// The uploading source (its address, or its /64 network), or `local`.
        source: String,
        /// Inputs uploaded.
        records: u64,
        /// Answered `settled` (now or before).
        settled: u64,
        /// Answered with a refusal (now or before).
        rejected: u64,
        /// Got no decision: not a record of this issuer, did not open, unknown allowance or
        /// bad signature.
        unopened: u64,
        /// When, in Unix seconds.
        at: u64,
    },
    /// A record was decided.
    Receipt {
        /// The record id (hex).
        record: String,
        /// `settled`, or `rejected: <reason>`.
        status: String,
        /// The IOU's amount (minor units).
        amount: u64,
        /// The payee (`mpdev1…`).
        payee: String,
        /// The allowance (hex).
        allowance: String,
        /// When, in Unix seconds.
        at: u64,
    },
    /// An allowance was proven forked.
    Fraud {
        /// The allowance (hex).
        allowance: String,
        /// Its holder (`mpdev1…`).
        holder: String,
        /// When, in Unix seconds.
        at: u64,
    },
    /// A risk alert was raised.
    Alert(Alert),
}

/// The live feed's hub: a broadcast channel, the last events, and refusals counted since the
/// server started.
#[derive(Debug)]
pub struct Live {
    tx: broadcast::Sender<Arc<LiveEvent>>,
    kept: Mutex<VecDeque<Arc<LiveEvent>>>,
    refusals: Mutex<BTreeMap<&'static str, u64>>,
    closing: watch::Sender<bool>,
}

impl Default for Live {
    fn default() -> Self {
        Self {
            tx: broadcast::channel(CHANNEL).0,
            kept: Mutex::new(VecDeque::with_capacity(KEPT)),
            refusals: Mutex::new(BTreeMap::new()),
            closing: watch::channel(false).0,
        }
    }
}

impl Live {
    /// Publishes `events`, oldest first.
    pub fn publish(&self, events: impl IntoIterator<Item = LiveEvent>) {
        let mut kept = self.kept.lock().unwrap_or_else(PoisonError::into_inner);
        for e in events {
            let e = Arc::new(e);
            if kept.len() == KEPT {
                kept.pop_front();
            }
            kept.push_back(Arc::clone(&e));
            // No subscriber is not an error.
            let _ = self.tx.send(e);
        }
    }

    /// The last events, oldest first.
    pub fn recent(&self) -> Vec<Arc<LiveEvent>> {
        self.kept
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .cloned()
            .collect()
    }

    /// A subscription to the events published from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<LiveEvent>> {
        self.tx.subscribe()
    }

    /// Counts refusals by reason name.
    pub fn count_refusals(&self, reasons: &BTreeMap<&'static str, u64>) {
        if reasons.is_empty() {
            return;
        }
        let mut r = self.refusals.lock().unwrap_or_else(PoisonError::into_inner);
        for (reason, n) in reasons {
            *r.entry(reason).or_default() += n;
        }
    }

    /// Refusals decided since the server started, by reason name.
    pub fn refusals(&self) -> BTreeMap<&'static str, u64> {
        self.refusals
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Tells subscribers the server is stopping (their streams end).
    pub fn close(&self) {
        self.closing.send_replace(true);
    }

    /// Whether the server is stopping, as a watch to wait on.
    pub fn closing(&self) -> watch::Receiver<bool> {
        self.closing.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fraud(n: u64) -> LiveEvent {
        LiveEvent::Fraud {
            allowance: "ab".into(),
            holder: "mpdev1x".into(),
            at: n,
        }
    }

    #[test]
    fn keeps_the_last_events_and_broadcasts_them() {
        let live = Live::default();
        let mut rx = live.subscribe();
        live.publish((0..KEPT as u64 + 5).map(fraud));
        let recent = live.recent();
        assert_eq!(recent.len(), KEPT);
        assert_eq!(*recent[0], fraud(5));
        assert_eq!(*rx.try_recv().expect("published"), fraud(0));
    }

    #[test]
    fn events_serialise_with_their_kind() {
        let json = serde_json::to_value(fraud(7)).expect("serialises");
        assert_eq!(
            json,
            serde_json::json!({"kind": "fraud", "allowance": "ab", "holder": "mpdev1x", "at": 7})
        );
        let alert = LiveEvent::Alert(crate::risk::Alert {
            rule: crate::risk::Rule::JunkSource,
            subject: "10.0.0.1".into(),
            detail: "d".into(),
            value: 10,
            threshold: 10,
            since: 3,
        });
        let json = serde_json::to_value(alert).expect("serialises");
        assert_eq!(json["kind"], "alert");
        assert_eq!(json["rule"], "junk_source");
    }
}
