//! What happened in the node, for whoever watches live (the web app's event stream), and the
//! recent alerts that live nowhere else (revocations seen, peers dropped).
//!
//! Watchers that fall behind skip what they missed (a broadcast channel of bounded length):
//! a slow browser never holds the device's task back.

use crate::api::{Alert, Notice};
use std::collections::VecDeque;
use std::sync::Mutex;
use tokio::sync::broadcast;

/// Notices kept for a slow watcher before it skips.
const BACKLOG: usize = 256;
/// Alerts remembered.
const RECENT_ALERTS: usize = 100;

/// The node's notices.
pub struct Notices {
    tx: broadcast::Sender<Notice>,
    alerts: Mutex<VecDeque<Alert>>,
}

impl Default for Notices {
    fn default() -> Self {
        Self {
            tx: broadcast::channel(BACKLOG).0,
            alerts: Mutex::new(VecDeque::new()),
        }
    }
}

impl Notices {
    /// Tells the watchers; an alert is also remembered (the newest [`RECENT_ALERTS`]).
    pub fn publish(&self, notice: Notice) {
        if let Notice::Alert(a) = &notice {
            let mut alerts = self
                .alerts
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if alerts.len() == RECENT_ALERTS {
                alerts.pop_front();
            }
            alerts.push_back(a.clone());
        }
        let _ = self.tx.send(notice);
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
        let kept = n.recent_alerts();
        assert_eq!(kept.len(), RECENT_ALERTS);
        assert_eq!(kept[0].at, 5, "the oldest are dropped first");
        assert!(matches!(rx.try_recv(), Ok(Notice::Alert(a)) if a.at == 0));
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
