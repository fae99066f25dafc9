//! The store's sync keys (SPEC.md §11.3): each held id's key, the keys in order for the
//! sessions that open on the store, and the first coded symbols over them, kept current as
//! bundles come and go. Ids that share a key are left out of sync.

use super::{BundleStore, SyncList};
use crate::objects::Hash;
use std::sync::PoisonError;

/// The sync keys in order, as sessions take them: a sorted list, and the changes since it
/// was last brought up to date. A change costs a push; bringing the list up to date, a sort
/// of the changes and one merge into a new list, done when a session takes the list (or when
/// the changes outnumber the keys). Sessions share the list they took: a merge leaves it as
/// it was.
#[derive(Debug, Default)]
pub(super) struct SyncOrder {
    sorted: SyncList,
    /// Keys that came (`true`) or went (`false`) since, in the order they did.
    changes: Vec<(u64, bool)>,
}

impl SyncOrder {
    /// Key `key` came into the set (`present`) or left it.
    fn change(&mut self, key: u64, present: bool) {
        self.changes.push((key, present));
        if self.changes.len() > self.sorted.len() + 1024 {
            self.apply();
        }
    }

    /// Applies the changes to the sorted list: each key as its last change left it.
    fn apply(&mut self) {
        if self.changes.is_empty() {
            return;
        }
        let changes = &mut self.changes;
        // Latest first, then by key (the sort is stable): the first of each key is its last.
        changes.reverse();
        changes.sort_by_key(|c| c.0);
        changes.dedup_by_key(|c| c.0);
        let mut merged = Vec::with_capacity(self.sorted.len() + changes.len());
        let mut changes = changes.drain(..).peekable();
        for &key in self.sorted.iter() {
            let mut keep = true;
            while let Some(&(changed, present)) = changes.peek() {
                if changed > key {
                    break;
                }
                changes.next();
                if changed == key {
                    keep = present;
                } else if present {
                    merged.push(changed);
                }
            }
            if keep {
                merged.push(key);
            }
        }
        merged.extend(changes.filter(|c| c.1).map(|c| c.0));
        self.sorted = merged.into();
    }

    /// The keys in order.
    fn snapshot(&mut self) -> SyncList {
        self.apply();
        SyncList::clone(&self.sorted)
    }
}

impl BundleStore {
    fn sync_toggle(&mut self, key: u64, sign: i64) {
        self.sync_order
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .change(key, sign > 0);
        if self.head.is_empty() {
            self.head = vec![crate::riblt::Symbol::default(); crate::riblt::KEPT_SYMBOLS];
        }
        let mut m = crate::riblt::Mapping::new(key);
        while m.index < crate::riblt::KEPT_SYMBOLS as u64 {
            self.head[usize::try_from(m.index).expect("small")].add(key, sign);
            m.advance();
        }
    }

    pub(super) fn sync_add(&mut self, id: Hash) {
        let key = crate::riblt::key_of(&id);
        if let Some(shared) = self.sync_shared.get_mut(&key) {
            shared.push(id);
        } else if let Some(other) = self.sync_keys.remove(&key) {
            self.sync_toggle(key, -1);
            self.sync_shared.insert(key, vec![other, id]);
        } else {
            self.sync_keys.insert(key, id);
            self.sync_toggle(key, 1);
        }
    }

    pub(super) fn sync_remove(&mut self, id: &Hash) {
        let key = crate::riblt::key_of(id);
        if let Some(shared) = self.sync_shared.get_mut(&key) {
            shared.retain(|x| x != id);
            if shared.len() == 1 {
                let last = shared[0];
                self.sync_shared.remove(&key);
                self.sync_keys.insert(key, last);
                self.sync_toggle(key, 1);
            }
        } else if self.sync_keys.get(&key) == Some(id) {
            self.sync_keys.remove(&key);
            self.sync_toggle(key, -1);
        }
    }

    /// Sync keys, in order (keys that ids share are left out): one shared list until the
    /// held set changes, so sessions that start on an unchanged store do not copy it.
    pub(crate) fn sync_entries(&self) -> SyncList {
        self.sync_order
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .snapshot()
    }

    /// The id held under sync key `key`, if one is, alone on it.
    pub(crate) fn sync_id(&self, key: u64) -> Option<Hash> {
        self.sync_keys.get(&key).copied()
    }

    /// The first coded symbols of the held set (SPEC.md §11.3).
    pub(crate) fn sync_head(&self) -> Vec<crate::riblt::Symbol> {
        if self.head.is_empty() {
            vec![crate::riblt::Symbol::default(); crate::riblt::KEPT_SYMBOLS]
        } else {
            self.head.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::SyncOrder;
    use std::collections::BTreeSet;

    /// Whatever the changes and whenever the list is taken, it is the set the changes left,
    /// in order.
    #[test]
    fn the_ordered_keys_follow_every_change() {
        let mut order = SyncOrder::default();
        let mut model = BTreeSet::new();
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for step in 0..20_000u32 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // Few distinct keys, so keys come and go many times.
            let key = x % 1500;
            let present = !model.contains(&key);
            if present {
                model.insert(key);
            } else {
                model.remove(&key);
            }
            order.change(key, present);
            if step % 97 == 0 || step == 19_999 {
                let want: Vec<u64> = model.iter().copied().collect();
                assert_eq!(&order.snapshot()[..], &want[..], "at step {step}");
            }
        }
    }
}
