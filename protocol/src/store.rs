//! The bundle store's rules: what a node keeps for the mesh, for how long, and what it gives
//! up first when full.
//!
//! - **Admission**: a bundle is decoded and checked ([`Bundle::verify`]) before anything is
//!   kept; expired ones, provisional receipts, forged signatures and records already settled
//!   (tombstoned) are refused.
//! - **Quotas**: a global limit in bytes and in bundles, and a limit per origin (the peer that
//!   handed the bundle over, a file, or this node itself) so that one peer cannot fill a relay.
//! - **Eviction** ranks only what the carrier knows itself: the kind (whose signatures it
//!   checked), the origin, and the order of arrival; never a time or size the sender claims.
//!   When full, a newcomer may push out a held bundle of a *less urgent kind* (a receipt, a
//!   revocation or a fraud proof pushes out a record); among bundles of the *same kind* it may
//!   only take the place of a bundle of the origin holding the most, and only if that origin
//!   holds more than the newcomer's would with it (max-min fairness: a flood from fresh
//!   identities displaces its own kind, never a lighter origin's bundles). Otherwise the
//!   newcomer is refused: refusing a new bundle is preferred to evicting a held one. The
//!   victim within an origin is its least urgent bundle, the latest to arrive. The node's own
//!   bundles are never evicted for others', and its own newcomers may push out anyone's.
//!   At most one fraud proof per allowance is kept (one suffices).
//! - **Forwarding order**: fraud proofs, revocations, receipts first; then everything else
//!   oldest first ([`Priority`]).
//! - **Purge**: a final receipt for a record removes every copy of that record and leaves a
//!   tombstone until the receipt expires, so a settled record stops travelling (the
//!   "immunity" of epidemic routing, Haas & Small 2006).
//! - **In-mesh fraud detection**: two spend notices for the same allowance and counter with
//!   different digests are a fork; the store builds the [`FraudProof`] and keeps it as its own
//!   bundle, so the proof travels first from then on.
//!
//! The store keeps bundle metadata in memory and reports every change ([`Changes`]) so the
//! driver can mirror it to disk; [`BundleStore::restore`] loads it back without re-deciding
//! anything. Bodies are kept in memory too, unless the driver keeps them on disk
//! ([`StoreConfig::bodies_in_memory`] off): then record bodies, the bulk of what a relay carries,
//! are dropped from memory once handed to the driver in [`Changes::bodies`], and read back
//! through the [`BodyLoader`] the driver installs.

use crate::bundle::{Bundle, BundleError, BundleKind, Content, Meta};
use crate::iou::FraudProof;
use crate::keys::IssuerId;
use crate::objects::{AllowanceId, Hash, UnixTime};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// Where a bundle came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Origin {
    /// Made by this node (its own records, notices, fraud proofs it built, what its gateway
    /// fetched). Never evicted for others' bundles; not counted against a per-origin limit.
    Local,
    /// Handed over by the peer with this device key.
    Peer([u8; 32]),
    /// Imported from a file.
    File,
}

/// Limits of a store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreConfig {
    /// Most bytes of bundles held.
    pub max_bytes: u64,
    /// Most bundles held.
    pub max_bundles: usize,
    /// Most bytes held from any one origin other than [`Origin::Local`].
    pub max_bytes_per_origin: u64,
    /// Carry only these issuers' bundles (`None`: any issuer).
    pub issuers: Option<BTreeSet<IssuerId>>,
    /// Keep record bodies in memory (`false`: the driver stores them and installs a
    /// [`BodyLoader`]).
    pub bodies_in_memory: bool,
    /// Carry plain messages (simulation traffic; nodes do not).
    pub accept_messages: bool,
}

/// Reads a bundle body the driver stored (see [`StoreConfig::bodies_in_memory`]).
pub type BodyLoader = Box<dyn Fn(&Hash) -> Option<Arc<[u8]>> + Send + Sync>;

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            max_bytes: 64 << 20,
            max_bundles: 200_000,
            max_bytes_per_origin: 16 << 20,
            issuers: None,
            bodies_in_memory: true,
            accept_messages: false,
        }
    }
}

/// Forwarding order: smaller goes first.
pub type Priority = (u8, UnixTime, Hash);

/// The forwarding priority of a bundle.
pub fn priority(meta: &Meta) -> Priority {
    (rank(meta.kind), meta.created, meta.id)
}

/// One held bundle.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The encoding, unless the driver keeps it ([`BundleStore::body`] reads it either way).
    pub bytes: Option<Arc<[u8]>>,
    /// Its metadata.
    pub meta: Meta,
    /// Who handed it over.
    pub origin: Origin,
    /// Copies this node may still hand out under spray-and-wait (0: no limit).
    pub copies: u32,
    /// When it arrived, in this store's own order (1, 2, 3, …): what eviction ranks by.
    pub arrival: u64,
}

/// Eviction key of an entry: its kind's rank and its arrival (the greatest goes first).
type EvictKey = (u8, u64, Hash);

fn rank(kind: BundleKind) -> u8 {
    match kind {
        BundleKind::Fraud => 0,
        BundleKind::Revocation => 1,
        BundleKind::Receipt => 2,
        _ => 3,
    }
}

/// What a call changed, for the driver to persist.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    /// Bundles added (or whose copy count changed).
    pub added: Vec<Hash>,
    /// Bundles removed.
    pub removed: Vec<Hash>,
    /// Tombstones added: record id and expiry.
    pub tombstoned: Vec<(Hash, UnixTime)>,
    /// Tombstones expired.
    pub untombstoned: Vec<Hash>,
    /// Bodies of the bundles added since the last call (the driver stores them).
    pub bodies: Vec<(Hash, Arc<[u8]>)>,
}

impl Changes {
    /// True if nothing changed.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty()
            && self.removed.is_empty()
            && self.tombstoned.is_empty()
            && self.untombstoned.is_empty()
    }
}

/// The result of offering a bundle to the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// Kept.
    Added(Meta),
    /// Already held.
    Duplicate,
    /// A record already settled: its tombstone is still there.
    Settled,
    /// Refused: invalid, forged or expired.
    Refused(BundleError),
    /// Refused: the origin is over its quota, or the store is full of more urgent bundles.
    Full,
    /// Refused: an issuer this store does not carry.
    ForeignIssuer,
}

/// Sync keys and their ids in key order.
type SyncList = Arc<[(u64, Hash)]>;

/// The store. See the module docs for its rules.
#[derive(Default)]
pub struct BundleStore {
    loader: Option<BodyLoader>,
    config: StoreConfig,
    entries: BTreeMap<Hash, Entry>,
    order: BTreeSet<Priority>,
    expiry: BTreeSet<(UnixTime, Hash)>,
    by_subject: BTreeSet<(Hash, Hash)>,
    tombstones: BTreeMap<Hash, UnixTime>,
    tomb_expiry: BTreeSet<(UnixTime, Hash)>,
    notices: BTreeMap<(AllowanceId, u32), Hash>,
    destinations: BTreeMap<Hash, crate::keys::DeviceKey>,
    per_origin: BTreeMap<Origin, u64>,
    /// Bytes held per origin other than [`Origin::Local`], heaviest last.
    weights: BTreeSet<(u64, Origin)>,
    /// Eviction keys of the bundles of every origin other than [`Origin::Local`].
    evictable: BTreeSet<EvictKey>,
    /// … and per origin.
    by_origin: BTreeMap<Origin, BTreeSet<EvictKey>>,
    /// The fraud proof held for each allowance.
    proofs: BTreeMap<AllowanceId, Hash>,
    /// The last arrival number given.
    arrivals: u64,
    /// Sync keys of ids alone on their key, and ids sharing a key (left out of sync).
    sync_keys: BTreeMap<u64, Hash>,
    sync_shared: BTreeMap<u64, Vec<Hash>>,
    /// The first coded symbols of the keys in `sync_keys`.
    head: Vec<crate::sync::Symbol>,
    /// `sync_keys` as a sorted list, shared by the sessions that start while it is current.
    sync_snapshot: std::sync::Mutex<Option<SyncList>>,
    bytes: u64,
    changes: Changes,
}

impl std::fmt::Debug for BundleStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BundleStore")
            .field("bundles", &self.entries.len())
            .field("bytes", &self.bytes)
            .field("tombstones", &self.tombstones.len())
            .finish_non_exhaustive()
    }
}

impl BundleStore {
    /// An empty store.
    pub fn new(config: StoreConfig) -> Self {
        Self {
            config,
            ..Self::default()
        }
    }

    /// Installs the reader of bodies the driver stores.
    pub fn set_loader(&mut self, loader: BodyLoader) {
        self.loader = Some(loader);
    }

    /// A held bundle's encoding, from memory or through the loader.
    pub fn body(&self, id: &Hash) -> Option<Arc<[u8]>> {
        let e = self.entries.get(id)?;
        e.bytes
            .clone()
            .or_else(|| self.loader.as_ref().and_then(|l| l(id)))
    }

    /// Offers bundle bytes from `origin` at time `now`. `copies` is the spray-and-wait copy
    /// count handed over with it (0: no limit). Refusals change nothing.
    pub fn insert(
        &mut self,
        bytes: &[u8],
        origin: Origin,
        copies: u32,
        now: UnixTime,
    ) -> Admission {
        let bundle = match Bundle::decode(bytes) {
            Ok(b) => b,
            Err(e) => return Admission::Refused(BundleError::Decode(e)),
        };
        self.insert_bundle(&bundle, origin, copies, now)
    }

    /// [`BundleStore::insert`] for a bundle already decoded.
    pub fn insert_bundle(
        &mut self,
        bundle: &Bundle,
        origin: Origin,
        copies: u32,
        now: UnixTime,
    ) -> Admission {
        let meta = *bundle.meta();
        if self.entries.contains_key(&meta.id) {
            return Admission::Duplicate;
        }
        if let Content::Fraud(p) = bundle.content() {
            // One proof refuses an allowance everywhere; more for it would only take room.
            if self.proofs.contains_key(&p.allowance()) {
                return Admission::Duplicate;
            }
        }
        if meta.kind == BundleKind::Message && !self.config.accept_messages {
            return Admission::Refused(BundleError::PlainMessage);
        }
        if let Some(issuers) = &self.config.issuers {
            if meta.kind != BundleKind::Message && !issuers.contains(&meta.issuer) {
                return Admission::ForeignIssuer;
            }
        }
        if let Err(e) = bundle.verify(now) {
            return Admission::Refused(e);
        }
        if meta.kind == BundleKind::Record
            && meta
                .subject
                .is_some_and(|s| self.tombstones.contains_key(&s))
        {
            return Admission::Settled;
        }
        if !self.make_room(&meta, origin) {
            return Admission::Full;
        }
        self.put(bundle.bytes().into(), meta, origin, copies, None);
        match bundle.content() {
            Content::Fraud(p) => {
                self.proofs.insert(p.allowance(), meta.id);
            }
            Content::Message(m) => {
                self.destinations.insert(meta.id, m.to);
            }
            Content::Receipt(_) => {
                let subject = meta.subject.expect("receipts have a subject");
                self.purge(subject, meta.expires);
            }
            Content::Notice(n) => {
                let slot = (n.notice.allowance, n.notice.counter);
                match self.notices.get(&slot) {
                    None => {
                        self.notices.insert(slot, meta.id);
                    }
                    Some(other) => {
                        if let Some(proof) = self.fork_with(*other, n) {
                            let allowance = proof.allowance();
                            let b = Bundle::new(Content::Fraud(Box::new(proof)));
                            let m = *b.meta();
                            // The proof is the most urgent bundle: it evicts others if full.
                            if !self.proofs.contains_key(&allowance)
                                && !self.entries.contains_key(&m.id)
                                && self.make_room(&m, Origin::Local)
                            {
                                self.put(b.bytes().into(), m, Origin::Local, 0, None);
                                self.proofs.insert(allowance, m.id);
                            }
                        }
                    }
                }
            }
            _ => {}
        }
        Admission::Added(meta)
    }

    fn fork_with(&self, other: Hash, n: &crate::bundle::CertifiedNotice) -> Option<FraudProof> {
        let held = self.body(&other)?;
        let Ok(b) = Bundle::decode(&held) else {
            return None;
        };
        let Content::Notice(first) = b.content() else {
            return None;
        };
        FraudProof::new(n.cert.clone(), first.notice.clone(), n.notice.clone())
    }

    /// Puts back a bundle read from the driver's disk, without checks or side effects.
    /// `arrival` is the arrival number it had (0 if the driver did not keep it: it is then
    /// taken as arriving now). Returns `false` (and keeps nothing) if the bytes are not a
    /// bundle.
    pub fn restore(&mut self, bytes: &[u8], origin: Origin, copies: u32, arrival: u64) -> bool {
        let Ok(bundle) = Bundle::decode(bytes) else {
            return false;
        };
        let meta = *bundle.meta();
        if self.entries.contains_key(&meta.id) {
            return true;
        }
        self.put(
            bytes.into(),
            meta,
            origin,
            copies,
            (arrival > 0).then_some(arrival),
        );
        match bundle.content() {
            Content::Fraud(p) => {
                self.proofs.entry(p.allowance()).or_insert(meta.id);
            }
            Content::Notice(n) => {
                self.notices
                    .entry((n.notice.allowance, n.notice.counter))
                    .or_insert(meta.id);
            }
            Content::Message(m) => {
                self.destinations.insert(meta.id, m.to);
            }
            _ => {}
        }
        self.changes.added.pop();
        self.changes.bodies.pop();
        self.drop_body(&meta);
        true
    }

    /// Puts back a tombstone read from disk.
    pub fn restore_tombstone(&mut self, subject: Hash, expires: UnixTime) {
        self.tombstones.insert(subject, expires);
        self.tomb_expiry.insert((expires, subject));
    }

    fn sync_toggle(&mut self, key: u64, sign: i64) {
        *self
            .sync_snapshot
            .get_mut()
            .unwrap_or_else(|e| e.into_inner()) = None;
        if self.head.is_empty() {
            self.head = vec![crate::sync::Symbol::default(); crate::sync::KEPT_SYMBOLS];
        }
        let mut m = crate::sync::Mapping::new(key);
        while m.index < crate::sync::KEPT_SYMBOLS as u64 {
            self.head[usize::try_from(m.index).expect("small")].add(key, sign);
            m.advance();
        }
    }

    fn sync_add(&mut self, id: Hash) {
        let key = crate::sync::key_of(&id);
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

    fn sync_remove(&mut self, id: &Hash) {
        let key = crate::sync::key_of(id);
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

    /// Sync keys and their ids, in key order (ids sharing a key are left out): one shared
    /// list until the held set changes, so sessions that start on an unchanged store do not
    /// copy it.
    pub(crate) fn sync_entries(&self) -> SyncList {
        let mut cached = self
            .sync_snapshot
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        cached
            .get_or_insert_with(|| self.sync_keys.iter().map(|(k, id)| (*k, *id)).collect())
            .clone()
    }

    /// The first coded symbols of the held set (SPEC.md §11.3).
    pub(crate) fn sync_head(&self) -> Vec<crate::sync::Symbol> {
        if self.head.is_empty() {
            vec![crate::sync::Symbol::default(); crate::sync::KEPT_SYMBOLS]
        } else {
            self.head.clone()
        }
    }

    fn set_weight(&mut self, origin: Origin, before: u64, after: u64) {
        if origin == Origin::Local {
            return;
        }
        self.weights.remove(&(before, origin));
        if after > 0 {
            self.weights.insert((after, origin));
        }
    }

    fn put(
        &mut self,
        bytes: Arc<[u8]>,
        meta: Meta,
        origin: Origin,
        copies: u32,
        arrival: Option<u64>,
    ) {
        self.sync_add(meta.id);
        let size = u64::from(meta.size);
        self.bytes += size;
        let held = self.per_origin.entry(origin).or_default();
        let before = *held;
        *held += size;
        let after = *held;
        self.set_weight(origin, before, after);
        let arrival = if let Some(a) = arrival {
            self.arrivals = self.arrivals.max(a);
            a
        } else {
            self.arrivals += 1;
            self.arrivals
        };
        if origin != Origin::Local {
            let key = (rank(meta.kind), arrival, meta.id);
            self.evictable.insert(key);
            self.by_origin.entry(origin).or_default().insert(key);
        }
        self.order.insert(priority(&meta));
        self.expiry.insert((meta.expires, meta.id));
        if meta.kind == BundleKind::Record {
            if let Some(s) = meta.subject {
                self.by_subject.insert((s, meta.id));
            }
        }
        self.changes.added.push(meta.id);
        self.changes.bodies.push((meta.id, Arc::clone(&bytes)));
        self.entries.insert(
            meta.id,
            Entry {
                bytes: Some(bytes),
                meta,
                origin,
                copies,
                arrival,
            },
        );
    }

    /// Forgets a record's body if the driver keeps bodies (it has them in `changes.bodies`).
    fn drop_body(&mut self, meta: &Meta) {
        if !self.config.bodies_in_memory && meta.kind == BundleKind::Record {
            if let Some(e) = self.entries.get_mut(&meta.id) {
                e.bytes = None;
            }
        }
    }

    /// Removes a bundle. Returns it if it was held.
    pub fn remove(&mut self, id: &Hash) -> Option<Entry> {
        let e = self.entries.remove(id)?;
        self.sync_remove(id);
        let size = u64::from(e.meta.size);
        self.bytes -= size;
        if let Some(n) = self.per_origin.get_mut(&e.origin) {
            let before = *n;
            *n -= size;
            let after = *n;
            if after == 0 {
                self.per_origin.remove(&e.origin);
            }
            self.set_weight(e.origin, before, after);
        }
        if e.origin != Origin::Local {
            let key = (rank(e.meta.kind), e.arrival, e.meta.id);
            self.evictable.remove(&key);
            if let Some(set) = self.by_origin.get_mut(&e.origin) {
                set.remove(&key);
                if set.is_empty() {
                    self.by_origin.remove(&e.origin);
                }
            }
        }
        if e.meta.kind == BundleKind::Fraud {
            self.proofs.retain(|_, id| id != &e.meta.id);
        }
        self.order.remove(&priority(&e.meta));
        self.expiry.remove(&(e.meta.expires, e.meta.id));
        if let Some(s) = e.meta.subject {
            self.by_subject.remove(&(s, e.meta.id));
        }
        if e.meta.kind == BundleKind::Notice {
            // Notice bodies stay in memory: find its slot rather than scan every notice.
            let slot = e
                .bytes
                .as_deref()
                .and_then(|b| Bundle::decode(b).ok())
                .and_then(|b| match b.content() {
                    Content::Notice(n) => Some((n.notice.allowance, n.notice.counter)),
                    _ => None,
                });
            if let Some(slot) = slot {
                if self.notices.get(&slot) == Some(id) {
                    self.notices.remove(&slot);
                }
            }
        }
        self.destinations.remove(id);
        self.changes.removed.push(*id);
        Some(e)
    }

    fn purge(&mut self, subject: Hash, until: UnixTime) {
        let ids: Vec<Hash> = self
            .by_subject
            .range((subject, Hash([0; 32]))..=(subject, Hash([0xff; 32])))
            .map(|(_, id)| *id)
            .collect();
        for id in ids {
            self.remove(&id);
        }
        let old = self.tombstones.insert(subject, until);
        if let Some(old) = old {
            self.tomb_expiry.remove(&(old, subject));
        }
        self.tomb_expiry.insert((until, subject));
        self.changes.tombstoned.push((subject, until));
    }

    /// Makes room for `meta` from `origin` by the eviction rules of the module docs. Returns
    /// `false` (and evicts nothing more) when the newcomer is to be refused.
    fn make_room(&mut self, meta: &Meta, origin: Origin) -> bool {
        let size = u64::from(meta.size);
        if origin != Origin::Local
            && self.per_origin.get(&origin).copied().unwrap_or(0) + size
                > self.config.max_bytes_per_origin
        {
            return false;
        }
        let new_rank = rank(meta.kind);
        while self.bytes + size > self.config.max_bytes
            || self.entries.len() >= self.config.max_bundles
        {
            let Some(victim) = self.victim(new_rank, origin, size) else {
                return false;
            };
            self.remove(&victim);
        }
        true
    }

    /// The bundle a newcomer of rank `new_rank` and `size` bytes from `origin` may push out.
    fn victim(&self, new_rank: u8, origin: Origin, size: u64) -> Option<Hash> {
        let least = self.evictable.last()?;
        if origin == Origin::Local || least.0 > new_rank {
            // A less urgent kind (or anything, for the node's own): the least urgent, latest.
            return Some(least.2);
        }
        // The same kind: only from the heaviest origin, if it holds more than the newcomer's
        // origin would.
        let &(heaviest, from) = self.weights.last()?;
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
        let reclaim = match self.weights.last() {
            Some(&(weight, from)) if from != origin => weight.saturating_sub(held) / 2,
            _ => 0,
        };
        let by_count = if self.entries.len() >= self.config.max_bundles && reclaim == 0 {
            0
        } else {
            u64::MAX
        };
        per_origin.min(free + reclaim).min(by_count)
    }

    /// Drops bundles and tombstones past their expiry at `now`.
    pub fn expire(&mut self, now: UnixTime) {
        let gone: Vec<Hash> = self
            .expiry
            .iter()
            .take_while(|(t, _)| *t < now)
            .map(|(_, id)| *id)
            .collect();
        for id in gone {
            self.remove(&id);
        }
        let tombs: Vec<(UnixTime, Hash)> = self
            .tomb_expiry
            .iter()
            .take_while(|(t, _)| *t < now)
            .copied()
            .collect();
        for (t, s) in tombs {
            self.tomb_expiry.remove(&(t, s));
            self.tombstones.remove(&s);
            self.changes.untombstoned.push(s);
        }
    }

    /// Sets a bundle's spray-and-wait copy count.
    pub fn set_copies(&mut self, id: &Hash, copies: u32) {
        if let Some(e) = self.entries.get_mut(id) {
            if e.copies != copies {
                e.copies = copies;
                self.changes.added.push(*id);
            }
        }
    }

    /// Takes the changes made since the last call. With bodies kept by the driver, the
    /// record bodies in [`Changes::bodies`] are no longer held in memory afterwards.
    pub fn take_changes(&mut self) -> Changes {
        let changes = std::mem::take(&mut self.changes);
        if !self.config.bodies_in_memory {
            for (id, _) in &changes.bodies {
                if let Some(meta) = self.entries.get(id).map(|e| e.meta) {
                    self.drop_body(&meta);
                }
            }
        }
        changes
    }

    /// A held bundle.
    pub fn get(&self, id: &Hash) -> Option<&Entry> {
        self.entries.get(id)
    }

    /// The destination of a held plain message.
    pub fn destination(&self, id: &Hash) -> Option<crate::keys::DeviceKey> {
        self.destinations.get(id).copied()
    }

    /// True if `id` is held.
    pub fn contains(&self, id: &Hash) -> bool {
        self.entries.contains_key(id)
    }

    /// True if the record `subject` is known settled.
    pub fn is_settled(&self, subject: &Hash) -> bool {
        self.tombstones.contains_key(subject)
    }

    /// Held bundle ids, in id order.
    pub fn ids(&self) -> impl Iterator<Item = &Hash> {
        self.entries.keys()
    }

    /// Held bundles in forwarding order.
    pub fn in_order(&self) -> impl Iterator<Item = &Entry> {
        self.order.iter().filter_map(|p| self.entries.get(&p.2))
    }

    /// Tombstones: settled record id and until when it is remembered.
    pub fn tombstones(&self) -> impl Iterator<Item = (&Hash, &UnixTime)> {
        self.tombstones.iter()
    }

    /// Number of bundles held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True if nothing is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Bytes held.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The limits.
    pub fn config(&self) -> &StoreConfig {
        &self.config
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ReceiptStatus;
    use crate::objects::SettlementReceipt;
    use crate::testkit::{T0, allowance, device, issuer, pay, request, sealed, wallet};

    fn records(n: u8) -> Vec<Bundle> {
        let iss = issuer();
        let alice = device(1);
        let mut w = wallet([allowance(&iss, 1, &alice, 1_000_000)]);
        (1..=n)
            .map(|i| {
                let iou = pay(&mut w, &alice, &request(&device(2), 10, i));
                Bundle::new(Content::Record(sealed(&iss, &iou)))
            })
            .collect()
    }

    #[test]
    fn a_final_receipt_purges_the_record_and_keeps_it_out() {
        let mut s = BundleStore::new(StoreConfig::default());
        let r = &records(1)[0];
        assert!(matches!(
            s.insert(r.bytes(), Origin::Peer([1; 32]), 0, T0),
            Admission::Added(_)
        ));
        assert_eq!(
            s.insert(r.bytes(), Origin::Peer([2; 32]), 0, T0),
            Admission::Duplicate
        );
        let subject = r.meta().subject.expect("record");
        let receipt = Bundle::new(Content::Receipt(SettlementReceipt::issue(
            &issuer(),
            subject,
            ReceiptStatus::Settled,
            T0,
        )));
        s.take_changes();
        assert!(matches!(
            s.insert(receipt.bytes(), Origin::Local, 0, T0),
            Admission::Added(_)
        ));
        let changes = s.take_changes();
        assert_eq!(changes.removed, vec![r.id()]);
        assert_eq!(changes.tombstoned.len(), 1);
        assert!(!s.contains(&r.id()));
        assert_eq!(
            s.insert(r.bytes(), Origin::Peer([1; 32]), 0, T0),
            Admission::Settled
        );
        // Tombstones go when the receipt expires.
        s.expire(receipt.meta().expires + 1);
        assert!(s.is_empty());
        assert!(!s.is_settled(&subject));
    }

    #[test]
    fn quotas_per_origin_and_eviction_by_priority() {
        let rs = records(6);
        let size = u64::from(rs[0].meta().size);
        let mut s = BundleStore::new(StoreConfig {
            max_bytes: size * 4 + 16,
            max_bundles: 100,
            max_bytes_per_origin: size * 2 + 8,
            issuers: None,
            bodies_in_memory: true,
            accept_messages: false,
        });
        let (p, q) = (Origin::Peer([1; 32]), Origin::Peer([2; 32]));
        assert!(matches!(
            s.insert(rs[0].bytes(), p, 0, T0),
            Admission::Added(_)
        ));
        assert!(matches!(
            s.insert(rs[1].bytes(), p, 0, T0),
            Admission::Added(_)
        ));
        assert_eq!(s.insert(rs[2].bytes(), p, 0, T0), Admission::Full);
        assert!(matches!(
            s.insert(rs[2].bytes(), q, 0, T0),
            Admission::Added(_)
        ));
        assert!(matches!(
            s.insert(rs[3].bytes(), q, 0, T0),
            Admission::Added(_)
        ));
        // Full: the node's own bundle evicts the least urgent of others'.
        assert!(matches!(
            s.insert(rs[4].bytes(), Origin::Local, 0, T0),
            Admission::Added(_)
        ));
        assert_eq!(s.len(), 4);
        assert!(s.bytes() <= size * 4 + 16);
        // A receipt (more urgent) evicts a record from a peer.
        let receipt = Bundle::new(Content::Receipt(SettlementReceipt::issue(
            &issuer(),
            Hash([9; 32]),
            ReceiptStatus::Settled,
            T0,
        )));
        assert!(matches!(
            s.insert(receipt.bytes(), Origin::Peer([3; 32]), 0, T0),
            Admission::Added(_)
        ));
        assert!(s.bytes() <= size * 4 + 16);
        assert_eq!(s.in_order().next().map(|e| e.meta.id), Some(receipt.id()));
    }

    #[test]
    fn two_notices_for_one_slot_become_a_fraud_proof() {
        let iss = issuer();
        let alice = device(1);
        let cert = allowance(&iss, 1, &alice, 1000);
        // A clone: two wallets from the same state pay different payees with counter 1.
        let a = pay(
            &mut wallet([cert.clone()]),
            &alice,
            &request(&device(2), 10, 1),
        );
        let b = pay(
            &mut wallet([cert.clone()]),
            &alice,
            &request(&device(3), 20, 2),
        );
        let mut s = BundleStore::new(StoreConfig::default());
        let na = Bundle::notice(cert.clone(), a.notice());
        let nb = Bundle::notice(cert.clone(), b.notice());
        assert!(matches!(
            s.insert(na.bytes(), Origin::Peer([1; 32]), 0, T0),
            Admission::Added(_)
        ));
        assert!(matches!(
            s.insert(nb.bytes(), Origin::Peer([2; 32]), 0, T0),
            Admission::Added(_)
        ));
        let first = s.in_order().next().expect("a bundle");
        assert_eq!(first.meta.kind, BundleKind::Fraud);
        assert_eq!(first.origin, Origin::Local);
        let proof = Bundle::decode(&s.body(&first.meta.id).expect("held")).expect("decodes");
        assert_eq!(proof.verify(T0), Ok(()));
    }
}
