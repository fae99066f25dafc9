//! The node's mesh store on disk: the device's [`BundleStore`] mirrored to sled, hand-over
//! receipts, and what the node shows of the store.
//!
//! The rules live in `meshpay_protocol::store` and `meshpay_protocol::sync`, and the device
//! machine owns the store; this module only loads it at start and writes its changes
//! ([`MeshWrite`]). sled is right here: the mesh data is replicated by the mesh itself, so a
//! copy lost in a power cut delays a record but loses no money (DESIGN "Storage"); the
//! wallet's own money state is in SQLite.

use meshpay_protocol::bundle;
use meshpay_protocol::device::MeshWrite;
use meshpay_protocol::store::{BundleStore, Origin, StoreConfig};
use meshpay_protocol::sync::HandOver;
use meshpay_protocol::{Hash, IssuerId, decode, encode};
use std::collections::BTreeMap;

pub use meshpay_protocol::device::ImportReport;

/// The mesh store's trees on disk.
pub struct MeshDisk {
    bundles: sled::Tree,
    tombs: sled::Tree,
    handovers: sled::Tree,
    /// Writes to disk that failed.
    write_errors: std::sync::atomic::AtomicU64,
}

/// A bundle as sled keeps it: `tag ‖ device (32) ‖ copies (4, BE) ‖ arrival (8, BE) ‖ body`,
/// where the tag is 0x10 for this node's own, 0x11 for a peer's (the device is the peer's key)
/// and 0x12 for a file's. Values from before arrival numbers were kept have tags 0, 1 and 2
/// and no arrival field.
struct Stored<'a> {
    origin: Origin,
    copies: u32,
    arrival: u64,
    body: &'a [u8],
}

fn parse_stored(v: &[u8]) -> Option<Stored<'_>> {
    let tag = *v.first()?;
    let head = if tag & 0x10 != 0 { 45 } else { 37 };
    if v.len() <= head {
        return None;
    }
    let origin = match tag & 0x0f {
        0 => Origin::Local,
        1 => Origin::Peer(v[1..33].try_into().ok()?),
        2 => Origin::File,
        _ => return None,
    };
    Some(Stored {
        origin,
        copies: u32::from_be_bytes(v[33..37].try_into().ok()?),
        arrival: if head == 45 {
            u64::from_be_bytes(v[37..45].try_into().ok()?)
        } else {
            0
        },
        body: &v[head..],
    })
}

/// What sled keeps of a bundle besides its body.
struct Head {
    origin: Origin,
    copies: u32,
    arrival: u64,
}

impl Head {
    fn value(&self, body: &[u8]) -> Vec<u8> {
        let mut v = vec![0u8; 45];
        match self.origin {
            Origin::Local => v[0] = 0x10,
            Origin::Peer(k) => {
                v[0] = 0x11;
                v[1..33].copy_from_slice(&k);
            }
            Origin::File => v[0] = 0x12,
        }
        v[33..37].copy_from_slice(&self.copies.to_be_bytes());
        v[37..45].copy_from_slice(&self.arrival.to_be_bytes());
        v.extend_from_slice(body);
        v
    }
}

fn tomb_key(issuer: &IssuerId, s: &Hash) -> [u8; 64] {
    let mut k = [0u8; 64];
    k[..32].copy_from_slice(&issuer.0);
    k[32..].copy_from_slice(&s.0);
    k
}

impl MeshDisk {
    /// Opens the mesh trees in `db` and loads what they hold into a store with `config`
    /// (record bodies stay on disk and are read back when handed over).
    pub fn open(
        db: &sled::Db,
        mut config: StoreConfig,
    ) -> Result<(Self, BundleStore), sled::Error> {
        let bundles = db.open_tree("bundles")?;
        let tombs = db.open_tree("tombstones")?;
        let handovers = db.open_tree("handovers")?;
        config.bodies_in_memory = false;
        let mut store = BundleStore::new(config);
        let reader = bundles.clone();
        store.set_loader(Box::new(move |id| {
            let v = reader.get(id.0).ok().flatten()?;
            parse_stored(&v).map(|s| std::sync::Arc::from(s.body))
        }));
        // Tombstones are keyed by issuer and record id (64 bytes). Keys of 32 bytes, from
        // before tombstones named their issuer, are dropped: at worst a settled record travels
        // again until its receipt meets it.
        let mut stale = Vec::new();
        for item in &tombs {
            let (k, v) = item?;
            match (<[u8; 64]>::try_from(&k[..]), <[u8; 8]>::try_from(&v[..])) {
                (Ok(k), Ok(v)) => {
                    let issuer = IssuerId(k[..32].try_into().expect("32 bytes"));
                    let subject = Hash(k[32..].try_into().expect("32 bytes"));
                    store.restore_tombstone(issuer, subject, u64::from_be_bytes(v));
                }
                _ => stale.push(k),
            }
        }
        for k in stale {
            tombs.remove(k)?;
        }
        let mut broken = Vec::new();
        for item in &bundles {
            let (k, v) = item?;
            let ok = parse_stored(&v)
                .is_some_and(|s| store.restore(s.body, s.origin, s.copies, s.arrival));
            if !ok {
                broken.push(k);
            }
        }
        for k in broken {
            bundles.remove(k)?;
        }
        store.take_changes();
        let disk = Self {
            bundles,
            tombs,
            handovers,
            write_errors: std::sync::atomic::AtomicU64::new(0),
        };
        Ok((disk, store))
    }

    /// Writes what the store changed. Every change is tried; the first failure is counted
    /// and returned.
    pub fn apply(&self, w: &MeshWrite) -> Result<(), sled::Error> {
        let mut first: Option<sled::Error> = None;
        let mut note = |r: Result<(), sled::Error>| {
            if let Err(e) = r {
                first.get_or_insert(e);
            }
        };
        for id in &w.removed {
            note(self.bundles.remove(id.0).map(drop));
        }
        for p in &w.put {
            let head = Head {
                origin: p.origin,
                copies: p.copies,
                arrival: p.arrival,
            };
            match &p.body {
                Some(body) => note(self.bundles.insert(p.id.0, head.value(body)).map(drop)),
                // Only its spray-and-wait copy count changed.
                None => match self.bundles.get(p.id.0) {
                    Ok(Some(old)) => {
                        if let Some(stored) = parse_stored(&old) {
                            note(
                                self.bundles
                                    .insert(p.id.0, head.value(stored.body))
                                    .map(drop),
                            );
                        }
                    }
                    Ok(None) => {}
                    Err(e) => note(Err(e)),
                },
            }
        }
        for (issuer, s, t) in &w.tombstoned {
            note(
                self.tombs
                    .insert(tomb_key(issuer, s), &t.to_be_bytes())
                    .map(drop),
            );
        }
        for (issuer, s) in &w.untombstoned {
            note(self.tombs.remove(tomb_key(issuer, s)).map(drop));
        }
        match first {
            None => Ok(()),
            Some(e) => {
                self.write_errors
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                Err(e)
            }
        }
    }

    /// Writes to disk that failed since the node started.
    pub fn write_errors(&self) -> u64 {
        self.write_errors.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Keeps a hand-over receipt a peer signed for what this node carried to it.
    pub fn record_handover(&self, h: &HandOver) -> Result<(), sled::Error> {
        let mut k = (u64::MAX - h.body().at).to_be_bytes().to_vec();
        k.extend_from_slice(&h.body().taker.0[..8]);
        self.handovers.insert(k, encode(h)).map(drop)
    }

    /// Hand-over receipts peers signed for what this node carried to them, newest first.
    /// Receipts are kept as they came (SPEC.md §11.4): only those whose signature holds are
    /// proof of carriage, and only those are listed.
    pub fn handovers(&self, limit: usize) -> Vec<HandOver> {
        self.handovers
            .iter()
            .filter_map(Result::ok)
            .filter_map(|(_, v)| decode::<HandOver>(&v).ok())
            .filter(|h| h.verify().is_ok())
            .take(limit)
            .collect()
    }
}

/// Every held bundle as a bundle file, in forwarding order.
pub fn export(store: &BundleStore) -> Vec<u8> {
    let bodies: Vec<std::sync::Arc<[u8]>> = store
        .in_order()
        .filter_map(|e| store.body(&e.meta.id))
        .collect();
    bundle::pack_file(bodies.iter().map(|b| &b[..]))
}

/// Counts per kind, bytes, tombstones (the carried list is left empty).
pub fn summary(store: &BundleStore, write_errors: u64) -> crate::api::MeshInfo {
    let mut by_kind: BTreeMap<String, usize> = BTreeMap::new();
    for e in store.iter() {
        *by_kind.entry(e.meta.kind.name().to_owned()).or_default() += 1;
    }
    crate::api::MeshInfo {
        bundles: store.len(),
        bytes: store.bytes(),
        by_kind,
        tombstones: store.tombstones().count(),
        max_bytes: store.config().max_bytes,
        write_errors,
        carried: Vec::new(),
        gateway: None,
    }
}
