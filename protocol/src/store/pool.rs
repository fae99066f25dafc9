//! Bodies shared between stores in one process: a simulation's nodes all hold copies of the
//! same bundles, and a bundle's bytes are fixed by its id (the id is their hash), so each
//! distinct body can be kept once however many stores hold it.

use crate::bundle::{BundleKind, Meta};
use crate::objects::Hash;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, Weak};

/// Interns bundle bodies and metadata by id, so the next store to take the same bytes shares
/// them and, for a plain message (everything a carrier can check of one is in its metadata),
/// need not decode them. Cloning it shares the pool. Entries whose every holder let go are
/// swept as the pool grows, so it holds at most about twice the live bodies.
#[derive(Debug, Clone, Default)]
pub struct BodyPool(Arc<Mutex<Pool>>);

#[derive(Debug, Default)]
struct Pool {
    bodies: HashMap<Hash, Interned>,
    /// Entries after the last sweep.
    swept: usize,
}

#[derive(Debug)]
struct Interned {
    body: Weak<[u8]>,
    meta: Weak<Meta>,
}

impl Pool {
    /// The metadata and body some store holds under `id`, if `bytes` are that body.
    fn held(&self, id: &Hash, bytes: &[u8]) -> Option<(Arc<Meta>, Arc<[u8]>)> {
        let i = self.bodies.get(id)?;
        let (meta, body) = (i.meta.upgrade()?, i.body.upgrade()?);
        (body[..] == *bytes).then_some((meta, body))
    }
}

impl BodyPool {
    /// A new, empty pool.
    pub fn new() -> Self {
        Self::default()
    }

    /// The shared copies of a bundle's metadata and body: those already held somewhere, or
    /// `meta` and `bytes` kept as they are.
    pub fn intern(&self, meta: Arc<Meta>, bytes: Arc<[u8]>) -> (Arc<Meta>, Arc<[u8]>) {
        let mut pool = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(held) = pool.held(&meta.id, &bytes) {
            return held;
        }
        if pool.bodies.len() >= 2 * pool.swept + 1024 {
            pool.bodies.retain(|_, i| i.body.strong_count() > 0);
            pool.swept = pool.bodies.len();
        }
        pool.bodies.insert(
            meta.id,
            Interned {
                body: Arc::downgrade(&bytes),
                meta: Arc::downgrade(&meta),
            },
        );
        (meta, bytes)
    }

    /// A plain message some store of the pool holds, if `bytes` are its encoding (and `id`
    /// their bundle id): its shared metadata and body. (The same bytes decode to the same
    /// message.)
    pub fn message(&self, id: &Hash, bytes: &[u8]) -> Option<(Arc<Meta>, Arc<[u8]>)> {
        let pool = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        pool.held(id, bytes)
            .filter(|(meta, _)| meta.kind == BundleKind::Message)
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
