//! The store's sync keys (SPEC.md §11.3): each held id's key, the keys in order for the
//! sessions that open on the store, and the first coded symbols over them, kept current as
//! bundles come and go. Ids that share a key are left out of sync.

use super::{BundleStore, SyncList};
use crate::objects::Hash;

impl BundleStore {
    fn sync_toggle(&mut self, key: u64, sign: i64) {
        *self
            .sync_snapshot
            .get_mut()
            .unwrap_or_else(|e| e.into_inner()) = None;
        if self.head.is_empty() {
            self.head = vec![crate::riblt::Symbol::default(); crate::riblt::KEPT_SYMBOLS];
        }
        let mut m = crate::riblt::Mapping::new(key);
        while m.index < crate::riblt::KEPT_SYMBOLS as u64 {
            self.head[usize::try_from(m.index).expect("small")].add(key, sign);
            m.advance();
        }
        match self.sync_sorted.binary_search(&key) {
            Err(at) if sign > 0 => self.sync_sorted.insert(at, key),
            Ok(at) if sign < 0 => {
                self.sync_sorted.remove(at);
            }
            _ => {}
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
        let mut cached = self
            .sync_snapshot
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        cached
            .get_or_insert_with(|| self.sync_sorted.as_slice().into())
            .clone()
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
