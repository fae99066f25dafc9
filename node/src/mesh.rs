//! The node's mesh store: the protocol's [`BundleStore`] mirrored to sled, the responder side
//! of sync sessions, hand-over receipts, and bundle files.
//!
//! The rules live in `meshpay_protocol::store` and `meshpay_protocol::sync`; this module only
//! persists their changes and keeps the sessions. sled is right here: the mesh data is
//! replicated by the mesh itself, so a copy lost in a power cut delays a record but loses no
//! money (DESIGN "Storage"); the wallet's own money state is in SQLite.

use meshpay_protocol::bundle::{self, Bundle, BundleKind, FileError};
use meshpay_protocol::store::{Admission, BundleStore, Entry, Origin, StoreConfig};
use meshpay_protocol::sync::{
    HandOver, Routing, Session, SessionConfig, Step, SyncError, SyncMessage,
};
use meshpay_protocol::{DeviceKey, DeviceSecret, Hash, decode, encode};
use std::collections::BTreeMap;
use std::sync::Mutex;

/// Why a mesh step failed.
#[derive(Debug, thiserror::Error)]
pub enum MeshError {
    /// The mesh store could not write to disk: what changed in memory is not on disk (the
    /// mesh holds other copies, so a restart delays bundles but loses no money).
    #[error("the mesh store could not write to disk: {0}")]
    Storage(#[from] sled::Error),
    /// The peer broke the sync rules.
    #[error(transparent)]
    Sync(#[from] SyncError),
}

/// What a finished session left behind.
#[derive(Debug, Default, Clone)]
pub struct SessionEnd {
    /// Bundles the peer handed over that were kept.
    pub admitted: Vec<Hash>,
    /// Bundles handed to the peer.
    pub given: usize,
    /// The peer's signed receipt for them.
    pub proof: Option<HandOver>,
}

/// How a bundle file import went.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct ImportReport {
    /// Bundles in the file.
    pub bundles: usize,
    /// Kept.
    pub added: usize,
    /// Already held.
    pub duplicate: usize,
    /// Records already settled.
    pub settled: usize,
    /// Refused (invalid, forged, expired, foreign, no room), with the first reasons.
    pub refused: usize,
    /// Up to five refusal reasons.
    pub reasons: Vec<String>,
    /// Ids new to the store (kept, and any the store made from them).
    #[serde(skip)]
    pub ids: Vec<Hash>,
}

/// Why a bundle file was not imported.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The file's framing is broken or it is too large: nothing was taken.
    #[error(transparent)]
    File(#[from] FileError),
    /// The mesh store could not write what was taken.
    #[error(transparent)]
    Mesh(#[from] MeshError),
}

impl From<sled::Error> for ImportError {
    fn from(e: sled::Error) -> Self {
        ImportError::Mesh(MeshError::Storage(e))
    }
}

/// The mesh store of a node.
pub struct Mesh {
    store: Mutex<BundleStore>,
    bundles: sled::Tree,
    tombs: sled::Tree,
    handovers: sled::Tree,
    responders: Mutex<BTreeMap<DeviceKey, Session>>,
    /// Bundles new to the store (from peers, files, or made by the store itself, like a fraud
    /// proof from two notices) that the node has not acted on yet.
    fresh: Mutex<Vec<Hash>>,
    /// Record routing.
    pub routing: Routing,
    /// Bytes of bundles handed over per session at most.
    pub budget: u64,
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

fn entry_value(e: &Entry, body: &[u8]) -> Vec<u8> {
    let mut v = vec![0u8; 45];
    match e.origin {
        Origin::Local => v[0] = 0x10,
        Origin::Peer(k) => {
            v[0] = 0x11;
            v[1..33].copy_from_slice(&k);
        }
        Origin::File => v[0] = 0x12,
    }
    v[33..37].copy_from_slice(&e.copies.to_be_bytes());
    v[37..45].copy_from_slice(&e.arrival.to_be_bytes());
    v.extend_from_slice(body);
    v
}

impl Mesh {
    /// Opens the mesh trees in `db` and loads what they hold.
    pub fn open(
        db: &sled::Db,
        mut config: StoreConfig,
        routing: Routing,
        budget: u64,
    ) -> anyhow::Result<Self> {
        let bundles = db.open_tree("bundles")?;
        let tombs = db.open_tree("tombstones")?;
        let handovers = db.open_tree("handovers")?;
        // Record bodies stay on disk; the store reads them back when it hands them over.
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
                    let issuer = meshpay_protocol::IssuerId(k[..32].try_into().expect("32 bytes"));
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
        Ok(Self {
            store: Mutex::new(store),
            bundles,
            tombs,
            handovers,
            responders: Mutex::new(BTreeMap::new()),
            fresh: Mutex::new(Vec::new()),
            routing,
            budget,
            write_errors: std::sync::atomic::AtomicU64::new(0),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BundleStore> {
        self.store
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Writes the store's pending changes to sled. Every change is tried; the first failure
    /// is counted, logged and returned.
    fn persist(&self, store: &mut BundleStore) -> Result<(), MeshError> {
        let ch = store.take_changes();
        let mut first: Option<sled::Error> = None;
        let mut note = |r: Result<(), sled::Error>| {
            if let Err(e) = r {
                first.get_or_insert(e);
            }
        };
        for id in &ch.removed {
            note(self.bundles.remove(id.0).map(drop));
        }
        let mut written = std::collections::BTreeSet::new();
        self.fresh
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .extend(ch.bodies.iter().map(|(id, _)| *id));
        for (id, body) in &ch.bodies {
            if let Some(e) = store.get(id) {
                note(self.bundles.insert(id.0, entry_value(e, body)).map(drop));
                written.insert(*id);
            }
        }
        // The rest changed only their spray-and-wait copy count.
        for id in ch.added.iter().filter(|id| !written.contains(id)) {
            match (store.get(id), self.bundles.get(id.0)) {
                (Some(e), Ok(Some(old))) => {
                    if let Some(stored) = parse_stored(&old) {
                        note(
                            self.bundles
                                .insert(id.0, entry_value(e, stored.body))
                                .map(drop),
                        );
                    }
                }
                (_, Err(e)) => note(Err(e)),
                _ => {}
            }
        }
        let tomb_key = |issuer: &meshpay_protocol::IssuerId, s: &Hash| {
            let mut k = [0u8; 64];
            k[..32].copy_from_slice(&issuer.0);
            k[32..].copy_from_slice(&s.0);
            k
        };
        for (issuer, s, t) in &ch.tombstoned {
            note(
                self.tombs
                    .insert(tomb_key(issuer, s), &t.to_be_bytes())
                    .map(drop),
            );
        }
        for (issuer, s) in &ch.untombstoned {
            note(self.tombs.remove(tomb_key(issuer, s)).map(drop));
        }
        match first {
            None => Ok(()),
            Some(e) => {
                self.write_errors
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::error!(error = %e, "the mesh store could not write to disk");
                Err(MeshError::Storage(e))
            }
        }
    }

    /// Writes to disk that failed since the node started.
    pub fn write_errors(&self) -> u64 {
        self.write_errors.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Takes the bundles new since the last call, for the node to act on.
    pub fn drain_fresh(&self) -> Vec<Hash> {
        std::mem::take(
            &mut *self
                .fresh
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }

    /// Offers a bundle from `origin`.
    pub fn insert(
        &self,
        bundle: &Bundle,
        origin: Origin,
        copies: u32,
        now: u64,
    ) -> Result<Admission, MeshError> {
        let mut store = self.lock();
        let a = store.insert_bundle(bundle, origin, copies, now);
        self.persist(&mut store)?;
        Ok(a)
    }

    /// Runs `f` on the store (read only).
    pub fn read<R>(&self, f: impl FnOnce(&BundleStore) -> R) -> R {
        f(&self.lock())
    }

    /// A held bundle's bytes.
    pub fn get(&self, id: &Hash) -> Option<Vec<u8>> {
        self.lock().body(id).map(|b| b.to_vec())
    }

    /// Drops what expired.
    pub fn expire(&self, now: u64) -> Result<(), MeshError> {
        let mut store = self.lock();
        store.expire(now);
        self.persist(&mut store)
    }

    /// Starts a session as initiator.
    pub fn initiate(&self, cfg: SessionConfig, salt: u64) -> (Session, SyncMessage) {
        Session::initiate(cfg, &self.lock(), salt)
    }

    /// Feeds our initiator session the peer's answer. Returns the next message and the
    /// bundles this step admitted (act on them now: a session may never close).
    pub fn step(
        &self,
        session: &mut Session,
        msg: &SyncMessage,
        key: &DeviceSecret,
    ) -> (Result<Option<SyncMessage>, MeshError>, Vec<Hash>) {
        let mut store = self.lock();
        let r = session.handle(msg, &mut store, key);
        let written = self.persist(&mut store);
        drop(store);
        let r = match (r, written) {
            (Err(e), _) => Err(MeshError::Sync(e)),
            (Ok(_), Err(e)) => Err(e),
            (Ok(m), Ok(())) => Ok(m),
        };
        (r, self.drain_fresh())
    }

    /// Answers a peer's sync message as responder. Returns the answer, the bundles this step
    /// admitted (act on them now), and, when the session closed, what it left behind.
    pub fn respond(
        &self,
        cfg: SessionConfig,
        msg: &SyncMessage,
        key: &DeviceSecret,
    ) -> Result<(SyncMessage, Vec<Hash>, Option<SessionEnd>), MeshError> {
        let peer = cfg.peer;
        let mut sessions = self
            .responders
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut store = self.lock();
        let result = if msg.step() == Step::Open {
            // A new session replaces any unfinished one with the same peer.
            Session::accept(cfg, &mut store, msg).map(|(s, answer)| {
                sessions.insert(peer, s);
                answer
            })
        } else {
            match sessions.get_mut(&peer) {
                None => Err(SyncError::Unexpected(msg.step())),
                Some(s) => s
                    .handle(msg, &mut store, key)
                    .and_then(|a| a.ok_or(SyncError::Finished)),
            }
        };
        let written = self.persist(&mut store);
        drop(store);
        let answer = match (result, written) {
            (Ok(a), Ok(())) => a,
            (Err(e), _) => {
                sessions.remove(&peer);
                drop(sessions);
                return Err(MeshError::Sync(e));
            }
            (Ok(_), Err(e)) => {
                sessions.remove(&peer);
                drop(sessions);
                return Err(e);
            }
        };
        let end = if sessions.get(&peer).is_some_and(Session::is_finished) {
            sessions.remove(&peer).map(|s| end_of(&s))
        } else {
            None
        };
        Ok((answer, self.drain_fresh(), end))
    }

    /// Forgets an unfinished responder session (the peer left).
    pub fn forget(&self, peer: &DeviceKey) {
        self.responders
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(peer);
    }

    /// Keeps a hand-over receipt: `given` for the receipts peers signed for us (our proof of
    /// carriage), not given for those we signed.
    pub fn record_handover(&self, h: &HandOver) {
        let key = (u64::MAX - h.body().at).to_be_bytes();
        let mut k = key.to_vec();
        k.extend_from_slice(&h.body().taker.0[..8]);
        let _ = self.handovers.insert(k, encode(h));
    }

    /// Hand-over receipts peers signed for what this node carried to them, newest first.
    pub fn handovers(&self, limit: usize) -> Vec<HandOver> {
        self.handovers
            .iter()
            .filter_map(Result::ok)
            .filter_map(|(_, v)| decode::<HandOver>(&v).ok())
            .take(limit)
            .collect()
    }

    /// Every held bundle as a bundle file, in forwarding order.
    pub fn export(&self) -> Vec<u8> {
        let store = self.lock();
        let bodies: Vec<std::sync::Arc<[u8]>> = store
            .in_order()
            .filter_map(|e| store.body(&e.meta.id))
            .collect();
        bundle::pack_file(bodies.iter().map(|b| &b[..]))
    }

    /// Imports a bundle file: refused as a whole if its framing is broken; each bundle then
    /// goes through admission like one from a peer.
    pub fn import(&self, file: &[u8], now: u64) -> Result<ImportReport, ImportError> {
        let parts = bundle::unpack_file(file)?;
        let mut report = ImportReport {
            bundles: parts.len(),
            ..ImportReport::default()
        };
        let mut store = self.lock();
        for p in parts {
            match store.insert(p, Origin::File, 0, now) {
                Admission::Added(_) => report.added += 1,
                Admission::Duplicate => report.duplicate += 1,
                Admission::Settled => report.settled += 1,
                other => {
                    report.refused += 1;
                    if report.reasons.len() < 5 {
                        report.reasons.push(match other {
                            Admission::Refused(e) => e.to_string(),
                            Admission::ForeignIssuer => "an issuer this node does not carry".into(),
                            _ => "no room in the mesh store".into(),
                        });
                    }
                }
            }
        }
        self.persist(&mut store)?;
        drop(store);
        report.ids = self.drain_fresh();
        Ok(report)
    }

    /// Counts per kind, bytes, tombstones.
    pub fn summary(&self) -> serde_json::Value {
        let store = self.lock();
        let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
        for e in store.in_order() {
            *kinds.entry(e.meta.kind.name()).or_default() += 1;
        }
        serde_json::json!({
            "bundles": store.len(),
            "bytes": store.bytes(),
            "by_kind": kinds,
            "tombstones": store.tombstones().count(),
            "max_bytes": store.config().max_bytes,
            "write_errors": self.write_errors(),
        })
    }

    /// Held record bundles sealed to `issuer`: record id and the record's encoding.
    pub fn records_for(&self, issuer: &meshpay_protocol::IssuerId) -> Vec<(Hash, Vec<u8>)> {
        let store = self.lock();
        store
            .in_order()
            .filter(|e| e.meta.kind == BundleKind::Record && e.meta.issuer == *issuer)
            .filter_map(|e| {
                let body = store.body(&e.meta.id)?;
                Bundle::decode(&body).ok().and_then(|b| match b.content() {
                    bundle::Content::Record(r) => Some((r.id, encode(r))),
                    _ => None,
                })
            })
            .collect()
    }
}

/// What a finished session left behind.
pub fn end_of(s: &Session) -> SessionEnd {
    SessionEnd {
        admitted: s.admitted().to_vec(),
        given: s.given().len(),
        proof: s.proof().cloned(),
    }
}
