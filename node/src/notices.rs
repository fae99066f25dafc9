//! What happened in the node, for whoever watches live (the web app's event stream), and the
//! recent alerts that live nowhere else (revocations seen, peers dropped).
//!
//! Watchers that fall behind skip what they missed (a broadcast channel of bounded length):
//! a slow browser never holds the device's task back.

use crate::api::{Alert, Notice, Refusal};
use std::collections::VecDeque;
use std::sync::Mutex;
use tokio::sync::broadcast;

/// Notices kept for a slow watcher before it skips.
const BACKLOG: usize = 256;
/// Alerts remembered.
const RECENT_ALERTS: usize = 100;
/// Refused payments remembered.
const RECENT_REFUSALS: usize = 100;

/// The node's notices.
pub struct Notices {
    tx: broadcast::Sender<Notice>,
    alerts: Mutex<VecDeque<Alert>>,
    refusals: Mutex<VecDeque<Refusal>>,
}

impl Default for Notices {
    fn default() -> Self {
        Self {
            tx: broadcast::channel(BACKLOG).0,
            alerts: Mutex::new(VecDeque::new()),
            refusals: Mutex::new(VecDeque::new()),
        }
    }
}

impl Notices {
    /// Tells the watchers; an alert or a refused payment is also remembered (the newest
    /// [`RECENT_ALERTS`] and [`RECENT_REFUSALS`]).
    pub fn publish(&self, notice: Notice) {
        match &notice {
            Notice::Alert(a) => {
                let mut alerts = self
                    .alerts
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                // One entry per peer that broke the rules, its latest: a peer that keeps
                // misbehaving cannot push the other alerts out.
                if a.kind == crate::api::AlertKind::Misbehaved {
                    alerts.retain(|b| b.kind != a.kind || b.subject != a.subject);
                }
                if alerts.len() == RECENT_ALERTS {
                    alerts.pop_front();
                }
                alerts.push_back(a.clone());
            }
            Notice::Refused { payer, reason, at } => remember(
                &self.refusals,
                Refusal {
                    payer: payer.clone(),
                    reason: reason.clone(),
                    at: *at,
                },
                RECENT_REFUSALS,
            ),
            _ => {}
        }
        let _ = self.tx.send(notice);
    }

    /// The payments refused since the node started (the newest [`RECENT_REFUSALS`]), oldest
    /// first.
    pub fn recent_refusals(&self) -> Vec<Refusal> {
        self.refusals
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .cloned()
            .collect()
    }

    /// A new watcher.
    pub fn subscribe(&self) -> broadcast::Receiver<Notice> {
        self.tx.subscribe()
    }

    /// The alerts remembered, oldest first.
    pub fn recent_alerts(&self) -> Vec<Alert> {
        self.alerts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .cloned()
            .collect()
    }
}

fn remember<T>(list: &Mutex<VecDeque<T>>, item: T, cap: usize) {
    let mut list = list
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if list.len() == cap {
        list.pop_front();
    }
    list.push_back(item);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::AlertKind;

    fn alert(n: u64) -> Notice {
        Notice::Alert(Alert {
            kind: AlertKind::Misbehaved,
            at: n,
            subject: format!("peer {n}"),
            detail: "sent an oversized frame".into(),
        })
    }

    #[test]
    fn alerts_are_remembered_up_to_the_cap_and_watchers_see_every_notice() {
        let n = Notices::default();
        let mut rx = n.subscribe();
        for i in 0..(RECENT_ALERTS as u64 + 5) {
            n.publish(alert(i));
        }
        n.publish(Notice::Peers);
        n.publish(Notice::Refused {
            payer: "mpdev1x".into(),
            reason: "counter_conflict".into(),
            at: 7,
        });
        assert_eq!(n.recent_refusals().len(), 1);
        assert_eq!(n.recent_refusals()[0].reason, "counter_conflict");
        let kept = n.recent_alerts();
        assert_eq!(kept.len(), RECENT_ALERTS);
        assert_eq!(kept[0].at, 5, "the oldest are dropped first");
        assert!(matches!(rx.try_recv(), Ok(Notice::Alert(a)) if a.at == 0));
    }

    #[test]
    fn a_peer_that_keeps_misbehaving_holds_one_alert() {
        let n = Notices::default();
        n.publish(Notice::Alert(Alert {
            kind: AlertKind::Revoked,
            at: 1,
            subject: "allowance".into(),
            detail: "revoked".into(),
        }));
        for i in 0..(RECENT_ALERTS as u64 * 2) {
            n.publish(Notice::Alert(Alert {
                kind: AlertKind::Misbehaved,
                at: i,
                subject: "the same peer".into(),
                detail: "oversized frame".into(),
            }));
        }
        let kept = n.recent_alerts();
        assert_eq!(kept.len(), 2, "{kept:?}");
        assert_eq!(kept[0].kind, AlertKind::Revoked);
        assert_eq!(kept[1].at, RECENT_ALERTS as u64 * 2 - 1, "the latest");
    }

    #[test]
    fn a_slow_watcher_skips_instead_of_holding_the_node() {
        let n = Notices::default();
        let mut rx = n.subscribe();
        for _ in 0..(BACKLOG + 10) {
            n.publish(Notice::Peers);
        }
        assert!(matches!(
            rx.try_recv(),
            Err(broadcast::error::TryRecvError::Lagged(10))
        ));
        assert!(matches!(rx.try_recv(), Ok(Notice::Peers)));
    }
}
