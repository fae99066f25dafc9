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
}

fn origin_bytes(o: Origin) -> [u8; 33] {
    let mut out = [0u8; 33];
    match o {
        Origin::Local => out[0] = 0,
        Origin::File => out[0] = 2,
        Origin::Peer(k) => {
            out[0] = 1;
            out[1..].copy_from_slice(&k);
        }
    }
    out
}

fn entry_value(e: &Entry, body: &[u8]) -> Vec<u8> {
    let mut v = origin_bytes(e.origin).to_vec();
    v.extend_from_slice(&e.copies.to_be_bytes());
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
            reader
                .get(id.0)
                .ok()
                .flatten()
                .filter(|v| v.len() > 37)
                .map(|v| std::sync::Arc::from(&v[37..]))
        }));
        for item in &tombs {
            let (k, v) = item?;
            if let (Ok(k), Ok(v)) = (<[u8; 32]>::try_from(&k[..]), <[u8; 8]>::try_from(&v[..])) {
                store.restore_tombstone(Hash(k), u64::from_be_bytes(v));
            }
        }
        let mut broken = Vec::new();
        for item in &bundles {
            let (k, v) = item?;
            let ok = v.len() > 37 && {
                let origin = match v[0] {
                    0 => Origin::Local,
                    1 => Origin::Peer(v[1..33].try_into().expect("32 bytes")),
                    _ => Origin::File,
                };
                let copies = u32::from_be_bytes(v[33..37].try_into().expect("4 bytes"));
                store.restore(&v[37..], origin, copies)
            };
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
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BundleStore> {
        self.store
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Writes the store's pending changes to sled.
    fn persist(&self, store: &mut BundleStore) {
        let ch = store.take_changes();
        for id in &ch.removed {
            let _ = self.bundles.remove(id.0);
        }
        let mut written = std::collections::BTreeSet::new();
        self.fresh
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .extend(ch.bodies.iter().map(|(id, _)| *id));
        for (id, body) in &ch.bodies {
            if let Some(e) = store.get(id) {
                let _ = self.bundles.insert(id.0, entry_value(e, body));
                written.insert(*id);
            }
        }
        // The rest changed only their spray-and-wait copy count.
        for id in ch.added.iter().filter(|id| !written.contains(id)) {
            if let (Some(e), Ok(Some(old))) = (store.get(id), self.bundles.get(id.0)) {
                if old.len() > 37 {
                    let _ = self.bundles.insert(id.0, entry_value(e, &old[37..]));
                }
            }
        }
        for (s, t) in &ch.tombstoned {
            let _ = self.tombs.insert(s.0, &t.to_be_bytes());
        }
        for s in &ch.untombstoned {
            let _ = self.tombs.remove(s.0);
        }
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
    pub fn insert(&self, bundle: &Bundle, origin: Origin, copies: u32, now: u64) -> Admission {
        let mut store = self.lock();
        let a = store.insert_bundle(bundle, origin, copies, now);
        self.persist(&mut store);
        a
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
    pub fn expire(&self, now: u64) {
        let mut store = self.lock();
        store.expire(now);
        self.persist(&mut store);
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
    ) -> (Result<Option<SyncMessage>, SyncError>, Vec<Hash>) {
        let mut store = self.lock();
        let r = session.handle(msg, &mut store, key);
        self.persist(&mut store);
        drop(store);
        (r, self.drain_fresh())
    }

    /// Answers a peer's sync message as responder. Returns the answer, the bundles this step
    /// admitted (act on them now), and, when the session closed, what it left behind.
    pub fn respond(
        &self,
        cfg: SessionConfig,
        msg: &SyncMessage,
        key: &DeviceSecret,
    ) -> Result<(SyncMessage, Vec<Hash>, Option<SessionEnd>), SyncError> {
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
        self.persist(&mut store);
        drop(store);
        let answer = match result {
            Ok(a) => a,
            Err(e) => {
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
    pub fn import(&self, file: &[u8], now: u64) -> Result<ImportReport, FileError> {
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
        self.persist(&mut store);
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
        })
    }

    /// Held record bundles sealed to `issuer`.
    pub fn records_for(&self, issuer: &meshpay_protocol::IssuerId) -> Vec<Vec<u8>> {
        let store = self.lock();
        store
            .in_order()
            .filter(|e| e.meta.kind == BundleKind::Record && e.meta.issuer == *issuer)
            .filter_map(|e| {
                let body = store.body(&e.meta.id)?;
                Bundle::decode(&body).ok().and_then(|b| match b.content() {
                    bundle::Content::Record(r) => Some(encode(r)),
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
