//! Bodies shared between stores in one process: a simulation's nodes all hold copies of the
//! same bundles, and a bundle's bytes are fixed by its id (the id is their hash), so each
//! distinct body can be kept once however many stores hold it.

use crate::objects::Hash;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, Weak};

/// Interns bundle bodies by id. Cloning it shares the pool. Entries whose every holder let
/// go are swept as the pool grows, so it holds at most about twice the live bodies.
#[derive(Debug, Clone, Default)]
pub struct BodyPool(Arc<Mutex<Pool>>);

#[derive(Debug, Default)]
struct Pool {
    bodies: HashMap<Hash, Weak<[u8]>>,
    /// Entries after the last sweep.
    swept: usize,
}

impl BodyPool {
    /// A new, empty pool.
    pub fn new() -> Self {
        Self::default()
    }

    /// The shared copy of `id`'s body: the one already held somewhere, or `bytes` kept as it.
    pub fn intern(&self, id: &Hash, bytes: Arc<[u8]>) -> Arc<[u8]> {
        let mut pool = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(held) = pool.bodies.get(id).and_then(Weak::upgrade) {
            if held[..] == bytes[..] {
                return held;
            }
        }
        if pool.bodies.len() >= 2 * pool.swept + 1024 {
            pool.bodies.retain(|_, w| w.strong_count() > 0);
            pool.swept = pool.bodies.len();
        }
        pool.bodies.insert(*id, Arc::downgrade(&bytes));
        bytes
    }

    /// Distinct bodies it knows of (live or not yet swept).
    pub fn len(&self) -> usize {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .bodies
            .len()
    }

    /// Whether it knows of none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
