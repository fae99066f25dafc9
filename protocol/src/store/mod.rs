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
//!   When full, a newcomer may push out a held bundle of a *less urgent kind of the same
//!   issuer* (that issuer's receipt, revocation or fraud proof pushes out its records: urgent
//!   kinds are signed, and a bundle signed under one issuer key cannot push out another
//!   issuer's); otherwise it may only take the place of a bundle, not more urgent than itself,
//!   of the origin holding the most, and only if that origin holds more than the newcomer's
//!   would with it (max-min fairness: a flood from fresh identities displaces its own
//!   bundles, never a lighter origin's). Otherwise the
//!   newcomer is refused: refusing a new bundle is preferred to evicting a held one. The
//!   victim within an origin is its least urgent bundle, the latest to arrive. The node's own
//!   bundles are never evicted for others', and its own newcomers may push out anyone's.
//!   At most one fraud proof per allowance of an issuer is kept (one suffices).
//! - **Forwarding order**: fraud proofs, revocations, receipts first; then everything else
//!   oldest first ([`Priority`]).
//! - **Purge**: a final receipt for a record removes every copy of that record sealed to the
//!   receipt's issuer and leaves a tombstone until the receipt expires, so a settled record
//!   stops travelling (the "immunity" of epidemic routing, Haas & Small 2006). A receipt under
//!   another issuer key touches nothing of that issuer's.
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

mod types;

use types::EvictKey;
pub use types::{
    Admission, Admitted, BodyLoader, Changes, Entry, Origin, Priority, StoreConfig, priority,
};

mod maxprop;
pub use maxprop::HopCostRank;

mod pool;
pub use pool::BodyPool;

mod evict;
mod sync_keys;

/// Sync keys in order.
type SyncList = Arc<Vec<u64>>;

/// The store. See the module docs for its rules.
#[derive(Default)]
pub struct BundleStore {
    loader: Option<BodyLoader>,
    config: StoreConfig,
    /// Held bundles by id (a hash map under a random key: whatever ids peers choose, and
    /// whatever walks it sorts what it finds).
    entries: std::collections::HashMap<Hash, Box<Entry>>,
    expiry: BTreeSet<(UnixTime, Hash)>,
    /// The first of `expiry` and `tomb_expiry`, kept as they change: a simulation asks every
    /// store for it at every expiry tick.
    earliest: Option<UnixTime>,
    by_subject: BTreeSet<(Hash, Hash)>,
    /// Settled records: (issuer, record id) and until when they are remembered.
    tombstones: BTreeMap<(IssuerId, Hash), UnixTime>,
    tomb_expiry: BTreeSet<(UnixTime, IssuerId, Hash)>,
    /// Spend notices by slot: (issuer, allowance, counter). The issuer is part of the key so
    /// a notice under a made-up issuer's certificate for a genuine allowance id cannot take
    /// the genuine notice's slot and hide its fork.
    notices: BTreeMap<(IssuerId, AllowanceId, u32), Hash>,
    per_origin: std::collections::HashMap<Origin, u64>,
    /// Bytes held per origin other than [`Origin::Local`], heaviest last (not kept under the
    /// simulation's drop policies: see [`BundleStore::heaviest`]).
    weights: BTreeSet<(u64, Origin)>,
    /// Eviction keys of the bundles of every origin other than [`Origin::Local`] (not kept
    /// under the simulation's drop policies, which evict by their own order).
    evictable: BTreeSet<EvictKey>,
    /// … per origin.
    by_origin: BTreeMap<Origin, BTreeSet<EvictKey>>,
    /// … and per issuer.
    by_issuer: BTreeMap<IssuerId, BTreeSet<EvictKey>>,
    /// The fraud proof held for each allowance of each issuer.
    proofs: BTreeMap<(IssuerId, AllowanceId), Hash>,
    /// The last arrival number given.
    arrivals: u64,
    /// Sync keys of ids alone on their key, and ids sharing a key (left out of sync).
    sync_keys: std::collections::HashMap<u64, Hash>,
    sync_shared: BTreeMap<u64, Vec<Hash>>,
    /// The first coded symbols of the keys in `sync_keys`.
    head: Vec<crate::riblt::Symbol>,
    /// The keys of `sync_keys` in order, for the sessions that open on the store.
    sync_order: std::sync::Mutex<sync_keys::SyncOrder>,
    bytes: u64,
    changes: Changes,
    /// Simulation only: when full, drop the bundle that arrived first (The ONE's policy).
    drop_oldest: bool,
    /// Simulation only: when full, drop the costliest under MaxProp (`store/maxprop.rs`).
    drop_costliest: bool,
    /// Under `drop_oldest`, from the first time the store is full: every bundle put since, in
    /// order of arrival, with its arrival number; those no longer held (or held under a later
    /// arrival) are skipped when met and swept when they outnumber the held ones. (A store
    /// that is never full never needs it.)
    by_arrival: Option<std::collections::VecDeque<(u64, Hash)>>,
    /// Delivery predictabilities (PRoPHET's routing state: soft, never written).
    predictions: crate::prophet::Predictions,
    /// Meeting likelihoods (MaxProp's routing state: soft, never written).
    likelihoods: crate::maxprop::Likelihoods,
    /// Bodies shared with other stores of the process (simulation).
    pool: Option<BodyPool>,
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

    /// For simulations that compare with The ONE: when full, make room by dropping the
    /// bundles that arrived first, whoever sent them and whatever their kind (The ONE's
    /// `ActiveRouter` drops the oldest received). Nodes never do this: a stranger could flush
    /// their records out. Set it before the first insert.
    pub fn set_drop_oldest(&mut self, on: bool) {
        self.drop_oldest = on;
    }

    /// Keeps bodies in `pool`, shared with the other stores that use it: one copy of each
    /// bundle however many stores hold it (a simulation's nodes). Set it before the first
    /// insert.
    pub fn share_bodies(&mut self, pool: BodyPool) {
        self.pool = Some(pool);
    }

    /// The delivery predictabilities sync sessions keep under PRoPHET and
    /// spray-and-focus.
    pub fn predictions(&self) -> &crate::prophet::Predictions {
        &self.predictions
    }

    /// The delivery predictabilities, to change (sessions meet peers through this).
    pub fn predictions_mut(&mut self) -> &mut crate::prophet::Predictions {
        &mut self.predictions
    }

    /// The meeting likelihoods sync sessions keep under MaxProp.
    pub fn likelihoods(&self) -> &crate::maxprop::Likelihoods {
        &self.likelihoods
    }

    /// The meeting likelihoods, to change (sessions meet peers through this).
    pub fn likelihoods_mut(&mut self) -> &mut crate::maxprop::Likelihoods {
        &mut self.likelihoods
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
        self.insert_as(&crate::bundle::bundle_id(bytes), bytes, origin, copies, now)
    }

    /// [`BundleStore::insert`] of bytes whose bundle id `id` the caller worked out already.
    pub(crate) fn insert_as(
        &mut self,
        id: &Hash,
        bytes: &[u8],
        origin: Origin,
        copies: u32,
        now: UnixTime,
    ) -> Admission {
        if let Some((meta, body)) = self.pool.as_ref().and_then(|p| p.message(id, bytes)) {
            return self.insert_message(meta, body, origin, copies, now);
        }
        match Bundle::decode_as(bytes, *id) {
            Ok(bundle) => self.insert_bundle(&bundle, origin, copies, now),
            Err(e) => Admission::Refused(BundleError::Decode(e)),
        }
    }

    /// A plain message, decoded (here or, through the pool, by another store): everything a
    /// carrier can check of one is in its metadata, and nothing acts on it but the store's
    /// routing.
    fn insert_message(
        &mut self,
        meta: Arc<Meta>,
        body: Arc<[u8]>,
        origin: Origin,
        copies: u32,
        now: UnixTime,
    ) -> Admission {
        if self.entries.contains_key(&meta.id) {
            return Admission::Duplicate;
        }
        if !self.config.accept_messages {
            return Admission::Refused(BundleError::PlainMessage);
        }
        if meta.expires < now {
            return Admission::Refused(BundleError::Expired);
        }
        if !self.make_room(&meta, origin) {
            return Admission::Full;
        }
        let added = *meta;
        self.put(body, meta, origin, copies, None);
        Admission::Added(added)
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
        if let Content::Message(_) = bundle.content() {
            return self.insert_message(meta.into(), bundle.bytes().into(), origin, copies, now);
        }
        if let Content::Fraud(p) = bundle.content() {
            // One proof refuses an allowance everywhere; more for it would only take room.
            // (Keyed by issuer too: anyone can make an issuer key and a proof under it for
            // any allowance id, and that must not shadow the genuine issuer's proof.)
            if self.proofs.contains_key(&(meta.issuer, p.allowance())) {
                return Admission::Duplicate;
            }
        }
        if let Some(issuers) = &self.config.issuers {
            if !issuers.contains(&meta.issuer) {
                return Admission::ForeignIssuer;
            }
        }
        if let Err(e) = bundle.verify(now) {
            return Admission::Refused(e);
        }
        if meta.kind == BundleKind::Record
            && meta
                .subject
                .is_some_and(|s| self.tombstones.contains_key(&(meta.issuer, s)))
        {
            return Admission::Settled;
        }
        if !self.make_room(&meta, origin) {
            return Admission::Full;
        }
        self.put(bundle.bytes().into(), meta.into(), origin, copies, None);
        self.changes.admitted.push(Admitted {
            meta,
            origin,
            content: bundle.content().clone(),
        });
        match bundle.content() {
            Content::Fraud(p) => {
                self.proofs.insert((meta.issuer, p.allowance()), meta.id);
            }
            Content::Receipt(_) => {
                let subject = meta.subject.expect("receipts have a subject");
                self.purge(meta.issuer, subject, meta.expires);
            }
            Content::Notice(n) => {
                let slot = (meta.issuer, n.notice.allowance, n.notice.counter);
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
                            if !self.proofs.contains_key(&(m.issuer, allowance))
                                && !self.entries.contains_key(&m.id)
                                && self.make_room(&m, Origin::Local)
                            {
                                self.put(b.bytes().into(), m.into(), Origin::Local, 0, None);
                                self.proofs.insert((m.issuer, allowance), m.id);
                                self.changes.admitted.push(Admitted {
                                    meta: m,
                                    origin: Origin::Local,
                                    content: b.content().clone(),
                                });
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
        let proof = FraudProof::new(n.cert.clone(), first.notice.clone(), n.notice.clone())?;
        // Both notices were checked on the way in, each against its own certificate; the
        // proof must hold against this one (it is refused everywhere otherwise).
        proof.verify(&n.cert.body().issuer).ok().map(|()| proof)
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
            meta.into(),
            origin,
            copies,
            (arrival > 0).then_some(arrival),
        );
        match bundle.content() {
            Content::Fraud(p) => {
                self.proofs
                    .entry((meta.issuer, p.allowance()))
                    .or_insert(meta.id);
            }
            Content::Notice(n) => {
                self.notices
                    .entry((meta.issuer, n.notice.allowance, n.notice.counter))
                    .or_insert(meta.id);
            }
            _ => {}
        }
        self.changes.added.pop();
        self.changes.bodies.pop();
        self.drop_body(&meta.id);
        true
    }

    /// Puts back a tombstone read from disk: `issuer`'s record `subject` settled.
    pub fn restore_tombstone(&mut self, issuer: IssuerId, subject: Hash, expires: UnixTime) {
        self.tombstones.insert((issuer, subject), expires);
        self.tomb_expiry.insert((expires, issuer, subject));
        self.refresh_earliest();
    }

    /// Works out [`BundleStore::next_expiry`] again after expiries went.
    fn refresh_earliest(&mut self) {
        let bundle = self.expiry.first().map(|e| e.0);
        let tomb = self.tomb_expiry.first().map(|e| e.0);
        self.earliest = bundle.into_iter().chain(tomb).min();
    }

    fn set_weight(&mut self, origin: Origin, before: u64, after: u64) {
        if origin == Origin::Local || self.drops() {
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
        meta: Arc<Meta>,
        origin: Origin,
        copies: u32,
        arrival: Option<u64>,
    ) {
        let (meta, bytes) = match &self.pool {
            Some(pool) => pool.intern(meta, bytes),
            None => (meta, bytes),
        };
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
        if let Some(by_arrival) = &mut self.by_arrival {
            if by_arrival.len() > 2 * self.entries.len() + 1024 {
                let entries = &self.entries;
                by_arrival.retain(|(a, id)| entries.get(id).is_some_and(|e| e.arrival == *a));
            }
            by_arrival.push_back((arrival, meta.id));
        }
        self.index_evictable(&meta, origin, arrival, true);
        self.expiry.insert((meta.expires, meta.id));
        self.earliest = Some(self.earliest.map_or(meta.expires, |t| t.min(meta.expires)));
        if meta.kind == BundleKind::Record {
            if let Some(s) = meta.subject {
                self.by_subject.insert((s, meta.id));
            }
        }
        self.changes.added.push(meta.id);
        self.changes.bodies.push((meta.id, Arc::clone(&bytes)));
        self.entries.insert(
            meta.id,
            Box::new(Entry {
                bytes: Some(bytes),
                meta,
                origin,
                copies,
                arrival,
                hops: u8::from(origin != Origin::Local),
            }),
        );
    }

    /// Forgets a record's body if the driver keeps bodies (it has them in `changes.bodies`).
    fn drop_body(&mut self, id: &Hash) {
        if self.config.bodies_in_memory {
            return;
        }
        if let Some(e) = self.entries.get_mut(id) {
            if e.meta.kind == BundleKind::Record {
                e.bytes = None;
            }
        }
    }

    /// Removes a bundle. Returns it if it was held.
    pub fn remove(&mut self, id: &Hash) -> Option<Entry> {
        self.remove_held(id, true).map(|e| *e)
    }

    /// [`BundleStore::remove`], taking the bundle out of the expiry index too unless
    /// `indexed` is off (the caller took it out already).
    fn remove_held(&mut self, id: &Hash, indexed: bool) -> Option<Box<Entry>> {
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
        self.index_evictable(&e.meta, e.origin, e.arrival, false);
        if e.meta.kind == BundleKind::Fraud {
            self.proofs.retain(|_, id| id != &e.meta.id);
        }
        if indexed {
            self.expiry.remove(&(e.meta.expires, e.meta.id));
            if self.earliest == Some(e.meta.expires) {
                self.refresh_earliest();
            }
        }
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
                    Content::Notice(n) => {
                        Some((e.meta.issuer, n.notice.allowance, n.notice.counter))
                    }
                    _ => None,
                });
            if let Some(slot) = slot {
                if self.notices.get(&slot) == Some(id) {
                    self.notices.remove(&slot);
                }
            }
        }
        self.changes.removed.push(*id);
        Some(e)
    }

    /// A final receipt of `issuer` for record `subject`: every record of that issuer with that
    /// id goes, and a tombstone keeps it out until `until`. Records claiming another issuer are
    /// untouched (anyone can sign a receipt under an issuer key of their own).
    fn purge(&mut self, issuer: IssuerId, subject: Hash, until: UnixTime) {
        let ids: Vec<Hash> = self
            .by_subject
            .range((subject, Hash([0; 32]))..=(subject, Hash([0xff; 32])))
            .map(|(_, id)| *id)
            .filter(|id| {
                self.entries
                    .get(id)
                    .is_some_and(|e| e.meta.issuer == issuer)
            })
            .collect();
        for id in ids {
            self.remove(&id);
        }
        let old = self.tombstones.insert((issuer, subject), until);
        if let Some(old) = old {
            self.tomb_expiry.remove(&(old, issuer, subject));
        }
        self.tomb_expiry.insert((until, issuer, subject));
        self.refresh_earliest();
        self.changes.tombstoned.push((issuer, subject, until));
    }

    /// Drops bundles and tombstones past their expiry at `now`.
    pub fn expire(&mut self, now: UnixTime) {
        while let Some(&(t, id)) = self.expiry.first() {
            if t >= now {
                break;
            }
            self.expiry.pop_first();
            self.remove_held(&id, false);
        }
        let tombs: Vec<(UnixTime, IssuerId, Hash)> = self
            .tomb_expiry
            .iter()
            .take_while(|(t, _, _)| *t < now)
            .copied()
            .collect();
        for (t, issuer, s) in tombs {
            self.tomb_expiry.remove(&(t, issuer, s));
            self.tombstones.remove(&(issuer, s));
            self.changes.untombstoned.push((issuer, s));
        }
        self.refresh_earliest();
    }

    /// The earliest expiry of a held bundle or tombstone: [`BundleStore::expire`] drops
    /// nothing before it has passed.
    pub fn next_expiry(&self) -> Option<UnixTime> {
        self.earliest
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

    /// Sets the hops a bundle made before it reached this node (soft state: not a change
    /// the driver writes).
    pub fn set_hops(&mut self, id: &Hash, hops: u8) {
        if let Some(e) = self.entries.get_mut(id) {
            e.hops = hops;
        }
    }

    /// Takes the changes made since the last call. With bodies kept by the driver, the
    /// record bodies in [`Changes::bodies`] are no longer held in memory afterwards.
    pub fn take_changes(&mut self) -> Changes {
        let changes = std::mem::take(&mut self.changes);
        for (id, _) in &changes.bodies {
            self.drop_body(id);
        }
        changes
    }

    /// A held bundle.
    pub fn get(&self, id: &Hash) -> Option<&Entry> {
        self.entries.get(id).map(AsRef::as_ref)
    }

    /// True if `id` is held.
    pub fn contains(&self, id: &Hash) -> bool {
        self.entries.contains_key(id)
    }

    /// True if `issuer`'s record `subject` is known settled.
    pub fn is_settled(&self, issuer: &IssuerId, subject: &Hash) -> bool {
        self.tombstones.contains_key(&(*issuer, *subject))
    }

    /// Held bundle ids, in id order.
    pub fn ids(&self) -> impl Iterator<Item = &Hash> {
        let mut ids: Vec<&Hash> = self.entries.keys().collect();
        ids.sort_unstable();
        ids.into_iter()
    }

    /// Held bundles, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &Entry> {
        self.entries.values().map(AsRef::as_ref)
    }

    /// Held bundles in forwarding order.
    pub fn in_order(&self) -> impl Iterator<Item = &Entry> {
        let mut held: Vec<&Entry> = self.entries.values().map(AsRef::as_ref).collect();
        held.sort_unstable_by_key(|e| priority(&e.meta));
        held.into_iter()
    }

    /// Tombstones: issuer and settled record id, and until when it is remembered.
    pub fn tombstones(&self) -> impl Iterator<Item = (&(IssuerId, Hash), &UnixTime)> {
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
mod tests;
