//! Making room: which held bundle a newcomer may push out (the module docs' eviction
//! rules, or a simulation's drop policy), and the room hint a sync session sends the peer.

use super::types::rank;
use super::{BundleStore, Origin};
use crate::bundle::Meta;
use crate::objects::Hash;
use std::collections::BTreeSet;

impl BundleStore {
    /// Whether a simulation's drop policy makes room instead of the eviction rules.
    pub(super) fn drops(&self) -> bool {
        self.drop_oldest || self.drop_costliest
    }

    /// The origin other than [`Origin::Local`] holding the most bytes, with its bytes (the
    /// greater origin on a tie). Under a drop policy only the room hint asks, once a session,
    /// so it is found then rather than kept in order through every change.
    fn heaviest(&self) -> Option<(u64, Origin)> {
        if self.drops() {
            return self
                .per_origin
                .iter()
                .filter(|(o, _)| **o != Origin::Local)
                .map(|(o, w)| (*w, *o))
                .max();
        }
        self.weights.last().copied()
    }

    /// Adds a bundle to (`add`), or takes it from, the indexes the eviction rules read: every
    /// bundle of an origin other than [`Origin::Local`], unless a drop policy makes room.
    pub(super) fn index_evictable(&mut self, meta: &Meta, origin: Origin, arrival: u64, add: bool) {
        if origin == Origin::Local || self.drops() {
            return;
        }
        let key = (rank(meta.kind), arrival, meta.id);
        if add {
            self.evictable.insert(key);
            self.by_origin.entry(origin).or_default().insert(key);
            self.by_issuer.entry(meta.issuer).or_default().insert(key);
            return;
        }
        self.evictable.remove(&key);
        if let Some(set) = self.by_origin.get_mut(&origin) {
            set.remove(&key);
            if set.is_empty() {
                self.by_origin.remove(&origin);
            }
        }
        if let Some(set) = self.by_issuer.get_mut(&meta.issuer) {
            set.remove(&key);
            if set.is_empty() {
                self.by_issuer.remove(&meta.issuer);
            }
        }
    }

    /// The bundle held that arrived first (under `drop_oldest`). The first call puts the held
    /// bundles in order of arrival, and puts keep the order from then on.
    fn oldest(&mut self) -> Option<Hash> {
        let entries = &self.entries;
        let by_arrival = self.by_arrival.get_or_insert_with(|| {
            let mut held: Vec<(u64, Hash)> =
                entries.values().map(|e| (e.arrival, e.meta.id)).collect();
            held.sort_unstable();
            held.into()
        });
        while let Some(&(arrival, id)) = by_arrival.front() {
            if entries.get(&id).is_some_and(|e| e.arrival == arrival) {
                return Some(id);
            }
            by_arrival.pop_front();
        }
        None
    }

    /// Makes room for `meta` from `origin` by the eviction rules of the module docs. Returns
    /// `false` (and evicts nothing more) when the newcomer is to be refused.
    pub(super) fn make_room(&mut self, meta: &Meta, origin: Origin) -> bool {
        let size = u64::from(meta.size);
        if self.drops() {
            if size > self.config.max_bytes {
                return false;
            }
            let mut costliest: Option<Vec<Hash>> = None;
            while self.bytes + size > self.config.max_bytes
                || self.entries.len() >= self.config.max_bundles
            {
                let victim = if self.drop_costliest {
                    costliest.get_or_insert_with(|| self.costliest_last()).pop()
                } else {
                    self.oldest()
                };
                let Some(victim) = victim else {
                    return false;
                };
                self.remove(&victim);
            }
            return true;
        }
        if origin != Origin::Local
            && self.per_origin.get(&origin).copied().unwrap_or(0) + size
                > self.config.max_bytes_per_origin
        {
            return false;
        }
        while self.bytes + size > self.config.max_bytes
            || self.entries.len() >= self.config.max_bundles
        {
            let Some(victim) = self.victim(meta, origin, size) else {
                return false;
            };
            self.remove(&victim);
        }
        true
    }

    /// The bundle a newcomer `meta` of `size` bytes from `origin` may push out.
    fn victim(&self, meta: &Meta, origin: Origin, size: u64) -> Option<Hash> {
        let new_rank = rank(meta.kind);
        if origin == Origin::Local {
            // The node's own: the least urgent of others', the latest.
            return self.evictable.last().map(|k| k.2);
        }
        // A less urgent kind of the same issuer: urgent kinds are signed by their issuer, so
        // nobody can push out an issuer's records with bundles signed under another key.
        if let Some(least) = self.by_issuer.get(&meta.issuer).and_then(BTreeSet::last) {
            if least.0 > new_rank {
                return Some(least.2);
            }
        }
        // The same kind: only from the heaviest origin, if it holds more than the newcomer's
        // origin would.
        let (heaviest, from) = self.heaviest()?;
        let mine = self.per_origin.get(&origin).copied().unwrap_or(0);
        if from == origin || heaviest <= mine + size {
            return None;
        }
        let key = self.by_origin.get(&from)?.last()?;
        (key.0 >= new_rank).then_some(key.2)
    }

    /// About how many bytes of bundles other than the urgent kinds (fraud proofs, revocations,
    /// receipts) this store would take from `origin` now, by its quotas and eviction rules:
    /// the room hint a sync session sends the peer (SPEC.md §11.2).
    pub fn room_for(&self, origin: Origin) -> u64 {
        let held = self.per_origin.get(&origin).copied().unwrap_or(0);
        let per_origin = self.config.max_bytes_per_origin.saturating_sub(held);
        let free = self.config.max_bytes.saturating_sub(self.bytes);
        // What fairness would let it take from the heaviest other origin.
        let reclaim = match self.heaviest() {
            Some((weight, from)) if from != origin => weight.saturating_sub(held) / 2,
            _ => 0,
        };
        let by_count = if self.entries.len() >= self.config.max_bundles && reclaim == 0 {
            0
        } else {
            u64::MAX
        };
        per_origin.min(free + reclaim).min(by_count)
    }
}
