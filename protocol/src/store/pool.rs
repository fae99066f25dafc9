//! Bodies shared between stores in one process: a simulation's nodes all hold copies of the
//! same bundles, and a bundle's bytes are fixed by its id (the id is their hash), so each
//! distinct body can be kept once however many stores hold it.

use crate::bundle::{BundleKind, Meta};
use crate::keys::DeviceKey;
use crate::objects::Hash;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, Weak};

/// Interns bundle bodies by id, with what decoding a plain message tells a store (its
/// metadata and addressee), so the next store to take the same bytes need not decode them.
/// Cloning it shares the pool. Entries whose every holder let go are swept as the pool
/// grows, so it holds at most about twice the live bodies.
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
    /// For a plain message: its metadata and addressee.
    message: Option<(Meta, DeviceKey)>,
}

impl BodyPool {
    /// A new, empty pool.
    pub fn new() -> Self {
        Self::default()
    }

    /// The shared copy of `meta`'s body: the one already held somewhere, or `bytes` kept as
    /// it. `to` is the addressee of a plain message.
    pub fn intern(&self, meta: &Meta, to: Option<DeviceKey>, bytes: Arc<[u8]>) -> Arc<[u8]> {
        let mut pool = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(held) = pool.bodies.get(&meta.id).and_then(|i| i.body.upgrade()) {
            if held[..] == bytes[..] {
                return held;
            }
        }
        if pool.bodies.len() >= 2 * pool.swept + 1024 {
            pool.bodies.retain(|_, i| i.body.strong_count() > 0);
            pool.swept = pool.bodies.len();
        }
        let message = to
            .filter(|_| meta.kind == BundleKind::Message)
            .map(|to| (*meta, to));
        pool.bodies.insert(
            meta.id,
            Interned {
                body: Arc::downgrade(&bytes),
                message,
            },
        );
        bytes
    }

    /// A plain message some store of the pool holds, if `bytes` are its encoding (and `id`
    /// their bundle id): its metadata, addressee and shared body. (The same bytes decode to
    /// the same message.)
    pub fn message(&self, id: &Hash, bytes: &[u8]) -> Option<(Meta, DeviceKey, Arc<[u8]>)> {
        let pool = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let held = pool.bodies.get(id)?;
        let (meta, to) = held.message?;
        let body = held.body.upgrade()?;
        (body[..] == *bytes).then_some((meta, to, body))
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
