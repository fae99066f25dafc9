//! MaxProp's view of the store ([`crate::maxprop`]): the endpoint each record or message is
//! for, the hop-count threshold over what the store holds, the rank that orders bundles for a
//! peer, and, as a simulation option, which bundle a full buffer drops (the costliest).

use super::{BundleStore, Entry};
use crate::bundle::BundleKind;
use crate::objects::Hash;
use crate::prophet::{device_endpoint, issuer_endpoint};
use std::collections::BTreeMap;

/// MaxProp's rank of a bundle below the urgent kinds and the peer's own: `(0, hops, 0)` under
/// the hop-count threshold, else `(1, cost, hops)`, the cost's bits (non-negative: they order
/// as the numbers do). Smaller goes first.
pub type HopCostRank = (u8, u64, u64);

impl BundleStore {
    /// The endpoint `entry` is for: its issuer's for a record, its addressee's for a message
    /// (PRoPHET's and MaxProp's destination).
    pub fn endpoint_of(&self, entry: &Entry) -> Option<u64> {
        match entry.meta.kind {
            BundleKind::Record => Some(issuer_endpoint(&entry.meta.issuer)),
            BundleKind::Message => entry.meta.to.map(|d| device_endpoint(&d)),
            _ => None,
        }
    }

    /// The hop-count threshold now ([`crate::maxprop::Likelihoods::threshold`]) over the
    /// records and messages held, against the store's byte capacity.
    pub fn hop_threshold(&self) -> u32 {
        let held = self
            .entries
            .values()
            .filter(|e| matches!(e.meta.kind, BundleKind::Record | BundleKind::Message))
            .map(|e| (e.hops, u64::from(e.meta.size)));
        self.likelihoods.threshold(self.config.max_bytes, held)
    }

    /// `entry`'s [`HopCostRank`] under `threshold`, its destination's cost looked up in
    /// `costs` (the most if absent).
    pub fn hop_cost_rank(
        &self,
        entry: &Entry,
        costs: &BTreeMap<u64, f64>,
        threshold: u32,
    ) -> HopCostRank {
        let hops = u64::from(entry.hops);
        if u32::from(entry.hops) < threshold {
            return (0, hops, 0);
        }
        let cost = self
            .endpoint_of(entry)
            .and_then(|to| costs.get(&to).copied())
            .unwrap_or(f64::MAX);
        (1, cost.to_bits(), hops)
    }

    /// Simulation only: when full, drop the bundle MaxProp would send last from this node
    /// (The ONE's `MaxPropRouter`): the greatest [`HopCostRank`] with costs from this node's
    /// own endpoints (as its last MaxProp session named them), the latest arrival among
    /// equals; the urgent kinds last of all. Nodes never do this: the vectors that decide the
    /// costs are peers' claims. Set it before the first insert.
    pub fn set_drop_costliest(&mut self, on: bool) {
        self.drop_costliest = on;
    }

    /// The held bundles in the order a full buffer drops them under
    /// [`BundleStore::set_drop_costliest`], the first to go last.
    pub(super) fn costliest_last(&self) -> Vec<Hash> {
        let mine = self.likelihoods.mine();
        let costs = match mine.first() {
            Some(&me) => self.likelihoods.costs(me, mine),
            None => BTreeMap::new(),
        };
        let threshold = self.hop_threshold();
        let mut all: Vec<(bool, HopCostRank, u64, Hash)> = self
            .entries
            .values()
            .map(|e| {
                (
                    e.meta.kind.class() != 0,
                    self.hop_cost_rank(e, &costs, threshold),
                    e.arrival,
                    e.meta.id,
                )
            })
            .collect();
        // Urgent kinds sort first, so they go last.
        all.sort_unstable();
        all.into_iter().map(|k| k.3).collect()
    }
}
